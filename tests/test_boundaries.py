"""Clean clip boundaries on every real recording: whole sentences, no word cut, little silence.

Every recording in ../shared/media (audio and video) is transcribed by the daemon's own path (the
Whisper pool and window stream, model ``base``, the default), its audio features built as the
transcribe stage builds them, and selection run with the daemon's default bounds and with short
bounds (3-15 s, one clip per 3 s of talk) that cut each recording into several clips. For every
clip and every ranked candidate:

- Sentences: the clip's first word opens a sentence (the talk's first word, or the word before it
  ends one) and its last word ends one and does not trail off (``and``/``but``/``the``…), unless
  it is the talk's last word. A sentence end is terminal punctuation, or, in a transcript without
  punctuation, a pause of ``pause_seconds`` (the rule sentences.py documents).
- Silence: the lead-in (clip start to the first sound) and the tail (last sound to clip end)
  are at most 0.3 s + 32 ms. Sound is what Silero VAD (the ONNX model inside faster-whisper; 32 ms
  is its window) hears as speech, or what selection's level rule (select/edges.sounding) hears:
  silence is where neither hears anything. Silero alone misses soft onsets (the /h/ of "hello",
  80 ms on pyannote_sample) and calls the clatter of a restaurant silence; a level meter alone
  calls a breath speech. The figures for Silero alone are printed too (docs/quality.md).
- No word cut: no cut lies inside a transcript word while either hears sound there.

Transcripts are cached as JSON under ``$MONTAGE_BOUNDARY_CACHE`` when set (reused across runs).
Figures go to docs/quality.md ("Clean boundaries").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import pytest

from montaged.config import SelectConfig, Settings
from montaged.media.audio import iter_audio_chunks
from montaged.model import ClipPlan, Transcript, Word
from montaged.select import AudioFeatureTrack, rank_clips
from montaged.select.edges import sounding
from montaged.select.lexicon import TRAILING_OFF, ends_sentence, norm
from montaged.select.sentences import PUNCTUATED_WORDS_PER_END

MAX_SILENCE = 0.3
VAD_WINDOW = 0.032
SHORT = SelectConfig(min_seconds=3, max_seconds=15, seconds_per_clip=3)
RATE = 16_000


@dataclass
class Recording:
    name: str
    transcript: Transcript
    features: AudioFeatureTrack
    speech: list[tuple[float, float]]
    """Silero VAD speech regions, seconds."""
    sound: list[tuple[float, float]]
    """Speech regions or frames the level rule hears (see module doc), merged, seconds."""


def _recordings(media: Path) -> list[Path]:
    audio = media / "audio"
    found = [*audio.glob("*.wav"), *audio.glob("*.flac"), *(audio / "librivox").glob("*.wav")]
    return sorted(found) + sorted((media / "video").glob("*.mp4"))


async def _transcribe_all(paths: list[Path], cache: Path) -> dict[str, Transcript]:
    from montaged.asr.whisper_pool import WhisperPool
    from montaged.asr.windows import transcribe_stream
    from montaged.media.audio import stream_audio
    from montaged.media.probe import probe_media
    from montaged.model import AudioChunk

    settings = Settings()
    out: dict[str, Transcript] = {}
    todo = []
    for p in paths:
        f = cache / f"{p.name}.json"
        if f.exists():
            out[p.name] = Transcript.from_dict(json.loads(f.read_text()))
        else:
            todo.append(p)
    if not todo:
        return out
    async with WhisperPool(settings.whisper, settings.paths.models()) as pool:
        for p in todo:
            info = probe_media(p, need_video=False)
            send, recv = anyio.create_memory_object_stream[AudioChunk](settings.audio.queue_chunks)
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream_audio, p, settings.audio.chunk_seconds, send)
                with recv:
                    cfg = settings.whisper
                    tr = await transcribe_stream(recv, pool=pool, cfg=cfg, duration=info.duration)
            (cache / f"{p.name}.json").write_text(json.dumps(tr.to_dict()))
            out[p.name] = tr
    return out


def _vad(path: Path) -> list[tuple[float, float]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    pcm = np.concatenate([c.samples for c in iter_audio_chunks(path, 30.0)]).astype(np.float32)
    opts = VadOptions(min_silence_duration_ms=100, speech_pad_ms=0, min_speech_duration_ms=60)
    return [(s["start"] / RATE, s["end"] / RATE) for s in get_speech_timestamps(pcm, opts)]


@pytest.fixture(scope="module")
def recordings(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Recording]:
    env = os.environ.get("MONTAGE_BOUNDARY_CACHE")
    cache = Path(env) if env else tmp_path_factory.mktemp("boundaries")
    cache.mkdir(parents=True, exist_ok=True)
    paths = _recordings(media_dir)
    assert len(paths) >= 10, f"expected the real recordings in {media_dir}"
    transcripts = anyio.run(_transcribe_all, paths, cache)
    out = []
    for p in paths:
        features = AudioFeatureTrack.from_chunks(
            iter_audio_chunks(p, 5.0), hop_seconds=SelectConfig().feature_hop_seconds
        )
        speech = _vad(p)
        out.append(Recording(p.name, transcripts[p.name], features, speech, _union(speech, features)))
    return out


def _union(speech: list[tuple[float, float]], features: AudioFeatureTrack) -> list[tuple[float, float]]:
    half = features.hop / 2
    loud = [
        (float(t) - half, float(t) + half)
        for t, on in zip(features.times, sounding(features), strict=True)
        if on
    ]
    merged: list[tuple[float, float]] = []
    for a, b in sorted([*speech, *loud]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _edges(regions: list[tuple[float, float]], clip: ClipPlan) -> tuple[float, float]:
    """Silence at the clip's start and end given sound ``regions``."""
    heard = [(max(a, clip.start), min(b, clip.end)) for a, b in regions if b > clip.start and a < clip.end]
    if not heard:
        return 0.0, 0.0
    return heard[0][0] - clip.start, clip.end - heard[-1][1]


def _speech_at(speech: list[tuple[float, float]], t: float) -> bool:
    return any(a < t < b for a, b in speech)


def _problems(rec: Recording, clip: ClipPlan, cfg: SelectConfig) -> tuple[list[str], float, float]:
    """What is wrong with ``clip`` (see module doc), and its lead-in and tail of silence."""
    words: list[Word] = sorted(rec.transcript.words, key=lambda w: w.start)
    punctuated = sum(ends_sentence(w.text) for w in words) * PUNCTUATED_WORDS_PER_END >= len(words)
    inside = [i for i, w in enumerate(words) if clip.start <= (w.start + w.end) / 2 < clip.end]
    bad = []
    if not inside:
        return [f"{rec.name} [{clip.start:.2f}, {clip.end:.2f}]: no word"], 0.0, 0.0
    i0, i1 = inside[0], inside[-1]

    def sentence_end(i: int) -> bool:
        if i == len(words) - 1:
            return True
        if norm(words[i].text) in TRAILING_OFF:
            return False
        if punctuated:
            return ends_sentence(words[i].text)
        return words[i + 1].start - words[i].end >= cfg.pause_seconds - 1e-6

    where = f"{rec.name} [{clip.start:.2f}, {clip.end:.2f}] {words[i0].text!r}…{words[i1].text!r}"
    if i0 > 0 and not sentence_end(i0 - 1):
        bad.append(f"{where}: starts mid-sentence (after {words[i0 - 1].text!r})")
    if not sentence_end(i1):
        bad.append(f"{where}: ends mid-sentence or trailing off")
    lead, tail = _edges(rec.sound, clip)
    if lead > MAX_SILENCE + VAD_WINDOW or tail > MAX_SILENCE + VAD_WINDOW:
        bad.append(f"{where}: lead-in {lead:.2f} s, tail {tail:.2f} s of silence")
    for cut in (clip.start, clip.end):
        cut_word = next((w for w in words if w.start < cut < w.end), None)
        if cut_word is not None and _speech_at(rec.sound, cut):
            bad.append(f"{where}: cut at {cut:.2f} s inside {cut_word.text!r}")
    return bad, lead, tail


@pytest.mark.timeout(1200)  # the first run transcribes 14 recordings (minutes on 2 shared cores)
@pytest.mark.parametrize("bounds", ["default", "short"])
def test_every_clip_of_every_recording_has_clean_boundaries(recordings: list[Recording], bounds: str) -> None:
    cfg = SelectConfig() if bounds == "default" else SHORT
    bad: list[str] = []
    leads, tails, vad_over, clips_n, cands_n, unclipped = [], [], 0, 0, 0, []
    for rec in recordings:
        clips, ranked = rank_clips(rec.transcript, rec.features, cfg, max_clips=20)
        clips_n += len(clips)
        cands_n += len(ranked)
        if not clips:
            unclipped.append(rec.name)
        for clip in [*clips, *ranked]:
            problems, lead, tail = _problems(rec, clip, cfg)
            bad += problems
            leads.append(lead)
            tails.append(tail)
            vad_over += max(_edges(rec.speech, clip)) > MAX_SILENCE + VAD_WINDOW
    print(
        f"\n{bounds}: {len(recordings)} recordings, {clips_n} clips, {cands_n} candidates; "
        f"lead-in median {np.median(leads):.2f} max {max(leads):.2f} s, "
        f"tail median {np.median(tails):.2f} max {max(tails):.2f} s; {len(bad)} problems; "
        f"{vad_over} with more than {MAX_SILENCE + VAD_WINDOW:.3f} s by Silero alone"
    )
    # Every recording holds speech, so each gets at least one clip (a short one: all its speech).
    assert not unclipped, unclipped
    assert not bad, "\n".join(bad)
