"""Settings of the Jobs service (the `[jobs]` table of the server config)."""

from __future__ import annotations

import dataclasses

from augserve.server.actors import check_placement
from augserve.server.options import option


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """How jobs run; see each field's `help`."""

    task_num_cpus: float = option(
        1.0, flag="--jobs-task-num-cpus", help="CPUs each job's Ray task reserves")
    placement: str = option(
        "pack", flag="--jobs-placement",
        help='where each job\'s Ray task runs: "pack" (this node first, Ray\'s default), '
             '"spread", or the name of a custom node resource (e.g. a training node started '
             "with `ray start --resources '{\"train_box\": 1}'`)")
    torch_threads: int = option(
        1, flag="--jobs-torch-threads", help="torch intra-op threads inside a job")
    max_running: int = option(
        2, flag="--jobs-max-running",
        help="jobs running at once; a Submit beyond it waits in the queue (`max_queued`) and "
             "starts when a running job ends, in submission order")
    max_queued: int = option(
        8, flag="--jobs-max-queued",
        help="jobs waiting for a running slot; a Submit beyond it is RESOURCE_EXHAUSTED "
             "(0: no queue, a Submit beyond `max_running` is refused)")
    keep_finished: int = option(
        64, flag="--jobs-keep-finished",
        help="finished jobs remembered for Watch / Result (also in the journal)")
    cache_dir: str = option(
        "", flag="--jobs-cache-dir",
        help='the int8 compile cache ("" = `kernels.quant.model.cache_dir()`, which the '
             "inference replicas use too, so a served int8 version loads without a compile)")
    state_dir: str = option(
        "", flag="--jobs-state-dir",
        help='the job journal, one JSON record per job, so Watch / Result answer after a '
             'restart ("" = `$AUGSERVE_STATE/jobs`, else `~/.local/state/augserve/jobs`; '
             "created with the first job)")

    def __post_init__(self) -> None:
        if self.task_num_cpus <= 0 or self.torch_threads < 1:
            raise ValueError("jobs settings: task_num_cpus > 0 and torch_threads >= 1")
        if self.max_running < 1 or self.keep_finished < 1:
            raise ValueError("jobs settings: max_running and keep_finished must be >= 1")
        check_placement(self.placement, "jobs settings: placement")
        if self.max_queued < 0:
            raise ValueError("jobs settings: max_queued must be >= 0")
