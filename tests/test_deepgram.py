"""The cloud ear against a local server speaking Deepgram's live protocol, through the real SDK."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from fake_deepgram import FakeDeepgram, Fixture, load_fixtures
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from montaged.asr.deepgram import (
    FRAME_SECONDS,
    DeepgramOutcome,
    environment_for,
    live_options,
    stream,
    to_linear16,
)
from montaged.config import DeepgramConfig
from montaged.metrics import CLOUD_ASR
from montaged.model import AudioChunk

pytestmark = pytest.mark.anyio
KEY = "test-key-5f3a9c"
FIXTURES = Path(__file__).parent / "data" / "deepgram"


@pytest.fixture(scope="module")
def fixtures(media_dir: Path) -> dict[str, Fixture]:
    return {f.name: f for f in load_fixtures(["jfk", "pyannote_sample"], media_dir)}


@pytest.fixture
async def fake(fixtures: dict[str, Fixture]) -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(list(fixtures.values()), api_key=KEY, idle_timeout=10.0) as server:
        yield server


def cfg_for(fake: FakeDeepgram, **kw: object) -> DeepgramConfig:
    return DeepgramConfig.model_validate(
        {"enabled": True, "base_url": fake.ws_url, "timeout_seconds": 5.0, **kw}
    )


async def chunks(
    audio: np.ndarray,
    step: float = 5.0,
    *,
    skip: frozenset[int] = frozenset(),
    pause: float = 0.0,
) -> AsyncIterator[AudioChunk]:
    """Audio in fan-out chunks; ``skip`` leaves chunks out (a lossy sink), ``pause`` waits between them."""
    n = int(step * AudioChunk.SAMPLE_RATE)
    for k, i in enumerate(range(0, len(audio), n)):
        if k and pause:
            await anyio.sleep(pause)
        if k not in skip:
            yield AudioChunk(i / AudioChunk.SAMPLE_RATE, audio[i : i + n])


def expected(name: str, *, within: tuple[float, float] | None = None) -> list[tuple[str, float, float]]:
    words = json.loads((FIXTURES / f"{name}.json").read_text())["words"]
    lo, hi = within or (float("-inf"), float("inf"))
    return [
        (w["punctuated_word"], w["start"], w["end"]) for w in words if lo <= w["start"] and w["end"] <= hi
    ]


def got(outcome: DeepgramOutcome) -> list[tuple[str, float, float]]:
    assert outcome.transcript is not None, outcome.reason
    return [(w.text, w.start, w.end) for w in outcome.transcript.words]


def metric(outcome: str) -> float:
    return CLOUD_ASR.labels(engine="deepgram", outcome=outcome)._value.get()


async def test_streams_with_real_sdk_and_options_from_config(
    fake: FakeDeepgram, fixtures: dict[str, Fixture]
) -> None:
    audio = fixtures["jfk"].audio
    cfg = cfg_for(fake, smart_format=True, diarize=False, utterance_end_ms=1500)
    out = await stream(chunks(audio), cfg=cfg, api_key=SecretStr(KEY), duration=len(audio) / 16000)
    assert got(out) == expected("jfk")
    assert out.transcript is not None and out.transcript.engine == "deepgram"
    assert out.transcript.model == "nova-3"
    assert out.billed_seconds == pytest.approx(len(audio) / 16000)
    session = fake.sessions[0]
    assert session.query["smart_format"] == "true" and session.query["diarize"] == "false"
    assert session.query["utterance_end_ms"] == "1500" and session.query["interim_results"] == "true"
    assert session.query["encoding"] == "linear16" and session.query["sample_rate"] == "16000"
    assert session.control[-2:] == ["Finalize", "CloseStream"]
    assert session.closed == "CloseStream"
    assert out.request_ids == (fake.sessions[0].sent[-1]["request_id"],)  # from the Metadata message
    assert {m["type"] for m in session.sent} >= {"Results", "Metadata"}


async def test_diarize_and_vad_events(fake: FakeDeepgram, fixtures: dict[str, Fixture]) -> None:
    # Whisper-made fixture timings leave no 1 s gap between words, so 2 s of silence is appended.
    audio = np.concatenate([fixtures["pyannote_sample"].audio, np.zeros(32000, np.float32)])
    cfg = cfg_for(fake, diarize=True, vad_events=True, utterance_end_ms=1000)
    out = await stream(chunks(audio), cfg=cfg, api_key=SecretStr(KEY), duration=32.0)
    assert out.transcript is not None
    assert {w.speaker for w in out.transcript.words} == {"0", "1"}  # two people on the call
    kinds = [m["type"] for m in fake.sessions[0].sent]
    assert "SpeechStarted" in kinds and "UtteranceEnd" in kinds


async def test_lost_chunk_keeps_media_time(fake: FakeDeepgram, fixtures: dict[str, Fixture]) -> None:
    """A lossy fan-out dropped 10–15 s: words after the gap still land at their media times."""
    audio = fixtures["pyannote_sample"].audio
    cfg = cfg_for(fake)
    out = await stream(chunks(audio, skip=frozenset({2})), cfg=cfg, api_key=SecretStr(KEY), duration=30.0)
    words = got(out)
    assert not [w for w in words if 10.0 < w[1] < 15.0 and w[2] < 15.0]
    after = expected("pyannote_sample", within=(15.0, 31.0))
    assert after and words[-len(after) :] == after
    assert out.gaps == ((10.0, 15.0),)  # so ROVER does not count its silence there as a vote


class Allowance:
    """A budget tab stand-in: pays for ``seconds``; grants top-ups while ``grant`` is True."""

    def __init__(self, seconds: float, grant: bool) -> None:
        self.seconds, self.grant = seconds, grant
        self.asked: list[float] = []

    async def extend(self, needed_seconds: float) -> str | None:
        self.asked.append(needed_seconds)
        if not self.grant:
            return "budget: the job cap is reached — continuing with Whisper alone"
        self.seconds += needed_seconds
        return None


@pytest.mark.parametrize("grant", [True, False])
async def test_resends_need_a_top_up(fake: FakeDeepgram, fixtures: dict[str, Fixture], grant: bool) -> None:
    audio = fixtures["pyannote_sample"].audio
    fake.drop_after = [10.0]
    tab = Allowance(30.0, grant)
    out = await stream(chunks(audio), cfg=cfg_for(fake), api_key=SecretStr(KEY), duration=30.0, allowance=tab)
    assert tab.asked  # the resend went past the 30 s the reservation paid for
    if grant:
        assert got(out) == expected("pyannote_sample") and out.billed_seconds <= tab.seconds
    else:
        assert out.transcript is None and out.reason is not None
        assert out.reason.startswith("deepgram: resending after a drop needs more money; budget: the job cap")
        assert out.billed_seconds <= 30.0  # never sent past what was paid for


async def test_keepalive_during_gaps(fixtures: dict[str, Fixture]) -> None:
    """Chunks 1.2 s apart, idle timeout 0.8 s: only KeepAlive (every 0.3 s) keeps the socket open."""
    audio = fixtures["jfk"].audio
    async with FakeDeepgram(list(fixtures.values()), api_key=KEY, idle_timeout=0.8) as fake:
        cfg = cfg_for(fake, keepalive_seconds=0.3, max_retries=0)
        out = await stream(chunks(audio, pause=1.2), cfg=cfg, api_key=SecretStr(KEY), duration=11.0)
        assert got(out) == expected("jfk")
        assert fake.sessions[0].control.count("KeepAlive") >= 2
        assert len(fake.sessions) == 1


async def test_fake_closes_idle_socket_with_net0001(fake: FakeDeepgram) -> None:
    fake.idle_timeout = 0.5
    t0 = time.monotonic()
    async with connect(f"{fake.ws_url}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000",
                       additional_headers={"Authorization": f"Token {KEY}"}) as ws:  # fmt: skip
        with pytest.raises(ConnectionClosedError) as caught:
            await ws.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1011
    assert "net0001" in caught.value.rcvd.reason
    assert 0.4 < time.monotonic() - t0 < 3.0


async def test_dropped_socket_reconnects_and_resends(
    fake: FakeDeepgram, fixtures: dict[str, Fixture]
) -> None:
    audio = fixtures["pyannote_sample"].audio
    fake.drop_after = [10.0]
    before = metric("reconnect")
    out = await stream(chunks(audio), cfg=cfg_for(fake), api_key=SecretStr(KEY), duration=30.0)
    assert got(out) == expected("pyannote_sample")  # nothing lost, nothing twice, same media times
    assert out.connections == 2 and metric("reconnect") == before + 1
    first, second = fake.sessions
    assert first.closed.startswith("dropped")
    # The second socket got the audio after the last final result, not the whole file again.
    assert 15.0 <= second.audio_seconds < 30.0
    # Billed: what the server received on both sockets (the first one's audio up to the drop).
    received = first.audio_seconds + second.audio_seconds
    assert received - 0.01 <= out.billed_seconds <= received + 0.01


async def test_dropped_streams_charge_what_the_service_received(
    fake: FakeDeepgram, fixtures: dict[str, Fixture]
) -> None:
    """Dropped on every try: the sender wrote the whole media into each socket before it noticed,
    but the service got only the first seconds of each. That is the bill (it was 2.8x the media)."""
    audio = fixtures["pyannote_sample"].audio
    fake.drop_after = [6.0] * 5
    out = await stream(chunks(audio), cfg=cfg_for(fake, max_retries=2), api_key=SecretStr(KEY), duration=30.0)
    assert out.transcript is None and out.connections == 3 == len(fake.sessions)
    received = sum(s.audio_seconds for s in fake.sessions)
    # at most one frame per socket more than received (a frame may arrive unanswered), never less
    assert received - 0.01 <= out.billed_seconds <= received + FRAME_SECONDS * out.connections
    assert out.billed_seconds < 0.7 * len(audio) / 16000


async def test_drops_beyond_max_retries_give_up(fake: FakeDeepgram, fixtures: dict[str, Fixture]) -> None:
    audio = fixtures["pyannote_sample"].audio
    fake.drop_after = [6.0] * 5
    out = await stream(chunks(audio), cfg=cfg_for(fake, max_retries=2), api_key=SecretStr(KEY), duration=30.0)
    assert out.transcript is None
    assert (
        out.reason == "deepgram: connection dropped 3 times (max_retries=2) — continuing with Whisper alone"
    )
    assert len(fake.sessions) == 3


@pytest.mark.parametrize(
    ("status", "key", "reason", "outcome"),
    [
        (
            None,
            "wrong-key",
            "deepgram: 401 invalid credentials — continuing with Whisper alone",
            "unauthorized",
        ),
        (
            429,
            KEY,
            "deepgram: 429 rate limited (too many streams) — continuing with Whisper alone",
            "rate_limited",
        ),
        (500, KEY, "deepgram: server error 500 — continuing with Whisper alone", "server_error"),
        (503, KEY, "deepgram: server error 503 — continuing with Whisper alone", "server_error"),
    ],
)
async def test_refused_handshakes(
    fake: FakeDeepgram,
    fixtures: dict[str, Fixture],
    capsys: pytest.CaptureFixture[str],
    status: int | None,
    key: str,
    reason: str,
    outcome: str,
) -> None:
    if status is not None:
        fake.handshake_failures = [status]
    before = metric(outcome)
    consumed = []

    async def watched() -> AsyncIterator[AudioChunk]:
        async for c in chunks(fixtures["jfk"].audio):
            consumed.append(c)
            yield c

    out = await stream(watched(), cfg=cfg_for(fake), api_key=SecretStr(key), duration=11.0)
    assert out.transcript is None and out.reason == reason
    assert fake.calls == 1 and not fake.sessions  # refused at the handshake, no retry
    assert metric(outcome) == before + 1
    assert len(consumed) == 3  # the fan-out was drained to the end, never left blocked
    printed = capsys.readouterr()
    assert key not in printed.out + printed.err  # the key is never logged


async def test_stalled_server_times_out(fake: FakeDeepgram, fixtures: dict[str, Fixture]) -> None:
    fake.stall_after = [5.0]
    t0 = time.monotonic()
    out = await stream(
        chunks(fixtures["jfk"].audio),
        cfg=cfg_for(fake, timeout_seconds=1.0),
        api_key=SecretStr(KEY),
        duration=11,
    )
    assert out.transcript is None
    assert out.reason == "deepgram: no reply for 1 s — continuing with Whisper alone"
    assert (
        time.monotonic() - t0 < 5.0
    )  # 1 s timeout + ≤0.25 s watchdog tick, generous margin for 2 busy cores


async def test_unreachable_server() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    cfg = DeepgramConfig.model_validate(
        {"enabled": True, "base_url": f"ws://127.0.0.1:{port}", "timeout_seconds": 2.0}
    )
    out = await stream(chunks(np.zeros(16000, np.float32)), cfg=cfg, api_key=SecretStr(KEY), duration=1.0)
    assert out.transcript is None and out.reason is not None
    assert out.reason.startswith("deepgram: cannot connect")


async def test_no_key_means_no_call(fake: FakeDeepgram) -> None:
    out = await stream(chunks(np.zeros(16000, np.float32)), cfg=cfg_for(fake), api_key=None, duration=1.0)
    assert out.transcript is None and out.reason is not None and "no API key" in out.reason
    assert fake.calls == 0


def test_environment_and_options() -> None:
    env = environment_for("wss://api.deepgram.com/")
    assert (env.base, env.production) == ("https://api.deepgram.com", "wss://api.deepgram.com")
    assert environment_for("ws://127.0.0.1:9").base == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match=r"deepgram\.base_url"):
        environment_for("https://api.deepgram.com")
    opts = live_options(
        DeepgramConfig.model_validate({"smart_format": False, "diarize": True, "endpointing_ms": 300})
    )
    assert opts["smart_format"] == "false" and opts["diarize"] == "true" and opts["endpointing"] == "300"
    assert all(isinstance(v, str) for v in opts.values())


def test_linear16_clips() -> None:
    pcm = to_linear16(np.array([0.0, 0.5, 1.0, 1.5, -2.0], np.float32))
    assert pcm.dtype == np.dtype("<i2")
    assert pcm.tolist() == [0, 16383, 32767, 32767, -32767]
