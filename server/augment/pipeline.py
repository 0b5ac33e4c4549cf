"""`Pipeline`: a checked spec that augments a batch, deterministically, per sample.

Example:
    >>> pipeline = Pipeline.from_spec(IMAGENET_TRAIN)
    >>> result = pipeline([photo_256x256], seed=7, return_params=True)  # doctest: +SKIP
    >>> result.images.shape  # doctest: +SKIP
    torch.Size([1, 3, 224, 224])
    >>> pipeline([photo_256x256], seed=0, params=result.params)  # the same bytes  # doctest: +SKIP

Every random number comes from `Keys.for_op(seed, epoch, sample_index, op_index)`,
so a sample's augmentation depends only on those four values: not on the batch, its
order, the worker or a retry. Params can be returned and passed back to replay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from augserve.server.augment.fast import run_fast
from augserve.server.augment.kornia_backend import run_kornia
from augserve.server.augment.ops import OpParams, SpecError
from augserve.server.augment.ops.geometry import BoxOp
from augserve.server.augment.plan import build_plan
from augserve.server.augment.rng import Keys, check_seed
from augserve.server.augment.spec import IMAGENET_TRAIN, PipelineSpec, parse_pipeline
from augserve.server.augment.targets import Targets, move_targets

BACKENDS = ("auto", "fast", "kornia", "reference")

__all__ = ["BACKENDS", "IMAGENET_TRAIN", "AugmentResult", "BoxLoader", "Pipeline", "Targets"]

#: `load(k, box, out_hw, fill)`: sample k's box (x0, y0, w, h) resized to out_hw, uint8 RGB,
#: or None to leave the sample out (a file that did not decode).
BoxLoader = Callable[[int, tuple[int, int, int, int], tuple[int, int], tuple[float, ...]],
                     "np.ndarray | None"]


@dataclasses.dataclass(frozen=True)
class AugmentResult:
    """What a pipeline call returns.

    Attributes:
        images: (n, ...) tensor when all outputs share a shape, else a list of tensors.
        params: per op, the batch's params (when asked for or replayed), else None.
        targets: per image, the moved targets (when targets were given), else None.
    """

    images: torch.Tensor | list[torch.Tensor]
    params: tuple[OpParams, ...] | None = None
    targets: list[Targets] | None = None


def check_images(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """uint8 HWC RGB images as a list of C-contiguous arrays, or ValueError."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"images[{i}]: expected uint8, got {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"images[{i}]: expected non-empty [H, W, 3] image, got {image.shape}")
        out.append(np.ascontiguousarray(image))
    return out


class Pipeline:
    """A compiled pipeline spec; call it on a batch (images may differ in size)."""

    def __init__(self, spec: PipelineSpec, backend: str = "auto") -> None:
        """Wrap a checked spec.

        `backend` is "auto" (CUDA: kornia, else fast), "fast", "kornia" or "reference"
        (kornia, colour ops one by one with clamping).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.spec = spec
        self.backend = backend

    @classmethod
    def from_spec(cls, spec: PipelineSpec | Any | str | Mapping[str, Any],
                  backend: str = "auto") -> Pipeline:
        """Build from a spec in any form: typed, `augserve.v1.Pipeline`, JSON text or dict.

        Raises:
            InvalidArgument: the spec names an unknown op or a field is out of range.
        """
        return cls(parse_pipeline(spec), backend)

    def sample(self, sizes: torch.Tensor, seed: int, epoch: int = 0,
               sample_indices: Sequence[int] | np.ndarray | None = None) -> tuple[OpParams, ...]:
        """Draw every op's params for input sizes `sizes` ((n, 2) height, width)."""
        n = sizes.shape[0]
        indices = np.arange(n) if sample_indices is None else np.asarray(sample_indices)
        if indices.shape != (n,):
            raise ValueError(f"sample_indices: expected {n} indices, got {indices.shape}")
        params = []
        for op_index, op in enumerate(self.spec.ops):
            p = op.sample(Keys.for_op(seed, epoch, indices, op_index), sizes)
            params.append(p)
            sizes = op.out_sizes(p, sizes)
        return tuple(params)

    def leading_box(self) -> BoxOp | None:
        """The first op when it is a box op (crop / resize to a fixed size), else None."""
        first = self.spec.ops[0] if self.spec.ops else None
        return first if isinstance(first, BoxOp) else None

    def from_boxes(self, sizes: torch.Tensor, load: BoxLoader, seed: int = 0, epoch: int = 0,
                   sample_indices: Sequence[int] | np.ndarray | None = None,
                   backend: str | None = None) -> tuple[AugmentResult, np.ndarray]:
        """Augment images that are not decoded yet, from their sizes, letting `load` do op 0.

        The params are drawn from `sizes` ((n, 2) height, width: the headers') with the
        usual keys, so they are those a decoded batch gets. `load` makes the leading box
        op's output of each sample (it may decode only what that box needs); the other ops
        run on those outputs with their drawn params replayed.

        Returns:
            (result, kept): the result of the samples `load` gave, and per sample whether
            it did.

        Raises:
            ValueError: the pipeline does not start with a box op.
        """
        op = self.leading_box()
        if op is None:
            raise ValueError("from_boxes needs a pipeline that starts with a box op")
        check_seed(seed)
        n = sizes.shape[0]
        indices = np.arange(n) if sample_indices is None else np.asarray(sample_indices)
        drawn = self.sample(sizes, seed, epoch, indices)
        boxes = op.boxes(drawn[0]).tolist()
        out_hw = op.out_sizes(drawn[0], sizes).tolist()
        images, kept = [], np.zeros(n, bool)
        for k in range(n):
            image = load(k, tuple(boxes[k]), tuple(out_hw[k]), op.fill)
            if image is not None:
                images.append(image)
                kept[k] = True
        rest = Pipeline(dataclasses.replace(self.spec, ops=self.spec.ops[1:]), self.backend)
        where = torch.from_numpy(np.flatnonzero(kept))
        result = rest(images, seed, epoch, indices[kept],
                      params=[p.take(where) for p in drawn[1:]], backend=backend)
        return AugmentResult(result.images, (drawn[0].take(where), *(result.params or ()))), kept

    def _sizes_chain(self, sizes: torch.Tensor, params: tuple[OpParams, ...]) -> list[torch.Tensor]:
        chain = [sizes]
        for op, p in zip(self.spec.ops, params, strict=True):
            chain.append(op.out_sizes(p, chain[-1]))
        return chain

    def check_params(self, params: Sequence[OpParams], n: int) -> tuple[OpParams, ...]:
        """Replayed params: one per op, of the op's type, n samples each; else SpecError."""
        if len(params) != len(self.spec.ops):
            raise SpecError("params", f"expected {len(self.spec.ops)} ops, got {len(params)}")
        for k, (op, p) in enumerate(zip(self.spec.ops, params, strict=True)):
            if not isinstance(p, op.params_type) or len(p) != n:
                raise SpecError(f"params[{k}] ({op.name})",
                                f"expected {n} samples of {op.params_type.__name__}")
            op.check_params(p)
        return tuple(params)

    def __call__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        seed: int = 0,
        epoch: int = 0,
        sample_indices: Sequence[int] | np.ndarray | None = None,
        params: Sequence[OpParams] | None = None,
        return_params: bool = False,
        targets: Sequence[Targets] | None = None,
        backend: str | None = None,
    ) -> AugmentResult:
        """Augment a batch.

        Args:
            images: (n, H, W, 3) uint8 array or a list of [H, W, 3] uint8 arrays.
            seed: the random stream, in [0, 2**64).
            epoch: the epoch, part of every key.
            sample_indices: each image's dataset index (default 0..n-1).
            params: replay these params (from an earlier `return_params=True`) instead of
                drawing new ones.
            return_params: include the params in the result.
            targets: optional per-image boxes / keypoints / mask to move with the images.
            backend: override the pipeline's backend for this call.

        Returns:
            An `AugmentResult`.
        """
        batch = check_images(images)
        check_seed(seed)
        backend = backend or self.backend
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if not batch:
            return AugmentResult([], () if return_params else None, [] if targets else None)
        sizes = torch.tensor([im.shape[:2] for im in batch], dtype=torch.int64).reshape(-1, 2)
        if params is None:
            drawn = self.sample(sizes, seed, epoch, sample_indices)
        else:
            drawn = self.check_params(params, len(batch))
        chain = self._sizes_chain(sizes, drawn)
        stages = build_plan(self.spec.ops, drawn, sizes)
        if backend == "auto":
            backend = "kornia" if torch.cuda.is_available() else "fast"
        if backend == "fast":
            out = run_fast(stages, batch, self.spec.dtype, self.spec.layout)
        else:
            out = run_kornia(stages, batch, self.spec.dtype, self.spec.layout,
                             reference=backend == "reference")
        moved = None
        if targets is not None:
            if len(targets) != len(batch):
                raise ValueError(f"targets: expected {len(batch)}, got {len(targets)}")
            moved = [move_targets(t, self.spec.ops, drawn, chain, i, self.spec.box_policy)
                     for i, t in enumerate(targets)]
        return AugmentResult(out, drawn if (return_params or params is not None) else None, moved)
