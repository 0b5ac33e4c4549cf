"""Inference: the KServe v2 / Triton-compatible service, its batcher, repository and replicas."""
