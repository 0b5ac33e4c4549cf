"""augserve.kernels: tensor routines (pruning, quantization, fused augmentation).

Pure tensors in, tensors out; imports nothing from the server.
"""
