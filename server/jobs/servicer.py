"""The `augserve.v1.JobService` RPCs: a thin translation to `JobManager` calls.

Errors are augserve exceptions (NotFound for a missing dataset, model or job;
InvalidArgument for a bad spec; Cancelled for the result of a cancelled job), mapped to
status codes by the server's interceptor.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from grpc import aio

from augserve.clients.proto.augserve.v1 import jobs_pb2 as pb
from augserve.clients.proto.augserve.v1 import jobs_pb2_grpc as pb_grpc
from augserve.kernels.resolve import AllowList
from augserve.server.errors import InvalidArgument
from augserve.server.jobs.runner import JobManager
from augserve.server.jobs.settings import JobSettings
from augserve.server.jobs.specs import JobSpec
from augserve.server.paths import inside

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobService"].full_name
_STATES = {"running": pb.JobEvent.RUNNING, "done": pb.JobEvent.DONE,
           "failed": pb.JobEvent.FAILED, "cancelled": pb.JobEvent.CANCELLED}


def confine(spec: JobSpec, root: Path | None) -> None:
    """Refuse a spec whose paths leave the server's model repository `root`.

    A client names a source model, a state_dict file, an output repository and maybe
    dataset tables' files; over the RPC each must lie inside the repository the server
    serves (symlinks resolved), so a job can neither read nor write anywhere else. The
    datasets the server registers (`[stream.datasets]`) are named, not given as paths.

    Raises:
        InvalidArgument: a path outside `root`, or any path when the server has no root.
    """
    fields = {"source.repository": spec.source.repository,
              "source.state_dict": spec.source.state_dict,
              "output_repository": spec.output_repository}
    for name in ("dataset", "validation_dataset"):  # a dataset table names files too
        table = getattr(spec, name)
        if isinstance(table, Mapping):
            fields.update({f"{name}.path": str(table.get("path", "")),
                           f"{name}.labels_path": str(table.get("labels_path", ""))})
    for field, value in fields.items():
        if value and root is None:
            raise InvalidArgument(f"{field}: this server has no model repository to use")
        if value:
            inside(root, value, field=field)


class JobServicer(pb_grpc.JobServiceServicer):
    """Submit, Watch, Cancel and Result over a `JobManager`."""

    def __init__(self, manager: JobManager, repository: Any = None) -> None:
        """Serve the jobs of `manager`; reload finished outputs into `repository`."""
        self.manager = manager
        self.repository = repository
        self._reloads: set[asyncio.Task] = set()

    async def _reload_when_done(self, job_id: str, spec: JobSpec) -> None:
        # A version written into the served repository is served without a restart.
        try:
            await self.manager.result(job_id)
            await self.repository.load(spec.output_name)
        except Exception as error:  # the job's own error reaches its Result caller
            log.info("job %s: no reload of %s (%s)", job_id, spec.output_name, error)

    async def Submit(self, request: pb.SubmitJobRequest, context: object) -> pb.SubmitJobResponse:
        """Parse and check the spec, start the job; returns its id."""
        try:
            raw = json.loads(request.spec_json or "{}")
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"spec_json: not valid JSON: {error}") from None
        spec = JobSpec.from_dict(raw)
        root = getattr(self.repository, "root", None)
        confine(spec, root)
        job_id = self.manager.submit(spec)
        if root is not None and spec.output_repository and (
            Path(spec.output_repository).resolve() == Path(root).resolve()
        ):
            task = asyncio.get_running_loop().create_task(self._reload_when_done(job_id, spec))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)
        return pb.SubmitJobResponse(job_id=job_id)

    async def Watch(
        self, request: pb.WatchJobRequest, context: object
    ) -> AsyncIterator[pb.JobEvent]:
        """Stream the job's events (from `from_seq`) until its final one."""
        async for event in self.manager.watch(request.job_id, int(request.from_seq) - 1):
            fields = {k: v for k, v in event.items() if k not in ("state",)}
            yield pb.JobEvent(job_id=request.job_id, state=_STATES[event["state"]], **fields)

    async def Cancel(self, request: pb.JobRef, context: object) -> pb.CancelJobResponse:
        """Ask the job to stop."""
        await self.manager.cancel(request.job_id)
        return pb.CancelJobResponse()

    async def Result(self, request: pb.JobRef, context: object) -> pb.JobResultResponse:
        """Wait for the job; its version and model card (or its error status)."""
        result = await self.manager.result(request.job_id)
        return pb.JobResultResponse(
            job_id=request.job_id, version=result["version"],
            model_card_json=json.dumps(result["card"]),
        )


def add_jobs_service(server: aio.Server, repository: object, settings: JobSettings,
                     imports: AllowList | None = None,
                     datasets: dict[str, Any] | None = None) -> str:
    """Register the Jobs service on `server`; return its full name.

    Args:
        server: a `grpc.aio.Server` (with `ErrorMappingInterceptor` installed).
        repository: the server's `ModelRepository`: a job that writes into its folder
            has the model reloaded when it finishes, so the new version is served.
        settings: task size, threads, limits.
        imports: the modules a job's architecture may come from (default:
            `augserve.server.imports.allow_list()`).
        datasets: the datasets a job may name (name -> `DatasetSpec`; the server passes
            the stream service's).

    Returns:
        "augserve.v1.JobService".
    """
    servicer = JobServicer(JobManager(settings, imports, datasets), repository)
    pb_grpc.add_JobServiceServicer_to_server(servicer, server)
    return SERVICE_NAME
