"""Job options are one schema, checked at submit for every door (they all pass the Submitter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from montaged.config import SelectConfig
from montaged.errors import MediaError
from montaged.events import EventBus
from montaged.intake import SubmitError, Submitter
from montaged.model import Job, JobSpec, JobState
from montaged.options import SCHEMA, problems
from montaged.stages.context import JobContext
from montaged.stages.select import _job_bounds
from montaged.store import open_store


def test_known_options_pass_and_each_problem_names_key_and_value() -> None:
    good: dict[str, Any] = {"language": "pt-BR", "max_clips": 3, "speakers": 2, "captions": "none",
                            "min_seconds": 15, "max_seconds": 45.5, "stop_after": "select",
                            "ranges": [[1, 2.5]], "exact": True, "recut_of": {"job_id": "x"},
                            "profiles": ["vertical", "landscape"],
                            "reel": {"order": "score", "transition": "dip", "seconds": 0.8}}
    assert problems(good) == []
    assert problems({"reel": True}) == problems({"reel": False}) == problems({"reel": {}}) == []
    cases = {
        "reels": (True, "options.reels: not a job option (got True); the options are language, max_clips"),
        "profiles": (["vertical", "vertical"], "options.profiles: must be a list of 1 to 8 different profile"
                     " names (keys of [profiles]) (got ['vertical', 'vertical'])"),
        "reel": ({"transition": "wipe"}, "options.reel: transition must be 'crossfade' or 'dip'"
                 " (got {'transition': 'wipe'})"),
        "language": ("klingon", "options.language: must be a language code Whisper knows"),
        "max_clips": (0, "options.max_clips: must be a whole number of clips from 1 to 100 (got 0)"),
        "speakers": (2.5, "options.speakers: must be a whole number of speakers from 1 to 50 (got 2.5)"),
        "captions": ("", 'options.captions: must be the name of a caption style'),
        "min_seconds": (-1, "options.min_seconds: must be a number of seconds above 0"),
        "stop_after": ("frame", "options.stop_after: only 'select'"),
        "ranges": ([[5, 2]], "options.ranges: each range must be [start, end]"),
        "exact": ("yes", "options.exact: must be true, false, \"start\" or \"end\" (got 'yes')"),
        "recut_of": ([], "options.recut_of: must be a JSON object (got [])"),
    }
    for key, (value, message) in cases.items():
        (found,) = problems({key: value})
        assert found.startswith(message), found
    assert problems({"min_seconds": 50, "max_seconds": 20}) == [
        "options.min_seconds: must not be longer than options.max_seconds (got 50 > 20)"]
    assert len(problems({"max_clips": 0, "x": 1})) == 2  # every problem at once
    for bad, message in (({"seconds": 0}, "seconds (of each transition) must be above 0"),
                         ({"seconds": 6}, "seconds (of each transition) must be above 0 and at most 5"),
                         ({"order": "random"}, "order must be 'time' or 'score'"),
                         ({"speed": 2}, "'speed' is not a reel setting"),
                         ("dip", "must be true, false or an object")):
        (found,) = problems({"reel": bad})
        assert found.startswith(f"options.reel: {message}") and found.endswith(f"(got {bad!r})"), found
    assert problems({"profiles": []})[0].startswith("options.profiles: must be a list of 1 to 8")
    assert problems({"profiles": "vertical"})[0].startswith("options.profiles: must be a list")
    assert set(SCHEMA) >= {"max_clips", "speakers", "captions", "min_seconds", "max_seconds"}


@pytest.mark.anyio
async def test_the_submitter_refuses_bad_options_for_every_door(tmp_path: Path, sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    await store.migrate()
    media = tmp_path / "talk.mp4"
    media.write_bytes(b"x" * 10)
    sub = Submitter(store, EventBus(), input_roots=[tmp_path], profiles=["vertical"])
    try:
        for origin in ("socket", "hotfolder", "redis", "cli"):
            with pytest.raises(SubmitError, match=r"options\.languages: not a job option \(got 'de'\)"):
                sub.check(JobSpec(source=str(media), origin=origin, options={"languages": "de"}))
        checked = sub.check(JobSpec(source=str(media), options={"max_seconds": 30}))
        assert checked.options == {"max_seconds": 30}
        # whether each named profile is configured is known where the config is: the Submitter
        for origin in ("socket", "hotfolder", "redis", "cli"):
            with pytest.raises(SubmitError, match=r"options\.profiles: 'poster' not configured; use some of:"
                               r" vertical \(got \['vertical', 'poster'\]\)"):
                sub.check(JobSpec(source=str(media), origin=origin,
                                  options={"profiles": ["vertical", "poster"]}))
        both = sub.check(JobSpec(source=str(media), options={"profiles": ["vertical"], "reel": True}))
        assert both.options == {"profiles": ["vertical"], "reel": True}
    finally:
        await store.close()


def ctx(options: dict[str, Any]) -> JobContext:
    """A running job's context with ``options`` (no lease: nothing here writes to a store)."""
    job = Job("j", JobSpec(source="/m.mp4", options=options), JobState.RUNNING, "select", 0.5, 0.0, 0.0)
    return JobContext(job, lease=None)  # type: ignore[arg-type]


def test_clip_bounds_of_a_job_override_the_config() -> None:
    cfg = SelectConfig(min_seconds=20, max_seconds=60)
    bounded = _job_bounds(ctx({"min_seconds": 10, "max_seconds": 25}), cfg)
    assert (bounded.min_seconds, bounded.max_seconds) == (10.0, 25.0)
    assert _job_bounds(ctx({}), cfg) == cfg
    with pytest.raises(MediaError, match=r"options\.min_seconds/max_seconds: clips from 20 to 15 s is no"):
        _job_bounds(ctx({"max_seconds": 15}), cfg)


def test_a_jobs_language_reaches_both_ears_and_the_stage_key() -> None:
    from montaged.config import load
    from montaged.stages.transcribe import job_settings

    settings = load(None, env={})
    assert job_settings(ctx({}), settings) is settings
    own = job_settings(ctx({"language": "pt-BR"}), settings)
    assert (own.whisper.language, own.deepgram.language) == ("pt", "pt-BR")
    assert settings.whisper.language == "en"  # the daemon's own settings are untouched


def test_process_with_a_language_hears_again_in_that_language(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from conftest import make_talk_clip
    from daemon_harness import JFK, daemon_env

    clip = make_talk_clip(tmp_path / "talk.mp4", seconds=11, size="320x180", speech=JFK)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MONTAGE_")}, **daemon_env(tmp_path)}

    def preview(*extra: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "montaged", "process", str(clip), "--dry-run", "--json",
                               *extra], capture_output=True, text=True, env=env, timeout=200,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-3000:]
        (job,) = json.loads(done.stdout)
        return dict(job["result"])

    first = preview()
    assert first["transcript"]["language"] == "en" and "transcribe" not in first["cached_stages"]
    assert "transcribe" in preview("--language", "en")["cached_stages"]  # the same as the default
    german = preview("--language", "de")  # the test model is English-only: the language is what differs
    assert german["transcript"]["language"] == "de" and "transcribe" not in german["cached_stages"]
    refused = subprocess.run([sys.executable, "-m", "montaged", "process", str(clip), "--dry-run",
                              "--language", "xx"], capture_output=True, text=True, env=env, timeout=60,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 1 and "options.language: must be a language code" in refused.stderr


def test_montagectl_submit_turns_profiles_and_reel_into_options() -> None:
    import argparse

    from montaged.ctl.parser import build_parser, render_options

    parse = build_parser().parse_args
    args = parse(["submit", "a.mp4", "--profile", "vertical", "-p", "landscape", "--reel",
                  "transition=dip,seconds=0.8,order=score"])
    reel = {"transition": "dip", "seconds": 0.8, "order": "score"}
    assert render_options(args) == ("vertical", {"profiles": ["vertical", "landscape"], "reel": reel})
    assert render_options(parse(["submit", "a.mp4", "-p", "square", "--reel"])) == ("square", {"reel": True})
    assert render_options(parse(["submit", "a.mp4", "--no-reel"])) == (None, {"reel": False})
    assert render_options(parse(["submit", "a.mp4"])) == (None, {})
    with pytest.raises(SystemExit):
        parse(["submit", "a.mp4", "--reel", "wipe"])
    from montaged.ctl.parser import reel_value
    with pytest.raises(argparse.ArgumentTypeError, match="seconds must be a number"):
        reel_value("seconds=long")
    # what the parser lets through, the submit checks like any other door
    assert problems({"reel": reel_value("transition=wipe")})[0].startswith("options.reel: transition must be")


def test_a_recut_of_a_reel_job_renders_one_clip_with_the_profile_asked_for() -> None:
    from montaged.recut import RecutError, recut_spec

    spec = JobSpec(source="/in/talk.mp4", profile="vertical",
                   options={"profiles": ["vertical", "story"], "reel": {"transition": "dip"}, "speakers": 2})
    reel = {"index": -1, "start": 0.0, "end": 12.5, "profile": "story",
            "reel": {"order": "time", "transition": "dip", "seconds": 0.5, "duration": 12.5,
                     "clips": [{"index": 0, "start": 1.0, "end": 7.0, "place_start": 0.0, "place_end": 6.0},
                               {"index": 1, "start": 20.0, "end": 27.0, "place_start": 5.5,
                                "place_end": 12.5}]}}
    job = Job("j1", spec, JobState.DONE, None, 1.0, 0.0, 0.0, result={"clips": [reel]})
    new = recut_spec(job, {"clip": 2}, profile="square")
    assert new.profile == "square" and new.options["ranges"] == [[20.0, 27.0]]
    assert "reel" not in new.options and "profiles" not in new.options  # one clip, the profile asked for
    kept = recut_spec(job, {"clip": 1}, profile=None)
    assert kept.options["profiles"] == ["vertical", "story"] and "reel" not in kept.options
    with pytest.raises(RecutError, match="has clips 1 to 2"):
        recut_spec(job, {"clip": 0}, profile=None)  # the reel itself is no clip


def test_the_socket_refuses_bad_profiles_and_reels_and_takes_good_ones(tmp_path: Path) -> None:
    """montagectl submit against a real daemon: the daemon's answer names the option and the value."""
    import json
    import os
    import subprocess
    import sys

    import anyio
    from conftest import make_talk_clip
    from daemon_harness import DaemonProcess

    clip = make_talk_clip(tmp_path / "talk.mp4", seconds=3, size="320x180")
    daemon = DaemonProcess(tmp_path).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONTAGE_")}
    env["MONTAGE_CONTROL__SOCKET_PATH"] = str(daemon.socket)

    def submit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "montaged.ctl", "submit", str(clip), "--json", *args],
                              capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)

    try:
        anyio.run(daemon.wait_ready, 90.0)
        bad = submit("--reel", "transition=wipe,seconds=9")
        assert bad.returncode == 1
        assert ("options.reel: transition must be 'crossfade' or 'dip'; seconds (of each transition) must be"
                " above 0 and at most 5 (got {'transition': 'wipe', 'seconds': 9.0})") in bad.stderr
        unknown = submit("-p", "vertical", "-p", "poster")
        assert unknown.returncode == 1 and "options.profiles: 'poster' not configured" in unknown.stderr
        good = submit("-p", "vertical", "-p", "square", "--reel", "order=score")
        assert good.returncode == 0, good.stderr
        (job,) = json.loads(good.stdout)["jobs"]
        assert job["spec"]["profile"] == "vertical"
        assert job["spec"]["options"] == {"profiles": ["vertical", "square"], "reel": {"order": "score"}}
    finally:
        daemon.stop()


def test_a_recut_snaps_only_the_edges_it_was_asked_to_move() -> None:
    """Edges inside a word move to its nearer edge; an edge the re-cut carried over from a chosen
    clip ("start"/"end") stays where selection put it, True keeps both."""
    from montaged.model import Transcript, Word
    from montaged.select.ranges import requested_clips

    words = tuple(Word(t, s, e, 0.9) for t, s, e in [("And", 0.0, 0.6), ("so", 0.7, 1.0), ("on", 1.1, 1.5)])
    transcript = Transcript(words, "en", "whisper", "tiny.en", 2.0)

    def edges(exact: bool | str) -> tuple[float, float]:
        (plan,) = requested_clips(transcript, [(0.2, 1.2)], exact=exact)
        return plan.start, plan.end

    assert edges(False) == (0.0, 1.1)
    assert edges("start") == (0.2, 1.1)
    assert edges("end") == (0.0, 1.2)
    assert edges(True) == (0.2, 1.2)


def test_a_clip_carries_everyone_heard_in_it() -> None:
    """Overlapped speech: a word's other speakers join the clip's speakers, after its main ones."""
    from montaged.model import Transcript, Word
    from montaged.select.ranges import requested_clips

    words = (Word("yes", 0.0, 0.4, 0.9, "S1", speakers=("S1",)),
             Word("no", 0.5, 0.9, 0.9, "S1", speakers=("S1", "S2")),
             Word("so", 1.0, 1.3, 0.9, "S3"))  # no overlap information: its own speaker
    (plan,) = requested_clips(Transcript(words, "en", "whisper", "tiny.en", 2.0), [(0.0, 1.3)], exact=True)
    assert plan.speakers == ("S1", "S2", "S3")
