"""The `[preprocess]` and `[tta]` tables of a model's config: images in front of a model.

    [[input]]                  # the model's own tensor; internal once [preprocess] is set
    name = "input"
    datatype = "FP32"
    dims = [3, 64, 64]

    [preprocess]
    input = "image"            # the public input clients send
    datatype = "BYTES"         # BYTES: one encoded JPEG/PNG/WebP per row (dims [1])
                               # UINT8: HWC RGB images (dims [-1, -1, 3])
    pipeline = { ops = [...], dtype = "float32", layout = "NCHW" }   # augment's spec

    [tta]                      # optional: test-time augmentation
    views = ["identity", "hflip"]   # names, or tables {name = "...", pipeline = {...}}:
                               # "identity" (first): the preprocess pipeline; "hflip": it and
                               # a horizontal flip; "five_crop": its center crop moved to the
                               # four corners (four views; with identity, FiveCrop's five)
    merge = "mean"             # mean | max
    scores = "softmax"         # softmax | logits: what is merged
    outputs = ["logits"]       # the outputs merged over views (default: all)

Every pipeline is checked once here: it must turn images of any size into the model
input's dims and datatype (it is run on two generated images of different sizes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from augserve.server.augment.ops import OPS, CenterCrop, Normalize
from augserve.server.augment.pipeline import Pipeline
from augserve.server.augment.spec import PipelineSpec, parse_pipeline
from augserve.server.errors import InvalidArgument
from augserve.server.inference.model_config import TensorSpec

#: The public input's datatype -> its dims (without the batch dimension).
PUBLIC_DIMS: dict[str, tuple[int, ...]] = {"BYTES": (1,), "UINT8": (-1, -1, 3)}
#: A pipeline's output dtype -> the model input datatype it feeds.
PIPELINE_DATATYPES = {"float32": "FP32", "float16": "FP16", "bfloat16": "BF16",
                      "uint8": "UINT8"}
MERGES = ("mean", "max")
SCORES = ("softmax", "logits")
NAMED_VIEWS = ("identity", "hflip", "five_crop")
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
_FLOAT_OUTPUTS = ("FP16", "FP32", "FP64", "BF16")
# Two sizes, one landscape and one portrait, so that a pipeline whose output follows
# its input's size (no resize or crop) cannot pass the check by chance.
_PROBE_SIZES = ((37, 53), (71, 29))


@dataclass(frozen=True)
class TtaView:
    """One test-time view: a pipeline (deterministic, or seeded by `seed`) over each image.

    A seeded view draws the same params for an image whatever its batch: every image of
    a batch is augmented as sample 0 of `seed`.
    """

    name: str
    pipeline: PipelineSpec
    seed: int = 0


@dataclass(frozen=True)
class TtaSettings:
    """How the views of one image are merged into its answer.

    Attributes:
        merge: "mean" or "max" over the views.
        scores: "softmax" (each view's output is turned into probabilities, then merged)
            or "logits" (the raw outputs are merged).
        outputs: the outputs merged; any other output is the first view's.
    """

    merge: str = "mean"
    scores: str = "softmax"
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreprocessSettings:
    """Images in, the model's tensor out.

    Attributes:
        input: the public input, as clients see it (BYTES [1] or UINT8 [-1, -1, 3]).
        model_input: the model's own input, which the pipeline feeds.
        views: the views every image runs through; the first is the preprocess pipeline
            itself (the only one without `[tta]`).
        tta: how views are merged, or None without a `[tta]` table.
    """

    input: TensorSpec
    model_input: TensorSpec
    views: tuple[TtaView, ...]
    tta: TtaSettings | None = None

    @property
    def pipeline(self) -> PipelineSpec:
        """The preprocess pipeline (the identity view)."""
        return self.views[0].pipeline


def _flipped(spec: PipelineSpec) -> PipelineSpec:
    """`spec` with a horizontal flip (p=1) before its first normalize (else at its end)."""
    ops = list(spec.ops)
    at = next((i for i, op in enumerate(ops) if isinstance(op, Normalize)), len(ops))
    ops.insert(at, OPS["horizontal_flip"](p=1.0))
    return dataclasses.replace(spec, ops=tuple(ops))


def _corner_crops(spec: PipelineSpec, where: str) -> list[TtaView]:
    """The four views of `spec` with its centre crop moved to each corner (`five_crop`)."""
    at = [i for i, op in enumerate(spec.ops) if isinstance(op, CenterCrop)]
    if len(at) != 1:
        raise InvalidArgument(f"{where}: five_crop needs exactly one center_crop in the "
                              f"preprocess pipeline (it moves that crop to the corners)")
    size = spec.ops[at[0]].size
    views = []
    for corner in CORNERS:
        ops = list(spec.ops)
        ops[at[0]] = OPS["anchored_crop"](size=size, anchor=corner)
        views.append(TtaView(corner, dataclasses.replace(spec, ops=tuple(ops))))
    return views


def _check_output(spec: PipelineSpec, target: TensorSpec, where: str) -> None:
    """Raise unless `spec` turns images of any size into `target`'s dims and datatype."""
    datatype = PIPELINE_DATATYPES[spec.dtype]
    if datatype != target.datatype:
        raise InvalidArgument(f"{where}: dtype {spec.dtype!r} gives {datatype}, the model's "
                              f"input {target.name!r} takes {target.datatype}")
    probes = [np.zeros((h, w, 3), np.uint8) for h, w in _PROBE_SIZES]
    pipeline = Pipeline(spec, "fast")
    for probe in probes:
        shape = tuple(pipeline([probe]).images[0].shape)
        if len(shape) != len(target.dims) or any(
                d != -1 and d != s for d, s in zip(target.dims, shape, strict=True)):
            raise InvalidArgument(
                f"{where}: a {probe.shape[0]}x{probe.shape[1]} image comes out as "
                f"{list(shape)}, the model's input {target.name!r} takes {list(target.dims)}"
            )


def _pipeline(raw: Any, where: str) -> PipelineSpec:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: expected a table (the augment spec's JSON form)")
    try:
        return parse_pipeline(raw)
    except InvalidArgument as error:
        raise InvalidArgument(f"{where}: {error}") from None


def _unknown_keys(raw: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(raw) - set(known))
    if extra:
        raise InvalidArgument(f"{where}: unknown key {extra[0]!r} (known: {', '.join(known)})")


def _views(raw: Any, identity: PipelineSpec, target: TensorSpec, model: str
           ) -> tuple[TtaView, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument(f"model {model!r}: tta.views must be a non-empty list")
    views = []
    for index, entry in enumerate(raw):
        where = f"model {model!r}: tta.views[{index}]"
        if isinstance(entry, str):
            if entry not in NAMED_VIEWS:
                raise InvalidArgument(f"{where}: unknown view {entry!r} (named views: "
                                      f"{', '.join(NAMED_VIEWS)}; or a table with a pipeline)")
            if entry == "five_crop":
                views.extend(_corner_crops(identity, where))
            else:
                views.append(TtaView(entry, identity if entry == "identity"
                                     else _flipped(identity)))
            continue
        if not isinstance(entry, dict):
            raise InvalidArgument(f"{where}: expected a view name or a table")
        _unknown_keys(entry, ("name", "pipeline", "seed"), where)
        name, seed = entry.get("name"), entry.get("seed", 0)
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{where}: a view table needs a name")
        if not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InvalidArgument(f"{where}: seed must be an integer in [0, 2**63)")
        spec = _pipeline(entry.get("pipeline"), f"{where}.pipeline")
        _check_output(spec, target, f"{where}.pipeline")
        views.append(TtaView(name, spec, seed))
    names = [v.name for v in views]
    if views[0].pipeline != identity:
        raise InvalidArgument(f"model {model!r}: tta.views must start with \"identity\" "
                              f"(the view a request with tta = false runs), got {names[0]!r}")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"model {model!r}: tta.views repeat a name: {names}")
    return tuple(views)


def _tta(raw: dict[str, Any], outputs: tuple[TensorSpec, ...], model: str) -> TtaSettings:
    where = f"model {model!r}: tta"
    merge, scores = raw.get("merge", "mean"), raw.get("scores", "softmax")
    if merge not in MERGES:
        raise InvalidArgument(f"{where}.merge must be one of {MERGES}, got {merge!r}")
    if scores not in SCORES:
        raise InvalidArgument(f"{where}.scores must be one of {SCORES}, got {scores!r}")
    by_name = {spec.name: spec for spec in outputs}
    names = raw.get("outputs", list(by_name))
    if not isinstance(names, list) or not names:
        raise InvalidArgument(f"{where}.outputs must be a non-empty list of output names")
    for name in names:
        if name not in by_name:
            raise InvalidArgument(f"{where}.outputs: {name!r} is not an output of the model "
                                  f"({list(by_name)})")
        if by_name[name].datatype not in _FLOAT_OUTPUTS:
            raise InvalidArgument(f"{where}.outputs: {name!r} is {by_name[name].datatype}; "
                                  f"only float outputs ({_FLOAT_OUTPUTS}) can be merged")
    return TtaSettings(merge, scores, tuple(names))


def parse_preprocess(raw: dict[str, Any], inputs: tuple[TensorSpec, ...],
                     outputs: tuple[TensorSpec, ...], max_batch_size: int, model: str
                     ) -> PreprocessSettings | None:
    """The `[preprocess]` and `[tta]` tables of a raw config, checked; None without them.

    Raises:
        InvalidArgument: a key is missing, unknown or out of range, or a pipeline does not
            produce the model input's dims and datatype; the message names it.
    """
    table, tta_raw = raw.get("preprocess"), raw.get("tta")
    if table is None:
        if tta_raw is not None:
            raise InvalidArgument(f"model {model!r}: [tta] needs a [preprocess] table")
        return None
    where = f"model {model!r}: preprocess"
    if not isinstance(table, dict):
        raise InvalidArgument(f"{where}: expected a table")
    _unknown_keys(table, ("input", "datatype", "pipeline"), where)
    if len(inputs) != 1:
        raise InvalidArgument(f"{where}: the model must have exactly one [[input]] (the "
                              f"tensor the pipeline feeds), it has {len(inputs)}")
    if max_batch_size < 1:
        raise InvalidArgument(f"{where}: needs max_batch_size >= 1 (one image per row)")
    name, datatype = table.get("input"), table.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{where}.input: the public input's name is required")
    if datatype not in PUBLIC_DIMS:
        raise InvalidArgument(f"{where}.datatype must be one of {list(PUBLIC_DIMS)}, "
                              f"got {datatype!r}")
    target = inputs[0]
    identity = _pipeline(table.get("pipeline"), f"{where}.pipeline")
    _check_output(identity, target, f"{where}.pipeline")
    public = TensorSpec(name, datatype, PUBLIC_DIMS[datatype])
    if tta_raw is None:
        return PreprocessSettings(public, target, (TtaView("identity", identity),))
    if not isinstance(tta_raw, dict):
        raise InvalidArgument(f"model {model!r}: tta: expected a table")
    _unknown_keys(tta_raw, ("views", "merge", "scores", "outputs"), f"model {model!r}: tta")
    views = _views(tta_raw.get("views", ["identity"]), identity, target, model)
    return PreprocessSettings(public, target, views, _tta(tta_raw, outputs, model))
