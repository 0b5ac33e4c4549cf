"""Progress events, cancellation, and the context every job step runs in.

A job reports through a `Context`: `ctx.emit(...)` sends a `ProgressEvent` to whoever
watches (a Ray actor channel, a progress bar, a list in a test), and returns whether the
job was cancelled; `ctx.check()` raises `JobCancelled` between steps when it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from augserve.server.errors import Cancelled

#: A job's states; the last three are final.
RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
FINAL = (DONE, FAILED, CANCELLED)


class JobCancelled(Cancelled):
    """The job was cancelled; nothing was written."""


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        seq: 0, 1, 2, ... per job (set by the channel).
        state: "running", "done", "failed" or "cancelled".
        stage: the step running, e.g. "prune 1/2", "finetune", "calibrate", "write".
        epoch: 1-based epoch within the stage (0: not training).
        epochs: epochs in the stage.
        step: batches done in the epoch; steps: batches per epoch.
        loss: the epoch's running mean training loss.
        accuracy: the latest held-out accuracy (-1: not measured yet).
        message: free text (the error on failure, the version written when done).
    """

    seq: int = 0
    state: str = RUNNING
    stage: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float = 0.0
    accuracy: float = -1.0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The event as a plain dict."""
        return asdict(self)


@dataclass
class Context:
    """What a step needs besides the model: seed, torch threads, progress and cancel.

    Attributes:
        seed: the job's seed.
        report: called with every event; returns True when the job is cancelled.
        min_interval_s: in-epoch events closer together than this are dropped (epoch
            ends, stage changes and final events always go out).
        workers: Ray Train workers each training loop runs on (`train.fit`; > 1 needs
            `channel`).
        channel: the job's `runner.JobChannel` actor, through which Ray Train's rank 0
            reports and every rank polls for cancel (None outside a Ray job).
    """

    seed: int = 0
    report: Callable[[ProgressEvent], bool] = field(default=lambda event: False)
    min_interval_s: float = 0.2
    workers: int = 1
    channel: Any = None
    _last: float = 0.0
    _cancelled: bool = False
    _stage: str = ""

    def emit(self, force: bool = False, **fields: Any) -> bool:
        """Send an event (rate-limited unless `force`); returns whether cancelled."""
        now = time.monotonic()
        stage = fields.get("stage", self._stage)
        if force or stage != self._stage or now - self._last >= self.min_interval_s:
            self._stage, self._last = stage, now
            if self.report(ProgressEvent(**fields)):
                self._cancelled = True
        return self._cancelled

    def check(self) -> None:
        """Raise JobCancelled if the job was cancelled (polls the channel)."""
        if self._cancelled or self.report(ProgressEvent(stage=self._stage, message="poll")):
            self._cancelled = True
            raise JobCancelled("the job was cancelled; nothing was written")

    def generator(self, salt: int = 0) -> torch.Generator:
        """A torch generator seeded by (seed, salt)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)
