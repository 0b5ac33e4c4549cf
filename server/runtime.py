"""The Ray connection: an embedded local Ray by default, or an existing cluster.

The server owns an embedded Ray and shuts it down on exit; a cluster it joined
with `--ray-address` is left running.

Losing the cluster. `RayRuntime.watch` asks the GCS a trivial question every
`ray_probe_interval_s`. When a probe fails (the head is gone) the server reports not
ready and refuses new calls with UNAVAILABLE at once (its `on_lost`), rather than
letting them wait on actors that cannot be created; if a probe succeeds again within
`ray_lost_grace_s` it serves again (`on_back`), else the process exits with
`RAY_LOST_EXIT` so that a supervisor restarts it against a cluster that works. It
does not reconnect in place: a Ray driver cannot rejoin a new GCS (a head restarted
without GCS fault tolerance is a new cluster), and Ray's core worker ends the driver
itself after 60 s without one.

A node joining. `RayRuntime.watch_nodes` reads the live nodes every
`ray_rebalance_poll_s`; from a join until two minutes pass without a move, it calls
`on_join` with them at every read, which spreads the pools and the models' replicas back
onto it, all at once (`ActorPool.rebalance`, `ModelRepository.rebalance`; each does nothing
once balanced).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable

import ray

log = logging.getLogger(__name__)

# Ray's CPU resource is a scheduling count, not a thread budget: replicas and augment
# workers set their own thread counts. An embedded Ray therefore advertises at least
# this many logical CPUs, so that several small models fit on a 2-core machine.
MIN_EMBEDDED_LOGICAL_CPUS = 16
RAY_LOST_EXIT = 3  # the exit status once the cluster stayed unreachable past the grace


class RayRuntime:
    """Connect to Ray on `start()`; `stop()` shuts down only a Ray that was started here."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.started_here = False

    def start(self) -> None:
        """Join the cluster at `address`, reuse an initialized Ray, or start an embedded one."""
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
            log.info("joined the Ray cluster at %s", self.address)
            return
        num_cpus = self.num_cpus or max(os.cpu_count() or 1, MIN_EMBEDDED_LOGICAL_CPUS)
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        self.started_here = True
        log.info("started an embedded Ray with %d logical CPUs", num_cpus)

    def stop(self) -> None:
        """Shut Ray down if this runtime started it."""
        if self.started_here and ray.is_initialized():
            ray.shutdown()
            self.started_here = False

    @staticmethod
    def probe(timeout_s: float) -> bool:
        """Whether the GCS answers a trivial key-value read within `timeout_s`."""
        try:
            gcs = ray._private.worker.global_worker.gcs_client
            gcs.internal_kv_get(b"augserve-probe", None, timeout=timeout_s)
        except Exception:  # any failure to answer is the cluster being gone
            return False
        return True

    @staticmethod
    def alive_nodes() -> set[str]:
        """The ids of the cluster's live nodes (a GCS read)."""
        return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}

    async def watch_nodes(self, on_join: Callable[[set[str]], Awaitable[int]],
                          interval_s: float, settle_s: float = 120.0) -> None:
        """Every `interval_s`, until cancelled: `on_join(live nodes)` once a node has joined.

        `on_join` returns how much it moved, and must move nothing when nothing needs to.
        It is called again at every tick until `settle_s` have passed since the join or
        since its last move, since work that can move may appear later (an actor whose
        replacement was still starting) and moves take long on a loaded host. A read that
        fails (the cluster gone: `watch` handles that) moves nothing.
        """
        known: set[str] | None = None
        spreading_until = 0.0
        while True:
            try:
                alive: set[str] | None = await asyncio.to_thread(self.alive_nodes)
            except Exception:  # the GCS did not answer; `watch` decides what that means
                alive = None
            if known is not None and alive is not None and alive - known:
                log.info("node(s) %s joined the cluster; spreading work onto them",
                         ", ".join(sorted(alive - known)))
                spreading_until = time.monotonic() + settle_s
            if alive is not None and time.monotonic() < spreading_until:
                try:
                    if await on_join(alive):
                        spreading_until = time.monotonic() + settle_s
                except Exception:  # a failed move leaves work where it was; keep watching
                    log.exception("spreading work onto the joined node(s) failed")
            known = alive if alive is not None else known
            await asyncio.sleep(interval_s)

    async def watch(self, on_lost: Callable[[], Awaitable[None]],
                    on_back: Callable[[], Awaitable[None]],
                    interval_s: float, grace_s: float,
                    exit_process: Callable[[int], object] = os._exit) -> None:
        """Probe Ray every `interval_s` until cancelled; see the module docstring.

        `on_lost` runs once when a probe fails, `on_back` when one succeeds again;
        `exit_process(RAY_LOST_EXIT)` once probes have failed for `grace_s`. The default
        is `os._exit`: with the GCS gone, a clean shutdown would wait on Ray.
        """
        lost_since: float | None = None
        while True:
            alive = await asyncio.to_thread(self.probe, interval_s)
            now = time.monotonic()
            if not alive and lost_since is None:
                lost_since = now
                log.error("the Ray cluster is unreachable; refusing calls, exiting in %.0f s "
                          "unless it answers again", grace_s)
                await on_lost()
            elif alive and lost_since is not None:
                lost_since = None
                log.warning("the Ray cluster answers again; serving")
                await on_back()
            if lost_since is not None and now - lost_since >= grace_s:
                log.critical("the Ray cluster stayed unreachable for %.0f s; exiting %d",
                             grace_s, RAY_LOST_EXIT)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                sys.stderr.flush()
                exit_process(RAY_LOST_EXIT)
                return
            await asyncio.sleep(interval_s if alive else min(interval_s, 0.5))
