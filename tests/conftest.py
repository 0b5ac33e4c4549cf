"""Session-wide fixtures: one embedded Ray instance for the whole test run."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Servers and CLI runs started by the tests journal their jobs here, never in the home folder.
os.environ["AUGSERVE_STATE"] = tempfile.mkdtemp(prefix="augserve-test-state-")
atexit.register(shutil.rmtree, os.environ["AUGSERVE_STATE"], ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session():
    """Start one local Ray (about 3 s) for every test that needs actors."""
    import ray

    if not ray.is_initialized():
        # Logical CPUs: they gate scheduling only. The session server alone holds a replica
        # per test model, and the TLS, auth and stream tests start servers of their own.
        ray.init(num_cpus=32, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
