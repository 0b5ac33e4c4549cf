"""Jobs as Ray tasks: a progress channel per job (a Ray actor), cancel, result.

    manager = JobManager(JobSettings())
    job_id = manager.submit(spec)                 # checks the spec, starts the Ray task
    async for event in manager.watch(job_id): ...  # ProgressEvent dicts, until final
    await manager.cancel(job_id)                  # the task stops at its next check
    result = await manager.result(job_id)         # {"version", "card"} or the job's error

Cancellation is cooperative: the task polls the channel between batches and steps and
raises `JobCancelled` (nothing is written). A task that dies is reported as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from augserve.server.errors import AugserveError, Cancelled, Internal, NotFound, ResourceExhausted
from augserve.server.jobs.progress import CANCELLED, FAILED, FINAL, ProgressEvent
from augserve.server.jobs.settings import JobSettings
from augserve.server.jobs.specs import JobSpec


@ray.remote(num_cpus=0)
class JobChannel:
    """One job's progress events (kept in order) and its cancel flag."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.cancelled = False
        self.changed = asyncio.Event()

    async def report(self, event: dict[str, Any]) -> bool:
        """Record an event (a "poll" message is not recorded); returns the cancel flag."""
        if event.get("message") != "poll" or event.get("state") in FINAL:
            self.events.append({**event, "seq": len(self.events)})
            self.changed.set()
        return self.cancelled

    async def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self.cancelled = True

    async def after(self, seq: int, timeout_s: float) -> list[dict[str, Any]]:
        """Events with seq > `seq`, waiting up to `timeout_s` for one to arrive."""
        if len(self.events) <= seq + 1:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout_s)
        return self.events[seq + 1 :]


def _run(spec_dict: dict[str, Any], channel: Any, threads: int, cache_dir: str) -> dict[str, Any]:
    import torch

    from augserve.server.jobs.execute import execute
    from augserve.server.jobs.progress import Context, JobCancelled

    torch.set_num_threads(threads)
    spec = JobSpec.from_dict(spec_dict)

    def report(event: ProgressEvent) -> bool:
        return bool(ray.get(channel.report.remote(event.as_dict())))

    try:
        return execute(spec, Context(spec.seed, report), cache_dir or None).as_dict()
    except JobCancelled as error:
        report(ProgressEvent(state=CANCELLED, stage="cancelled", message=str(error)))
        raise
    except BaseException as error:
        message = f"{type(error).__name__}: {error}"
        report(ProgressEvent(state=FAILED, stage="failed", message=message))
        raise


run_job = ray.remote(max_retries=0)(_run)


@dataclass
class Job:
    """A submitted job: its id, spec, channel actor and result ref."""

    id: str
    spec: JobSpec
    channel: Any
    ref: Any


def _unwrap(error: BaseException) -> AugserveError:
    if isinstance(error, RayTaskError) and isinstance(error.cause, AugserveError):
        return error.cause
    if isinstance(error, RayTaskError) and error.cause is not None:
        return Internal(f"job failed: {type(error.cause).__name__}: {error.cause}")
    if isinstance(error, ray.exceptions.TaskCancelledError):
        return Cancelled("the job was cancelled")
    return Internal(f"job failed: {type(error).__name__}: {error}")


class JobManager:
    """Submits jobs as Ray tasks and answers watch / cancel / result for them."""

    def __init__(self, settings: JobSettings | None = None) -> None:
        """Keep up to `settings.keep_finished` finished jobs; run `max_running` at once."""
        self.settings = settings or JobSettings()
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def _running(self) -> int:
        return sum(1 for job in self._jobs.values() if not ray.wait([job.ref], timeout=0)[0])

    def submit(self, spec: JobSpec) -> str:
        """Check `spec` (NotFound / InvalidArgument), start its task; returns the job id.

        Raises:
            ResourceExhausted: `max_running` jobs are already running.
        """
        from augserve.server.jobs.execute import check_spec

        check_spec(spec)
        if self._running() >= self.settings.max_running:
            raise ResourceExhausted(f"{self.settings.max_running} jobs are running; retry later")
        channel = JobChannel.remote()
        ref = run_job.options(num_cpus=self.settings.task_num_cpus).remote(
            spec.to_dict(), channel, self.settings.torch_threads, self.settings.cache_dir
        )
        job = Job(uuid.uuid4().hex[:16], spec, channel, ref)
        self._jobs[job.id] = job
        while len(self._jobs) > self.settings.keep_finished + self.settings.max_running:
            self._jobs.popitem(last=False)
        return job.id

    def get(self, job_id: str) -> Job:
        """The job called `job_id`, or NotFound."""
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return job

    async def watch(self, job_id: str, after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """Yield the job's events (seq > `after`) as they come, ending with the final one."""
        job = self.get(job_id)
        while True:
            events = await job.channel.after.remote(after, 1.0)
            for event in events:
                yield event
                after = event["seq"]
                if event["state"] in FINAL:
                    return
            if not events and ray.wait([job.ref], timeout=0)[0]:
                late = await job.channel.after.remote(after, 0.0)
                if late:
                    continue
                try:
                    await job.ref
                    message = "the job ended without a final event"
                except BaseException as error:  # the task died before it could report
                    message = str(_unwrap(error))
                yield {**ProgressEvent(seq=after + 1, state=FAILED, message=message).as_dict()}
                return

    async def cancel(self, job_id: str) -> None:
        """Ask the job to stop; it reports "cancelled" and writes nothing."""
        await self.get(job_id).channel.cancel.remote()

    async def result(self, job_id: str) -> dict[str, Any]:
        """Wait for the job; returns {"version", "card"} or raises its error (Cancelled, ...)."""
        job = self.get(job_id)
        try:
            return await job.ref
        except RayError as error:
            raise _unwrap(error) from None

    def result_sync(self, job_id: str) -> dict[str, Any]:
        """`result` for synchronous callers (the CLI)."""
        try:
            return ray.get(self.get(job_id).ref)
        except RayError as error:
            raise _unwrap(error) from None

    def events_sync(self, job_id: str, after: int, timeout_s: float) -> list[dict[str, Any]]:
        """Events with seq > `after`, waiting up to `timeout_s` (for the CLI's progress bar)."""
        return ray.get(self.get(job_id).channel.after.remote(after, timeout_s))

    def cancel_sync(self, job_id: str) -> None:
        """`cancel` for synchronous callers."""
        ray.get(self.get(job_id).channel.cancel.remote())
