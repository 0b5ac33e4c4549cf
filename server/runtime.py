"""The Ray connection: an embedded local Ray by default, or an existing cluster.

The server owns an embedded Ray and shuts it down on exit; a cluster it joined
with `--ray-address` is left running.
"""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)

# Ray's CPU resource is a scheduling count, not a thread budget: replicas and augment
# workers set their own thread counts. An embedded Ray therefore advertises at least
# this many logical CPUs, so that several small models fit on a 2-core machine.
MIN_EMBEDDED_LOGICAL_CPUS = 16


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
