"""Model configs and jobs name architectures only from the allowed modules."""

from __future__ import annotations

import pytest

from augserve.server.errors import ImportRefused, InvalidArgument
from augserve.server.imports import allow_list
from augserve.server.inference.repository import ModelRepository
from augserve.server.jobs.execute import check_spec
from augserve.server.jobs.specs import Finetune, JobSpec, ModelRef

CONFIG = """\
platform = "state_dict"
max_batch_size = 8
architecture = "{architecture}"

[[input]]
name = "input"
datatype = "FP32"
dims = [4]

[[output]]
name = "output"
datatype = "FP32"
dims = [4]
"""


async def test_a_model_config_outside_the_allow_list_is_refused_before_any_replica(tmp_path):
    (tmp_path / "evil" / "1").mkdir(parents=True)
    (tmp_path / "evil" / "config.toml").write_text(CONFIG.format(architecture="os:system"))
    repository = ModelRepository(tmp_path)  # no Ray: the refusal comes first
    with pytest.raises(ImportRefused) as caught:
        await repository.load("evil")
    assert isinstance(caught.value, InvalidArgument)
    assert str(caught.value) == ("model 'evil': architecture: 'os:system' is outside the "
                                 "allowed modules (augserve, torchvision.models)")
    assert [(row.state, row.reason) for row in repository.index()] == [
        ("UNAVAILABLE", str(caught.value))]


def test_a_job_source_needs_an_allowed_architecture():
    spec = JobSpec(ModelRef(architecture="torch.nn:Identity"), (Finetune(epochs=1),))
    refused = r"source\.architecture: 'torch\.nn:Identity' is outside"
    with pytest.raises(ImportRefused, match=refused):
        check_spec(spec)
    check_spec(spec, allow_list(["torch.nn"]))  # an operator's prefix lets it through
