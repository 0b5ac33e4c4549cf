"""Jobs: compress and transfer models, as Ray tasks, writing new model versions.

- `specs`: frozen job specs (source, steps: finetune, prune, quantize, distill, transfer).
- `data`: digits datasets (full, 0-4, 5-9 with 20 per class), augmented batches.
- `prune`, `quantize`, `distill`, `transfer`, `train`: the steps (over `augserve.kernels`).
- `execute`: run a job in-process; `runner`: as a Ray task with a progress channel.
- `journal`: one JSON record per job, so Watch / Result outlive a server restart.
- `output`: atomic version write with a model card; `measure`: the card's figures.
- `report`: the five-model compression report; `transfer_study`: the transfer learning
  curve (`augserve transfer report`).
- `servicer`: the `augserve.v1.JobService` RPCs; `cli`: `augserve compress | transfer`.
"""
