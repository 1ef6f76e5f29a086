"""One claim of one job, as its holder sees the store: every write names the claim.

The pipeline and the stages write through a :class:`JobLease` instead of the bare store, so no
call site can forget the fencing token. After a lease takeover the stale holder's writes raise
:class:`~montaged.errors.LeaseLost` (its heartbeat returns False) and the current holder's state is
never touched by it.
"""

from __future__ import annotations

from typing import Any

from montaged.store import Fence, JobStore
from montaged.store._common import lease_lost


class JobLease:
    """The store, seen by the holder of one claim.

    Args:
        store: the job store.
        job_id: the claimed job.
        token: the claim's fencing token (the job's ``attempts`` right after the claim).
        worker: the name the job was claimed under (heartbeats check it too).
    """

    def __init__(self, store: JobStore, job_id: str, token: int, worker: str) -> None:
        self.store, self.job_id, self.token, self.worker = store, job_id, token, worker

    @property
    def fence(self) -> Fence:
        return Fence(self.job_id, self.token)

    def renew(self, token: int) -> None:
        """This process claimed its own running job again (its lease lapsed while the store was
        away): the running copy goes on under the new claim."""
        self.token = token

    async def check(self) -> None:
        """Raise LeaseLost unless this claim still holds the job: called right before touching
        files under final names, which the store cannot fence."""
        job = await self.store.get(self.job_id)
        current = job.attempts if job is not None else None
        if current != self.token:
            raise lease_lost(self.job_id, self.token, current, "publishing outputs")

    async def heartbeat(self, lease_seconds: float) -> bool:
        return await self.store.heartbeat(self.job_id, self.worker, lease_seconds, token=self.token)

    async def set_stage(self, stage: str, progress: float = 0.0) -> None:
        await self.store.set_stage(self.job_id, stage, progress, token=self.token)

    async def set_progress(self, progress: float) -> None:
        await self.store.set_progress(self.job_id, progress, token=self.token)

    async def finish(self, result: dict[str, Any]) -> None:
        await self.store.finish(self.job_id, result, token=self.token)

    async def fail(self, *, stage: str, error_class: str, message: str) -> None:
        await self.store.fail(
            self.job_id, stage=stage, error_class=error_class, message=message, token=self.token
        )

    async def release(self, *, stopped_at: str) -> None:
        await self.store.release(self.job_id, stopped_at=stopped_at, token=self.token)

    async def set_content_hash(self, content_hash: str) -> None:
        await self.store.set_content_hash(self.job_id, content_hash, token=self.token)

    async def put_result(self, stage: str, key: str, payload: dict[str, Any]) -> None:
        await self.store.put_result(stage, key, payload, fence=self.fence)

    async def get_result(self, stage: str, key: str) -> dict[str, Any] | None:
        return await self.store.get_result(stage, key)
