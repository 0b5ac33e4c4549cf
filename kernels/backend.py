"""Kernel backend choice: one enum for every routine in `augserve.kernels`.

`REFERENCE` is the plain-torch baseline the tests compare against; `TORCH` uses torch's
fast ops (oneDNN VNNI/AMX on the CPU, `torch._int_mm` on CUDA); `TRITON` uses our Triton
kernels (CUDA, or the CPU interpreter under `TRITON_INTERPRET=1`); `AUTO` picks per device.
"""

from __future__ import annotations

import enum
import os

import torch


class Backend(enum.Enum):
    """Which implementation a kernel routine runs."""

    AUTO = "auto"
    TORCH = "torch"
    TRITON = "triton"
    REFERENCE = "reference"


def triton_available() -> bool:
    """True when Triton can run here: a CUDA device, or the interpreter is switched on."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def resolve(backend: Backend | str, device: torch.device) -> Backend:
    """Turn `backend` (enum or its string value) into a concrete backend for `device`.

    AUTO becomes TRITON on CUDA when Triton is installed and TORCH otherwise.

    Example:
        >>> resolve("auto", torch.device("cpu"))
        <Backend.TORCH: 'torch'>
    """
    if isinstance(backend, str):
        try:
            backend = Backend(backend.lower())
        except ValueError:
            known = ", ".join(b.value for b in Backend)
            raise ValueError(f"unknown backend {backend!r}; known: {known}") from None
    if backend is Backend.AUTO:
        if device.type == "cuda" and triton_available():
            return Backend.TRITON
        return Backend.TORCH
    return backend
