import pytest

from augserve.server.jobs.prune import schedule
from augserve.server.jobs.specs import (
    Distill,
    Finetune,
    JobSpec,
    JobSpecError,
    ModelRef,
    Prune,
    Quantize,
    Transfer,
)


def test_round_trip_through_json_form():
    spec = JobSpec(ModelRef("/r", "m"), (Prune(stages=3), Distill(student_width=0), Quantize()),
                   "digits", "/r", "out", seed=3)
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert spec.method == "prune -> distill -> quantize"


@pytest.mark.parametrize("make, words", [
    (lambda: Prune(method="random"), "prune.method"),
    (lambda: Prune(sparsity=1.0), "sparsity"),
    (lambda: Prune(method="global", target_flops=0.5), "target_flops"),
    (lambda: Quantize(method="fp8"), "quantize.method"),
    (lambda: Transfer(method="lora"), "transfer.method"),
    (lambda: Finetune(epochs=0), "finetune.epochs"),
    (lambda: JobSpec(ModelRef(), (Quantize(), Finetune())), "last step"),
    (lambda: JobSpec(ModelRef(), ()), "at least one step"),
    (lambda: JobSpec(ModelRef(), (Finetune(),), output_repository="/r"), "output_name"),
    (lambda: ModelRef(name="m"), "repository"),
])
def test_bad_specs_raise_invalid_argument_naming_the_field(make, words):
    with pytest.raises(JobSpecError, match=words):
        make()


def test_from_dict_rejects_unknown_steps_and_fields():
    with pytest.raises(JobSpecError, match="unknown step"):
        JobSpec.from_dict({"source": {}, "steps": [{"shrink": {}}]})
    with pytest.raises(JobSpecError, match="job spec"):
        JobSpec.from_dict({"source": {}, "steps": [{"prune": {"ratio": 2}}]})


def test_gradual_schedule_ends_at_target_and_grows():
    steps = schedule(0.5, 4)
    assert steps[-1] == pytest.approx(0.5)
    assert steps == sorted(steps)
