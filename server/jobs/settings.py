"""Settings of the Jobs service (the `[jobs]` table of the server config)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """How jobs run; every default is documented here.

    Attributes:
        task_num_cpus: CPUs each job's Ray task reserves: 1.
        torch_threads: torch intra-op threads inside a job: 1.
        max_running: jobs running at once; a Submit beyond it is RESOURCE_EXHAUSTED: 2.
        keep_finished: finished jobs remembered for Watch / Result (also in the journal): 64.
        cache_dir: the int8 compile cache ("" = `kernels.quant.model.cache_dir()`, which
            the inference replicas use too, so a served int8 version loads without a
            compile).
        state_dir: the job journal, one JSON record per job, so Watch / Result answer
            after a restart ("" = `$AUGSERVE_STATE/jobs`, else
            `~/.local/state/augserve/jobs`; created with the first job).
    """

    task_num_cpus: float = 1.0
    torch_threads: int = 1
    max_running: int = 2
    keep_finished: int = 64
    cache_dir: str = ""
    state_dir: str = ""

    def __post_init__(self) -> None:
        if self.task_num_cpus <= 0 or self.torch_threads < 1:
            raise ValueError("jobs settings: task_num_cpus > 0 and torch_threads >= 1")
        if self.max_running < 1 or self.keep_finished < 1:
            raise ValueError("jobs settings: max_running and keep_finished must be >= 1")
