"""The replica's preprocessing: one batch of mixed images and views, and the merge of views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augserve.server.augment.pipeline import Pipeline
from augserve.server.images import CorruptImage
from augserve.server.inference.image_inputs import pack_images
from augserve.server.inference.model_config import parse_model_config
from augserve.server.inference.preprocess import ImagePreprocessor, merge_views
from augserve.server.inference.settings import InferenceSettings
from tests.server.inference.test_image_inputs import encoded, params, png
from tests.server.inference.test_preprocess_config import config


def merge_reference(output: torch.Tensor, views: list[int], merge: str, scores: str
                    ) -> torch.Tensor:
    """Row by row: gather each image's views from the view-major rows, then merge them."""
    x = torch.softmax(output.double(), -1) if scores == "softmax" else output.double()
    rows = []
    for image, count in enumerate(views):
        picked, offset = [], 0
        for view in range(count):
            having = [i for i, c in enumerate(views) if c > view]
            picked.append(x[offset + having.index(image)])
            offset += len(having)
        stacked = torch.stack(picked)
        rows.append(stacked.mean(0) if merge == "mean" else stacked.max(0).values)
    return torch.stack(rows).float()


@pytest.mark.parametrize("merge", ["mean", "max"])
@pytest.mark.parametrize("scores", ["softmax", "logits"])
def test_merge_matches_the_row_by_row_reference(merge, scores):
    views = [3, 1, 2, 3, 1]
    output = torch.randn(sum(views), 7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(merge_views(output, np.array(views), merge, scores),
                               merge_reference(output, views, merge, scores))


def preprocessor(datatype="BYTES"):
    raw = config(tta={"views": ["identity", "hflip", "five_crop"], "outputs": ["logits"]})
    raw["preprocess"]["datatype"] = datatype
    settings = parse_model_config(raw, "m")
    return settings.preprocess, ImagePreprocessor(settings.preprocess, settings.outputs,
                                                  torch.device("cpu"))


def test_a_batch_of_mixed_sizes_and_view_counts_is_each_image_alone():
    settings, pre = preprocessor()
    files = [png(40, 70), png(33, 33), png(90, 50)]
    counts = [6, 1, 3]
    parts = [pack_images(encoded(f), settings, params(tta_views=n), InferenceSettings())
             for f, n in zip(files, counts, strict=True)]
    record, payload = (np.concatenate([p[i] for p in parts]) for i in range(2))
    batch, views = pre(record, payload)
    assert views.tolist() == counts and batch.shape == (sum(counts), 3, 32, 32)
    # view-major: view v's block holds the images with more than v views, in order
    offset = 0
    for view in range(max(counts)):
        having = [i for i, c in enumerate(counts) if c > view]
        for k, image in enumerate(having):
            alone, _ = pre(*parts[image])
            torch.testing.assert_close(batch[offset + k], alone[view])
        offset += len(having)
    # and the identity view is the preprocess pipeline itself
    decoded = pre.decode(*parts[0])
    expected = Pipeline(settings.pipeline, "fast")(decoded).images[0]
    torch.testing.assert_close(batch[0], expected)


def test_uint8_rows_are_viewed_not_decoded():
    settings, pre = preprocessor("UINT8")
    images = np.random.default_rng(0).integers(0, 256, (2, 20, 30, 3), np.uint8)
    record, payload = pack_images(images, settings, params(tta=False), InferenceSettings())
    batch, _ = pre(record, payload)
    torch.testing.assert_close(batch, Pipeline(settings.pipeline, "fast")(images).images)


def test_an_image_that_does_not_decode_names_its_row():
    settings, pre = preprocessor()
    record, payload = pack_images(encoded(png(5, 5), png(8, 8)[:-30]), settings, {},
                                  InferenceSettings())
    with pytest.raises(CorruptImage, match="input 'image' row 1: cannot decode"):
        pre(record, payload)


def test_outputs_not_listed_in_tta_outputs_are_the_identity_views():
    raw = config(tta={"views": ["identity", "hflip"], "outputs": ["logits"]})
    settings = parse_model_config(raw, "m")
    pre = ImagePreprocessor(settings.preprocess, settings.outputs, torch.device("cpu"))
    logits, index = torch.randn(4, 5), torch.arange(4)[:, None]
    merged, kept = pre.merge((logits, index), np.array([2, 2]))
    torch.testing.assert_close(kept, index[:2])
    torch.testing.assert_close(merged, merge_views(logits, np.array([2, 2]), "mean", "softmax"))
