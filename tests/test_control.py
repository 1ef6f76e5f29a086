"""Control socket against a real in-process daemon: every op, bad lines, submit path checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import anyio
import pytest
from daemon_harness import running_daemon

from montaged.control.client import ControlClient, ControlError, DaemonUnreachable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]


async def _raw(sock: Path, payload: bytes) -> list[dict]:
    """Send raw bytes, read every reply line until the daemon has answered them all."""
    stream = await anyio.connect_unix(sock)
    async with stream:
        await stream.send(payload)
        expected = payload.count(b"\n")
        data = b""
        with anyio.fail_after(10):
            while data.count(b"\n") < expected:
                data += await stream.receive()
    return [json.loads(line) for line in data.splitlines()]


async def test_ops_and_bad_input(tmp_path: Path) -> None:
    media = tmp_path / "talk.mp4"
    media.write_bytes(b"not really media, but a readable regular file")
    async with running_daemon(tmp_path, MONTAGE_CONTROL__MAX_LINE_BYTES="4096") as daemon:
        sock = daemon.settings.control.socket()
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660

        # malformed, non-object, unknown op, missing fields, oversized: error replies, same connection
        replies = await _raw(
            sock,
            b"{nope\n[1,2]\n"
            + b'{"id":7,"op":"dance"}\n'
            + b'{"id":8,"op":"show"}\n'
            + b'{"id":9,"op":"ping","x":'
            + b"1" * 5000
            + b"}\n"
            + b'{"id":10,"op":"ping"}\n',
        )
        codes = [(r["id"], r["ok"], (r.get("error") or {}).get("code")) for r in replies]
        assert codes == [
            (None, False, "bad_json"),
            (None, False, "bad_request"),
            (7, False, "bad_request"),
            (8, False, "bad_request"),
            (None, False, "line_too_long"),
            (10, True, None),
        ]
        assert "ops:" in replies[2]["error"]["message"]

        async with ControlClient(sock) as c:
            assert (await c.request("ping"))["pong"] is True
            # submit path checks: missing, relative, directory, outside roots (symlink escaping), fine
            for path, words in [
                (str(tmp_path / "missing.mp4"), "no such file"),
                ("talk.mp4", "absolute"),
                (str(tmp_path), "not a regular file"),
            ]:
                with pytest.raises(ControlError) as err:
                    await c.request("submit", path=path)
                assert words in err.value.message and err.value.code == "bad_submission"
            outside = tmp_path.parent / f"{tmp_path.name}-outside.mp4"
            outside.write_bytes(b"x")
            link = tmp_path / "link.mp4"
            link.symlink_to(outside)
            with pytest.raises(ControlError) as err:
                await c.request("submit", path=str(link))
            assert "outside the input roots" in err.value.message
            outside.unlink()
            with pytest.raises(ControlError, match="profile"):
                await c.request("submit", path=str(media), profile="nope")

            await c.request("pause")
            job = await c.request("submit", path=str(media), options={"max_clips": 2})
            assert job["state"] == "queued" and job["spec"]["source"] == str(media)
            listed = await c.request("list", state="queued")
            assert [j["id"] for j in listed["jobs"]] == [job["id"]]
            with pytest.raises(ControlError) as err:
                await c.request("list", state="sleeping")
            assert err.value.code == "bad_request"
            shown = await c.request("show", job_id=job["id"])
            assert shown["events"][0]["kind"] == "job.submitted"
            with pytest.raises(ControlError) as err:
                await c.request("show", job_id="nope")
            assert err.value.code == "not_found"
            with pytest.raises(ControlError) as err:
                await c.request("retry", job_id=job["id"])
            assert err.value.code == "invalid_state"
            assert (await c.request("cancel", job_id=job["id"]))["state"] == "cancelled"
            assert (await c.request("retry", job_id=job["id"]))["state"] == "queued"
            stats = await c.request("stats")
            assert stats["paused"] is True and stats["jobs"]["queued"] == 1
            assert stats["encoder"]["name"] in ("libx264", "h264_nvenc", "hevc_nvenc")
            assert set(stats["queues"]) == {"probe", "transcribe", "diarize", "select", "frame", "render"}

            # subscribe, then resume: the (bad) media fails in probe and the events say so
            await c.request("subscribe", job_id=job["id"])
            await c.request("resume")
            pushed = []
            with anyio.fail_after(60):
                async for event in c.events():
                    if event["job_id"] == job["id"]:  # intake.resumed has none
                        pushed.append((event["event"], event["data"]))
                    if event["event"] == "job.failed":
                        assert event["data"]["stage"] == "probe"
                        assert "talk.mp4" in event["data"]["message"]
                        break
            kinds = [kind for kind, _ in pushed]
            assert kinds == ["job.claimed", "job.stage", "job.failed"]
            shown = await c.request("show", job_id=job["id"])
            failed = shown["job"]
            assert failed["state"] == "failed" and failed["error_class"] == "not_media"
            # the history keeps what the live feed said, payload for payload
            stored = [(e["kind"], e["data"]) for e in shown["events"]]
            assert stored[-3:] == pushed
            assert [k for k, _ in stored[:3]] == ["job.submitted", "job.cancelled", "job.retried"]
            assert stored[1][1] == {"was": "queued"} and stored[2][1]["job"]["state"] == "queued"
            # the daemon lives on
            assert (await c.request("ping"))["pong"] is True


async def test_unreachable_messages(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnreachable, match="not running"):
        async with ControlClient(tmp_path / "none.sock"):
            pass
