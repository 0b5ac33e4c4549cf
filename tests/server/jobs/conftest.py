"""Fixtures for the jobs tests: a tiny trained base model in a temporary repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from augserve.server.jobs.execute import execute
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import Finetune, JobSpec, ModelRef

TINY = {"width": 4}


def tree(root: Path) -> list[str]:
    """Every path under `root` (hidden ones too), sorted: a repository snapshot."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def train_base(root: Path, name: str = "base", epochs: int = 3) -> int:
    """Train a tiny fp32 digits model into `root/name`; returns its version."""
    spec = JobSpec(ModelRef(architecture_kwargs=TINY), (Finetune(epochs, 1e-2),), "digits",
                   str(root), name, measure_latency=False)
    return execute(spec, Context()).version


@pytest.fixture(scope="module")
def base_repository(tmp_path_factory) -> Path:
    """A repository holding `base` v1: a width-4 digits_net trained for 3 epochs."""
    root = tmp_path_factory.mktemp("jobs-repository")
    assert train_base(root) == 1
    return root
