"""Probe one input file with PyAV: what it holds, whether it decodes, and its content hash.

The probe is the gate of every job: a file that passes here can be decoded from start to end by
the audio and render stages, so those stages need no second round of input checks. Each way a
file can be unusable is its own :class:`~montaged.errors.MediaError` subclass, so a client can
tell "send me another file" apart from "re-export this one".

``probe_media`` is synchronous (it reads and hashes the whole file); callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import av.container
import av.error
import av.stream
import structlog

from montaged.errors import MediaError
from montaged.model import MediaInfo, StreamInfo

log = structlog.get_logger(__name__)

HASH_BLOCK = 1 << 20
"""Hash in 1 MiB reads: large enough to be I/O bound, small enough to keep memory flat."""
END_SLACK_SECONDS = 0.5
"""A stream whose packets stop more than this before its declared end is truncated. Real
muxers end streams within a frame or two (40-80 ms) of their declared duration."""
HEAD_FRAMES = 3
"""Frames decoded at the start of each needed stream to prove the decoder accepts the data."""
TAIL_DECODE_PACKETS = 30
"""Packets decoded after the seek near the end; later packets are only demuxed (cheap)."""
TAIL_SECONDS = 3.0
"""The end check seeks this far before the declared end."""

# First bytes of containers we know. A file that starts like one of these but does not open is
# damaged (e.g. an MP4 cut before its index), not "something other than media".
_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"wide"),
    (4, b"free"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # WAV / AVI
    (0, b"OggS"),
    (0, b"fLaC"),
    (0, b"ID3"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
)


class UnreadableMediaError(MediaError):
    """The path is missing, not a regular file, or cannot be read by this process."""

    code = "unreadable_media"


class NotMediaError(MediaError):
    """The file is not audio or video at all (no demuxer recognises it)."""

    code = "not_media"


class CorruptMediaError(MediaError):
    """The container is recognised but damaged or truncated."""

    code = "corrupt_media"


class NoAudioStreamError(MediaError):
    code = "no_audio"


class NoVideoStreamError(MediaError):
    code = "no_video"


class EmptyMediaError(MediaError):
    """Zero bytes, or a container that holds no time at all."""

    code = "empty_media"


class UnsupportedCodecError(MediaError):
    """A needed stream uses a codec this build of FFmpeg cannot decode."""

    code = "unsupported_codec"


def content_hash(path: Path) -> str:
    """``sha256:<hex>`` of the whole file, read in 1 MiB blocks (memory does not grow with size)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _check_file(path: Path) -> int:
    """Fail early, with the reason, for paths that are not readable regular files; return size."""
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise UnreadableMediaError(f"{path}: no such file; check the path (it may have been moved)") from e
    except PermissionError as e:
        raise UnreadableMediaError(
            f"{path}: permission denied; let the montage user read it (chmod/chgrp) or copy it elsewhere"
        ) from e
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (device, FIFO or socket)"
        raise UnreadableMediaError(f"{path}: {kind}; submit a media file instead")
    if not os.access(path, os.R_OK):
        raise UnreadableMediaError(
            f"{path}: not readable by this process; let the montage user read it (chmod/chgrp)"
        )
    if st.st_size == 0:
        raise EmptyMediaError(
            f"{path}: the file is empty (0 bytes); it may still be copying, or the export failed"
        )
    return st.st_size


def _looks_like_media(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(189)
    if len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio / ADTS frame sync
        adts = head[1] & 0xF6 == 0xF0
        mpeg = head[1] & 0x06 != 0 and head[2] >> 4 != 0x0F and (head[2] >> 2) & 3 != 3
        return adts or mpeg
    if len(head) == 189 and head[0] == head[188] == 0x47:  # MPEG-TS: a sync byte every 188 bytes
        return True
    return any(head[off : off + len(magic)] == magic for off, magic in _MAGIC)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as e:
        if _looks_like_media(path):
            raise CorruptMediaError(
                f"{path}: the container is damaged or truncated ({e.strerror}); re-export or re-copy the file"
            ) from e
        raise NotMediaError(
            f"{path}: not an audio or video file FFmpeg recognises; submit a media file (mp4, mkv, mov, wav)"
        ) from e
    except av.error.FFmpegError as e:
        raise CorruptMediaError(f"{path}: cannot be opened ({e}); re-export or re-copy the file") from e


def _seconds(value: int | None, time_base: object) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)  # type: ignore[operator]


def _usable_video(container: av.container.InputContainer) -> list[av.VideoStream]:
    # Cover art in music files is a "video" stream of one picture; it is not video to cut.
    return [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]


def _check_decoder(path: Path, stream: av.stream.Stream) -> None:
    if stream.codec_context is None:
        raise UnsupportedCodecError(
            f"{path}: the {stream.type} stream #{stream.index} uses a codec this FFmpeg cannot decode; "
            "convert it to H.264/AAC (e.g. ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4)"
        )


def _decode_head(path: Path, container: av.container.InputContainer, stream: av.stream.Stream) -> int:
    """Decode the first few frames of ``stream``; return the display rotation found on them."""
    rotation = 0
    frames = 0
    try:
        container.seek(0)
        for frame in container.decode(stream):
            if isinstance(frame, av.VideoFrame):
                rotation = int(frame.rotation) % 360
            frames += 1
            if frames >= HEAD_FRAMES:
                break
    except av.error.FFmpegError as e:
        raise CorruptMediaError(
            f"{path}: the {stream.type} stream does not decode at the start ({e}); re-export the file"
        ) from e
    if frames == 0:
        raise CorruptMediaError(
            f"{path}: the {stream.type} stream holds no decodable frames; re-export the file"
        )
    return rotation


def _packet_end(packet: av.Packet[Any]) -> float | None:
    if packet.pts is None or packet.time_base is None:
        return None
    return float((packet.pts + (packet.duration or 0)) * packet.time_base)


def _reached_end(
    path: Path, container: av.container.InputContainer, stream: av.stream.Stream, end_hint: float
) -> float:
    """Seek near the end, decode a few packets and demux the rest; return where packets stopped."""
    tb = stream.time_base
    assert tb is not None
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    target = max(start, start + end_hint - TAIL_SECONDS)
    reached = -math.inf
    decoded = 0
    try:
        container.seek(int(target / tb), stream=stream, backward=True)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at EOF
            if decoded < TAIL_DECODE_PACKETS:
                packet.decode()
                decoded += 1
            end = _packet_end(packet)
            if end is not None:
                reached = max(reached, end)
    except av.error.FFmpegError as e:
        raise CorruptMediaError(
            f"{path}: the {stream.type} stream does not decode near its end ({e}); "
            "the file is probably truncated: re-copy or re-export it"
        ) from e
    return reached - start


def _stream_info(stream: av.stream.Stream) -> StreamInfo:
    cc = stream.codec_context
    codec = cc.name if cc is not None else "unknown"
    if isinstance(stream, av.VideoStream) and cc is not None:
        rate = stream.average_rate or stream.guessed_rate
        vcc = stream.codec_context
        return StreamInfo(
            stream.index,
            "video",
            codec,
            width=vcc.width,
            height=vcc.height,
            fps=float(rate) if rate else None,
        )
    if isinstance(stream, av.AudioStream) and cc is not None:
        acc = stream.codec_context
        return StreamInfo(
            stream.index, "audio", codec, sample_rate=acc.sample_rate, channels=acc.layout.nb_channels
        )
    return StreamInfo(stream.index, str(stream.type), codec)


def _rotation_tag(stream: av.stream.Stream) -> int:
    """Old files carry a clockwise ``rotate`` tag instead of a display matrix."""
    tag = stream.metadata.get("rotate")
    try:
        return (-int(float(tag))) % 360 if tag else 0
    except ValueError:
        return 0


def _duration(container: av.container.InputContainer, streams: Iterator[av.stream.Stream]) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    ends = [_seconds(s.duration, s.time_base) or 0.0 for s in streams]
    return max(ends, default=0.0)


def probe_media(path: Path, *, need_video: bool = True, need_audio: bool = True) -> MediaInfo:
    """Describe ``path`` and prove it decodes at both ends; raise a ``MediaError`` subclass if not.

    ``rotation`` in the result is the counter-clockwise turn (0/90/180/270) a player applies for
    display, as PyAV's ``VideoFrame.rotation``; ``np.rot90(plane, rotation // 90)`` shows it upright.
    """
    path = Path(path)
    size = _check_file(path)
    container = _open(path)
    with container:
        video = _usable_video(container)
        audio = list(container.streams.audio)
        if not video and not audio:
            raise NotMediaError(f"{path}: holds neither audio nor video; submit a media file")
        if ((need_video and not video) or (need_audio and not audio)) and not _looks_like_media(path):
            # Headerless formats (raw H.263, LRC lyrics...) are guessed from content, and about
            # 1 in 150 random files passes such a guess: without a known signature, a file that
            # also lacks a needed stream is reported as not media, not as "no audio".
            raise NotMediaError(
                f"{path}: not an audio or video file FFmpeg recognises (it guessed "
                f"{container.format.name!r} from the content); submit a media file (mp4, mkv, mov, wav)"
            )
        if need_video and not video:
            raise NoVideoStreamError(
                f"{path}: has no video stream; submit a video file (this one is audio only)"
            )
        if need_audio and not audio:
            raise NoAudioStreamError(
                f"{path}: has no audio stream; clips are chosen from speech, so submit a file with sound"
            )
        v = video[0] if video else None
        a = audio[0] if audio else None
        needed = [s for s, need in ((v, need_video), (a, need_audio)) if s is not None and need]
        for s in needed:
            _check_decoder(path, s)

        duration = _duration(container, iter(needed))
        if duration <= 0:
            raise EmptyMediaError(f"{path}: contains no time (zero duration); re-export the file")

        rotation = 0
        for s in needed:
            r = _decode_head(path, container, s)
            if s is v:
                rotation = r or _rotation_tag(s)

        for s in needed:
            declared = _seconds(s.duration, s.time_base) or duration
            reached = _reached_end(path, container, s, declared)
            if reached < declared - END_SLACK_SECONDS:
                raise CorruptMediaError(
                    f"{path}: the {s.type} stream stops at {max(reached, 0.0):.1f} s of {declared:.1f} s; "
                    "the file is truncated (an interrupted copy or recording?): re-copy or re-export it"
                )

        vcc = v.codec_context if v is not None else None
        acc = a.codec_context if a is not None else None
        rate = (v.average_rate or v.guessed_rate) if v is not None else None
        info = MediaInfo(
            path=str(path),
            content_hash=content_hash(path),
            size_bytes=size,
            duration=duration,
            container=container.format.name,
            has_audio=a is not None,
            has_video=v is not None,
            width=vcc.width if vcc is not None else 0,
            height=vcc.height if vcc is not None else 0,
            fps=float(rate) if rate else 0.0,
            rotation=rotation,
            video_codec=vcc.name if vcc is not None else None,
            audio_codec=acc.name if acc is not None else None,
            audio_sample_rate=acc.sample_rate if acc is not None else None,
            audio_channels=acc.layout.nb_channels if acc is not None else None,
            streams=tuple(_stream_info(s) for s in container.streams),
        )
    log.info(
        "probed",
        path=str(path),
        duration=round(info.duration, 3),
        size=f"{info.width}x{info.height}",
        fps=round(info.fps, 3),
        rotation=info.rotation,
        video=info.video_codec,
        audio=info.audio_codec,
    )
    return info
