"""Previews: a dry run stops after selection with every ranked candidate; ``show`` lists them all.

The ranking is checked on a synthetic talk (the picks are exactly the best non-overlapping
candidates); the doors are checked for real: ``montagectl submit --dry-run`` against a running
daemon, ``montagectl show``, and ``montaged process --dry-run --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from conftest import make_talk_clip
from daemon_harness import JFK, DaemonProcess, daemon_env, request
from test_select import generic_talk, talk

from montaged.config import SelectConfig
from montaged.control.client import ControlError
from montaged.select import MAX_CANDIDATES, rank_clips, select_clips
from montaged.stages.select import candidate_rows

pytestmark = pytest.mark.timeout(240)

CTL = [str(Path(sys.executable).with_name("montagectl"))]


def test_picks_are_the_best_ranked_candidates() -> None:
    cfg = SelectConfig(min_seconds=20, max_seconds=45, max_clips=4, seconds_per_clip=30)
    tr = talk(generic_talk(120))
    clips, ranked = rank_clips(tr, None, cfg)
    assert clips == select_clips(tr, None, cfg)
    assert len(clips) == 4 and 4 < len(ranked) <= MAX_CANDIDATES
    assert [c.index for c in ranked] == list(range(len(ranked)))
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    assert sorted((c.start, c.end) for c in ranked[:4]) == [(c.start, c.end) for c in clips]
    for a in ranked:  # candidates never overlap each other
        assert all(a is b or a.end <= b.start or b.end <= a.start for b in ranked)
    rows = candidate_rows(clips, ranked)
    assert [r["rank"] for r in rows] == list(range(1, len(ranked) + 1))
    picked = [r for r in rows if r["clip"] is not None]
    assert sorted(r["clip"] for r in picked) == [1, 2, 3, 4] and all(r["rank"] <= 4 for r in picked)
    for r in rows:
        assert {"start", "end", "score", "reason", "text", "speakers", "features"} <= set(r)


def _ctl(*args: str, sock: Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONTAGE_")}
    env["MONTAGE_CONTROL__SOCKET_PATH"] = str(sock)
    return subprocess.run([*CTL, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_dry_run_through_montagectl_then_show_lists_every_candidate(tmp_path: Path) -> None:
    clip = make_talk_clip(tmp_path / "talk.mp4", seconds=11, size="320x180", speech=JFK)
    daemon = DaemonProcess(tmp_path).start()
    try:
        anyio.run(daemon.wait_ready, 90.0)
        done = _ctl("submit", str(clip), "--dry-run", "--json", sock=daemon.socket)
        assert done.returncode == 0, (done.stderr, daemon.log()[-3000:])
        (job,) = json.loads(done.stdout)["jobs"]
        result = job["result"]
        assert job["state"] == "done" and result["dry_run"] is True and result["clips"] == []
        assert job["spec"]["options"] == {"stop_after": "select"}
        assert "frame" not in result["stage_seconds"] and "render" not in result["stage_seconds"]
        rows = result["candidates"]
        assert rows and rows[0]["rank"] == 1 and rows[0]["clip"] == 1
        assert "ask not what your country" in " ".join(r["text"].lower() for r in rows)
        for r in rows:
            assert 0 <= r["start"] < r["end"] and r["reason"] and isinstance(r["speakers"], list)
        assert not list((tmp_path / "out").glob("*.mp4"))  # nothing rendered
        # a preview's picks go to an editor as they are (no render needed)
        exported = _ctl("export", job["id"], "--format", "otio", "--json", sock=daemon.socket)
        assert exported.returncode == 0, exported.stderr
        picks = [r for r in rows if r["clip"] is not None]
        assert [c["start"] for c in json.loads(exported.stdout)["clips"]] == [r["start"] for r in picks]

        human = _ctl("show", job["id"], sock=daemon.socket)
        assert human.returncode == 0 and "candidates (" in human.stdout and "RANK" in human.stdout
        assert "clips (" not in human.stdout  # a preview has no clips section

        preview = _ctl("submit", str(clip), "--dry-run", sock=daemon.socket)  # the human view
        assert preview.returncode == 0 and "preview (nothing rendered)" in preview.stdout
        assert "REASON / TEXT" in preview.stdout

        # re-cut the best candidate, a second longer at its end: a new job, from the caches
        best = rows[0]
        recut = _ctl("render", job["id"], "--candidate", "1", "--end", str(best["end"] + 1.0), "--wait",
                     "--json", sock=daemon.socket)
        assert recut.returncode == 0, (recut.stderr, daemon.log()[-3000:])
        again = json.loads(recut.stdout)["job"]
        assert again["state"] == "done" and again["id"] != job["id"]
        assert "transcribe" in again["result"]["cached_stages"]
        (made,) = again["result"]["clips"]
        assert again["id"][:8] in Path(made["path"]).name and Path(made["path"]).exists()
        sidecar = json.loads(Path(made["sidecar_path"]).read_text())
        planned = sidecar["planned_range"]
        # the start is the candidate's own (selection placed it on the sound), the end was asked for
        assert planned["start"] == best["start"] and planned["end"] >= best["end"]
        assert sidecar["reason"] == best["reason"] and sidecar["score"] == best["score"]
        for w in sidecar["words"]:  # the asked-for end snapped: no word cut in half there
            assert not w["start"] < planned["end"] < w["end"]
        exact = _ctl("render", again["id"], "--clip", "1", "--start", "1.03", "--end", "4.51", "--exact",
                     "--wait", sock=daemon.socket)
        assert exact.returncode == 0, exact.stderr
        assert "from cache: " in exact.stdout and "transcribe" in exact.stdout
        assert Path(made["path"]).exists()  # the earlier clip is kept
        assert len(list((tmp_path / "out").glob("*.mp4"))) == 2

        with pytest.raises(ControlError, match=r"options\.stop_after: only 'select'"):
            anyio.run(lambda: request(daemon.socket, "submit", path=str(clip),
                                      options={"stop_after": "frame"}))
    finally:
        daemon.stop()


def test_process_dry_run_json(tmp_path: Path) -> None:
    clip = make_talk_clip(tmp_path / "talk.mp4", seconds=11, size="320x180", speech=JFK)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MONTAGE_")}, **daemon_env(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "montaged", "process", str(clip), "--dry-run", "--json"],
                          capture_output=True, text=True, env=env, timeout=200, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    (job,) = json.loads(done.stdout)
    assert job["result"]["dry_run"] is True and job["result"]["candidates"][0]["rank"] == 1
    assert not list(tmp_path.glob("*-01.mp4"))
    human = subprocess.run([sys.executable, "-m", "montaged", "process", str(clip), "--dry-run"],
                           capture_output=True, text=True, env=env, timeout=200, stdin=subprocess.DEVNULL)
    assert human.returncode == 0 and "RANK" in human.stdout, human.stderr[-2000:]
    cut = subprocess.run([sys.executable, "-m", "montaged", "process", str(clip), "--range", "1.03-4.51",
                          "--range", "5-9.5", "--exact", "-o", str(tmp_path / "cuts"), "--json"],
                         capture_output=True, text=True, env=env, timeout=200, stdin=subprocess.DEVNULL)
    assert cut.returncode == 0, cut.stderr[-3000:]
    (job,) = json.loads(cut.stdout)
    assert "transcribe" in job["result"]["cached_stages"]  # the dry run's transcript, not a second one
    sidecars = [json.loads(Path(c["sidecar_path"]).read_text()) for c in job["result"]["clips"]]
    planned = [doc["planned_range"] for doc in sidecars]
    assert planned == [{"start": 1.03, "end": 4.51}, {"start": 5.0, "end": 9.5}]
    refused = subprocess.run([sys.executable, "-m", "montaged", "process", str(clip)],
                             capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "-o DIR is required" in refused.stderr


# ---- re-cuts ------------------------------------------------------------------------------------


def test_requested_ranges_snap_to_word_edges_unless_exact() -> None:
    from montaged.model import Transcript, Word
    from montaged.select.ranges import RangeError, parse_ranges, requested_clips

    words = tuple(Word(t, s, e, 0.9, spk) for t, s, e, spk in [
        ("ask", 1.0, 1.4, "A"), ("not", 1.5, 1.9, "A"), ("what", 2.0, 2.6, "B"), ("your", 2.7, 3.0, "B")])
    tr = Transcript(words, "en", "whisper", "tiny", 4.0)
    (plan,) = requested_clips(tr, parse_ranges([[1.1, 2.5]], 4.0), exact=False)
    assert (plan.start, plan.end) == (1.0, 2.6) and plan.text == "ask not what"
    assert plan.speakers == ("A", "B") and plan.reason == "requested range"
    (plan,) = requested_clips(tr, parse_ranges([[1.1, 2.5]], 4.0), exact=True,
                              origin={"score": 0.7, "reason": "a strong hook"})
    assert (plan.start, plan.end) == (1.1, 2.5) and (plan.score, plan.reason) == (0.7, "a strong hook")
    assert requested_clips(tr, [(1.45, 3.5)], exact=False)[0].end == 3.5  # in a gap: kept
    for bad, why in (([[3, 2]], "before end"), ([[5, 6]], "after the media ends"), ([["a", 1]], "ranges"),
                     ([], "a list of 1 to")):
        with pytest.raises(RangeError, match=why):
            parse_ranges(bad, 4.0)
    with pytest.raises(RangeError, match="inside one word"):
        requested_clips(tr, [(2.1, 2.2)], exact=False)


def test_recut_spec_from_clip_candidate_or_times() -> None:
    from montaged.model import Job, JobSpec, JobState
    from montaged.recut import RecutError, recut_spec

    spec = JobSpec(source="/in/talk.mp4", profile="vertical", options={"max_clips": 2, "speakers": 2},
                   output_dir="/out")
    result = {"clips": [{"index": 0, "start": 1.0, "end": 9.0, "score": 0.8, "reason": "hook"}],
              "candidates": [{"rank": 1, "start": 1.0, "end": 9.0, "score": 0.8, "reason": "hook"},
                             {"rank": 2, "start": 20.0, "end": 31.0, "score": 0.5, "reason": "quote"}]}
    job = Job("j1", spec, JobState.DONE, None, 1.0, 0.0, 0.0, result=result)
    new = recut_spec(job, {"clip": 1, "end": 10.5}, profile="square")
    assert new.profile == "square" and new.output_dir == "/out" and new.source == spec.source
    # the start is the clip's own, kept as selection placed it; only the end asked for may snap
    assert new.options == {"speakers": 2, "ranges": [[1.0, 10.5]], "exact": "start",
                           "recut_of": {"job_id": "j1", "clip": 1, "score": 0.8, "reason": "hook"}}
    new = recut_spec(job, {"candidate": 2, "exact": True, "captions": "none"}, profile=None)
    assert new.options["ranges"] == [[20.0, 31.0]] and new.options["exact"] is True
    assert new.options["captions"] == "none" and new.profile == "vertical"
    assert recut_spec(job, {"start": 3, "end": 4}, profile=None).options["recut_of"] == {"job_id": "j1"}
    assert recut_spec(job, {"start": 3, "end": 4}, profile=None).options["exact"] is False  # both asked for
    assert recut_spec(job, {"clip": 1}, profile=None).options["exact"] is True  # the clip as it was
    for options, why in (({"clip": 3}, "has clips 1 to 1"), ({"candidate": 9}, "candidates 1 to 2"),
                         ({"start": 3}, "name a clip"), ({"clip": 1, "start": 9.5}, "must end after"),
                         ({"clip": 1, "candidate": 1}, "not both"), ({"start": -1, "end": 2}, "0 or more")):
        with pytest.raises(RecutError, match=why):
            recut_spec(job, options, profile=None)


# ---- the TUI: the preview list and the re-cut action --------------------------------------------


def test_recut_dialog_fields_become_render_options() -> None:
    from tui.widgets.recut import recut_options

    assert recut_options("2", "", "", False) == {"exact": False, "clip": 2}
    assert recut_options("#2", "", "31", True) == {"exact": True, "clip": 2, "end": 31.0}
    assert recut_options("r3", "1.5", "", False) == {"exact": False, "candidate": 3, "start": 1.5}
    assert recut_options("", "1", "9.5", False) == {"exact": False, "start": 1.0, "end": 9.5}
    for which, start, end, why in (("x", "", "", "a clip number"), ("r0", "", "", "a rank"),
                                   ("", "1", "", "both start and end"), ("2", "soon", "", "seconds")):
        with pytest.raises(ValueError, match=why):
            recut_options(which, start, end, False)


@pytest.mark.anyio
async def test_tui_lists_candidates_and_sends_a_recut(tmp_path: Path) -> None:
    from test_tui import screen_text, shows, type_text, until

    from tui.app import make_app
    from tui.messages import Connected, JobsLoaded

    rows = [{"rank": 1, "start": 0.5, "end": 10.9, "score": 0.31, "clip": 1, "reason": "brisk, engaged pace",
             "text": "ask not", "speakers": []},
            {"rank": 2, "start": 12.0, "end": 20.0, "score": 0.12, "clip": None, "reason": "a clear claim",
             "text": "what", "speakers": []}]
    job = {"id": "5d1c0ffee0ddf00d5d1c0ffee0ddf00d", "state": "done", "stage": None, "progress": 1.0,
           "created_at": 1.0, "updated_at": 2.0, "attempts": 1, "content_hash": None, "error_class": None,
           "error_message": None, "error_stage": None, "stopped_at": None, "worker": None,
           "spec": {"source": "/in/talk.mp4", "profile": "vertical", "origin": "socket",
                    "options": {"stop_after": "select"}, "output_dir": None, "media": None},
           "result": {"clips": [], "dry_run": True, "candidates": rows, "stage_seconds": {"select": 0.1}}}
    app = make_app(socket=tmp_path / "absent.sock", clock=lambda: 10.0, connect=False)
    async with app.run_test(size=(100, 40)) as pilot:
        app.post_message(Connected(str(tmp_path / "absent.sock"), "0.1.0", "test:1"))
        app.post_message(JobsLoaded([job]))
        await until(pilot, shows("talk.mp4"), "the job in the table")
        await pilot.press("enter")
        text = await until(pilot, shows("preview: candidates (2, best first"), "the preview list")
        assert "r2" in text and "a clear claim" in text and "── clips" not in text
        await pilot.press("e")
        await until(pilot, shows("Re-cut job 5d1c0ffee0dd"), "the re-cut dialog")
        await type_text(pilot, "r9")
        await pilot.press("enter")
        await until(pilot, shows("montaged is unreachable"), "the dialog's error (no daemon here)")
        await pilot.press("escape")
        await pilot.press("escape")
        await pilot.press("v")
        await until(pilot, shows("Preview a talk (candidates only"), "the preview dialog")
        assert "Re-cut" not in screen_text(app)


def test_process_takes_a_file_outside_the_daemons_input_roots(tmp_path: Path) -> None:
    """The operator names the file: `montaged process` works on it wherever it lies (the input
    roots guard the daemon's doors), as `make demo` does with build/demo/sample.mp4."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clip = make_talk_clip(elsewhere / "talk.mp4", seconds=6, size="320x180", speech=JFK)
    roots = tmp_path / "roots"
    roots.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MONTAGE_")}, **daemon_env(tmp_path),
           "MONTAGE_PATHS__INPUT_ROOTS": json.dumps([str(roots)])}
    done = subprocess.run([sys.executable, "-m", "montaged", "process", str(clip), "--dry-run", "--json"],
                          capture_output=True, text=True, env=env, timeout=200, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    (job,) = json.loads(done.stdout)
    assert job["state"] == "done" and job["result"]["candidates"], job
