"""``montaged diarize FILE`` as a user runs it: a real process, real media, RTTM/JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from montaged.diarize.rttm import parse_rttm

ROOT = Path(__file__).resolve().parents[1]


def montaged_diarize(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # montaged.cli.diarize runs the same parser `montaged diarize` registers.
    return subprocess.run(
        [sys.executable, "-m", "montaged.cli.diarize", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=240,
    )


def test_video_file_to_rttm_and_json(media_dir: Path, tmp_path: Path) -> None:
    video = media_dir / "video" / "visualvoice_interview_2spk.mp4"  # 17.5 s, AAC in MP4
    done = montaged_diarize(str(video), "--speakers", "2")
    assert done.returncode == 0, done.stderr
    turns = parse_rttm(done.stdout)
    assert {t.speaker for t in turns} == {"S1", "S2"}
    assert all(0 <= t.start < t.end <= 17.6 for t in turns)
    assert all(line.split()[1] == "visualvoice_interview_2spk" for line in done.stdout.splitlines())
    assert "RTF" in done.stderr and "backend senko" in done.stderr  # figures on stderr, turns on stdout

    out = tmp_path / "turns.json"
    done = montaged_diarize(str(media_dir / "audio" / "pyannote_sample.wav"), "-f", "json", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    doc = json.loads(out.read_text())
    assert doc["uri"] == "pyannote_sample" and doc["speakers"] == ["S1", "S2"]
    assert doc["turns"][0]["start"] > 6.0  # media time: the first 6.7 s are silent


def test_errors_name_the_problem(tmp_path: Path) -> None:
    missing = montaged_diarize(str(tmp_path / "nope.mp4"))
    assert missing.returncode == 1 and "nope.mp4: no such file" in missing.stderr
    text = tmp_path / "notes.txt"
    text.write_text("not media")
    bad = montaged_diarize(str(text))
    assert bad.returncode == 1 and "notes.txt" in bad.stderr and "Traceback" not in bad.stderr
    zero = montaged_diarize(str(text), "--speakers", "0")
    assert zero.returncode == 1 and "--speakers" in zero.stderr
