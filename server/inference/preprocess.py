"""The replica's side of `[preprocess]`: decode a batch's images, run the views, merge.

A batch arrives packed (`image_inputs`: a record and a payload, concatenated over the
batch's requests). `ImagePreprocessor` decodes every image (`server/images.py`; on a
CUDA replica JPEGs go through nvJPEG, `torchvision.io.decode_jpeg(device="cuda")`, when
torchvision is importable, else the CPU decoder), then runs each view's pipeline once
over all the batch's images that use it: the CPU fast path on a CPU replica, kornia on a
GPU one. The model sees the views view-major: first view 0 of every row, then view 1 of
the rows that asked for two or more, and so on; `merge` folds them back to one row per
image. A decode error raises for the whole batch, which the batcher then reruns request
by request, so only the request that holds the bad image fails.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from augserve.server.augment.pipeline import Pipeline
from augserve.server.images import decode_checked
from augserve.server.inference.image_inputs import (
    CHANNELS,
    ENCODED,
    HEIGHT,
    VIEWS,
    WIDTH,
    unpack_images,
)
from augserve.server.inference.model_config import TensorSpec
from augserve.server.inference.preprocess_config import PreprocessSettings

log = logging.getLogger(__name__)


def _nvjpeg() -> object | None:
    """`torchvision.io.decode_jpeg` if torchvision is importable and CUDA present, else None."""
    if not torch.cuda.is_available():
        return None
    try:
        from torchvision.io import decode_jpeg
    except ImportError:
        return None
    return decode_jpeg


def merge_views(output: torch.Tensor, views: np.ndarray, merge: str, scores: str
                ) -> torch.Tensor:
    """Fold a view-major model output back to one row per image.

    Args:
        output: (sum(views), ...) rows: view 0 of every image, then view 1 of the images
            with views > 1, and so on.
        views: the view count of each image.
        merge: "mean" or "max" over an image's views.
        scores: "softmax" (merge each view's softmax over the last dim) or "logits".

    Returns:
        (len(views), ...) float32.
    """
    x = output.float()
    if scores == "softmax":
        x = torch.softmax(x, dim=-1)
    n = len(views)
    merged = x[:n].clone()
    counts = torch.from_numpy(np.asarray(views, np.int64))
    offset = n
    for view in range(1, int(counts.max())):
        rows = torch.nonzero(counts > view).flatten()
        block = x[offset : offset + len(rows)]
        offset += len(rows)
        if merge == "mean":
            merged.index_add_(0, rows, block)
        else:
            merged[rows] = torch.maximum(merged[rows], block)
    if merge == "mean":
        merged /= counts.to(merged.dtype).reshape(-1, *([1] * (merged.dim() - 1)))
    return merged


class ImagePreprocessor:
    """Packed images -> the model's input tensor (all views), and the outputs merged back.

    Args:
        settings: the model's `[preprocess]`.
        outputs: the model's outputs (in config order), to know which ones are merged.
        device: the replica's device: "cuda" uses kornia (and nvJPEG where available).
    """

    def __init__(self, settings: PreprocessSettings, outputs: tuple[TensorSpec, ...],
                 device: torch.device) -> None:
        """Compile every view's pipeline for the replica's device."""
        import cv2

        # OpenCV's own threads only cost here: decode + resize + crop + normalize of 15
        # 500x375 JPEGs took 1.50 ms of CPU per image on one thread and 2.24-2.36 ms on two,
        # in the same wall time (1.50-1.59 ms), measured on 2 vCPUs.
        cv2.setNumThreads(1)
        backend = "kornia" if device.type == "cuda" else "fast"
        self.settings = settings
        self.pipelines = [Pipeline(view.pipeline, backend) for view in settings.views]
        self.seeds = [view.seed for view in settings.views]
        merged = settings.tta.outputs if settings.tta else ()
        self.merged = [spec.name in merged for spec in outputs]
        self._nvjpeg = _nvjpeg() if device.type == "cuda" else None

    def decode(self, record: np.ndarray, payload: np.ndarray) -> list[np.ndarray]:
        """Every row's image as uint8 HWC RGB.

        Raises:
            CorruptImage: an image that does not decode (named by its row in the batch).
        """
        name = self.settings.input.name
        images: list[np.ndarray | None] = [None] * record.shape[0]
        jpegs: list[tuple[int, np.ndarray]] = []
        for row, entry, data in unpack_images(record, payload):
            height, width = int(entry[HEIGHT]), int(entry[WIDTH])
            if entry[CHANNELS] != ENCODED:
                images[row] = data.reshape(height, width, int(entry[CHANNELS]))
            elif self._nvjpeg is not None and bytes(data[:2]) == b"\xff\xd8":
                jpegs.append((row, data))
            else:  # the edge checked the header against the server's bound
                images[row] = decode_checked(data, width, height, f"input {name!r} row {row}")
        if jpegs:
            self._decode_on_gpu(jpegs, images, record)
        return images  # type: ignore[return-value]

    def _decode_on_gpu(self, jpegs: list[tuple[int, np.ndarray]],
                       images: list[np.ndarray | None], record: np.ndarray) -> None:
        """Decode the batch's JPEGs with nvJPEG; any failure falls back to the CPU decoder."""
        name = self.settings.input.name
        try:
            decoded = self._nvjpeg([torch.from_numpy(data.copy()) for _, data in jpegs],
                                   device="cuda")
            for (row, _), image in zip(jpegs, decoded, strict=True):
                if image.shape[0] != 3:
                    raise ValueError(f"{image.shape[0]} channels")
                images[row] = image.permute(1, 2, 0).contiguous().cpu().numpy()
        except Exception as error:  # nvJPEG refuses some files the CPU decoder reads
            log.debug("nvJPEG failed (%s); decoding on the CPU", error)
            for row, data in jpegs:
                images[row] = decode_checked(data, int(record[row, WIDTH]),
                                             int(record[row, HEIGHT]), f"input {name!r} row {row}")

    def __call__(self, record: np.ndarray, payload: np.ndarray) -> tuple[torch.Tensor,
                                                                       np.ndarray]:
        """(the model's input, view-major, on the CPU; each row's view count)."""
        images = self.decode(record, payload)
        views = record[:, VIEWS]
        parts = []
        for view, pipeline in enumerate(self.pipelines):
            rows = np.flatnonzero(views > view)
            if not rows.size:
                break
            out = pipeline([images[i] for i in rows], seed=self.seeds[view],
                           sample_indices=np.zeros(rows.size, np.int64)).images
            parts.append(out if isinstance(out, torch.Tensor) else torch.stack(out))
        return (parts[0] if len(parts) == 1 else torch.cat(parts)), views

    def merge(self, outputs: tuple[torch.Tensor, ...], views: np.ndarray
              ) -> tuple[torch.Tensor, ...]:
        """One row per image: merged outputs as `[tta]` says, the others from view 0."""
        n, tta = len(views), self.settings.tta
        if tta is None:
            return outputs
        return tuple(
            merge_views(out, views, tta.merge, tta.scores) if merged else out[:n]
            for out, merged in zip(outputs, self.merged, strict=True)
        )
