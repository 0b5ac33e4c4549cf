"""What a replica measured while running one batch, sent back with its outputs.

The model's own time (`compute_ns`, ModelStatistics' compute_infer) is kept apart from the
preprocessing of a `[preprocess]` model (decode and pipeline), whose wall and CPU time go to
the Prometheus counters `augserve_preprocess_*` and into compute_input, as Triton counts
the preparation of a batch's inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class BatchTiming:
    """One batch's time in a replica.

    Attributes:
        compute_ns: the model's own time (the forward pass and its outputs), wall ns.
        preprocess_ns: decoding and the pipeline's views, wall ns (0 without `[preprocess]`).
        preprocess_cpu_ns: the replica process's CPU time over the same span.
        images: the images preprocessed (one per row, whatever the views).
    """

    compute_ns: int
    preprocess_ns: int = 0
    preprocess_cpu_ns: int = 0
    images: int = 0

    def to_json(self) -> dict[str, int]:
        """The fields as a dict (the replica channel's frame header)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> BatchTiming:
        """Back from `to_json`."""
        return cls(**{f.name: int(fields.get(f.name, 0)) for f in dataclasses.fields(cls)})
