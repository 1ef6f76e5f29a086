"""Whisper models on real and synthetic speech: real-time factor and word error rate.

    .venv/bin/python bench/asr_models.py [--models tiny.en base] [--beams 1 5] [--workers N --threads N]

Runs Montage's own path (VAD windows → WhisperPool → merged transcript), so the figures are
what the daemon gets. Audio:
  * real: JFK (11 s), three LibriVox readings (15 s), a two-person phone call (30 s), each
    transcribed on its own and scored against its reference (../shared/media/audio);
  * espeak: about four minutes of varied text, fifteen paragraphs in a dozen voices and speeds,
    synthesised with espeak-ng and joined with pauses into one stream (never looped: looped
    audio makes Whisper fall back to higher temperatures and skews the timing).
RTF = wall time / audio duration (lower is faster); model load time is reported apart.
Needs espeak-ng and sox (``apt-get install espeak-ng sox``). Timings on a shared machine vary.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import structlog

from montaged.asr.wer import wer_details
from montaged.asr.whisper_pool import WhisperPool
from montaged.asr.windows import transcribe_stream
from montaged.config import WhisperConfig, load
from montaged.media.audio import iter_audio_chunks
from montaged.model import AudioChunk

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # media.py finds the recordings
from media import MEDIA as RECORDINGS
from media import for_script

SR = AudioChunk.SAMPLE_RATE
MEDIA = RECORDINGS / "audio"

# (voice, words per minute, text). Written for this benchmark; varied topics, names, numbers.
PARAGRAPHS = [
    ("en-us", 150, "Good morning and welcome to the second day of the conference. Before we begin, "
     "a few practical notes. Lunch will be served in the main hall at half past twelve, and the "
     "workshop on video editing has moved to room four. Please silence your phones."),
    ("en-gb", 160, "The old lighthouse stood on the northern cliff for nearly two hundred years. "
     "Every evening the keeper climbed one hundred and twelve steps to light the lamp, and every "
     "morning he wrote the weather in a leather notebook that is now kept in the town museum."),
    ("en-us+f3", 145, "To make the bread, mix the flour with warm water, a spoonful of honey and a "
     "pinch of salt. Knead the dough for ten minutes until it feels smooth, then leave it to rise "
     "in a warm place. Bake it in a hot oven for about forty minutes."),
    ("en-gb-x-rp", 155, "Our results show that smaller models are surprisingly accurate on clear "
     "speech, but they struggle when two people talk at the same time. We therefore recommend "
     "testing every system on recordings that look like the ones you will actually process."),
    ("en-us+m3", 170, "In the final minute of the match, the visiting team scored twice. The crowd "
     "fell silent, then erupted as the referee blew the whistle. It was the first time in eleven "
     "years that the cup had left the city, and the players celebrated long into the night."),
    ("en-gb-scotland", 150, "If you are travelling by train, change at the central station and take "
     "the coastal line towards the harbour. The journey takes about an hour, and the views across "
     "the water are beautiful on a clear day, especially in late spring."),
    ("en-us+f2", 165, "Researchers measured the temperature of the lake every week for three years. "
     "They found that the surface warmed faster than the deep water, which changed where the fish "
     "could find food. The team plans to publish the complete data set next year."),
    ("en-029", 150, "My grandmother used to tell us stories about the market when she was a child. "
     "Farmers came from the hills with baskets of mangoes and bananas, and the smell of fresh "
     "coffee filled the narrow streets from early morning until the afternoon rain."),
    ("en-us", 175, "Let me show you how the highlight tool works. First it listens to the whole "
     "recording and writes down every word. Then it looks for moments where the speaker makes a "
     "clear point, and finally it cuts those moments into short vertical clips."),
    ("en-gb-x-gbcwmd", 155, "The museum reopened on Saturday after a long renovation. Visitors can now "
     "walk through a reconstructed workshop, listen to recordings of the last weavers in the valley, "
     "and try the old looms themselves under the guidance of volunteers."),
    ("en-us+f4", 160, "When you write a report, start with the conclusion. Busy readers want to know "
     "what you found and what you recommend before they read how you found it. Keep the details "
     "for the appendix, and use plain words instead of jargon wherever you can."),
    ("en-gb", 150, "The storm arrived earlier than expected. By six in the evening the wind had "
     "brought down trees across the main road, and the ferry to the islands was cancelled. "
     "Engineers worked through the night to restore power to about four thousand homes."),
    ("en-us+m7", 165, "Our podcast today is about sleep. Most adults need between seven and nine "
     "hours a night, yet surveys suggest that a third of us get far less. Our guest, a doctor "
     "who studies memory, explains why a short afternoon nap can actually help you learn."),
    ("en-gb-x-rp", 145, "Ladies and gentlemen, the next speaker needs no introduction. She founded "
     "her first company at twenty three, sold it five years later, and has spent the last decade "
     "teaching young engineers how to build products that people genuinely want to use."),
    ("en-gb-x-gbclan", 140, "Thank you all for listening today. If you have any questions, I will "
     "be at the back of the room during the break, and the slides will be available on the "
     "website this evening. Enjoy the rest of the conference, and safe travels home."),
]  # fmt: skip


@dataclass
class Row:
    model: str
    beam: int
    dataset: str
    seconds: float
    wall: float
    errors: int
    ref_words: int
    load: float

    @property
    def rtf(self) -> float:
        return self.wall / self.seconds

    @property
    def wer(self) -> float:
        return self.errors / max(1, self.ref_words)


def decode(path: Path) -> np.ndarray:
    """16 kHz mono float32 through the audio stage's own decoder."""
    return np.concatenate([c.samples for c in iter_audio_chunks(path, 30.0)])


def real_set() -> list[tuple[str, np.ndarray, str]]:
    items = [(MEDIA / "jfk.flac", (MEDIA / "jfk.txt").read_text())]
    items += [(p, p.with_suffix(".txt").read_text()) for p in sorted((MEDIA / "librivox").glob("*.wav"))]
    stm = (MEDIA / "pyannote_sample.stm").read_text().splitlines()
    items.append((MEDIA / "pyannote_sample.wav", " ".join(line.split(None, 5)[5] for line in stm)))
    return [(p.name, decode(p), ref) for p, ref in items]


def espeak_set(workdir: Path) -> tuple[np.ndarray, str]:
    parts, rng = [], np.random.default_rng(3)
    for i, (voice, wpm, text) in enumerate(PARAGRAPHS):
        raw, wav = workdir / f"p{i}.raw.wav", workdir / f"p{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
        subprocess.run(["sox", "-v", "0.9", str(raw), "-r", str(SR), "-c", "1", str(wav)], check=True)
        parts += [decode(wav), np.zeros(int(rng.uniform(0.6, 1.5) * SR), np.float32)]
    return np.concatenate(parts), " ".join(t for _, _, t in PARAGRAPHS)


async def chunks(audio: np.ndarray, seconds: float = 5.0) -> AsyncIterator[AudioChunk]:
    n = int(seconds * SR)
    for i in range(0, len(audio), n):
        yield AudioChunk(i / SR, audio[i : i + n])


async def bench_one(
    model: str, beam: int, cfg: WhisperConfig, cache: Path, sets: dict[str, list[tuple[np.ndarray, str]]]
) -> list[Row]:
    cfg = cfg.model_copy(update={"model": model, "beam_size": beam})
    started = time.perf_counter()
    async with WhisperPool(cfg, cache) as pool:
        load_s = time.perf_counter() - started
        rows = []
        for name, items in sets.items():
            wall = errors = ref_words = 0.0
            seconds = 0.0
            for audio, ref in items:
                t0 = time.perf_counter()
                t = await transcribe_stream(chunks(audio), pool=pool, cfg=cfg, duration=len(audio) / SR)
                wall += time.perf_counter() - t0
                seconds += len(audio) / SR
                d = wer_details(ref, t.text)
                errors += d.errors
                ref_words += d.reference_words
            rows.append(Row(model, beam, name, seconds, wall, int(errors), int(ref_words), load_s))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    ap.add_argument("--beams", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--workers", type=int, default=0, help="worker processes (0: sized to this machine)")
    ap.add_argument("--threads", type=int, default=0, help="threads per worker (0: automatic)")
    args = ap.parse_args()
    for_script("audio/jfk.flac", "audio/pyannote_sample.stm")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    settings = load()
    cfg = settings.whisper.model_copy(update={"workers": args.workers, "cpu_threads": args.threads})
    with tempfile.TemporaryDirectory(prefix="asr-bench-") as tmp:
        synth, synth_ref = espeak_set(Path(tmp))
    real = real_set()
    sets = {
        f"real ({sum(len(a) for _, a, _ in real) / SR:.0f} s, {len(real)} files)": [
            (a, r) for _, a, r in real
        ],
        f"espeak ({len(synth) / SR:.0f} s, 15 voices)": [(synth, synth_ref)],
    }
    rows: list[Row] = []
    for model in args.models:
        for beam in args.beams:
            rows += anyio.run(bench_one, model, beam, cfg, settings.paths.models(), sets)
            for r in rows[-len(sets) :]:
                print(f"  {r.model} beam {r.beam} {r.dataset}: RTF {r.rtf:.3f} WER {r.wer:.3f}", flush=True)

    from montaged.asr.whisper_worker import resolve_compute_type, resolve_device
    from montaged.resources_plan import usable_cores, whisper_size

    device = resolve_device(cfg.device)
    workers, threads = whisper_size(cfg, device, usable_cores())
    compute = resolve_compute_type(cfg.compute_type, device)
    print(f"\ndevice {device}, {compute}, {workers} worker(s) × {threads} thread(s)")
    print("\n| model | beam | audio | RTF | WER | errors / words | pool start s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.model} | {r.beam} | {r.dataset} | {r.rtf:.3f} | {r.wer:.3f} | {r.errors}/{r.ref_words}"
            f" | {r.load:.1f} |"
        )


if __name__ == "__main__":  # required: worker processes import this module when they start
    main()
