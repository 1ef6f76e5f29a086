"""Every message the TUI passes around: what the daemon feed saw, turned into Textual messages.

The feed worker (``MontageApp.watch_daemon``) posts these; widgets never touch the socket. Job and
stats payloads stay the daemon's JSON dicts (``Job.to_dict()``, the ``stats`` snapshot), so the TUI
shows exactly what ``montagectl`` would. Frequent messages implement ``can_replace``: when the app
falls behind, only the newest progress tick or stats snapshot is drawn (toolong ``messages.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from montaged.model import JobEvent


@dataclass
class Connected(Message):
    """The feed reached the daemon and subscribed; a full snapshot follows."""

    socket: str
    version: str
    worker: str


@dataclass
class Unreachable(Message):
    """No daemon answers (yet, or any more); the feed keeps retrying every few seconds."""

    socket: str
    reason: str
    attempt: int
    was_connected: bool = False

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Unreachable)


@dataclass
class JobsLoaded(Message):
    """The full job list (on connect and on a resync); replaces whatever the table showed."""

    jobs: list[dict[str, Any]]


@dataclass
class JobChanged(Message):
    """A complete, current job record (submitted, retried, or fetched with ``show``)."""

    job: dict[str, Any]


@dataclass
class JobEventReceived(Message):
    """A lifecycle event (claimed, stage, done, failed, cancelled, released, ...) for one job."""

    event: JobEvent


@dataclass
class JobProgress(Message):
    """A progress tick; a newer tick for the same job replaces an undrawn older one."""

    job_id: str
    stage: str
    stage_progress: float
    progress: float
    at: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobProgress) and message.job_id == self.job_id


@dataclass
class StatsReceived(Message):
    """A ``daemon.stats`` snapshot (queues, throughput, budget, cloud, paused, job counts)."""

    stats: dict[str, Any]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StatsReceived)


@dataclass
class IntakeChanged(Message):
    """Intake was paused or resumed (by this TUI or any other client)."""

    paused: bool


@dataclass
class JobDetailLoaded(Message):
    """The answer to ``show`` for the detail screen: the job and its stored events."""

    job: dict[str, Any]
    events: list[dict[str, Any]]
