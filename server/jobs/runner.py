"""Jobs as Ray tasks: a progress channel per job (a Ray actor), cancel, result.

    manager = JobManager(JobSettings())
    job_id = manager.submit(spec)                 # checks the spec, starts the Ray task
    async for event in manager.watch(job_id): ...  # ProgressEvent dicts, until final
    await manager.cancel(job_id)                  # the task stops at its next check
    result = await manager.result(job_id)         # {"version", "card"} or the job's error

Cancellation is cooperative: the task polls the channel between batches and steps and
raises `JobCancelled` (nothing is written). A task that dies is reported as failed.

A spec with `workers` > 1 runs its training loops on Ray Train (`distributed`): rank 0
reports through the job's channel and every rank polls it for cancel.

Every job is journaled (`journal`): a thread per live job writes its record at submit, at
each stage or epoch change and at the end. A new manager loads the journal, so jobs of an
earlier server answer Watch (a replay), Result and Cancel (a no-op) from their records; a
job that was running when that server stopped is failed as interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from augserve.kernels.resolve import AllowList
from augserve.server.actors import placement_options
from augserve.server.errors import AugserveError, Cancelled, Internal, NotFound
from augserve.server.imports import allow_list
from augserve.server.jobs.journal import Journal, Record, state_dir
from augserve.server.jobs.progress import CANCELLED, FAILED, FINAL, ProgressEvent
from augserve.server.jobs.queue import JobSlots
from augserve.server.jobs.settings import JobSettings
from augserve.server.jobs.specs import JobSpec

log = logging.getLogger(__name__)


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


def _run(spec_dict: dict[str, Any], channel: Any, threads: int, cache_dir: str,
         imports: AllowList, turn: bool | None = None,
         datasets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one job; `turn` is only waited for (by Ray, before the task starts: `queue`)."""
    import torch

    from augserve.server.jobs.execute import execute
    from augserve.server.jobs.progress import Context, JobCancelled

    torch.set_num_threads(threads)
    spec = JobSpec.from_dict(spec_dict)

    def report(event: ProgressEvent) -> bool:
        return bool(ray.get(channel.report.remote(event.as_dict())))

    try:
        if report(ProgressEvent(message="poll")):  # cancelled while it was queued
            raise JobCancelled("the job was cancelled while queued; nothing was written")
        ctx = Context(spec.seed, report, workers=spec.workers, channel=channel)
        return execute(spec, ctx, cache_dir or None, imports, datasets).as_dict()
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
    """A job submitted to this manager: id, spec, channel actor, result ref, journal thread."""

    id: str
    spec: JobSpec
    channel: Any
    ref: Any
    recorder: threading.Thread | None = None


def _unwrap(error: BaseException) -> AugserveError:
    if isinstance(error, RayTaskError) and isinstance(error.cause, AugserveError):
        return error.cause
    if isinstance(error, RayTaskError) and error.cause is not None:
        return Internal(f"job failed: {type(error.cause).__name__}: {error.cause}")
    if isinstance(error, ray.exceptions.TaskCancelledError):
        return Cancelled("the job was cancelled")
    return Internal(f"job failed: {type(error).__name__}: {error}")


def _outcome(ref: Any) -> tuple[dict[str, Any] | None, AugserveError | None]:
    try:
        return ray.get(ref), None
    except RayError as error:
        return None, _unwrap(error)


class JobManager:
    """Runs jobs as Ray tasks; answers for them and for an earlier server's journaled jobs."""

    def __init__(self, settings: JobSettings | None = None,
                 imports: AllowList | None = None,
                 datasets: dict[str, Any] | None = None) -> None:
        """Keep up to `settings.keep_finished` finished jobs; run `max_running` at once.

        Jobs beyond `max_running` wait in a FIFO of at most `max_queued` (`queue`).

        Loads the journal in `settings.state_dir` (see `journal.state_dir`). Jobs import
        architectures only from `imports` (default: `augserve.server.imports.allow_list()`),
        and may name the `datasets` (name -> `DatasetSpec`: the stream service's).
        """
        self.settings = settings or JobSettings()
        self.imports = imports or allow_list()
        self.datasets = dict(datasets or {})
        self.slots = JobSlots(self.settings)
        self.journal = Journal(state_dir(self.settings.state_dir))
        records = self.journal.load(self.settings.keep_finished)
        self._jobs: OrderedDict[str, Job | Record] = OrderedDict(
            (record.id, record) for record in reversed(records)
        )

    def _record(self, job: Job, record: Record) -> None:
        # Follows the channel as `watch` does; writes at submit, at each stage or epoch
        # change, and at the end.
        try:
            self.journal.write(record)
            seq, mark = -1, None
            while True:
                events = ray.get(job.channel.after.remote(seq, 1.0))
                if events:
                    seq, last = events[-1]["seq"], events[-1]
                    record = record.with_events(events)
                    if last["state"] in FINAL:
                        break
                    if (last["stage"], last["epoch"]) != mark:
                        mark = (last["stage"], last["epoch"])
                        self.journal.write(record)
                elif ray.wait([job.ref], timeout=0)[0]:
                    record = record.with_events(ray.get(job.channel.after.remote(seq, 0.0)))
                    break
            self.journal.write(record.finished(*_outcome(job.ref)))
        except Exception as error:  # e.g. Ray shut down first: a restart marks it interrupted
            log.warning("job %s: journal stopped: %s: %s", job.id, type(error).__name__, error)

    def submit(self, spec: JobSpec) -> str:
        """Check `spec` (NotFound / InvalidArgument), start its task; returns the job id.

        Beyond `max_running` running jobs, the job is queued: its task starts when a running
        one ends, in submission order, and its first event says so (stage "queued").

        Raises:
            ResourceExhausted: `max_running` jobs run and `max_queued` wait already, or
                `spec.workers` > 1 is more than the cluster's free CPUs (or GPUs).
        """
        from augserve.server.jobs.execute import check_spec

        check_spec(spec, self.imports, self.datasets)
        if spec.workers > 1:
            from augserve.server.jobs.distributed import check_room

            check_room(spec.workers)
        job_id = uuid.uuid4().hex[:16]
        turn, ahead = self.slots.admit(job_id)
        # The channel lives on the server's node: Watch and Result must outlive the loss
        # of the node that runs the job (losing the server's own node ends the server).
        # Hard affinity: Ray ignores a soft one for an actor that reserves no resources.
        channel = JobChannel.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote()
        if turn is not None:
            channel.report.remote(ProgressEvent(
                stage="queued", message=f"queued behind {ahead} job(s); "
                                        f"{self.settings.max_running} run at once").as_dict())
        ref = run_job.options(num_cpus=self.settings.task_num_cpus,
                              **placement_options(self.settings.placement)).remote(
            spec.to_dict(), channel, self.settings.torch_threads, self.settings.cache_dir,
            self.imports, turn, self.datasets,
        )
        self.slots.watch(job_id, ref)
        job = Job(job_id, spec, channel, ref)
        job.recorder = threading.Thread(
            target=self._record, args=(job, Record(job.id, spec.to_dict(), time.time())),
            name=f"journal-{job.id}", daemon=True,
        )
        job.recorder.start()
        self._jobs[job.id] = job
        live = self.settings.max_running + self.settings.max_queued
        while len(self._jobs) > self.settings.keep_finished + live:
            self.journal.delete(self._jobs.popitem(last=False)[0])
        return job.id

    def get(self, job_id: str) -> Job | Record:
        """The job called `job_id` (live, or journaled by an earlier server), or NotFound."""
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return job

    async def watch(self, job_id: str, after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """Yield the job's events (seq > `after`) as they come, ending with the final one."""
        job = self.get(job_id)
        if isinstance(job, Record):
            for event in job.events_after(after):
                yield event
            return
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
                recorded = await job.channel.after.remote(-1, 0.0)
                if recorded and recorded[-1]["state"] in FINAL:
                    return  # the caller asked from past the final event: nothing is left
                try:
                    await job.ref
                    message = "the job ended without a final event"
                except BaseException as error:  # the task died before it could report
                    message = str(_unwrap(error))
                yield {**ProgressEvent(seq=after + 1, state=FAILED, message=message).as_dict()}
                return

    async def cancel(self, job_id: str) -> None:
        """Ask the job to stop; it reports "cancelled" and writes nothing.

        A finished job ignores it, as does a journaled one (all journaled jobs are finished).
        """
        job = self.get(job_id)
        if isinstance(job, Job):
            await job.channel.cancel.remote()
            self.slots.withdraw(job_id)  # a queued job starts now, to end as cancelled

    async def result(self, job_id: str) -> dict[str, Any]:
        """Wait for the job; returns {"version", "card"} or raises its error (Cancelled, ...)."""
        job = self.get(job_id)
        if isinstance(job, Record):
            return job.outcome()
        try:
            return await job.ref
        except RayError as error:
            raise _unwrap(error) from None

    def result_sync(self, job_id: str) -> dict[str, Any]:
        """`result` for synchronous callers (the CLI)."""
        job = self.get(job_id)
        if isinstance(job, Record):
            return job.outcome()
        try:
            return ray.get(job.ref)
        except RayError as error:
            raise _unwrap(error) from None

    def events_sync(self, job_id: str, after: int, timeout_s: float) -> list[dict[str, Any]]:
        """Events with seq > `after`, waiting up to `timeout_s` (for the CLI's progress bar)."""
        job = self.get(job_id)
        if isinstance(job, Record):
            return job.events_after(after)
        return ray.get(job.channel.after.remote(after, timeout_s))

    def cancel_sync(self, job_id: str) -> None:
        """`cancel` for synchronous callers."""
        job = self.get(job_id)
        if isinstance(job, Job):
            ray.get(job.channel.cancel.remote())
            self.slots.withdraw(job_id)
