"""Backend enum resolution."""

from __future__ import annotations

import pytest
import torch

from augserve.kernels.backend import Backend, resolve


def test_resolve_auto_on_cpu_is_torch_and_strings_work():
    assert resolve(Backend.AUTO, torch.device("cpu")) is Backend.TORCH
    assert resolve("REFERENCE", torch.device("cpu")) is Backend.REFERENCE
    assert resolve(Backend.TRITON, torch.device("cpu")) is Backend.TRITON


def test_resolve_rejects_unknown_names():
    with pytest.raises(ValueError, match="known: auto, torch, triton, reference"):
        resolve("cuda", torch.device("cpu"))
