"""`[preprocess]` on a GPU replica: kornia (and nvJPEG where torchvision is installed) agree
with the CPU replica's fast path on real photos.

Skipped without a CUDA device; `.ci/gpu` runs these on one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augserve.server.inference.image_inputs import pack_images
from augserve.server.inference.model_config import parse_model_config
from augserve.server.inference.preprocess import ImagePreprocessor
from augserve.server.inference.settings import InferenceSettings
from tests.e2e.image_models import PIPELINE, jpeg, photos

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (.ci/gpu runs these on one)"
)


def test_gpu_preprocessing_matches_the_cpu_fast_path():
    raw = {
        "platform": "torchscript", "max_batch_size": 8,
        "input": [{"name": "input", "datatype": "FP32", "dims": [3, 64, 64]}],
        "output": [{"name": "logits", "datatype": "FP32", "dims": [4]}],
        "preprocess": {"input": "image", "datatype": "BYTES", "pipeline": PIPELINE},
        "tta": {"views": ["identity", "hflip", "five_crop"]},
    }
    settings = parse_model_config(raw, "m")
    files = np.empty((4, 1), dtype=object)
    files[:, 0] = [jpeg(image) for image in photos().values()]
    packed = pack_images(files, settings.preprocess, {}, InferenceSettings())
    cpu = ImagePreprocessor(settings.preprocess, settings.outputs, torch.device("cpu"))
    gpu = ImagePreprocessor(settings.preprocess, settings.outputs, torch.device("cuda"))
    expected, views = cpu(*packed)
    served, same_views = gpu(*packed)
    assert views.tolist() == same_views.tolist() == [6] * 4
    # kornia against the fast path: about one uint8 step of the input, normalized (/ std
    # 0.225); nvJPEG's IDCT differs from libjpeg-turbo's by a few steps at some pixels
    step = 1 / 255 / 0.225
    difference = (served.cpu() - expected).abs()
    assert difference.mean() <= step, difference.mean()
    assert difference.max() <= 8 * step, difference.max()
