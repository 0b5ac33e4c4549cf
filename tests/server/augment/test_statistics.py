"""Each op's parameter distribution matches its spec, over 10k samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from augserve.server.augment.ops import (
    Affine,
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    RandomCrop,
    RandomErasing,
    RandomResizedCrop,
    Rotate,
    Scale,
    VerticalFlip,
)
from augserve.server.augment.rng import Keys

N = 10_000


def keys(op_index: int = 0, seed: int = 123) -> Keys:
    return Keys.for_op(seed, 0, np.arange(N), op_index)


def sizes(h: int = 256, w: int = 320) -> torch.Tensor:
    return torch.tensor([[h, w]] * N)


def assert_rate(hits: torch.Tensor, p: float) -> None:
    sigma = math.sqrt(p * (1 - p) / N)
    assert abs(hits.double().mean().item() - p) <= 3 * sigma + 1e-12


def assert_uniform(values: torch.Tensor, low: float, high: float) -> None:
    assert values.min() >= low and values.max() <= high
    # mean within 3 sigma of (low + high) / 2; variance of U(a, b) is (b - a)^2 / 12
    sigma = (high - low) / math.sqrt(12 * values.numel())
    assert abs(values.mean().item() - (low + high) / 2) <= 3 * sigma
    # and the spread covers the range (a 10-bin histogram has no empty bin)
    hist = torch.histc(values.double(), bins=10, min=low, max=high)
    assert (hist > 0).all()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("cls", [HorizontalFlip, VerticalFlip, Grayscale])
def test_application_rate_within_3_sigma(cls, p):
    assert_rate(cls(p=p).sample(keys(), sizes()).applied, p)


def test_ops_draw_independent_streams():
    a = HorizontalFlip(p=0.5).sample(keys(0), sizes()).applied
    b = HorizontalFlip(p=0.5).sample(keys(1), sizes()).applied
    assert_rate(a & b, 0.25)


def test_random_resized_crop_area_and_ratio_in_range():
    op = RandomResizedCrop(size=(224, 224), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    for h, w in ((256, 320), (256, 256)):
        p = op.sample(keys(), sizes(h, w))
        area = p.w * p.h / (h * w)
        ratio = p.w / p.h
        assert area.min() >= 0.08 and area.max() <= 1.0
        assert ratio.min() >= 3 / 4 and ratio.max() <= 4 / 3
        assert (p.x0 >= 0).all() and (p.y0 >= 0).all()
        assert (p.x0 + p.w <= w).all() and (p.y0 + p.h <= h).all()
    # on a square image the accepted log-ratios are symmetric about 0: mean within 3 sigma
    log_ratio = torch.log(ratio)
    assert abs(log_ratio.mean().item()) <= 3 * log_ratio.std().item() / math.sqrt(N)
    assert area.mean() > 0.3  # accepted areas spread over the range, not bunched at the bottom


def test_colour_jitter_factors_uniform_in_range():
    op = ColorJitter(p=0.8, brightness=0.4, contrast=0.3, saturation=0.5, hue=0.1)
    p = op.sample(keys(), sizes())
    assert_rate(p.applied, 0.8)
    assert_uniform(p.brightness, 0.6, 1.4)
    assert_uniform(p.contrast, 0.7, 1.3)
    assert_uniform(p.saturation, 0.5, 1.5)
    assert_uniform(p.hue, -0.1, 0.1)


def test_geometry_ranges():
    rot = Rotate(p=0.3, degrees=(-10.0, 30.0)).sample(keys(), sizes())
    assert_rate(rot.applied, 0.3)
    assert_uniform(rot.angle, -10.0, 30.0)
    assert_uniform(Scale(scale=(0.5, 1.5)).sample(keys(), sizes()).factor, 0.5, 1.5)
    aff = Affine(translate=(0.1, 0.2), shear=(-5.0, 5.0), shear_y=(0.0, 3.0))
    aff = aff.sample(keys(), sizes())
    assert_uniform(aff.tx, -0.1, 0.1)
    assert_uniform(aff.ty, -0.2, 0.2)
    assert_uniform(aff.shear_x, -5.0, 5.0)
    assert_uniform(aff.shear_y, 0.0, 3.0)
    assert_uniform(GaussianBlur(sigma=(0.1, 2.0)).sample(keys(), sizes()).sigma, 0.1, 2.0)


def test_random_crop_offsets_cover_the_padded_image():
    p = RandomCrop(size=(200, 300), padding=4).sample(keys(), sizes())
    assert p.x0.min() == -4 and p.x0.max() == 320 + 4 - 300
    assert p.y0.min() == -4 and p.y0.max() == 256 + 4 - 200
    assert_uniform(p.x0 + 0.5, -4, 25)  # integers -4..24, centred in their unit bins


def test_random_erasing_box_in_range():
    op = RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3))
    p = op.sample(keys(), sizes())
    assert_rate(p.applied, 0.5)
    on = p.applied
    area = (p.w * p.h / (256 * 320))[on]
    ratio = (p.w / p.h)[on]
    assert area.min() >= 0.02 and area.max() <= 0.33
    assert ratio.min() >= 0.3 and ratio.max() <= 3.3
    assert ((p.x0 + p.w)[on] <= 320).all() and ((p.y0 + p.h)[on] <= 256).all()
