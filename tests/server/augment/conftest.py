"""Shared fixtures of the augment tests: real photos, same-size and mixed-size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from augserve.server.bench.augment import load_photos


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """The six bundled photos at 256x256."""
    return load_photos(256)


@pytest.fixture(scope="session")
def mixed() -> list[np.ndarray]:
    """Photos of different sizes and aspects."""
    return [
        cv2.resize(data.astronaut(), (180, 140)),
        cv2.resize(data.coffee(), (96, 200)),
        cv2.resize(data.chelsea(), (251, 163)),
        np.ascontiguousarray(data.rocket()[:120, :90]),
    ]
