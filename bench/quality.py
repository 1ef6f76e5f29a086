"""Clip-quality figures on real recordings: framing on speaker changes, DER before/after overlap
detection, fused WER with a better and a worse second engine (docs/quality.md quotes its output).

Three parts, each on the real media in ../shared/media (MANIFEST.md), each runnable alone:

* ``frame``: the speaker-switch scene of tests/framing_switches.py (four real talking heads
  composed on one 1080p canvas, taking turns with their own sound; known face boxes), framed
  by ``build_plan`` with the exact diarization turns, with every turn 0.3 s late or early, and
  with no turns; prints the share of output frames with the active speaker's face inside the
  crop and the per-switch delay distribution (new speaker framed minus the change).
* ``der``: the default diarizer (senko) with ``overlap`` off (one speaker at a time, before)
  and on (after) on every real multi-speaker recording: pyannote_sample.wav (its RTTM),
  stereo_diarization.wav mixed to mono (reference per channel by frame energy), three real
  voices alternating (tests/test_diarize.py), and the two-person interview video (no timing
  truth: speakers and overlap found only). DER at collar 0 with overlap counted.
* ``wer``: Whisper tiny.en fused (default FuseConfig) with the reference transcript served as a
  Deepgram transcript at 0.99 and 0.7 (a far better engine) and with the Whisper-base fixture
  (tests/data/deepgram, a worse engine), per recording with a reference transcript.

    .venv/bin/python bench/quality.py [--only frame,der,wer] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from media import MEDIA, for_script  # noqa: E402

from montaged.diarize.der import diarization_error  # noqa: E402
from montaged.diarize.overlap import overlaps  # noqa: E402
from montaged.diarize.rttm import read_rttm  # noqa: E402
from montaged.model import SpeakerTurn  # noqa: E402


def frame_figures() -> None:
    from framing_metrics import cache_dir, per_frame
    from framing_switches import TURNS, build, score

    from montaged.config import FrameConfig, ProfileConfig
    from montaged.frame.analyse import analyse_clip
    from montaged.frame.plan import build_plan
    from montaged.media.probe import probe_media

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scene = build(MEDIA, cache_dir(Path(tmp)))  # $MONTAGE_FRAMING_CACHE keeps it between runs
        an = analyse_clip(scene.video, probe_media(scene.video), 0.0, scene.duration, FrameConfig())
        print(
            f"speaker-switch scene: {scene.duration:.1f} s, {len(scene.events)} changes "
            f"(built and analysed in {time.perf_counter() - t0:.0f} s)"
        )
        profile = ProfileConfig.model_validate({"aspect": "9:16", "width": 1080, "height": 1920})
        cfg = FrameConfig.model_validate({"split_screen": False})
        print(f"{'turns':18s} inside  frames out (max)  delay s: min / median / max")
        for label, shift in (("exact", 0.0), ("0.3 s late", 0.3), ("0.3 s early", -0.3), ("none", None)):
            turns = (
                [] if shift is None else [SpeakerTurn(max(0.0, a + shift), b + shift, w) for w, a, b in TURNS]
            )
            plan = build_plan(an, 0, profile, cfg, turns)
            boxes = per_frame(plan.path, [i / scene.fps for i in range(len(scene.frames))], 1920, 1080)
            s = score(scene, boxes)
            d = np.array(s.delays)
            print(
                f"{label:18s} {100 * s.inside:5.1f}%  {max(s.out_frames):16d}  "
                f"{d.min():+.2f} / {np.median(d):+.2f} / {d.max():+.2f}"
            )
            if label == "exact":
                print("\n".join("    " + row for row in s.rows(scene.events)))


def _decode(path: Path) -> np.ndarray:
    from montaged.media.audio import iter_audio_chunks

    return np.concatenate([c.samples for c in iter_audio_chunks(path, 30.0)])


def _recordings() -> list[tuple[str, np.ndarray, list[SpeakerTurn] | None, int | None]]:
    """Name, samples, reference turns (None: no timing truth), fixed speaker count (None: estimated)."""
    from test_diarize import stereo_reference, three_voices

    audio = MEDIA / "audio"
    stereo, stereo_ref = stereo_reference(audio / "stereo_diarization.wav")
    mix, mix_ref = three_voices(MEDIA)
    call = _decode(audio / "pyannote_sample.wav")
    interview = _decode(MEDIA / "video" / "visualvoice_interview_2spk.mp4")
    return [
        ("pyannote_sample (phone call)", call, read_rttm(audio / "pyannote_sample.rttm"), None),
        ("stereo_diarization (mono mix)", stereo, stereo_ref, None),
        ("  the same, told 2 speakers", stereo, stereo_ref, 2),
        ("three real voices (45 s)", mix, mix_ref, None),
        ("interview video (no truth)", interview, None, None),
        ("  the same, told 2 speakers", interview, None, 2),
    ]


def der_figures(threads: int) -> None:
    from montaged.diarize.senko_backend import SenkoDiarizer

    before = SenkoDiarizer(device="cpu", threads=threads, overlap=False)
    after = SenkoDiarizer(device="cpu", threads=threads, overlap=True)
    print(f"{'recording':30s} {'overlap':8s} speakers  overlap s  DER    missed  FA     confusion  seconds")
    for name, samples, ref, speakers in _recordings():
        for label, d in (("off", before), ("on", after)):
            t0 = time.perf_counter()
            hyp = d.diarize(samples, speakers=speakers)
            took = time.perf_counter() - t0
            found = sum(o.end - o.start for o in overlaps(hyp))
            row = f"{name:30s} {label:8s} {len({t.speaker for t in hyp}):8d}  {found:9.2f}"
            if ref is None:
                print(f"{row}  {'-':6s} {'-':7s} {'-':6s} {'-':10s} {took:.1f}")
                continue
            r = diarization_error(ref, hyp)
            print(
                f"{row}  {r.der:6.1%} {r.rate('missed'):7.1%} {r.rate('false_alarm'):6.1%} "
                f"{r.rate('confusion'):10.1%} {took:.1f}"
            )


def wer_figures() -> None:
    import test_rover as tr

    from montaged.asr.rover import fuse
    from montaged.asr.wer import wer
    from montaged.config import FuseConfig

    engines = tr.engines.__wrapped__(MEDIA)  # the fixture's function: Whisper tiny.en on each recording
    print(f"{'recording':16s} words  tiny.en  | better@0.99 fused | better@0.7 fused | worse (base fx) fused")
    sums = np.zeros(7)
    total = 0
    for name, (whisper, worse, ref_engine, ref) in engines.items():
        n = len(ref.split())
        rates = [wer(ref, whisper.text)]
        for conf in (0.99, 0.7):
            better = tr._with_confidence(ref_engine, conf)
            rates += [wer(ref, better.text), wer(ref, fuse([better, whisper], FuseConfig()).text)]
        rates += [wer(ref, worse.text), wer(ref, fuse([worse, whisper], FuseConfig()).text)]
        sums += n * np.array(rates)
        total += n
        print(_wer_row(name, n, rates))
    print(_wer_row("pooled", total, list(sums / total)))


def _wer_row(name: str, n: int, r: list[float]) -> str:
    return (
        f"{name:16s} {n:5d}  {r[0]:7.3f}  | {r[1]:.3f} {r[2]:11.3f} | {r[3]:.3f} {r[4]:10.3f} | "
        f"{r[5]:.3f} {r[6]:19.3f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--only", default="frame,der,wer", help="comma-separated parts: frame, der, wer")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for_script()  # without the recordings: one line saying so, and exit 0 (1 with CI=true)
    parts: dict[str, Callable[[], None]] = {
        "frame": frame_figures,
        "der": lambda: der_figures(args.threads),
        "wer": wer_figures,
    }
    wanted = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in parts]
    if unknown:
        print(f"--only: unknown part(s) {', '.join(unknown)}; use frame, der, wer", file=sys.stderr)
        return 2
    for part in wanted:
        print(f"\n== {part} ==")
        parts[part]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
