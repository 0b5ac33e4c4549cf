"""`JobClient`: submit, watch, cancel and fetch compression / transfer jobs over gRPC.

Imports neither torch nor Ray.

Example:
    >>> with JobClient("localhost:8001") as client:  # doctest: +SKIP
    ...     job = client.submit({"source": {"repository": "/models", "name": "digits_fp32"},
    ...                          "steps": [{"quantize": {}}], "dataset": "digits",
    ...                          "output_repository": "/models", "output_name": "digits_int8"})
    ...     for event in client.watch(job):
    ...         print(event.stage, event.epoch, event.loss, event.accuracy)
    ...     print(client.result(job).card["accuracy"])
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from augserve.clients.auth import with_token
from augserve.clients.channel import open_channel
from augserve.clients.proto.augserve.v1 import jobs_pb2 as pb
from augserve.clients.proto.augserve.v1 import jobs_pb2_grpc as pb_grpc
from augserve.clients.tls import TlsSettings

STATES = {pb.JobEvent.RUNNING: "running", pb.JobEvent.DONE: "done",
          pb.JobEvent.FAILED: "failed", pb.JobEvent.CANCELLED: "cancelled"}


@dataclass(frozen=True)
class JobEvent:
    """One progress event (see `augserve.v1.JobEvent`); `state` is a lower-case name."""

    seq: int
    state: str
    stage: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    accuracy: float
    message: str


@dataclass(frozen=True)
class JobResult:
    """What a finished job wrote: the version (0: none) and its model card."""

    version: int
    card: dict[str, Any]


def _event(message: pb.JobEvent) -> JobEvent:
    return JobEvent(
        message.seq, STATES[message.state], message.stage, message.epoch, message.epochs,
        message.step, message.steps, message.loss, message.accuracy, message.message,
    )


class JobClient:
    """A blocking client of `augserve.v1.JobService`.

    Args:
        target: "host:port".
        channel: an existing channel to use instead (not closed by `close`).
        tls: connect to `target` over TLS with these settings (None: plaintext).
        token: a bearer token sent with every call (servers run with `--auth-tokens`).
    """

    def __init__(self, target: str = "localhost:8001", channel: grpc.Channel | None = None,
                 tls: TlsSettings | None = None, token: str | None = None):
        self._own = channel is None
        self._channel = channel or open_channel(target, tls)
        self._stub = pb_grpc.JobServiceStub(with_token(self._channel, token))

    def submit(self, spec: Mapping[str, Any] | str) -> str:
        """Start a job from its spec (a dict or JSON text); returns the job id.

        Raises:
            grpc.RpcError: NOT_FOUND (dataset, source model), INVALID_ARGUMENT (spec).
        """
        text = spec if isinstance(spec, str) else json.dumps(spec)
        return self._stub.Submit(pb.SubmitJobRequest(spec_json=text)).job_id

    def watch(self, job_id: str, from_seq: int = 0) -> Iterator[JobEvent]:
        """Yield the job's progress events until the final one (done/failed/cancelled)."""
        for message in self._stub.Watch(pb.WatchJobRequest(job_id=job_id, from_seq=from_seq)):
            yield _event(message)

    def cancel(self, job_id: str) -> None:
        """Ask the job to stop; it writes nothing."""
        self._stub.Cancel(pb.JobRef(job_id=job_id))

    def result(self, job_id: str, timeout: float | None = None) -> JobResult:
        """Wait for the job and return what it wrote.

        Raises:
            grpc.RpcError: CANCELLED for a cancelled job, the job's error status otherwise.
        """
        reply = self._stub.Result(pb.JobRef(job_id=job_id), timeout=timeout)
        return JobResult(reply.version, json.loads(reply.model_card_json or "{}"))

    def close(self) -> None:
        """Close the channel (if this client opened it)."""
        if self._own:
            self._channel.close()

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
