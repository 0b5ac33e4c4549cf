"""The augmentation engine: a declarative, deterministic, per-sample batched pipeline.

`Pipeline.from_spec(spec)(images, seed=...)` runs it in-process; the `Augment` RPC
(`augserve.server.augment.servicer`) runs it on a pool of Ray actors.
"""
