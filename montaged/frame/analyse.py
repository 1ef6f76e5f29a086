"""Look at one clip: decode only its range, sample frames, find faces, motion, cuts and speech.

Cost grows with the output, not the input: we seek to the keyframe before the clip, decode to its
end and convert only the sampled frames (``sample_fps``) to a small BGR image. With
``skip_nonref`` the decoder drops frames nothing else refers to (most B-frames): about a third
less decoding (machine-facts §4 bench: 83 → 58 ms per second of 1080p30), at the price of samples
landing on the nearest reference frame (their true times are used everywhere).

A scene cut found between two samples is refined to the exact frame in a second, full decode of
that short span only, so the crop cuts on the same frame as the picture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.error
import cv2
import numpy as np

from montaged.config import FrameConfig
from montaged.errors import MediaError
from montaged.frame import scenes
from montaged.frame.detect import make_detector
from montaged.frame.embed import embedder
from montaged.frame.motion import MotionAnalyser, MotionSample
from montaged.frame.speaker import mouth_activity, voice_activity
from montaged.frame.tracks import FaceObs, Track, face_hist, link
from montaged.model import MediaInfo

AUDIO_RATE = 16_000
CHIP_EVERY_SECONDS = 1.0
"""Faces are cut out for re-identification (embed.py) on one sample a second: a face's look
changes slowly, and each chip costs a full-resolution frame conversion and a landmark fit."""


@dataclass
class ClipAnalysis:
    """What the frame stage learned about one clip (clip times are seconds from its start)."""

    start: float
    duration: float
    frame_w: int
    frame_h: int
    """Source size in display orientation."""
    fps: float
    times: np.ndarray
    tracks: list[Track]
    motion: list[MotionSample]
    shot_starts: list[int]
    """Samples that begin a new shot."""
    cut_times: list[float]
    """Clip time of the first frame of each new shot."""
    speech: list[tuple[float, float]]
    detector: str
    max_gap: int
    """Samples a face may go undetected and still count as present."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per part: decode, detect, mouth, chip, motion, scenes, audio, refine, track."""


def _video_stream(container: av.container.InputContainer, source: Path) -> av.VideoStream:
    video = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not video:
        raise MediaError(f"{source}: has no video stream to frame; set frame.enabled = false or add video")
    return video[0]


def _origin(container: av.container.InputContainer) -> float:
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _analysis_size(dw: int, dh: int, longest: int) -> tuple[int, int, float]:
    scale = min(1.0, longest / max(dw, dh))
    return max(2, round(dw * scale) // 2 * 2), max(2, round(dh * scale) // 2 * 2), scale


def _refine_cut(source: Path, start: float, t0: float, t1: float) -> float:
    """Clip time of the frame in ``(t0, t1]`` that differs most from the frame before it."""
    best_t, best_d, prev = t1, -1.0, None
    with av.open(str(source), metadata_errors="ignore") as c:
        vs = _video_stream(c, source)
        vs.codec_context.thread_type = "AUTO"
        origin = _origin(c)
        assert vs.time_base is not None
        c.seek(int((start + t0 + origin) / vs.time_base), stream=vs, backward=True)
        for frame in c.decode(vs):
            if frame.time is None:
                continue
            t = frame.time - origin - start
            if t < t0 - 1e-6:
                continue
            sig = scenes.signature(frame.reformat(width=160, height=90, format="bgr24").to_ndarray())
            if prev is not None:
                d = scenes.distance(prev, sig)
                if d > best_d:
                    best_t, best_d = t, d
            prev = sig
            if t >= t1 - 1e-6:
                break
    return best_t


def _clip_audio(source: Path, start: float, end: float) -> np.ndarray:
    """The clip's sound as 16 kHz mono float32 (empty when the file has no audio)."""
    with av.open(str(source), metadata_errors="ignore") as c:
        if not c.streams.audio:
            return np.zeros(0, dtype=np.float32)
        a = c.streams.audio[0]
        origin = _origin(c)
        c.seek(int((start + origin) * av.time_base), backward=True)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        parts: list[np.ndarray] = []
        first: float | None = None
        for frame in c.decode(a):
            if frame.time is None:
                continue
            t = frame.time - origin
            if t >= end:
                break
            for out in resampler.resample(frame):
                if first is None:
                    first = t
                parts.append(out.to_ndarray().reshape(-1))
        if not parts or first is None:
            return np.zeros(0, dtype=np.float32)
        pcm = np.concatenate(parts)
        skip = round((start - first) * AUDIO_RATE)
        pcm = pcm[skip:] if skip >= 0 else np.concatenate([np.zeros(-skip, np.float32), pcm])
        return pcm[: round((end - start) * AUDIO_RATE)].astype(np.float32)


def analyse_clip(source: Path, info: MediaInfo, start: float, end: float, cfg: FrameConfig) -> ClipAnalysis:
    """Sample ``[start, end)`` (media seconds) of ``source`` and analyse it (sync, CPU-bound)."""
    if end <= start:
        raise ValueError(f"clip range must be non-empty (got {start:.3f}..{end:.3f} s)")
    parts = ("decode", "detect", "mouth", "chip", "motion", "scenes", "audio", "refine", "track")
    timings = dict.fromkeys(parts, 0.0)
    detector = make_detector(cfg.detector, cfg.min_face_score)
    faces_id = embedder()
    chip_every = max(1, round(CHIP_EVERY_SECONDS * cfg.sample_fps))
    rot = info.rotation % 360
    step = 1.0 / cfg.sample_fps
    times: list[float] = []
    faces: list[list[FaceObs]] = []
    motion: list[MotionSample] = []
    cut_scores: list[float] = []
    t_start = time.perf_counter()
    try:
        container = av.open(str(source), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise MediaError(f"{source}: cannot be opened for framing ({e}); check the file still exists") from e
    with container:
        vs = _video_stream(container, source)
        cc = vs.codec_context
        cc.thread_type = "AUTO"
        if cfg.skip_nonref:
            cc.skip_frame = "NONREF"
        dw, dh = (cc.height, cc.width) if rot in (90, 270) else (cc.width, cc.height)
        aw, ah, scale = _analysis_size(dw, dh, cfg.analysis_width)
        rw, rh = (ah, aw) if rot in (90, 270) else (aw, ah)
        fps = float(vs.average_rate) if vs.average_rate else (info.fps or 30.0)
        motion_an = MotionAnalyser(dw)
        origin = _origin(container)
        assert vs.time_base is not None
        container.seek(int((start + origin) / vs.time_base), stream=vs, backward=True)
        next_t = start - 0.5 / fps
        prev_gray: np.ndarray | None = None
        prev_sig: np.ndarray | None = None
        try:
            for frame in container.decode(vs):
                if frame.time is None:
                    continue
                t = frame.time - origin
                if t >= end:
                    break
                if t < next_t:
                    continue
                next_t = max(next_t + step, t + step / 2)
                img: np.ndarray = frame.reformat(width=rw, height=rh, format="bgr24").to_ndarray()
                if rot:
                    img = np.ascontiguousarray(np.rot90(img, rot // 90))
                gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                t0 = time.perf_counter()
                sig = scenes.signature(img)
                cut_scores.append(scenes.distance(prev_sig, sig) if prev_sig is not None else 0.0)
                prev_sig = sig
                if cut_scores[-1] >= cfg.scene_cut_threshold:
                    motion_an.reset()  # maybe a cut (confirmed later): a new background to learn
                t1 = time.perf_counter()
                dets = detector.detect(img)
                t2 = time.perf_counter()
                obs = []
                for d in dets:
                    act = mouth_activity(prev_gray, gray, d.box) if prev_gray is not None else None
                    obs.append(FaceObs(len(times), d.scaled(1.0 / scale), face_hist(img, d.box), act))
                tm = time.perf_counter()
                if obs and len(times) % chip_every == 0:
                    full: np.ndarray = frame.to_ndarray(format="rgb24")
                    if rot:
                        full = np.ascontiguousarray(np.rot90(full, rot // 90))
                    for o in obs:
                        o.chip = faces_id.chip(full, o.det.box)
                t3 = time.perf_counter()
                timings["chip"] += t3 - tm
                dt = t - start - times[-1] if times else 0.0
                motion.append(motion_an.update(gray, dt))
                t4 = time.perf_counter()
                timings["scenes"] += t1 - t0
                timings["detect"] += t2 - t1
                timings["mouth"] += tm - t2
                timings["motion"] += t4 - t3
                times.append(t - start)
                faces.append(obs)
                prev_gray = gray
        except av.error.FFmpegError as e:
            at = start + (times[-1] if times else 0.0)
            raise MediaError(
                f"{source}: video stops decoding near {at:.2f} s ({e}); re-export the file"
            ) from e
    timings["decode"] = time.perf_counter() - t_start - sum(timings.values())
    if not times:
        raise MediaError(f"{source}: no video frames in {start:.2f}..{end:.2f} s; is the clip range right?")
    t0 = time.perf_counter()
    shot_starts = scenes.find_cuts(cut_scores, threshold=cfg.scene_cut_threshold)
    cut_times = []
    for i in shot_starts:
        cut_times.append(_refine_cut(source, start, times[i - 1], times[i]))
        for o in faces[i]:
            o.activity = None  # flow across a cut measures the cut, not a mouth
        motion[i] = MotionSample(0.0, None, 0.0, motion[i].foreground)
    t1 = time.perf_counter()
    speech = voice_activity(_clip_audio(source, start, end), AUDIO_RATE) if info.has_audio else []
    t2 = time.perf_counter()
    max_gap = max(1, round(cfg.track_max_gap_seconds * cfg.sample_fps))
    tracks = link(faces, shot_starts, max_gap=max_gap, min_obs=max(2, round(0.4 * cfg.sample_fps)))
    t3 = time.perf_counter()
    timings.update(refine=t1 - t0, audio=t2 - t1, track=t3 - t2)
    return ClipAnalysis(
        start=start,
        duration=end - start,
        frame_w=dw,
        frame_h=dh,
        fps=fps,
        times=np.asarray(times),
        tracks=tracks,
        motion=motion,
        shot_starts=shot_starts,
        cut_times=cut_times,
        speech=speech,
        detector=detector.name,
        max_gap=max_gap,
        timings=timings,
    )
