"""Running and queued jobs: `max_running` at once, then a FIFO of at most `max_queued`.

A job that cannot run yet still gets its Ray task at Submit, so that Watch, Result and
Cancel treat it as any other job; the task's last argument is its *turn*, an unresolved
call on the `TurnGate` actor. Ray starts a task only once its arguments are resolved, so
the task waits, taking no CPU, until `JobSlots` grants the turn, which it does when a
running job's task ends (a Ray completion callback), in submission order.

    slots = JobSlots(settings)
    turn, ahead = slots.admit(job_id)  # turn None: run now; else pass it to the task
    slots.watch(job_id, ref)    # frees the slot when the task ends
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

import ray

from augserve.server.jobs.settings import JobSettings
from augserve.server.limits import over_limit


@ray.remote(num_cpus=0)
class TurnGate:
    """Holds each queued job's turn until it is granted."""

    def __init__(self) -> None:
        self._turns: dict[str, asyncio.Event] = {}

    async def turn(self, job_id: str) -> bool:
        """Return once `grant(job_id)` was called (before or after this call)."""
        await self._turns.setdefault(job_id, asyncio.Event()).wait()
        del self._turns[job_id]
        return True

    async def grant(self, job_id: str) -> None:
        """Let the job's task start."""
        self._turns.setdefault(job_id, asyncio.Event()).set()


class JobSlots:
    """Which jobs hold a running slot and which wait for one; thread-safe.

    Completion callbacks run on Ray's threads, Submit and Cancel on the server's loop.
    """

    def __init__(self, settings: JobSettings) -> None:
        """Bound jobs by `settings.max_running` and `settings.max_queued`."""
        self.settings = settings
        self.running: set[str] = set()
        self.queued: deque[str] = deque()
        self._lock = threading.Lock()
        self._gate: Any = None

    def admit(self, job_id: str) -> tuple[Any, int]:
        """Take a running slot or a place in the queue: (the turn to wait for, jobs ahead).

        The turn is None where the job runs now.

        Raises:
            ResourceExhausted: `max_running` jobs run and `max_queued` wait already.
        """
        with self._lock:
            if len(self.running) < self.settings.max_running and not self.queued:
                self.running.add(job_id)
                return None, 0
            if len(self.queued) >= self.settings.max_queued:
                raise over_limit(self.settings, "max_queued",
                                 f"job {len(self.queued) + 1} queued ({len(self.running)} "
                                 f"running); retry later")
            if self._gate is None:
                self._gate = TurnGate.remote()
            self.queued.append(job_id)
            return self._gate.turn.remote(job_id), len(self.queued) - 1

    def watch(self, job_id: str, ref: Any) -> None:
        """Free the job's slot (or its place in the queue) when its task `ref` ends."""
        ref.future().add_done_callback(lambda _: self._ended(job_id))

    def withdraw(self, job_id: str) -> bool:
        """Let a queued job's task start now, outside the bound, to see it was cancelled.

        Returns whether the job was queued; a cancelled job's task ends at its first check.
        """
        with self._lock:
            if job_id not in self.queued:
                return False
            self.queued.remove(job_id)
            self._gate.grant.remote(job_id)
            return True

    def _ended(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self.running:
                return  # a withdrawn job: it never held a slot
            self.running.discard(job_id)
            while self.queued and len(self.running) < self.settings.max_running:
                turn = self.queued.popleft()
                self.running.add(turn)
                self._gate.grant.remote(turn)
