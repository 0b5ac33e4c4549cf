"""`[preprocess]` and `[tta]`: parsed views, the public input, and each config error's message."""

from __future__ import annotations

import copy

import pytest

from augserve.server.augment.ops import AnchoredCrop, HorizontalFlip, Normalize
from augserve.server.errors import InvalidArgument
from augserve.server.inference import describe
from augserve.server.inference.model_config import TensorSpec, parse_model_config

PIPELINE = {
    "ops": [{"resize": {"size": [40, 40]}}, {"centerCrop": {"size": [32, 32]}},
            {"normalize": {}}],
    "dtype": "float32",
    "layout": "NCHW",
}


def config(**tables) -> dict:
    raw = {
        "platform": "torchscript",
        "max_batch_size": 8,
        "input": [{"name": "input", "datatype": "FP32", "dims": [3, 32, 32]}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [5]},
                   {"name": "index", "datatype": "INT64", "dims": [1]}],
        "preprocess": {"input": "image", "datatype": "BYTES", "pipeline": PIPELINE},
    }
    for key, value in tables.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return copy.deepcopy(raw)


def test_the_public_input_replaces_the_model_tensor_in_metadata_and_config():
    settings = parse_model_config(config(), "m")
    assert settings.public_inputs == (TensorSpec("image", "BYTES", (1,)),)
    assert settings.inputs == (TensorSpec("input", "FP32", (3, 32, 32)),)
    assert settings.input_named("input") is None and settings.input_named("image")
    metadata = describe.model_metadata(settings, [1])
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("image", "BYTES", [-1, 1])]
    assert [(t.name, list(t.dims)) for t in describe.model_config(settings).input] == [
        ("image", [1])]
    assert settings.preprocess.tta is None and len(settings.preprocess.views) == 1


def test_uint8_public_input_has_hwc_dims():
    raw = config()
    raw["preprocess"]["datatype"] = "UINT8"
    assert parse_model_config(raw, "m").public_inputs[0].dims == (-1, -1, 3)


def test_named_views():
    tta = {"views": ["identity", "hflip", "five_crop"], "merge": "max", "scores": "logits",
           "outputs": ["logits"]}
    settings = parse_model_config(config(tta=tta), "m").preprocess
    names = [v.name for v in settings.views]
    assert names == ["identity", "hflip", "top_left", "top_right", "bottom_left", "bottom_right"]
    identity, flipped = settings.views[0].pipeline, settings.views[1].pipeline
    assert identity == settings.pipeline
    assert isinstance(flipped.ops[2], HorizontalFlip) and isinstance(flipped.ops[3], Normalize)
    corner = settings.views[2].pipeline.ops[1]
    assert isinstance(corner, AnchoredCrop) and corner.size == (32, 32)
    assert corner.anchor == "top_left"
    assert (settings.tta.merge, settings.tta.scores, settings.tta.outputs) == (
        "max", "logits", ("logits",))


def test_a_view_table_with_its_own_seeded_pipeline():
    seeded = copy.deepcopy(PIPELINE)
    seeded["ops"].insert(2, {"colorJitter": {"brightness": 0.2}, "p": 1.0})
    tta = {"views": ["identity", {"name": "jitter", "pipeline": seeded, "seed": 7}],
           "outputs": ["logits"]}
    view = parse_model_config(config(tta=tta), "m").preprocess.views[1]
    assert (view.name, view.seed, len(view.pipeline.ops)) == ("jitter", 7, 4)


BAD_PIPELINE = {"ops": [{"resize": {"size": [30, 30]}}], "dtype": "float32"}


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        ({"preprocess": None, "tta": {"views": ["identity"]}}, "[tta] needs a [preprocess]"),
        ({"max_batch_size": 0}, "needs max_batch_size >= 1"),
        ({"input": [{"name": "a", "datatype": "FP32", "dims": [3, 32, 32]},
                    {"name": "b", "datatype": "FP32", "dims": [1]}]}, "exactly one [[input]]"),
        ({"preprocess": {"input": "image", "datatype": "FP32", "pipeline": PIPELINE}},
         "preprocess.datatype must be one of ['BYTES', 'UINT8']"),
        ({"preprocess": {"datatype": "BYTES", "pipeline": PIPELINE}}, "preprocess.input"),
        ({"preprocess": {"input": "i", "datatype": "BYTES", "pipeline": PIPELINE, "size": 3}},
         "unknown key 'size'"),
        ({"preprocess": {"input": "i", "datatype": "BYTES", "pipeline": BAD_PIPELINE}},
         "comes out as [3, 30, 30], the model's input 'input' takes [3, 32, 32]"),
        ({"preprocess": {"input": "i", "datatype": "BYTES",
                         "pipeline": {"ops": [{"normalize": {}}]}}},
         "a 37x53 image comes out as [3, 37, 53]"),
        ({"preprocess": {"input": "i", "datatype": "BYTES",
                         "pipeline": {**PIPELINE, "ops": PIPELINE["ops"][:2], "dtype": "uint8"}}},
         "dtype 'uint8' gives UINT8, the model's input 'input' takes FP32"),
        ({"preprocess": {"input": "i", "datatype": "BYTES",
                         "pipeline": {"ops": [{"nope": {}}]}}}, "preprocess.pipeline"),
        ({"tta": {"views": ["hflip"]}}, "must start with \"identity\""),
        ({"tta": {"views": ["identity", "vflip"]}}, "unknown view 'vflip'"),
        ({"tta": {"views": []}}, "tta.views must be a non-empty list"),
        ({"tta": {"views": ["identity", "identity"]}}, "repeat a name"),
        ({"tta": {"views": ["identity", {"pipeline": PIPELINE}]}}, "needs a name"),
        ({"tta": {"views": ["identity", {"name": "x", "pipeline": BAD_PIPELINE}]}},
         "tta.views[1].pipeline: a 37x53 image comes out as [3, 30, 30]"),
        ({"tta": {"views": ["identity"], "merge": "median"}}, "tta.merge must be one of"),
        ({"tta": {"views": ["identity"], "scores": "probs"}}, "tta.scores must be one of"),
        ({"tta": {"views": ["identity"], "outputs": ["nope"]}}, "'nope' is not an output"),
        ({"tta": {"views": ["identity"]}}, "'index' is INT64; only float outputs"),
        ({"tta": {"views": ["identity"], "outputs": ["logits"], "k": 1}}, "unknown key 'k'"),
    ],
)
def test_config_errors_name_the_key(tables, fragment):
    with pytest.raises(InvalidArgument) as error:
        parse_model_config(config(**tables), "m")
    assert fragment in str(error.value)
    assert "model 'm'" in str(error.value)


def test_five_crop_needs_one_center_crop():
    raw = config(tta={"views": ["identity", "five_crop"], "outputs": ["logits"]})
    raw["preprocess"]["pipeline"] = {"ops": [{"resize": {"size": [32, 32]}}]}
    with pytest.raises(InvalidArgument, match="five_crop needs exactly one center_crop"):
        parse_model_config(raw, "m")
