"""Whole-model latency for `augserve bench kernels`: fp32, int8, pruned, pruned + int8, peers.

Variants (batch 1 and 32, per model):
- `fp32`: eager float32.
- `int8`: ours, `kernels.quant.model.quantize_model` (PT2E + X86InductorQuantizer,
  AOTInductor with freezing, dynamic batch, on-disk package cache; batch-folded by 2 when a
  conv has fewer than 16 outputs, i.e. the pruned ResNet-20; `int8_batch_fold_*` says which),
  configured as the server loads it for `max_batch_size` = the largest batch timed: that
  batch also gets a fixed-shape package (`static_batches`), smaller ones run the dynamic one
  (not with `--quick`, a smoke run: dynamic packages only).
- `pruned50`: 50% of the channels of every dependency group physically removed, eager fp32.
- `pruned50_int8`: the pruned model through the same int8 path.
- `peer_bf16_cl`: bf16 autocast with channels_last (eager).
- `peer_pt2e_int8`: PT2E + X86InductorQuantizer + `torch.compile` with freezing, unpruned.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from augserve.server.bench import lifecycle
from augserve.server.bench.kernels_timing import interleaved_samples, medians, paired_ratio

VARIANTS = ("fp32", "int8", "pruned50", "pruned50_int8", "peer_bf16_cl", "peer_pt2e_int8")


def _restart(name: str, variant: str, model: Any, calib: Any, root: str) -> dict[str, Any]:
    """Save in the serving format, then time `load_compressed` in a fresh process."""
    from augserve.kernels.serialize import PT2E_METHOD, save_compressed

    directory = Path(root) / f"served-{name}-{variant}"
    spec = {"architecture": f"augserve.server.zoo:{name}", "quantization": {"method": PT2E_METHOD}}
    save_compressed(model, directory, spec, calib)
    script = (
        "import json, sys, time; t = time.perf_counter(); import torch; "
        "from augserve.kernels.serialize import load_compressed; t1 = time.perf_counter(); "
        "m = load_compressed(sys.argv[1], cache_dir=sys.argv[2]); "
        "print(json.dumps({'hit': m.cache_hit, 'load': m.load_seconds, "
        "'import': t1 - t, 'total': time.perf_counter() - t}))"
    )
    done = lifecycle.run([sys.executable, "-c", script, str(directory), root], timeout_s=900)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    prefix = f"load_{name}_{variant}_restart"
    return {
        f"{prefix}_cache_hit": result["hit"],
        f"{prefix}_ready_s": result["load"],
        f"{prefix}_with_torch_import_s": result["total"],
    }


def _rel_err(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


PAIRS = {
    "int8_model_vs_pt2e": ("peer_pt2e_int8", "int8"),
    "pruned50_int8_vs_pt2e": ("peer_pt2e_int8", "pruned50_int8"),
    "pruned50_vs_fp32": ("fp32", "pruned50"),
    "int8_model_vs_fp32": ("fp32", "int8"),
}


def run_models(
    models: tuple[str, ...], batches: tuple[int, ...], repeats: int, cache_dir: str | None,
    static: bool = True,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Latency (ms) and throughput (img/s) per model, batch and variant, plus load times.

    `static`: our int8 variants also get a fixed-shape package for the largest batch, as
    served (off: dynamic-batch packages only, half the compile time, for smoke runs).

    Returns:
        (figures, paired ratios keyed `<pair>_b<batch>_<model>` for the `PAIRS`).
    """
    import torch

    torch._inductor.config.freezing = True  # the peer's setting; our AOTI path sets its own
    figures: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    # Without --cache-dir the packages go to a scratch folder, so "first" is a real compile.
    scratch = tempfile.TemporaryDirectory(prefix="augserve-bench-cache-")
    try:
        for name in models:
            _run_model(name, batches, repeats, cache_dir or scratch.name, figures, ratios,
                       static)
    finally:
        scratch.cleanup()
    return figures, ratios


def _run_model(
    name: str, batches: tuple[int, ...], repeats: int, root: str,
    figures: dict[str, Any], ratios: dict[str, float], static: bool,
) -> None:
    import torch

    from augserve.kernels.compress import ChannelPruneConfig, compress_
    from augserve.kernels.quant.model import ModelInt8Config, pt2e_int8, quantize_model
    from augserve.server import zoo

    factory, hw = {"resnet20": (zoo.resnet20, 32), "resnet18": (zoo.resnet18, 224)}[name]
    torch.manual_seed(0)
    model = factory().eval()
    calib = torch.randn(32, 3, hw, hw)
    pruned = compress_(copy.deepcopy(model), ChannelPruneConfig(0.5, (1, 3, hw, hw)))
    figures[f"params_{name}_fp32"] = sum(p.numel() for p in model.parameters())
    figures[f"params_{name}_pruned50"] = sum(p.numel() for p in pruned.parameters())
    config = ModelInt8Config(cache_dir=root, static_batches=(max(batches),) if static else ())
    compiled: dict[str, Callable[[Any], Any]] = {}
    for variant, source in (("int8", model), ("pruned50_int8", pruned)):
        cold = quantize_model(source, (calib,), config)
        warm = quantize_model(source, (calib,), config)  # same process, cached package
        figures[f"load_{name}_{variant}_first_s"] = cold.load_seconds
        figures[f"load_{name}_{variant}_first_was_cache_hit"] = cold.cache_hit
        figures[f"load_{name}_{variant}_warm_s"] = warm.load_seconds
        figures[f"int8_batch_fold_{name}_{variant}"] = warm.batch_fold
        compiled[variant] = warm
        if variant == "int8":  # a restart: fresh process, serving format, cached package
            figures.update(_restart(name, variant, source, calib, root))
    start = time.perf_counter()
    peer = torch.compile(pt2e_int8(model, (calib,), config))
    with torch.inference_mode():
        peer(calib)
    figures[f"load_{name}_peer_pt2e_int8_first_call_s"] = time.perf_counter() - start
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def bf16_cl(x: Any, m: Any = model_cl) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(x.contiguous(memory_format=torch.channels_last))

    with torch.inference_mode():
        reference = model(calib)
        figures[f"rel_err_{name}_int8_vs_fp32"] = _rel_err(compiled["int8"](calib), reference)
        figures[f"rel_err_{name}_pruned50_int8_vs_pruned50"] = _rel_err(
            compiled["pruned50_int8"](calib), pruned(calib)
        )
        figures[f"rel_err_{name}_peer_pt2e_int8_vs_fp32"] = _rel_err(peer(calib), reference)
        for batch in batches:
            x = torch.randn(batch, 3, hw, hw)
            calls = {
                "fp32": partial(model, x),
                "int8": partial(compiled["int8"], x),
                "pruned50": partial(pruned, x),
                "pruned50_int8": partial(compiled["pruned50_int8"], x),
                "peer_bf16_cl": partial(bf16_cl, x),
                "peer_pt2e_int8": partial(peer, x),
            }
            samples = interleaved_samples(calls, repeats, warmup=2, budget_s=45.0)
            seconds = medians(samples)
            for key, (base, ours) in PAIRS.items():
                ratios[f"{key}_b{batch}_{name}"] = paired_ratio(samples, base, ours)
            for variant in VARIANTS:
                figures[f"model_{name}_b{batch}_{variant}_ms"] = seconds[variant] * 1e3
                figures[f"model_{name}_b{batch}_{variant}_img_s"] = batch / seconds[variant]
