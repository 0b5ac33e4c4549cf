"""Distributed fine-tuning: `train.fit` on Ray Train workers (DDP), one shard each.

`fit_on_ray` is what `train.fit` calls when the job's context asks for `workers` > 1 (the
`workers` field of a `JobSpec`, `--workers` of the job commands). It runs a
`ray.train.torch.TorchTrainer` (Ray Train V2) of `workers` workers, 1 CPU each (gloo), or
1 GPU each (NCCL) on a cluster with GPUs. Every worker:

1. gets the same model, dataset and step settings (one pickle: a pruning step's masks or a
   distillation's teacher arrive with the model they belong to);
2. wraps the model in DistributedDataParallel (`ray.train.torch.prepare_model`);
3. runs the plain `train.fit` on its shard of every epoch: `EpochPlan(num_shards=world,
   shard_index=rank, drop_last=True)` over the same seeded permutation, each sample
   augmented with its own (seed, epoch, index) keys, at `batch_size // world` images a step,
   so the global batch and the learning-rate schedule stay those of one worker.

Rank 0 reports progress (epoch, loss, held-out accuracy) through the job's channel
(`runner.JobChannel`); every rank polls the channel for cancel at every step, and the ranks
agree on it with an all-reduce, so they stop at the same step. Rank 0's weights come back
as the train function's return value and are loaded into the job's model; the job then
measures and writes its version as it would for one worker.

`check_room` refuses `workers` beyond the cluster's free CPUs (or GPUs) with
RESOURCE_EXHAUSTED before anything starts: at Submit, and again before the trainer starts.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tempfile
from typing import Any

import ray
import torch
from torch import nn

from augserve.server.errors import AugserveError, FailedPrecondition, Internal, InvalidArgument
from augserve.server.jobs.data import Dataset
from augserve.server.jobs.progress import Context, JobCancelled, ProgressEvent
from augserve.server.limits import over_limit
from augserve.server.options import option

_POLL = ProgressEvent(message="poll").as_dict()


@dataclasses.dataclass(frozen=True)
class FreeResources:
    """What the Ray cluster has free for a job's Ray Train workers (the bound of `workers`)."""

    free_cpus: float = option(
        0.0, help="CPUs of the Ray cluster no task or actor holds now (1 per CPU worker)")
    free_gpus: float = option(
        0.0, help="GPUs of the Ray cluster no task or actor holds now (1 per GPU worker)")


def uses_gpus() -> bool:
    """Whether Ray Train workers take a GPU each (NCCL): the cluster has GPUs."""
    return ray.cluster_resources().get("GPU", 0) > 0


def check_room(workers: int, held_cpus: float = 0.0) -> None:
    """Refuse `workers` beyond the cluster's free CPUs, or GPUs on a cluster with GPUs.

    `held_cpus` are CPUs the caller holds and gives up while the trainer runs (a Ray task
    blocked in `ray.get` lends its CPUs): the job's own task, when it checks from inside.

    Raises:
        ResourceExhausted: naming `workers` and the free count.
    """
    free = ray.available_resources()
    room = FreeResources(_whole(free.get("CPU", 0.0) + held_cpus), _whole(free.get("GPU", 0.0)))
    if uses_gpus() and workers > room.free_gpus:
        raise over_limit(room, "free_gpus", f"workers: {workers} (1 GPU each)")
    if workers > room.free_cpus:
        raise over_limit(room, "free_cpus", f"workers: {workers} (1 CPU each)")


def _whole(value: float) -> float:
    return int(value) if float(value).is_integer() else round(value, 2)


class ShardContext(Context):
    """A Ray Train worker's context: rank 0 reports, every rank polls, all agree on cancel.

    `emit` is called by every rank at the same steps (the shards have as many batches), so
    its all-reduce of the ranks' cancel flags pairs up; `check` only reads the agreed flag.
    """

    def __init__(self, seed: int, channel: Any, rank: int, device: torch.device) -> None:
        """`channel`: the job's `runner.JobChannel` handle; `rank`: this worker's rank."""

        def report(event: ProgressEvent) -> bool:
            return bool(ray.get(channel.report.remote(event.as_dict())))

        super().__init__(seed, report if rank == 0 else (lambda event: False))
        self.channel, self.rank, self.device = channel, rank, device
        self._pending: Any = None
        self._seen = False

    def _poll(self) -> bool:
        # One poll in flight at a time, read without waiting: a step costs a ray.wait.
        if self._pending is None:
            self._pending = self.channel.report.remote(_POLL)
        ready, _ = ray.wait([self._pending], timeout=0)
        if ready:
            self._seen = self._seen or bool(ray.get(ready[0]))
            self._pending = None
        return self._seen

    def emit(self, force: bool = False, **fields: Any) -> bool:
        """Rank 0 sends the event; returns whether any rank has seen a cancel."""
        import torch.distributed as dist

        local = super().emit(force, **fields) | self._poll()
        flag = torch.tensor([int(local)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self._cancelled = bool(flag.item())
        return self._cancelled

    def check(self) -> None:
        """Raise JobCancelled if the ranks agreed on a cancel (no poll: `emit` polled)."""
        if self._cancelled:
            raise JobCancelled("the job was cancelled; nothing was written")


@dataclasses.dataclass
class _Call:
    """One `fit` call, shipped to every worker in one pickle (so shared objects stay shared)."""

    model: nn.Module
    data: Dataset
    stage: str
    epochs: int
    lr: float
    kwargs: dict[str, Any]
    seed: int
    torch_seed: int
    threads: int


def _worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """The Ray Train train function: `fit` on this rank's shard; rank 0 returns its weights."""
    import ray.train
    from ray.train.torch import get_device, prepare_model

    from augserve.server.jobs.train import fit

    call: _Call = config["call"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(call.threads)
    torch.manual_seed(call.torch_seed + rank)
    device = get_device()
    model = prepare_model(call.model)
    ctx = ShardContext(call.seed, config["channel"], rank, device)
    kwargs = {**call.kwargs, "batch_size": max(1, call.kwargs["batch_size"] // world)}
    try:
        accuracy = fit(model, call.data, ctx, call.stage, call.epochs, call.lr, **kwargs,
                       shard=(rank, world))
    except JobCancelled:  # every rank agreed at the same step: end the run cleanly
        return {"cancelled": True} if rank == 0 else None
    if rank:
        return None
    weights = io.BytesIO()  # Ray Train refuses tensors in a return value: torch.save's bytes
    torch.save({k: v.detach().cpu() for k, v in model.module.state_dict().items()}, weights)
    return {"cancelled": False, "accuracy": accuracy, "state_dict": weights.getvalue()}


def fit_on_ray(model: nn.Module, data: Dataset, ctx: Context, stage: str, epochs: int,
               lr: float, **kwargs: Any) -> float:
    """`train.fit` on `ctx.workers` Ray Train workers; loads rank 0's weights into `model`.

    Returns rank 0's final held-out accuracy. The trainer's storage is a temporary folder,
    removed when the run ends, however it ends.

    Raises:
        FailedPrecondition: Ray Train V2 is switched off (RAY_TRAIN_V2_ENABLED=0).
        InvalidArgument: no job channel (the job is not running as a Ray job).
        ResourceExhausted: more workers than free CPUs (GPUs).
        JobCancelled: the job was cancelled (every worker stopped).
        Internal: a worker failed (an augserve error of a worker is raised as itself).
    """
    from ray.train import RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    if os.environ.get("RAY_TRAIN_V2_ENABLED", "1").lower() in ("0", "false"):
        raise FailedPrecondition("workers > 1 needs Ray Train V2 (the train function's return "
                                 "value): unset RAY_TRAIN_V2_ENABLED=0")
    if ctx.channel is None:
        raise InvalidArgument(f"workers: {ctx.workers} trains on Ray Train, which reports "
                              "through a job's channel: submit the job (not --local)")
    held = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    check_room(ctx.workers, held)
    gpu = uses_gpus()
    ctx.emit(force=True, stage=stage, epochs=epochs,
             message=f"starting {ctx.workers} Ray Train workers ({'nccl' if gpu else 'gloo'})")
    call = _Call(model, data, stage, epochs, lr, kwargs, ctx.seed,
                 int(torch.randint(2**31 - 1, ())), torch.get_num_threads())
    storage = tempfile.mkdtemp(prefix="augserve-train-")
    try:
        trainer = TorchTrainer(
            _worker, train_loop_config={"call": call, "channel": ctx.channel},
            scaling_config=ScalingConfig(num_workers=ctx.workers, use_gpu=gpu,
                                         resources_per_worker={"CPU": 1, "GPU": 1} if gpu
                                         else {"CPU": 1}),
            run_config=RunConfig(name="fit", storage_path=storage),
        )
        try:
            out = trainer.fit().return_value
        except TrainingFailedError as error:
            raise _worker_error(error) from None
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if out is None:
        raise Internal("Ray Train's rank 0 returned no result")
    if out["cancelled"]:
        raise JobCancelled("the job was cancelled; nothing was written")
    model.load_state_dict(torch.load(io.BytesIO(out["state_dict"]), weights_only=True))
    model.eval()
    return float(out["accuracy"])


def _worker_error(error: Exception) -> AugserveError:
    failures = getattr(error, "worker_failures", {}) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        while cause is not None and not isinstance(cause, AugserveError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is not None:
            return cause
    return Internal(f"Ray Train failed: {error}")
