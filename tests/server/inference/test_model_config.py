"""Model config parsing: the replica environment defaults and the transport check."""

from __future__ import annotations

import pytest

from augserve.server.errors import InvalidArgument
from augserve.server.inference.model_config import parse_model_config


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


def test_an_unknown_transport_names_the_field():
    with pytest.raises(InvalidArgument, match=r"instance_group\.transport"):
        parse_model_config(_config(transport="carrier-pigeon"), "m")
