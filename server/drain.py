"""The drain gate: on shutdown, refuse new calls and wait for the ones in flight.

`grpc.aio.Server.stop(grace)` cancels calls that reached the transport but had
not yet been handed to a handler, so a client can see CANCELLED for a request
that was never refused. The gate closes first instead: from then on every new
call is answered UNAVAILABLE (which clients may retry elsewhere), the calls
already admitted finish, the gate keeps refusing for a short linger (so that a
call already on the wire is refused cleanly rather than cancelled), and only
then does the server stop.

The gate also refuses calls, for a while, without draining: `refuse(reason)` while the
Ray cluster is unreachable (`runtime.RayRuntime.watch`), `reopen()` once it is back.
"""

from __future__ import annotations

import asyncio
import time

# Probes and discovery keep answering while the server drains, so that load
# balancers read NOT_SERVING instead of a refused call; long-lived health
# watches must not hold the drain open either.
LINGER_S = 0.25

EXEMPT_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)


class DrainGate:
    """Counts admitted calls; once closed, admits none and reports when all are done."""

    def __init__(self) -> None:
        """Start open, with no call in flight."""
        self.is_open = True
        self.refusal: str | None = None
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @staticmethod
    def is_exempt(method: str) -> bool:
        """Whether `method` bypasses the gate (health, reflection, liveness)."""
        return method.startswith(EXEMPT_METHOD_PREFIXES)

    def admit(self) -> bool:
        """Count one more call in flight; False (and nothing counted) once closed or refusing."""
        if not self.is_open or self.refusal is not None:
            return False
        self.in_flight += 1
        self._idle.clear()
        return True

    def refuse(self, reason: str) -> None:
        """Refuse new calls with UNAVAILABLE and `reason` until `reopen()`."""
        self.refusal = reason

    def reopen(self) -> None:
        """Admit calls again after `refuse` (a closed gate stays closed)."""
        self.refusal = None

    def release(self) -> None:
        """Mark one admitted call finished."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def close_and_drain(self, timeout_s: float) -> float:
        """Refuse new calls, wait up to `timeout_s` for admitted ones; return the time left.

        After the last admitted call finishes the gate lingers, still refusing,
        for up to `LINGER_S` of what is left of `timeout_s`.
        """
        self.is_open = False
        deadline = time.monotonic() + timeout_s
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return 0.0
        await asyncio.sleep(min(LINGER_S, max(0.0, deadline - time.monotonic())))
        return max(0.0, deadline - time.monotonic())
