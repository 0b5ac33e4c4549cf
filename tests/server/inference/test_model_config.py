"""Model config parsing: the replica environment defaults and the transport check."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from augserve.server.errors import InvalidArgument
from augserve.server.inference.model_config import (
    MALLOC_ENV,
    default_replica_env,
    parse_model_config,
)


def _config(**instance_group):
    return {
        "platform": "torch_export",
        "input": [{"name": "x", "datatype": "FP32", "dims": [4]}],
        "output": [{"name": "y", "datatype": "FP32", "dims": [4]}],
        "instance_group": instance_group,
    }


@pytest.mark.parametrize(
    ("group", "policy"),
    [
        ({}, "ACTIVE"),  # num_cpus 1 -> one thread: nothing to spin
        ({"num_threads": 1}, "ACTIVE"),
        ({"num_threads": 2}, "PASSIVE"),
        ({"num_cpus": 2}, "PASSIVE"),
        ({"num_threads": 1, "env": {"OMP_WAIT_POLICY": "PASSIVE"}}, "PASSIVE"),
    ],
)
def test_openmp_waits_passively_only_in_replicas_of_several_threads(group, policy):
    settings = parse_model_config(_config(**group), "m")
    assert settings.instance_group.replica_env["OMP_WAIT_POLICY"] == policy


_FAULTS_PER_BATCH_MIX = """
import resource, threading, torch
from augserve.server.zoo import resnet20
torch.set_num_threads(1)
model = resnet20(num_classes=10).eval()
sizes, faults = [1, 16, 3, 32, 7, 12, 24, 5], []
def serve():  # on a thread of its own, as a replica's channel runs batches
    with torch.inference_mode():
        for size in sizes:
            model(torch.zeros(size, 3, 32, 32))
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(5):
            for size in sizes:
                model(torch.zeros(size, 3, 32, 32))
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=serve)
thread.start()
thread.join()
print(faults[0])
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the malloc thresholds are glibc's",
)
def test_replica_malloc_env_keeps_freed_buffers_for_the_next_batch():
    """Batches of changing size fault their buffers in afresh, unless malloc keeps them."""

    def faults(env: dict[str, str]) -> int:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        run = subprocess.run(
            [sys.executable, "-c", _FAULTS_PER_BATCH_MIX], env={**clean, **env},
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        return int(run.stdout.split()[-1])

    assert MALLOC_ENV.items() <= default_replica_env(1).items()
    assert MALLOC_ENV.items() <= default_replica_env(4).items()
    glibc_default, kept = faults({}), faults(MALLOC_ENV)
    assert kept * 4 < glibc_default, (kept, glibc_default)


def test_an_unknown_transport_names_the_field():
    with pytest.raises(InvalidArgument, match=r"instance_group\.transport"):
        parse_model_config(_config(transport="carrier-pigeon"), "m")


def test_replicas_spread_by_default_and_placement_is_checked():
    assert parse_model_config(_config(), "m").instance_group.placement == "spread"
    assert parse_model_config(_config(placement="pack"), "m").instance_group.placement == "pack"
    with pytest.raises(InvalidArgument, match=r"instance_group\.placement must be one of"):
        parse_model_config(_config(placement="every where"), "m")


def test_replicas_yield_to_the_front_end_by_default_and_nice_is_checked():
    assert parse_model_config(_config(), "m").instance_group.nice == 10
    assert parse_model_config(_config(nice=0), "m").instance_group.nice == 0
    with pytest.raises(InvalidArgument, match=r"instance_group\.nice must lie in 0\.\.19, got 20"):
        parse_model_config(_config(nice=20), "m")


_NICE_EVERY_THREAD = """
import os, threading
from augserve.server.inference.replica import lower_priority
stop = threading.Event()
before = threading.Thread(target=stop.wait)
before.start()
base = os.getpriority(os.PRIO_PROCESS, 0)
lower_priority(3)
after = threading.Thread(target=stop.wait)
after.start()
tids = [int(t) for t in os.listdir("/proc/self/task")]
print(len(tids), *sorted({os.getpriority(os.PRIO_PROCESS, t) - base for t in tids}))
stop.set()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread niceness is Linux's")
def test_lower_priority_reaches_every_thread_and_the_threads_started_later():
    result = subprocess.run(
        [sys.executable, "-c", _NICE_EVERY_THREAD], capture_output=True, text=True, check=True
    )
    threads, *offsets = result.stdout.split()
    assert int(threads) >= 3 and offsets == ["3"]  # each thread, old or new, 3 nicer
