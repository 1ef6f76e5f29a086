"""A local stand-in for Deepgram's live transcription WebSocket (``/v1/listen``), for tests only.

It speaks the protocol the real SDK expects (api-facts.md §1): ``Authorization: Token <key>``
on the handshake, query options, binary linear16 audio in, ``Results`` (words, is_final,
speech_final, start/duration, channel, metadata), ``UtteranceEnd``, ``SpeechStarted`` (with
``vad_events``), ``Metadata`` after ``CloseStream``; ``KeepAlive``/``Finalize``/``CloseStream``
text frames; the NET-0001 idle timeout (close 1011 when neither audio nor a text frame arrived
within ``idle_timeout`` seconds, 10 s like Deepgram, shorter in tests).

What it "hears": fixtures in tests/data/deepgram/ (real ASR output on the real recordings in
../shared/media/audio, see build_fixtures.py). Like a real recogniser it transcribes the audio it
actually received: each binary frame is located in the fixture's recording by normalised
cross-correlation, and a word is emitted only once all of its audio has arrived, at the stream
time where that audio was sent. So a dropped socket, a resend from an offset, or a lost chunk
change what comes back, exactly as they would against the cloud.

Failure injection (per connection, in order): ``handshake_failures`` (HTTP 401/429/500/503 …),
``drop_after`` (abort the TCP connection after N seconds of audio), ``stall_after`` (stop
answering and never close). A wrong key always gets 401.

Run by hand: ``.venv/bin/python tests/fake_deepgram.py --port 8765 --key test-key``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from media import MEDIA
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

SAMPLE_RATE = 16_000
FIXTURES = Path(__file__).parent / "data" / "deepgram"
PAUSE = 0.3  # a gap this long between words ends a final result (Deepgram endpoints on pauses)
LOOKAHEAD = 0.5  # audio needed past a cut before it is final (the recogniser's right context)
MAX_BLOCK = 6.0  # a final result never holds more than this much speech
SILENT_FINAL = 3.0  # audio with no words is finalised (an empty Results) in steps of this
NET0001 = "Deepgram did not receive audio data or a text message within the timeout window. See https://dpgr.am/net0001"
ERRORS = {
    401: ("INVALID_AUTH", "Invalid credentials."),
    402: ("ASR_PAYMENT_REQUIRED", "Project does not have enough credits."),
    429: ("TOO_MANY_REQUESTS", "Too many requests. Please try again later."),
    500: ("INTERNAL_SERVER_ERROR", "An internal server error occurred."),
    503: ("SERVICE_UNAVAILABLE", "Service temporarily unavailable."),
}


@dataclass(frozen=True)
class Fixture:
    """One recording the fake can 'hear': its decoded audio and the words said in it."""

    name: str
    audio: np.ndarray  # float32 16 kHz mono
    words: tuple[dict[str, Any], ...]

    @classmethod
    def load(cls, name: str, media_dir: Path = MEDIA) -> Fixture:
        from faster_whisper import decode_audio

        data = json.loads((FIXTURES / f"{name}.json").read_text())
        audio = decode_audio(str(media_dir / data["recording"]), sampling_rate=SAMPLE_RATE)
        return cls(name, audio.astype(np.float32), tuple(data["words"]))


def load_fixtures(names: Iterable[str] | None = None, media_dir: Path = MEDIA) -> list[Fixture]:
    names = names or sorted(p.stem for p in FIXTURES.glob("*.json"))
    return [Fixture.load(n, media_dir) for n in names]


@dataclass
class Located:
    """A run of received audio: stream seconds [stream0, stream0+dur) hold fixture audio from ref0."""

    stream0: float
    dur: float
    fixture: Fixture | None
    ref0: float


@dataclass
class SessionLog:
    """What one WebSocket session saw, for assertions."""

    query: dict[str, str]
    audio_seconds: float = 0.0
    control: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed: str = ""


class _Session:
    def __init__(
        self, fake: FakeDeepgram, ws: ServerConnection, log: SessionLog, plan: dict[str, Any]
    ) -> None:
        self.fake, self.ws, self.log, self.plan = fake, ws, log, plan
        q = log.query
        self.interim = q.get("interim_results") == "true"
        self.vad = q.get("vad_events") == "true"
        self.punct = "true" in (q.get("smart_format"), q.get("punctuate"))
        self.diarize = q.get("diarize") == "true" or "diarize_model" in q
        self.utterance_end = float(q["utterance_end_ms"]) / 1000 if "utterance_end_ms" in q else None
        self.runs: list[Located] = []
        self.received = 0.0
        self.final_until = 0.0
        self.spoken_started: set[float] = set()
        self.utterance_ended: set[float] = set()
        self.request_id = str(uuid.uuid4())
        self.sha = hashlib.sha256()
        self.stalled = False

    # --- what was heard -------------------------------------------------------------------
    def _locate(self, x: np.ndarray) -> tuple[Fixture | None, float]:
        if self.runs and (last := self.runs[-1]).fixture is not None:
            start = round((last.ref0 + last.dur) * SAMPLE_RATE)
            ref = last.fixture.audio[start : start + len(x)]
            if len(ref) == len(x) and _ncc(x, ref) > 0.9:
                return last.fixture, start / SAMPLE_RATE
        if float(np.dot(x, x)) < 1e-6 * len(x):  # digital silence: nothing to locate
            return None, 0.0
        best: tuple[float, Fixture | None, float] = (0.8, None, 0.0)
        for fx in self.fake.fixtures:
            if len(fx.audio) < len(x):
                continue
            score, lag = _search(x, fx.audio)
            if score > best[0]:
                best = (score, fx, lag / SAMPLE_RATE)
        return best[1], best[2]

    def _hear(self, pcm: bytes) -> None:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        dur = len(x) / SAMPLE_RATE
        fixture, ref0 = self._locate(x) if len(x) >= SAMPLE_RATE // 10 else (None, 0.0)
        last = self.runs[-1] if self.runs else None
        if (
            last is not None
            and last.fixture is fixture
            and (fixture is None or abs(last.ref0 + last.dur - ref0) < 2 / SAMPLE_RATE)
        ):
            last.dur += dur
        else:
            self.runs.append(Located(self.received, dur, fixture, ref0))
        self.received += dur
        self.log.audio_seconds += dur
        self.sha.update(pcm)

    def _words(self) -> list[dict[str, Any]]:
        """Every word whose audio has fully arrived, in stream time."""
        out = []
        for run in self.runs:
            if run.fixture is None:
                continue
            for w in run.fixture.words:
                if w["start"] >= run.ref0 - 0.01 and w["end"] <= run.ref0 + run.dur + 0.01:
                    shift = run.stream0 - run.ref0
                    item = {
                        "word": w["word"],
                        "start": round(max(run.stream0, w["start"] + shift), 3),
                        "end": round(min(run.stream0 + run.dur, w["end"] + shift), 3),
                        "confidence": w["confidence"],
                    }
                    if self.punct:
                        item["punctuated_word"] = w["punctuated_word"]
                    if self.diarize:
                        item["speaker"] = w.get("speaker", 0)
                        item["speaker_confidence"] = 0.9
                    out.append(item)
        return out

    # --- what is said back ----------------------------------------------------------------
    def _results(
        self, start: float, end: float, words: list[dict[str, Any]], **flags: bool
    ) -> dict[str, Any]:
        text = " ".join(w.get("punctuated_word", w["word"]) for w in words)
        conf = round(sum(w["confidence"] for w in words) / len(words), 4) if words else 0.0
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": flags.get("is_final", False),
            "speech_final": flags.get("speech_final", False),
            "from_finalize": flags.get("from_finalize", False),
            "channel": {"alternatives": [{"transcript": text, "confidence": conf, "words": words}]},
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": self.log.query.get("model", ""), "version": "fake", "arch": "fake"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }

    async def _say(self, message: dict[str, Any]) -> None:
        self.log.sent.append(message)
        await self.ws.send(json.dumps(message))

    async def _after_audio(self, before: float) -> None:
        words = self._words()
        if self.vad:
            for i, w in enumerate(words):
                gap = w["start"] - (words[i - 1]["end"] if i else 0.0)
                if (
                    before < w["start"] <= self.received
                    and gap >= PAUSE
                    and w["start"] not in self.spoken_started
                ):
                    self.spoken_started.add(w["start"])
                    await self._say({"type": "SpeechStarted", "channel": [0], "timestamp": w["start"]})
        while True:
            pending = [w for w in words if w["start"] >= self.final_until]
            if not pending:
                if self.received - self.final_until >= SILENT_FINAL + LOOKAHEAD:
                    cut = self.final_until + SILENT_FINAL
                    await self._say(self._results(self.final_until, cut, [], is_final=True))
                    self.final_until = cut
                    continue
                break
            cut_at = None
            for k, w in enumerate(pending):
                gap = (pending[k + 1]["start"] if k + 1 < len(pending) else self.received) - w["end"]
                long_block = w["end"] - pending[0]["start"] >= MAX_BLOCK
                cut = w["end"] + min(gap, 2 * PAUSE) / 2
                if (gap >= PAUSE or long_block) and cut + LOOKAHEAD <= self.received:
                    cut_at = (k, cut, gap >= PAUSE)
                    break
            if cut_at is None:
                break
            k, cut, speech_final = cut_at
            await self._say(
                self._results(
                    self.final_until, cut, pending[: k + 1], is_final=True, speech_final=speech_final
                )
            )
            self.final_until = cut
        if self.utterance_end is not None:  # a long enough silence after a finalised word
            for i, w in enumerate(words):
                silent_until = words[i + 1]["start"] if i + 1 < len(words) else self.received
                if (
                    w["end"] <= self.final_until
                    and silent_until - w["end"] >= self.utterance_end
                    and w["end"] not in self.utterance_ended
                ):
                    self.utterance_ended.add(w["end"])
                    await self._say({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": w["end"]})
        if self.interim:  # after every frame, words or not, like Deepgram (the client's receipt)
            pending = [w for w in words if w["start"] >= self.final_until]
            await self._say(self._results(self.final_until, self.received, pending))

    async def _flush(self, *, from_finalize: bool) -> None:
        pending = [w for w in self._words() if w["start"] >= self.final_until]
        if self.received > self.final_until or pending:
            msg = self._results(self.final_until, self.received, pending, is_final=True, speech_final=True)
            msg["from_finalize"] = from_finalize
            await self._say(msg)
            self.final_until = self.received

    async def run(self) -> None:
        drop_after, stall_after = self.plan.get("drop_after"), self.plan.get("stall_after")
        idle = self.fake.idle_timeout
        while True:
            try:
                frame = await asyncio.wait_for(self.ws.recv(), timeout=None if self.stalled else idle)
            except TimeoutError:
                self.log.closed = "idle timeout (NET-0001)"
                await self.ws.close(1011, NET0001)
                return
            if self.stalled:
                continue  # a hung server: reads, never answers, never closes
            if isinstance(frame, bytes):
                before = self.received
                self._hear(frame)
                if drop_after is not None and self.received >= drop_after:
                    self.log.closed = f"dropped after {self.received:.1f} s of audio"
                    self.ws.transport.abort()
                    return
                if stall_after is not None and self.received >= stall_after:
                    self.stalled = True
                    self.log.closed = f"stalled after {self.received:.1f} s of audio"
                    continue
                await self._after_audio(before)
                continue
            try:
                kind = json.loads(frame).get("type")
            except (ValueError, AttributeError):
                kind = None
            self.log.control.append(str(kind))
            if kind == "KeepAlive":
                continue
            if kind == "Finalize":
                await self._flush(from_finalize=True)
            elif kind == "CloseStream":
                await self._flush(from_finalize=False)
                await self._say(
                    {
                        "type": "Metadata",
                        "transaction_key": "deprecated",
                        "request_id": self.request_id,
                        "sha256": self.sha.hexdigest(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                        "duration": round(self.received, 3),
                        "channels": 1,
                        "models": ["00000000-0000-0000-0000-000000000000"],
                        "model_info": {},
                    }
                )
                self.log.closed = "CloseStream"
                await self.ws.close(1000)
                return
            else:
                await self._say(
                    {
                        "type": "Error",
                        "variant": "SchemaError",
                        "description": "unknown message",
                        "message": frame,
                    }
                )


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(np.dot(x, y)) / den if den > 0 else 0.0


def _search(x: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """Best normalised cross-correlation of ``x`` anywhere in ``ref``: (score, sample offset)."""
    n = len(ref) + len(x)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(x, size)), size)[: len(ref) - len(x) + 1]
    energy = np.concatenate(([0.0], np.cumsum(ref.astype(np.float64) ** 2)))
    local = np.sqrt(np.maximum(energy[len(x) :] - energy[: -len(x)], 1e-12))
    score = corr / (local * (np.linalg.norm(x) + 1e-12))
    lag = int(np.argmax(score))
    return float(score[lag]), lag


class FakeDeepgram:
    """``async with FakeDeepgram(fixtures, api_key="k") as fake:`` → ``fake.ws_url``, counters, logs.

    Args:
        fixtures: recordings it can recognise (``load_fixtures()``).
        api_key: the only key accepted (``Authorization: Token <api_key>``).
        idle_timeout: seconds without audio or text frame before close 1011 NET-0001.
    """

    def __init__(
        self, fixtures: list[Fixture], *, api_key: str = "test-key", idle_timeout: float = 10.0
    ) -> None:
        self.fixtures, self.api_key, self.idle_timeout = fixtures, api_key, idle_timeout
        self.handshake_failures: list[int] = []  # status for the next connections, in order
        self.drop_after: list[float | None] = []  # per accepted session: abort after N s of audio
        self.stall_after: list[float | None] = []  # per accepted session: go silent after N s
        self.calls = 0  # handshake attempts that reached the server
        self.refused: list[int] = []
        self.sessions: list[SessionLog] = []
        self._server: Server | None = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.calls += 1
        parts = urlsplit(request.path)
        status: int | None = None
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            status = 401
        elif self.handshake_failures:
            status = self.handshake_failures.pop(0)
        elif parts.path != "/v1/listen":
            status = 404
        if status is None:
            query = dict(parse_qsl(parts.query))
            if (
                "model" not in query
                or query.get("encoding") != "linear16"
                or query.get("sample_rate") != "16000"
            ):
                status = 400
        if status is None:
            return None
        self.refused.append(status)
        code, msg = ERRORS.get(
            status, ("BAD_REQUEST", "Bad request: this server needs model, linear16, 16000 Hz.")
        )
        body = json.dumps({"err_code": code, "err_msg": msg, "request_id": str(uuid.uuid4())})
        response = conn.respond(HTTPStatus(status), body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        log = SessionLog(dict(parse_qsl(urlsplit(ws.request.path).query)))
        n = len(self.sessions)
        self.sessions.append(log)
        plan = {
            "drop_after": self.drop_after[n] if n < len(self.drop_after) else None,
            "stall_after": self.stall_after[n] if n < len(self.stall_after) else None,
        }
        with contextlib.suppress(ConnectionClosed):
            await _Session(self, ws, log, plan).run()
        if not log.closed:
            log.closed = "client went away"

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._handler, "127.0.0.1", 0, process_request=self._process_request, ping_interval=None
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def _serve_forever(port: int, key: str) -> None:
    fake = FakeDeepgram(load_fixtures(), api_key=key)
    fake._server = await serve(fake._handler, "127.0.0.1", port, process_request=fake._process_request)
    print(f"fake Deepgram on ws://127.0.0.1:{port} (key {key!r}); Ctrl-C to stop")
    await fake._server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Fake Deepgram live server for manual tests")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", default="test-key")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, args.key))
