"""Triton GPU kernels. CI runs them on the CPU with `TRITON_INTERPRET=1`.

Importing this package does not import Triton; the kernel modules do, lazily.
"""
