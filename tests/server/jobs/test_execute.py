"""Jobs run in-process: outputs, model cards, cancellation, failures, the steps."""

import json

import pytest
import torch

from augserve.kernels.serialize import load_compressed
from augserve.server.errors import InvalidArgument, NotFound
from augserve.server.jobs import output
from augserve.server.jobs.data import augmented_batches, load_dataset
from augserve.server.jobs.distill import hinton_loss
from augserve.server.jobs.execute import check_spec, execute
from augserve.server.jobs.models import count_macs, digits_net
from augserve.server.jobs.progress import CANCELLED, Context, JobCancelled
from augserve.server.jobs.specs import (
    Distill,
    Finetune,
    JobSpec,
    ModelRef,
    Prune,
    Quantize,
    Transfer,
)
from augserve.server.jobs.train import evaluate

from .conftest import TINY, tree


def _spec(root, steps, name="out", source="base", dataset="digits"):
    # The width-4 base loses points to any compression; the gate has its own tests
    # (test_sources_data.py), so these jobs open it.
    return JobSpec(ModelRef(str(root), source), steps, dataset, str(root), name,
                   measure_latency=False, max_accuracy_drop=1.0)


def test_channel_prune_writes_a_smaller_version_with_its_card(base_repository):
    events = []
    result = execute(_spec(base_repository, (Prune(sparsity=0.5, finetune_epochs=1),), "pruned"),
                     Context(report=lambda e: events.append(e) or False))
    folder = base_repository / "pruned" / str(result.version)
    card = json.loads((folder / "model_card.json").read_text())
    assert card["method"] == "prune"
    assert card["params"]["after"] < card["params"]["before"] / 2
    assert card["macs"]["after"] < card["macs"]["before"] / 2
    for key in ("accuracy", "params", "size_bytes", "latency_ms", "dataset", "settings"):
        assert key in card
    config = json.loads((base_repository / "pruned" / "config.json").read_text())
    assert config["platform"] == "augserve_compressed"
    model = load_compressed(folder / "compressed")
    data = load_dataset("digits")
    assert evaluate(model, data.test_x, data.test_y) == pytest.approx(card["accuracy"]["after"])
    assert events[-1].state == "done" and any(e.epoch == 1 for e in events)
    assert not [p for p in (base_repository / "pruned").iterdir() if p.name.startswith(".")]


def test_a_second_job_writes_the_next_version(base_repository):
    spec = _spec(base_repository, (Finetune(1),), "again")
    assert execute(spec, Context()).version == 1
    assert execute(spec, Context()).version == 2


def test_cancelling_mid_job_leaves_the_repository_unchanged(base_repository):
    before = tree(base_repository)
    seen = []

    def report(event):
        seen.append(event)
        return event.epoch >= 2  # cancel during the second epoch

    with pytest.raises(JobCancelled):
        execute(_spec(base_repository, (Finetune(epochs=50),), "cancelled"),
                Context(report=report, min_interval_s=0.0))
    assert tree(base_repository) == before
    assert max(e.epoch for e in seen) < 5


def test_a_failure_while_writing_leaves_no_version(base_repository, monkeypatch):
    before = tree(base_repository)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(output, "save_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        execute(_spec(base_repository, (Finetune(1),), "base"), Context())
    assert tree(base_repository) == before


@pytest.mark.parametrize("kwargs, words", [
    ({"dataset": "imagenet"}, "dataset 'imagenet' does not exist; known datasets"),
    ({"source": "missing"}, "source model 'missing' is not in repository"),
])
def test_missing_dataset_or_model_fails_with_a_clear_error(base_repository, kwargs, words):
    spec = _spec(base_repository, (Finetune(1),), **kwargs)
    with pytest.raises(NotFound, match=words):
        check_spec(spec)
    with pytest.raises(NotFound, match=words):
        execute(spec, Context())


def test_missing_state_dict_file_is_not_found(tmp_path):
    spec = JobSpec(ModelRef(state_dict=str(tmp_path / "nope.pth")), (Finetune(1),))
    with pytest.raises(NotFound, match=r"nope\.pth"):
        check_spec(spec)


def test_class_count_mismatch_needs_a_transfer_step(base_repository):
    with pytest.raises(InvalidArgument, match="transfer step"):
        execute(_spec(base_repository, (Finetune(1),), dataset="digits_0_4"), Context())


def test_distill_student_is_smaller_and_learns(base_repository):
    step = Distill(student_width=2, epochs=3, lr=1e-2, augment=False)
    result = execute(_spec(base_repository, (step,), "student"), Context())
    card = result.card
    assert card["macs"]["after"] < card["macs"]["before"] / 3
    assert card["accuracy"]["after"] > 0.15  # chance is 0.10


def test_dynamic_int8_stays_close_to_fp32(base_repository):
    card = execute(_spec(base_repository, (Quantize(method="dynamic"),), "dyn"), Context()).card
    assert abs(card["accuracy"]["after"] - card["accuracy"]["before"]) <= 0.02


def test_hinton_loss_is_zero_for_identical_logits_at_alpha_one():
    logits = torch.randn(4, 10)
    assert float(hinton_loss(logits, logits, torch.zeros(4, dtype=torch.long), 4.0, 1.0)) == (
        pytest.approx(0.0, abs=1e-6)
    )


def test_transfer_job_from_a_state_dict_file(tmp_path):
    source = digits_net(5, **TINY)
    torch.save(source.state_dict(), tmp_path / "source.pth")
    ref = ModelRef(state_dict=str(tmp_path / "source.pth"), architecture_kwargs=TINY)
    spec = JobSpec(ref, (Transfer("feature_extraction", epochs=2),), "digits_5_9_few",
                   str(tmp_path), "t", measure_latency=False)
    result = execute(spec, Context())
    assert result.version == 1 and result.card["dataset"]["train_images"] == 100


def test_count_macs_halves_channels_quarter_the_convs():
    assert count_macs(digits_net(10, 16), (1, 3, 8, 8)) < count_macs(digits_net(10, 32),
                                                                     (1, 3, 8, 8)) / 3


def test_cancelled_state_name():
    assert CANCELLED == "cancelled"


def test_augmented_batches_depend_only_on_seed_and_epoch():
    data = load_dataset("digits")
    first = next(augmented_batches(data.train_x, data.train_y, 32, seed=1, epoch=0))
    again = next(augmented_batches(data.train_x, data.train_y, 32, seed=1, epoch=0))
    other = next(augmented_batches(data.train_x, data.train_y, 32, seed=1, epoch=1))
    assert first[0].shape == (32, 3, 8, 8) and first[0].dtype == torch.float32
    torch.testing.assert_close(first[0], again[0])
    assert not torch.equal(first[1], other[1])


def test_channel_prune_to_a_flops_target(base_repository):
    step = Prune(target_flops=0.3, finetune_epochs=0)
    card = execute(_spec(base_repository, (step,), "flops"), Context()).card
    assert card["macs"]["after"] <= 0.3 * card["macs"]["before"]


@pytest.mark.parametrize("method", ["global", "layer"])
def test_magnitude_pruning_keeps_weights_zero_through_fine_tuning(base_repository, method):
    step = Prune(method=method, sparsity=0.6, stages=2, finetune_epochs=1)
    card = execute(_spec(base_repository, (step,), f"mag_{method}"), Context()).card
    assert card["weight_sparsity"] >= 0.59


def test_an_output_model_of_another_shape_is_refused_before_the_job_runs(base_repository):
    spec = _spec(base_repository, (Transfer("feature_extraction", epochs=1),), "base",
                 dataset="digits_0_4")
    with pytest.raises(InvalidArgument, match="choose another output name"):
        check_spec(spec)
