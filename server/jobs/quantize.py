"""The quantize step: post-training int8 of conv and linear layers, calibrated on data.

- "static": `kernels.quant.model.quantize_model` (PT2E with the x86 Inductor quantizer:
  per-channel symmetric weights, histogram/min-max observers on activations, calibrated on
  a batch of training images; then AOTInductor). The version folder stores the float
  weights, the calibration batch and `quantization = pt2e_x86_inductor`, and the server
  rebuilds the same int8 package (or takes it from the compile cache) on load.
- "dynamic": `compress_(model, Int8Config())`: eager `Int8Conv2d` / `Int8Linear` with
  int8 weights on disk and per-token activation scales computed at run time.

Note: the compiled static path is wrong for a first conv with one input channel (about 16%
relative error on an 8x8x1 digits CNN, exact-looking on 3 channels), so the jobs feed
digits as 3 x 8 x 8; see `augserve.server.jobs.models`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from augserve.kernels.compress import Int8Config, compress_
from augserve.server.jobs.data import Dataset
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import Quantize


@dataclass
class Quantized:
    """A quantized model and how to save it.

    Attributes:
        model: the runnable int8 model (a `CompiledModel` for static, eager for dynamic).
        float_model: the eval-mode float model that `save_compressed` writes (static), or
            the eager int8 model itself (dynamic).
        calibration: the calibration batch (static), else None.
        quantization: the spec's "quantization" entry (None for dynamic).
    """

    model: nn.Module
    float_model: nn.Module
    calibration: torch.Tensor | None
    quantization: dict | None


def calibration_batch(data: Dataset, step: Quantize, seed: int) -> torch.Tensor:
    """`calibration_batches * batch_size` training images (fewer if the set is smaller)."""
    return data.calibration_images(step.calibration_batches * step.batch_size, seed)


def run_quantize(
    model: nn.Module, step: Quantize, data: Dataset, ctx: Context, cache_dir: str | None = None
) -> Quantized:
    """Quantize a copy of `model` (float, eval mode); `model` itself is not changed."""
    model = copy.deepcopy(model).eval()
    if step.method == "dynamic":
        ctx.emit(force=True, stage="quantize", message="dynamic int8: Int8Conv2d / Int8Linear")
        quantized = compress_(model, Int8Config()).eval()
        return Quantized(quantized, quantized, None, None)
    from augserve.kernels.quant.model import ModelInt8Config, quantize_model
    from augserve.kernels.serialize import PT2E_METHOD

    calibration = calibration_batch(data, step, ctx.seed)
    ctx.emit(force=True, stage="calibrate",
             message=f"PT2E int8: {len(calibration)} calibration images, AOTInductor compile")
    ctx.check()
    config = ModelInt8Config(cache_dir=cache_dir)
    compiled = quantize_model(model, (calibration,), config)
    ctx.check()
    return Quantized(
        compiled, model, calibration, {"method": PT2E_METHOD, "max_batch": config.max_batch}
    )
