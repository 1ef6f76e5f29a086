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

        human = _ctl("show", job["id"], sock=daemon.socket)
        assert human.returncode == 0 and "candidates (" in human.stdout and "RANK" in human.stdout
        assert "clips (" not in human.stdout  # a preview has no clips section

        preview = _ctl("submit", str(clip), "--dry-run", sock=daemon.socket)  # the human view
        assert preview.returncode == 0 and "preview (nothing rendered)" in preview.stdout
        assert "REASON / TEXT" in preview.stdout

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
    refused = subprocess.run([sys.executable, "-m", "montaged", "process", str(clip)],
                             capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "-o DIR is required" in refused.stderr
