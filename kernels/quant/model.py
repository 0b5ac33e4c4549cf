"""Whole-model int8 for the CPU: PT2E + X86InductorQuantizer, AOTInductor, an on-disk cache.

`quantize_model(model, example_inputs, config)` builds on what oneDNN and Inductor do best:

1. `torch.export` with a dynamic batch dim; each call-site gets its own quantization
   partition (models that reuse one `nn.ReLU` module would otherwise be rejected);
2. `prepare_pt2e` with `X86InductorQuantizer` (static, per-channel weights), calibration on
   the example inputs, `convert_pt2e`;
3. AOTInductor with `freezing=True`: conv/linear become oneDNN int8 kernels with fused
   post-ops, and the wrapper is C++, so small batches pay no Python per-kernel overhead.

One-channel models are compiled with a zero second input channel (`quant.single_channel`:
a dynamic-batch package of a one-channel first conv answers wrong in torch 2.13).

Models with convs narrower than a oneDNN block (16 output channels, e.g. a 50%-pruned
ResNet-20's 8-channel stage) are compiled batch-folded (`quant.fold`): pairs of images run
as one, each conv as 2 groups, which fills the VNNI vectors; `CompiledModel` pads an odd
batch with one repeated image and drops its output.

The compiled `.pt2` package is cached under `cache_dir()/aoti/<key>.pt2`, the key hashing the
weights, the calibration data, the config and the torch version, so a restart loads it in
milliseconds instead of compiling again. torchao is needed for this path only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from augserve.kernels.quant.fold import auto_fold_factor, fold_batch, pad_batch
from augserve.kernels.quant.single_channel import widen_single_channel

#: Bumped when what `quantize_model` compiles changes for the same inputs (2: one-channel
#: models widened, `quant.single_channel`), so older cached packages are not reused.
_PACKAGE_VERSION = 2


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The compile cache: `path`, else `$AUGSERVE_CACHE`, else ~/.cache/augserve (created)."""
    chosen = Path(path or os.environ.get("AUGSERVE_CACHE") or Path.home() / ".cache" / "augserve")
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


@dataclass(frozen=True)
class ModelInt8Config:
    """How `quantize_model` builds the int8 model.

    Attributes:
        max_batch: the largest batch the compiled model accepts (the batch dim is dynamic).
        dynamic_batch: compile once for batches 1..max_batch; False specializes the shape.
        cache_dir: where compiled packages live; None means `cache_dir()`.
        batch_fold: images per folded image (`quant.fold`); 0 chooses with
            `fold.auto_fold_factor` (2 for convs narrower than 16 channels), 1 turns it off.
        static_batches: batch sizes that also get a package compiled for exactly that
            shape (a server passes its `max_batch_size`, the size of a full batch). With
            the batch known, the compiled oneDNN convolutions keep their weights in the
            layout they run in; the dynamic package reorders some of them on every call.
            Measured on a 2-core AMX Xeon at batch 32: ResNet-18 int8 51 -> 45 ms, a 50%-
            pruned ResNet-20 2.17 -> 1.97 ms. Other sizes run the dynamic package.
    """

    max_batch: int = 1024
    dynamic_batch: bool = True
    cache_dir: str | None = None
    batch_fold: int = 0
    static_batches: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch < 2:
            raise ValueError(f"max_batch must be >= 2, got {self.max_batch}")
        if self.batch_fold < 0:
            raise ValueError(f"batch_fold must be >= 0, got {self.batch_fold}")
        for batch in self.static_batches:
            if not 1 <= batch <= self.max_batch:
                raise ValueError(f"static_batches: {batch} is outside 1..{self.max_batch}")


class CompiledModel(nn.Module):
    """An nn.Module around a loaded AOTInductor package; `load_seconds` says how long it took.

    Attributes:
        package_path: the cached `.pt2` file of the dynamic-batch package.
        cache_hit: whether loading skipped every compile.
        load_seconds: time from `quantize_model` call until ready (compile included on a miss).
        batch_fold: images per folded image the package was compiled for (1: not folded).
        static: the fixed-shape runners by (padded) batch size (`static_batches`).
    """

    def __init__(
        self, runner: Callable[[torch.Tensor], torch.Tensor], package_path: Path,
        cache_hit: bool, seconds: float, batch_fold: int = 1,
        static: dict[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self._runner = runner
        self.package_path, self.cache_hit, self.load_seconds = package_path, cache_hit, seconds
        self.batch_fold = batch_fold
        self.static = dict(static or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the compiled model on a float (N, C, H, W) batch (1 <= N <= max_batch)."""
        n = x.shape[0]
        padded = pad_batch(x.float(), self.batch_fold).contiguous()
        out = self.static.get(padded.shape[0], self._runner)(padded)
        return out if out.shape[0] == n else out[:n]


def _digest(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], config: ModelInt8Config,
    fold: int = 1,
) -> str:
    h = hashlib.sha256()
    # Where the cache lives is not part of what was compiled.
    shape_config = (config.max_batch, config.dynamic_batch, fold)
    h.update(f"{_PACKAGE_VERSION}|{torch.__version__}|{type(model).__qualname__}|{shape_config}"
             .encode())
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for x in example_inputs:
        h.update(f"{tuple(x.shape)}".encode())
        h.update(x.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _unique_partitions(gm: torch.fx.GraphModule) -> None:
    # PT2E groups nodes into partitions by the innermost module's name; a module called
    # twice (BasicBlock.relu) then forms one partition with two outputs, which the x86
    # quantizer rejects. Make each call-site its own partition.
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack and node.op == "call_function":
            key = next(reversed(stack))
            fqn, cls = stack[key]
            stack[key] = (f"{fqn}#{node.name}", cls)


def _dynamic_shapes(
    config: ModelInt8Config, batch_multiple: int = 1
) -> tuple[dict[int, object], ...] | None:
    if not config.dynamic_batch:
        return None
    if batch_multiple == 1:
        return ({0: torch.export.Dim("batch", min=1, max=config.max_batch)},)
    most = -(-config.max_batch // batch_multiple)
    return ({0: batch_multiple * torch.export.Dim("folded_batch", min=1, max=most)},)


def pt2e_int8(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
    config: ModelInt8Config = ModelInt8Config(), batch_multiple: int = 1,
) -> torch.fx.GraphModule:
    """The PT2E-quantized (converted, not yet compiled) graph of an eval-mode model.

    This is also the first half of the peer path (`torch.compile` with freezing on top).
    `batch_multiple` is the batch granularity a `fold.BatchFolded` model needs (its factor).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    model = model.eval()
    shapes = _dynamic_shapes(config, batch_multiple)
    with torch.no_grad():
        exported = torch.export.export(model, example_inputs, dynamic_shapes=shapes).module()
        _unique_partitions(exported)
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        prepared(*example_inputs)
        return convert_pt2e(prepared)


def quantize_model(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
    config: ModelInt8Config = ModelInt8Config(),
) -> CompiledModel:
    """Int8-quantize and compile `model` for the CPU, or load it from the cache.

    Args:
        model: a float eval-mode model taking one (N, C, H, W) tensor.
        example_inputs: one calibration batch (its statistics set the activation scales).
        config: batch range, batch folding and cache location.

    Returns:
        A `CompiledModel` whose `load_seconds` is the time until ready.

    Raises:
        ValueError: batch folding was asked for (or chosen) and the folded float model does
            not reproduce the original on the calibration batch.
    """
    start = time.perf_counter()
    root = cache_dir(config.cache_dir) / "aoti"
    root.mkdir(parents=True, exist_ok=True)
    fold = config.batch_fold or auto_fold_factor(model)
    digest = _digest(model, example_inputs, config, fold)
    path = root / f"{digest}.pt2"
    # A static batch is padded to the fold like any other; one package per padded size.
    static = {b + (-b % fold): root / f"{digest}-b{b + (-b % fold)}.pt2"
              for b in config.static_batches}
    hit = path.exists() and all(p.exists() for p in static.values())
    if not hit:
        source = model.eval()
        if fold > 1:
            source, example_inputs = _checked_fold(model, example_inputs, fold)
        else:
            source = widen_single_channel(source, example_inputs[0]) or source
        converted = pt2e_int8(source, example_inputs, config, fold)
        if not path.exists():
            _compile(converted, example_inputs, _dynamic_shapes(config, fold), path)
        for batch, static_path in static.items():
            if not static_path.exists():
                _compile(converted, (_rows(example_inputs[0], batch),), None, static_path)
    runners = {batch: _load_runner(p) for batch, p in static.items()}
    return CompiledModel(_load_runner(path), path, hit, time.perf_counter() - start, fold,
                         runners)


def _rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """`x`'s first n rows, its rows repeated as needed: an example batch of size n."""
    return x.repeat(-(-n // x.shape[0]), *([1] * (x.dim() - 1)))[:n]


def _compile(
    converted: torch.fx.GraphModule, example_inputs: tuple[torch.Tensor, ...],
    shapes: tuple[dict[int, object], ...] | None, path: Path,
) -> None:
    """AOTInductor-compile the converted graph (freezing on) into the package at `path`."""
    with torch.no_grad():
        exported = torch.export.export(converted, example_inputs, dynamic_shapes=shapes)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            staged = Path(tmp) / path.name
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(staged), inductor_configs={"freezing": True}
            )
            os.replace(staged, path)  # atomic: a crash never leaves half a package


def _checked_fold(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], fold: int
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The folded model and padded examples, after checking it against `model` in float."""
    folded = fold_batch(model.eval(), fold).eval()
    padded = tuple(pad_batch(x, fold) for x in example_inputs)
    with torch.no_grad():
        want, got = model(*padded), folded(*padded)
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise ValueError(
            f"batch folding by {fold} changes this model's output (batch- or channel-dependent "
            "code outside Conv2d / BatchNorm2d / Linear); set ModelInt8Config(batch_fold=1)"
        )
    return folded, padded


def _load_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    # The raw loader needs no `import torch._inductor` (seconds on a cold start); the
    # package holds one model taking one tensor and returning one tensor.
    loader_type = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_type is None:
        return torch._inductor.aoti_load_package(str(path))
    loader = loader_type(str(path), "model", False, 1, -1)

    def run(x: torch.Tensor) -> torch.Tensor:
        return loader.run([x])[0]

    return run
