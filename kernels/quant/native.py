"""The C++ `augserve_int8` ops (csrc/int8_linear.cpp), built once and cached, or None.

`load()` compiles the extension with `torch.utils.cpp_extension` the first time it is called
on a machine (about a minute, needs a C++ compiler) into `cache_dir()/ext/<key>`, the key
hashing the source, the torch version and the flags; later processes load the cached `.so`
in milliseconds. It is called when an `Int8Weight` is prepared (`Int8Weight.prepare` or the
first call of `Int8Linear`), never inside the timed path. Where it cannot be built (no
compiler, a CPU without AVX2, `AUGSERVE_NATIVE_INT8=0`), `load()` returns None and
`int8_linear` runs its torch ops instead, with the same results.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from types import ModuleType

import torch

_LOG = logging.getLogger(__name__)
_SOURCE = Path(__file__).parent / "csrc" / "int8_linear.cpp"
# -fopenmp: at::parallel_for is inline OpenMP; the loader reuses the libgomp torch loaded.
_FLAGS = ["-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fno-strict-aliasing", "-fopenmp"]
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


def _supported() -> bool:
    if os.environ.get("AUGSERVE_NATIVE_INT8", "1") == "0":
        return False
    capability = str(torch.backends.cpu.get_cpu_capability())
    return capability.startswith("AVX2") or capability.startswith("AVX512")


def _build_dir() -> Path:
    from augserve.kernels.quant.model import cache_dir

    h = hashlib.sha256(_SOURCE.read_bytes())
    h.update(f"{torch.__version__}|{_FLAGS}".encode())
    path = cache_dir() / "ext" / f"augserve_int8-{h.hexdigest()[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load() -> ModuleType | None:
    """`torch.ops.augserve_int8`, building or loading the extension once; None if unavailable."""
    with _LOCK:
        if "ops" not in _STATE:
            _STATE["ops"] = _load_locked()
        return _STATE["ops"]  # type: ignore[return-value]


def _load_locked() -> ModuleType | None:
    if not _supported():
        return None
    try:
        from torch.utils import cpp_extension

        cpp_extension.load(
            name="augserve_int8", sources=[str(_SOURCE)], extra_cflags=_FLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(_build_dir()), is_python_module=False, verbose=False,
        )
    except (OSError, RuntimeError, ImportError) as exc:  # no compiler, failed build
        _LOG.warning("augserve_int8 C++ ops unavailable, int8_linear uses torch ops: %s", exc)
        return None
    return torch.ops.augserve_int8
