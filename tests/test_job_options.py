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
    good: dict[str, Any] = {"max_clips": 3, "speakers": 2, "captions": "none", "min_seconds": 15,
                            "max_seconds": 45.5, "stop_after": "select", "ranges": [[1, 2.5]], "exact": True,
                            "recut_of": {"job_id": "x"}}
    assert problems(good) == []
    cases = {
        "reel": (True, "options.reel: not a job option (got True); the options are max_clips"),
        "max_clips": (0, "options.max_clips: must be a whole number of clips from 1 to 100 (got 0)"),
        "speakers": (2.5, "options.speakers: must be a whole number of speakers from 1 to 50 (got 2.5)"),
        "captions": ("", 'options.captions: must be the name of a caption style'),
        "min_seconds": (-1, "options.min_seconds: must be a number of seconds above 0"),
        "stop_after": ("frame", "options.stop_after: only 'select'"),
        "ranges": ([[5, 2]], "options.ranges: each range must be [start, end]"),
        "exact": ("yes", "options.exact: must be true or false (got 'yes')"),
        "recut_of": ([], "options.recut_of: must be a JSON object (got [])"),
    }
    for key, (value, message) in cases.items():
        (found,) = problems({key: value})
        assert found.startswith(message), found
    assert problems({"min_seconds": 50, "max_seconds": 20}) == [
        "options.min_seconds: must not be longer than options.max_seconds (got 50 > 20)"]
    assert len(problems({"max_clips": 0, "x": 1})) == 2  # every problem at once
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
    finally:
        await store.close()


def test_clip_bounds_of_a_job_override_the_config() -> None:
    def ctx(options: dict[str, Any]) -> JobContext:
        job = Job("j", JobSpec(source="/m.mp4", options=options), JobState.RUNNING, "select", 0.5, 0.0, 0.0)
        return JobContext(job, lease=None)  # type: ignore[arg-type]

    cfg = SelectConfig(min_seconds=20, max_seconds=60)
    bounded = _job_bounds(ctx({"min_seconds": 10, "max_seconds": 25}), cfg)
    assert (bounded.min_seconds, bounded.max_seconds) == (10.0, 25.0)
    assert _job_bounds(ctx({}), cfg) == cfg
    with pytest.raises(MediaError, match=r"options\.min_seconds/max_seconds: clips from 20 to 15 s is no"):
        _job_bounds(ctx({"max_seconds": 15}), cfg)
