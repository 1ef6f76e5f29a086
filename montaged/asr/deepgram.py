"""The cloud ear: stream decoded audio to Deepgram live while Whisper works on the same audio.

Uses the real SDK (deepgram-sdk v5+: ``AsyncDeepgramClient``, ``listen.v1.connect``); the only
seam to a test server is ``DeepgramConfig.base_url``. Audio chunks (16 kHz mono float32) go out as
linear16 as they arrive; KeepAlive fills gaps; Finalize then CloseStream end the stream; only
``is_final`` Results are kept.

Time: Deepgram's word times count *audio sent on this socket*, not media time (api-facts §1). We
record where each sent run of samples sits in the media and map every word back through that
record, so dropped chunks (a lossy fan-out) and reconnects cannot shift the transcript.

Failures never lose the job: a refused key, a rate limit, a server error or a stall returns a
:class:`DeepgramOutcome` with ``transcript=None`` and a reason for the job record; a dropped
socket reconnects (at most ``max_retries`` times) and resends the audio after the last final
result.

Billing: Deepgram bills the audio it received. A connection closed cleanly received everything
sent on it. A dropped one did not: audio written into a socket that was already going away (the
sender runs ahead of the network) never arrived, so it counts up to the end of the last result the
service sent back (what it confirmed having heard; interim results follow every frame) plus the
one frame that may have arrived unanswered. Audio goes out in frames of ``FRAME_SECONDS`` so that
uncertainty stays small.

The API key is never logged: the SDK's ``ApiError`` carries the request headers, so only its
status code is used.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import numpy as np
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import SecretStr

from montaged.backoff import Backoff
from montaged.config import DeepgramConfig
from montaged.metrics import CLOUD_ASR
from montaged.model import AudioChunk, Transcript, Word

log = structlog.get_logger(__name__)

RATE = AudioChunk.SAMPLE_RATE
ENGINE = "deepgram"
WHISPER_ALONE = "continuing with Whisper alone"
FRAME_SECONDS = 1.0  # audio per WebSocket message: bounds what a drop leaves unaccounted


class Allowance(Protocol):
    """Audio the budget has paid for (``budget.Tab``); ``extend`` returns None or why not."""

    @property
    def seconds(self) -> float: ...

    async def extend(self, needed_seconds: float) -> str | None: ...


@dataclass(frozen=True)
class DeepgramOutcome:
    """What the cloud ear produced: a transcript, or None and the reason (for the job record)."""

    transcript: Transcript | None
    reason: str | None = None
    billed_seconds: float = 0.0  # audio the service received over every connection: what it bills
    connections: int = 0
    request_ids: tuple[str, ...] = ()
    gaps: tuple[tuple[float, float], ...] = ()  # media seconds Deepgram never heard (lossy fan-out)


def live_options(cfg: DeepgramConfig) -> dict[str, str]:
    """Query options sent to ``/v1/listen`` (booleans as "true"/"false"); also part of the cache key."""
    opts = {
        "model": cfg.model,
        "language": cfg.language,
        "encoding": "linear16",
        "sample_rate": str(RATE),
        "channels": "1",
        "smart_format": _flag(cfg.smart_format),
        "punctuate": "true",
        "diarize": _flag(cfg.diarize),
        # UtteranceEnd needs interim results (developers.deepgram.com/docs/utterance-end).
        "interim_results": "true",
        "utterance_end_ms": str(cfg.utterance_end_ms),
        "vad_events": _flag(cfg.vad_events),
    }
    if cfg.endpointing_ms is not None:
        opts["endpointing"] = str(cfg.endpointing_ms)
    return opts


def _flag(value: bool) -> str:
    return "true" if value else "false"


def environment_for(base_url: str) -> Any:
    """SDK environment for a WebSocket root (``wss://host``); the REST root is derived from it."""
    from deepgram.environment import DeepgramClientEnvironment

    ws = base_url.rstrip("/")
    if not ws.startswith(("ws://", "wss://")):
        raise ValueError(f"deepgram.base_url: must start with ws:// or wss:// (got {base_url!r})")
    http = "http" + ws.removeprefix("ws")
    return DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)


def to_linear16(samples: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] → little-endian int16, clipping instead of wrapping around."""
    pcm: np.ndarray = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    return pcm


@dataclass
class _StreamMap:
    """Stream seconds of one socket → media seconds, one entry per contiguous run sent."""

    stream0: list[float] = field(default_factory=list)
    media0: list[float] = field(default_factory=list)
    length: list[float] = field(default_factory=list)
    sent: float = 0.0

    def add(self, media_start: float, seconds: float) -> None:
        if self.length and abs(self.media0[-1] + self.length[-1] - media_start) < 1.5 / RATE:
            self.length[-1] += seconds
        else:
            self.stream0.append(self.sent)
            self.media0.append(media_start)
            self.length.append(seconds)
        self.sent += seconds

    def media(self, t: float, *, end: bool = False) -> float:
        """Media time of stream time ``t``; an end time on a run boundary belongs to the earlier run."""
        if not self.stream0:
            return t
        find = bisect.bisect_left if end else bisect.bisect_right
        i = max(0, find(self.stream0, t) - 1)
        return self.media0[i] + min(max(t - self.stream0[i], 0.0), self.length[i])


@dataclass
class _Conn:
    """One socket's state, shared by its sender, receiver and watchdog."""

    sock: Any
    smap: _StreamMap
    scope: anyio.CancelScope
    closed: anyio.Event = field(default_factory=anyio.Event)
    dropped: bool = False
    stalled: bool = False
    failed: _Failed | None = None
    unanswered_since: float | None = None  # first audio sent since the server last spoke
    acked: float = 0.0  # stream seconds the service confirmed receiving (its latest result's end)

    def charge(self) -> float:
        """Audio seconds of this connection the service is billed for (see the module docstring)."""
        if self.dropped:
            return min(self.acked + FRAME_SECONDS, self.smap.sent)
        return self.smap.sent


class _Failed(Exception):
    """Ends the cloud ear for this job; ``reason`` goes to the job record."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


class _Dropped(Exception):
    """The socket went away mid-stream: reconnect and resend."""


class _LiveStream:
    def __init__(
        self,
        cfg: DeepgramConfig,
        api_key: SecretStr,
        inbox: MemoryObjectReceiveStream[AudioChunk],
        *,
        duration: float,
        job_id: str | None,
        allowance: Allowance | None,
    ) -> None:
        self.cfg, self.inbox, self.duration, self.allowance = cfg, inbox, duration, allowance
        self.log = log.bind(job_id=job_id, stage="deepgram")
        from deepgram import AsyncDeepgramClient

        self.client = AsyncDeepgramClient(
            api_key=api_key.get_secret_value(),
            environment=environment_for(cfg.base_url),
            timeout=cfg.timeout_seconds,
        )
        self.words: list[Word] = []
        self.pending: deque[tuple[float, np.ndarray]] = deque()  # audio sent after the last final
        self.committed = 0.0  # media time up to which finals have arrived
        self.input_done = False
        self.billed = 0.0  # audio the service received on every connection so far
        self.current: _Conn | None = None  # the open connection (its audio is billed when it ends)
        self.connections = 0
        self.request_ids: list[str] = []
        self.heard_until: float | None = None  # media end of the last chunk taken from the input
        self.gaps: list[tuple[float, float]] = []

    # --- connection loop ----------------------------------------------------------------------
    async def run(self) -> DeepgramOutcome:
        drops, backoff = 0, Backoff(0.2, 2.0)
        while True:
            try:
                await self._connection()
                break
            except _Dropped:
                drops += 1
                CLOUD_ASR.labels(engine=ENGINE, outcome="reconnect").inc()
                if drops > self.cfg.max_retries:
                    raise _Failed(
                        "dropped",
                        f"deepgram: connection dropped {drops} times (max_retries={self.cfg.max_retries}) — "
                        f"{WHISPER_ALONE}",
                    ) from None
                self.log.warning("deepgram.reconnect", drops=drops, resend_from=round(self.committed, 3))
                await backoff.sleep()
        words = sorted(self.words, key=lambda w: (w.start, w.end))
        transcript = Transcript(tuple(words), self.cfg.language, ENGINE, self.cfg.model, self.duration)
        return DeepgramOutcome(
            transcript, None, self.billed, self.connections, tuple(self.request_ids), tuple(self.gaps)
        )

    async def _connection(self) -> None:
        from deepgram.core.api_error import ApiError
        from websockets.exceptions import InvalidHandshake

        self.connections += 1
        async with contextlib.AsyncExitStack() as stack:
            try:
                with anyio.fail_after(self.cfg.timeout_seconds):
                    sock = await stack.enter_async_context(
                        self.client.listen.v1.connect(**live_options(self.cfg))
                    )
            except ApiError as e:
                raise _refused(e.status_code) from None
            except TimeoutError:
                raise _Failed(
                    "timeout", f"deepgram: no handshake in {self.cfg.timeout_seconds:g} s — {WHISPER_ALONE}"
                ) from None
            except OSError as e:
                raise _Failed(
                    "unreachable", f"deepgram: cannot connect ({e.strerror or e}) — {WHISPER_ALONE}"
                ) from None
            except InvalidHandshake as e:
                raise _Failed(
                    "refused", f"deepgram: handshake failed ({type(e).__name__}) — {WHISPER_ALONE}"
                ) from None
            try:
                async with anyio.create_task_group() as tg:
                    conn = self.current = _Conn(sock, _StreamMap(), tg.cancel_scope)
                    tg.start_soon(self._receive, conn)
                    tg.start_soon(self._watchdog, conn)
                    await self._send(conn)
            finally:
                self._close_tab()
        if conn.failed is not None:
            raise conn.failed
        if conn.stalled:
            raise _Failed(
                "timeout", f"deepgram: no reply for {self.cfg.timeout_seconds:g} s — {WHISPER_ALONE}"
            )
        if conn.dropped or not conn.closed.is_set():
            raise _Dropped()

    def _close_tab(self) -> None:
        """The open connection has ended: add what the service received on it to the bill."""
        if self.current is not None:
            self.billed += self.current.charge()
            self.current = None

    @property
    def sent_so_far(self) -> float:
        """Audio that may be billed: closed connections' bill plus everything sent on the open one."""
        return self.billed + (self.current.smap.sent if self.current is not None else 0.0)

    # --- sending ------------------------------------------------------------------------------
    async def _send(self, conn: _Conn) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            if self.pending and self.pending[0][0] > self.committed + 1.5 / RATE:
                # The resend buffer overflowed: that audio is gone for the cloud ear.
                self.gaps.append((self.committed, self.pending[0][0]))
                self.committed = self.pending[0][0]
            for start, pcm in list(self.pending):  # resend what has no final result yet
                skip = max(0, round((self.committed - start) * RATE))
                if skip < len(pcm):
                    await self._send_pcm(conn, start + skip / RATE, pcm[skip:])
            while not self.input_done:
                chunk = None
                with anyio.move_on_after(self.cfg.keepalive_seconds):
                    try:
                        chunk = await self.inbox.receive()
                    except anyio.EndOfStream:
                        self.input_done = True
                        break
                if chunk is None:  # a gap in the audio: keep the socket alive (NET-0001 after 10 s)
                    await conn.sock.send_keep_alive()
                    continue
                if self.heard_until is not None and chunk.start - self.heard_until > 1.5 / RATE:
                    self.gaps.append((self.heard_until, chunk.start))  # the fan-out dropped audio
                self.heard_until = chunk.end
                pcm = to_linear16(np.asarray(chunk.samples, dtype=np.float32))
                self._remember(chunk.start, pcm)
                await self._send_pcm(conn, chunk.start, pcm)
            await conn.sock.send_finalize()
            await conn.sock.send_close_stream()
        except ConnectionClosed:
            conn.dropped = True
            conn.scope.cancel()
            return
        except _Failed as e:  # raised out of a task group it would arrive wrapped in a group
            conn.failed = e
            conn.scope.cancel()
            return
        with anyio.move_on_after(self.cfg.timeout_seconds):
            await conn.closed.wait()
        if not conn.closed.is_set() and not conn.dropped:
            conn.stalled = True
        conn.scope.cancel()

    async def _send_pcm(self, conn: _Conn, start: float, pcm: np.ndarray) -> None:
        step = int(FRAME_SECONDS * RATE)
        for i in range(0, len(pcm), step):
            await self._send_frame(conn, start + i / RATE, pcm[i : i + step])

    async def _send_frame(self, conn: _Conn, start: float, pcm: np.ndarray) -> None:
        seconds = len(pcm) / RATE
        spent = self.sent_so_far
        if self.allowance is not None and spent + seconds > self.allowance.seconds + 1e-6:
            # Resent audio is billed again: reserve more under the same caps or stop here.
            refused = await self.allowance.extend(spent + seconds - self.allowance.seconds)
            if refused is not None:
                raise _Failed("budget", f"deepgram: resending after a drop needs more money; {refused}")
        if conn.unanswered_since is None:
            conn.unanswered_since = time.monotonic()
        await conn.sock.send_media(pcm.tobytes())
        conn.smap.add(start, seconds)

    def _remember(self, start: float, pcm: np.ndarray) -> None:
        self.pending.append((start, pcm))
        limit = self.cfg.resend_buffer_seconds
        while len(self.pending) > 1 and sum(len(p) for _, p in self.pending) / RATE > limit:
            old_start, _ = self.pending.popleft()
            self.log.warning("deepgram.resend_buffer_full", dropped_from=round(old_start, 3))

    def _commit(self, media_end: float) -> None:
        self.committed = max(self.committed, media_end)
        while self.pending and self.pending[0][0] + len(self.pending[0][1]) / RATE <= self.committed:
            self.pending.popleft()

    # --- receiving ----------------------------------------------------------------------------
    async def _receive(self, conn: _Conn) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for msg in conn.sock:
                conn.unanswered_since = None
                self._on_message(msg, conn)
        except ConnectionClosed:  # closed without a clean close frame (1006, 1011 NET-0001 …)
            conn.dropped = True
            conn.scope.cancel()
            return
        conn.closed.set()

    def _on_message(self, msg: Any, conn: _Conn) -> None:
        kind = getattr(msg, "type", None)
        smap = conn.smap
        if kind == "Results":  # interim or final, its end is audio the service has received
            conn.acked = max(conn.acked, float(msg.start) + float(msg.duration))
        if kind == "Results" and getattr(msg, "is_final", False):
            alternatives = msg.channel.alternatives
            for w in alternatives[0].words if alternatives else ():
                start = smap.media(w.start)
                if start < self.committed - 0.01:  # already heard before a reconnect
                    continue
                speaker = getattr(w, "speaker", None)
                self.words.append(
                    Word(
                        text=getattr(w, "punctuated_word", None) or w.word,
                        start=round(start, 3),
                        end=round(max(start, smap.media(w.end, end=True)), 3),
                        confidence=float(w.confidence),
                        speaker=None if speaker is None else str(speaker),
                        source=ENGINE,
                    )
                )
            self._commit(smap.media(msg.start + msg.duration, end=True))
        elif kind == "Metadata":
            self.request_ids.append(str(msg.request_id))
        elif kind == "Error":
            self.log.warning("deepgram.error_message", variant=getattr(msg, "variant", None))
        elif kind in ("UtteranceEnd", "SpeechStarted"):
            self.log.debug("deepgram.event", kind=kind)

    async def _watchdog(self, conn: _Conn) -> None:
        """A server that takes audio but never answers is a stall, not a slow start."""
        while True:
            await anyio.sleep(min(1.0, self.cfg.timeout_seconds / 4))
            since = conn.unanswered_since
            if since is not None and time.monotonic() - since > self.cfg.timeout_seconds:
                conn.stalled = True
                conn.scope.cancel()
                return


def _refused(status: int | None) -> _Failed:
    if status in (401, 403):
        what = "401 invalid credentials" if status == 401 else "403 key not allowed to use this model"
        return _Failed("unauthorized", f"deepgram: {what} — {WHISPER_ALONE}")
    if status == 402:
        return _Failed("refused", f"deepgram: 402 account out of credit — {WHISPER_ALONE}")
    if status == 429:
        return _Failed("rate_limited", f"deepgram: 429 rate limited (too many streams) — {WHISPER_ALONE}")
    if status is not None and status >= 500:
        return _Failed("server_error", f"deepgram: server error {status} — {WHISPER_ALONE}")
    return _Failed("refused", f"deepgram: request refused ({status}) — {WHISPER_ALONE}")


async def _pump(chunks: AsyncIterable[AudioChunk], send: MemoryObjectSendStream[AudioChunk]) -> None:
    async with send:
        async for chunk in chunks:
            await send.send(chunk)


async def stream(
    chunks: AsyncIterable[AudioChunk],
    *,
    cfg: DeepgramConfig,
    api_key: SecretStr | None,
    duration: float,
    job_id: str | None = None,
    allowance: Allowance | None = None,
) -> DeepgramOutcome:
    """Transcribe ``chunks`` with Deepgram live; never raises for cloud trouble.

    Args:
        chunks: decoded audio in media order (a fan-out sink; gaps are allowed).
        cfg: options, base URL, timeouts, retries.
        api_key: the ``deepgram_api_key`` secret; None → no call, a reason.
        duration: media duration (the transcript's).
        job_id: bound to log lines.
        allowance: the budget tab; sending past what it pays for needs ``allowance.extend``.

    ``chunks`` is always consumed to its end, so a fan-out feeding it never blocks on us.
    """
    if api_key is None:
        CLOUD_ASR.labels(engine=ENGINE, outcome="no_key").inc()
        reason = f"deepgram: no API key (set MONTAGE_DEEPGRAM_API_KEY) — {WHISPER_ALONE}"
        async for _ in chunks:
            pass
        return DeepgramOutcome(None, reason)
    send, receive = anyio.create_memory_object_stream[AudioChunk](4)
    live = _LiveStream(cfg, api_key, receive, duration=duration, job_id=job_id, allowance=allowance)
    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(_pump, chunks, send)
        try:
            outcome = await live.run()
            CLOUD_ASR.labels(engine=ENGINE, outcome="ok").inc()
        except _Failed as e:
            CLOUD_ASR.labels(engine=ENGINE, outcome=e.outcome).inc()
            live.log.warning("deepgram.failed", outcome=e.outcome, reason=e.reason)
            outcome = DeepgramOutcome(None, e.reason, live.billed, live.connections, tuple(live.request_ids))
        except Exception as e:  # the cloud ear must never lose the job
            # Only the type is logged: the SDK's ApiError text includes the request headers (the key).
            CLOUD_ASR.labels(engine=ENGINE, outcome="error").inc()
            kind = type(e).__name__
            live.log.error("deepgram.unexpected_error", error_type=kind)
            reason = f"deepgram: unexpected {kind} — {WHISPER_ALONE}"
            outcome = DeepgramOutcome(None, reason, live.billed, live.connections, tuple(live.request_ids))
        async for _ in receive:  # keep the fan-out flowing to the end
            pass
    if outcome.transcript is not None:
        live.log.info(
            "deepgram.done",
            words=len(outcome.transcript.words),
            billed_seconds=round(live.billed, 2),
            connections=live.connections,
        )
    return outcome
