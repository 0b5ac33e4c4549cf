"""augserve.kernels: tensor routines (pruning, quantization, fused augmentation).

Pure tensors in, tensors out; imports nothing from the server.

- `backend`: the AUTO / TORCH / TRITON / REFERENCE choice every routine takes.
- `prune`: weight masks (magnitude, N:M, block), channel scores, dependency groups traced
  with torch.fx (plan -> check -> apply) and physical channel removal.
- `quant`: int8 GEMM with per-channel / per-token scales and fused epilogue, `Int8Linear`,
  `Int8Conv2d`, weight-only int8 / int4, and `quant.model.quantize_model` (PT2E + AOTInductor
  with an on-disk compile cache) for whole models.
- `triton`: the CUDA kernels (CI runs them with `TRITON_INTERPRET=1`).
- `compress`: `compress_(model, Config)` with one handler per frozen config.
- `serialize`: `save_compressed` / `load_compressed` (state_dict + JSON spec, no pickle).
- `resolve`: `AllowList`, the one resolver of `module:attribute` names (architectures), with
  an allow-list of module prefixes checked before anything is imported.
- `augment`: fused CPU augmentation routines.
"""
