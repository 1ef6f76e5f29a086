"""Cloud money: reserve before streaming, settle to real usage after, hard caps per job/day/month.

The caps are enforced by the store (``JobStore.reserve`` is one atomic check-and-insert across
processes: an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so no interleaving of
daemons can overrun them. A reservation is ``duration × price per minute``; audio resent after a
dropped socket is billed again, so the stream may *top up* with a further reservation under the
same caps (:meth:`Budget.top_up`) instead of silently spending past what was reserved.

A reservation belongs to one claim of its job (:meth:`Budget.for_claim`). When that claim is gone
(its daemon crashed, the job was taken over, ended or its lease lapsed) :func:`sweep_reservations`
releases it, and a resumed job's own reservation releases its earlier claims' first, so a crash
neither leaks money for good nor refuses the resumed job its cloud ear. A settle the store cannot
take (it is down) is retried a few seconds, then kept and retried by the sweeper: what was spent
is never forgotten.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from montaged.backoff import Backoff
from montaged.config import BudgetConfig
from montaged.errors import StoreError, StoreUnavailable
from montaged.metrics import BUDGET
from montaged.money import usd
from montaged.store import Caps, Fence, JobStore, Reservation, SpendSummary

log = structlog.get_logger(__name__)

_PERIOD_WORDS = {"job": "for this job", "day": "today (UTC)", "month": "this month (UTC)"}
SETTLE_RETRY_SECONDS = 5.0  # a settle waits this long for the store before it is kept for the sweeper
SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class _Owed:
    """A settle the store could not take yet: the reservation and what it really cost."""

    reservation: Reservation
    actual: float


@dataclass(frozen=True)
class Refusal:
    """No money for this call; ``reason`` goes to the job record and the transcript notes."""

    reason: str


class Budget:
    """Prices, reservations and caps for cloud engines.

    Args:
        store: the job store holding the cost ledger (shared by every daemon).
        cfg: the ``[budget]`` settings: ``prices_per_minute`` by ``engine/model`` and the caps.
    """

    def __init__(self, store: JobStore, cfg: BudgetConfig) -> None:
        self.store, self.cfg = store, cfg
        self.caps = Caps(per_job=cfg.per_job, per_day=cfg.per_day, per_month=cfg.per_month)
        self.fence: Fence | None = None
        self._owed: list[_Owed] = []  # shared with every per-claim view of this budget

    def for_claim(self, fence: Fence) -> Budget:
        """This budget as one claim of a job spends it: its reservations carry the claim, so a
        sweeper can release them once the claim is gone (and a stale holder cannot reserve)."""
        view = copy.copy(self)
        view.fence = fence
        return view

    @property
    def owed(self) -> list[Reservation]:
        """Reservations whose settle still waits for the store."""
        return [o.reservation for o in self._owed]

    def price(self, engine_model: str) -> float | None:
        """USD per audio minute, or None when the table has no price (then nothing is spent)."""
        return self.cfg.prices_per_minute.get(engine_model)

    def cost(self, engine_model: str, seconds: float) -> float:
        price = self.price(engine_model)
        if price is None:
            raise KeyError(f"budget.prices_per_minute has no price for {engine_model!r}")
        return max(0.0, seconds) / 60.0 * price

    def seconds_for(self, reservations: Sequence[Reservation]) -> float:
        """Audio seconds that ``reservations`` pay for (what the stream may send)."""
        total = 0.0
        for r in reservations:
            price = self.price(r.engine)
            total += r.amount / price * 60.0 if price else float("inf")
        return total

    async def reserve(
        self, job_id: str, engine_model: str, duration_s: float, *, now: float | None = None
    ) -> Reservation | Refusal:
        """Reserve ``duration_s`` of ``engine_model`` audio, or say why not (a cap, no price)."""
        price = self.price(engine_model)
        if price is None:
            return Refusal(
                f"budget: no price for {engine_model} in budget.prices_per_minute, so its cost cannot be"
                " capped — continuing with Whisper alone"
            )
        amount = self.cost(engine_model, duration_s)
        token = self.fence.token if self.fence is not None and self.fence.job_id == job_id else None
        found = await self.store.reserve(
            job_id=job_id, engine=engine_model, amount=amount, caps=self.caps, now=now, token=token
        )
        if found is not None:
            log.info("budget.reserved", job_id=job_id, engine=engine_model, amount=round(amount, 6))
            await self.summary(job_id, now=now)
            return found
        reason = await self._why(job_id, engine_model, amount, duration_s, now)
        log.info("budget.refused", job_id=job_id, engine=engine_model, reason=reason)
        return Refusal(reason)

    async def top_up(
        self,
        held: Sequence[Reservation],
        extra_seconds: float,
        duration_s: float,
        *,
        now: float | None = None,
    ) -> Reservation | Refusal:
        """Reserve more audio for the same job and engine (at least ``top_up_share`` of the media)."""
        first = held[0]
        seconds = max(extra_seconds, self.cfg.top_up_share * duration_s)
        return await self.reserve(first.job_id, first.engine, seconds, now=now)

    async def settle(self, reservation: Reservation | Sequence[Reservation], used_seconds: float) -> float:
        """Turn reservations into real spend for ``used_seconds`` of audio; returns the cost.

        With several reservations (top-ups) the cost fills them in order; unused ones settle at 0.
        """
        held = [reservation] if isinstance(reservation, Reservation) else list(reservation)
        if not held:
            return 0.0
        total = self.cost(held[0].engine, used_seconds)
        left = total
        owed = []
        for i, r in enumerate(held):
            part = left if i == len(held) - 1 else min(left, r.amount)
            owed.append(_Owed(r, part))
            left -= part
        # Recorded before the first try: a settle cancelled mid-retry is still owed, not lost.
        self._owed.extend(owed)
        deadline = time.monotonic() + SETTLE_RETRY_SECONDS
        backoff = Backoff(0.1, 1.0)
        while not await self.settle_owed(owed) and time.monotonic() < deadline:
            await backoff.sleep()
        if any(o in self._owed for o in owed):
            log.warning("budget.settle_deferred", job_id=held[0].job_id, cost=round(total, 6),
                        retry="by the reservation sweeper")  # fmt: skip
            return total
        log.info("budget.settled", job_id=held[0].job_id, engine=held[0].engine, cost=round(total, 6))
        # the gauges catch up on the next summary when the store is away now
        with anyio.move_on_after(SETTLE_RETRY_SECONDS), contextlib.suppress(StoreUnavailable):
            await self.summary(held[0].job_id)
        return total

    async def settle_owed(self, only: Sequence[_Owed] | None = None) -> bool:
        """Try the settles still owed (all, or ``only``); True when none of them is left."""
        for o in list(only if only is not None else self._owed):
            if o not in self._owed:
                continue
            try:
                await self.store.settle(o.reservation.id, o.actual)
            except StoreUnavailable as e:
                log.info("budget.settle_waits_for_store", reservation=o.reservation.id, error=str(e))
                return False
            except StoreError as e:  # not open any more: retrying cannot help, and the job goes on
                log.error("budget.settle_refused", reservation=o.reservation.id, cost=round(o.actual, 6),
                          error=str(e))  # fmt: skip
            self._owed.remove(o)
        return True

    async def summary(self, job_id: str | None = None, *, now: float | None = None) -> list[SpendSummary]:
        """Spent, reserved and remaining per period (job when given, day, month); updates metrics."""
        rows = await self._spend(job_id, now)
        for row in rows:
            period = row.period.split(":", 1)[0]
            for kind, value in (
                ("spent", row.spent),
                ("reserved", row.reserved),
                ("remaining", row.remaining),
                ("cap", row.cap),
            ):
                BUDGET.labels(period=period, kind=kind).set(value)
        return rows

    async def _spend(self, job_id: str | None, now: float | None) -> list[SpendSummary]:
        return await self.store.spend(self.caps, job_id=job_id, now=now)

    async def _why(
        self, job_id: str, engine_model: str, amount: float, seconds: float, now: float | None
    ) -> str:
        rows = await self._spend(job_id, now)
        tight = min(rows, key=lambda r: r.remaining)
        period = tight.period.split(":", 1)[0]
        return (
            f"budget: {engine_model} for {seconds / 60:.1f} min would cost {usd(amount)} but only "
            f"{usd(tight.remaining)} of the {usd(tight.cap)} cap is left {_PERIOD_WORDS.get(period, period)}"
            " — continuing with Whisper alone"
        )


class Tab:
    """The reservations one cloud stream runs on; the stream asks it before sending past them.

    Args:
        budget: where top-ups are reserved and the tab is settled.
        first: the reservation made before streaming.
        duration_s: the media's duration (sizes top-ups).
    """

    def __init__(self, budget: Budget, first: Reservation, duration_s: float) -> None:
        self.budget, self.duration = budget, duration_s
        self.reservations = [first]

    @property
    def seconds(self) -> float:
        """Audio seconds paid for so far."""
        return self.budget.seconds_for(self.reservations)

    async def extend(self, needed_seconds: float) -> str | None:
        """Reserve at least ``needed_seconds`` more; None when granted, else the refusal reason."""
        more = await self.budget.top_up(self.reservations, needed_seconds, self.duration)
        if isinstance(more, Refusal):
            return more.reason
        self.reservations.append(more)
        return None

    async def settle(self, used_seconds: float) -> float:
        return await self.budget.settle(self.reservations, used_seconds)


def summary_dicts(rows: Sequence[SpendSummary]) -> list[dict[str, Any]]:
    """JSON-ready rows for ``montagectl stats`` and the socket's ``stats`` reply."""
    return [
        {
            "period": r.period,
            "spent": round(r.spent, 6),
            "reserved": round(r.reserved, 6),
            "remaining": round(r.remaining, 6),
            "cap": r.cap,
        }
        for r in rows
    ]


async def sweep_reservations(store: JobStore, *, budgets: Sequence[Budget] = ()) -> list[Reservation]:
    """One sweep of the cost ledger: first the settles ``budgets`` (this process's) still owe,
    then every open reservation whose claim is gone is released. Returns what was released.

    Raises StoreUnavailable when the store is away (the caller backs off and sweeps again).
    """
    for budget in budgets:
        await budget.settle_owed()
    return await store.sweep_reservations()


async def run_sweeper(
    store: JobStore, *, budgets: Sequence[Budget] = (), every_seconds: float = SWEEP_SECONDS
) -> None:
    """Sweep every ``every_seconds`` until cancelled; a store outage only delays the next sweep.

    Meant to run under the daemon's supervisor (any other error ends it, to be restarted there).
    """
    while True:
        try:
            released = await sweep_reservations(store, budgets=budgets)
            if released:
                log.info(
                    "budget.swept", released=len(released), amount=round(sum(r.amount for r in released), 6)
                )
        except StoreUnavailable as e:
            log.warning("budget.sweep_waits_for_store", error=str(e))
        await anyio.sleep(every_seconds)
