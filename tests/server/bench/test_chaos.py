"""bench chaos: its recovery figure and which errors count as expected."""

from __future__ import annotations

import numpy as np

from augserve.server.bench.chaos import _recoveries
from augserve.server.bench.chaos_load import MODELS, allowed_error


def test_recovery_is_the_time_back_to_ninety_percent_of_the_three_seconds_before():
    timeline = [100, 100, 100, 100, 20, 50, 95, 100]
    assert _recoveries(timeline, [(4.0, "worker node")]) == [3.0]  # second 6 reaches 90
    assert _recoveries(timeline, [(0.0, "too early")]) == []  # no throughput before it


def test_a_fault_throughput_never_recovers_from_counts_to_the_end():
    assert _recoveries([10, 10, 10, 0, 0], [(3.0, "node")]) == [2.0]


def test_only_shedding_and_lost_replicas_are_expected_errors():
    assert allowed_error("RESOURCE_EXHAUSTED", "queue full")
    assert allowed_error("UNAVAILABLE", "this request's batch lost 2 replicas")
    assert allowed_error("UNAVAILABLE", "model 'double' version 1 has no live replica: "
                                        "it lost 2 of its 2 replicas and none has restarted")
    assert allowed_error("UNAVAILABLE", "augment lost 3 workers: ActorDiedError")
    assert not allowed_error("UNAVAILABLE", "this request's batch lost 1 replicas")
    assert not allowed_error("UNAVAILABLE", "it lost 1 of its 1 replicas")
    assert not allowed_error("UNAVAILABLE", "the Ray cluster is unreachable")
    assert not allowed_error("INTERNAL", "lost")


def test_the_references_are_the_models_arithmetic():
    x = np.array([[1.5, -2.0]], np.float32)
    assert MODELS["double"](x).tolist() == [[3.0, -4.0]]
    assert MODELS["flip"](x).tolist() == [[-0.5, 3.0]]
    assert MODELS["square"](x).tolist() == [[2.25, 4.0]]
