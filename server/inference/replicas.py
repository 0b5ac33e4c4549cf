"""Starting, calling and stopping the Ray actors that run a model version.

`start_replica` creates one `ModelReplica` actor, warms it up, and opens the
direct batch channel when the actor runs on this node (`inference.channel`),
else batches go through Ray actor calls. Either way, a replica whose process is
gone raises `ReplicaDied`, which the batcher answers by starting a new one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from augserve.kernels.resolve import AllowList
from augserve.server.actors import placement_options
from augserve.server.errors import AugserveError, Internal, ReplicaDied
from augserve.server.inference.channel import ReplicaChannel
from augserve.server.inference.model_config import ModelSettings
from augserve.server.inference.replica import ModelReplica
from augserve.server.inference.timing import BatchTiming

log = logging.getLogger(__name__)


def unwrap_ray_error(error: Exception, model: str) -> AugserveError:
    """The AugserveError behind a Ray task or actor error of a replica of `model`."""
    if isinstance(error, RayTaskError) and isinstance(error.cause, AugserveError):
        return error.cause
    if isinstance(error, RayTaskError) and error.cause is not None:
        cause = error.cause
        return Internal(f"model {model!r} raised {type(cause).__name__}: {cause}")
    if isinstance(error, RayActorError):
        return ReplicaDied(f"a replica of model {model!r} died: {error}")
    return Internal(f"model {model!r}: {type(error).__name__}: {error}")


@dataclass
class ReplicaHandle:
    """One running replica: its actor, its node and, on this node, its direct channel.

    `pending` counts the batches sent to it and not answered yet.
    """

    actor: Any
    model: str
    channel: ReplicaChannel | None = None
    node: str = ""
    pending: int = 0

    def run(self, parts: list[list[np.ndarray]]
            ) -> Awaitable[tuple[list[np.ndarray], BatchTiming]]:
        """Send one batch now (see `batcher.RunBatch`), over the channel or a Ray call."""
        if self.channel is not None:
            sent = self.channel.run(parts)
        else:
            inputs = [arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
                      for arrays in parts]
            sent = self._ray_outputs(self.actor.infer.remote(inputs))
        self.pending += 1
        return self._answered(sent)

    async def _answered(self, sent: Awaitable[tuple[list[np.ndarray], BatchTiming]]
                        ) -> tuple[list[np.ndarray], BatchTiming]:
        try:
            return await sent
        finally:
            self.pending -= 1

    async def _ray_outputs(self, reference: Any) -> tuple[list[np.ndarray], BatchTiming]:
        try:
            return await reference
        except (RayTaskError, RayActorError) as error:
            raise unwrap_ray_error(error, self.model) from None

    async def stop(self) -> None:
        """Close the channel and kill the actor."""
        if self.channel is not None:
            await self.channel.close()
        ray.kill(self.actor)

    async def drain_and_stop(self, timeout_s: float) -> None:
        """Once no batch sent to it is pending (or after `timeout_s`), stop it."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.stop()


async def _open_channel(actor: Any, settings: ModelSettings) -> ReplicaChannel | None:
    """The direct channel to `actor` if it runs on this node and the config allows it."""
    if settings.instance_group.transport != "auto":
        return None
    node, path = await actor.open_channel.remote()
    if node != ray.get_runtime_context().get_node_id():
        return None
    channel = ReplicaChannel(path, settings.name)
    try:
        await channel.connect()
    except OSError as error:
        log.warning(
            "model %s: replica socket %s unreachable (%s); using Ray calls",
            settings.name, path, error,
        )  # fmt: skip
        return None
    return channel


@functools.cache
def _replica_class() -> Any:
    """The one Ray actor class of replicas, kept for the process's life.

    Ray exports a class to the GCS synchronously at its first actor, so a class made per
    replica would block the event loop whenever the GCS is gone.
    """
    return ray.remote(ModelReplica)


async def start_replica(settings: ModelSettings, folder: Path, allow_pickle: bool,
                        imports: AllowList | None = None,
                        node: str | None = None) -> ReplicaHandle:
    """Start, warm up and connect one replica of the version in `folder`.

    `imports` bounds where the model's architecture may be imported from. `node` puts it
    on that Ray node if the node has room (else where its placement allows): the server's
    own node for the warm spares (losing that node ends the server anyway), or a node that
    joined for a replica moved onto it.

    Raises:
        AugserveError: the replica failed to load or warm up (it is killed).
    """
    group = settings.instance_group
    placement = placement_options(group.placement)
    if node is not None:  # the placement's resources still apply; only the node is preferred
        placement["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
    actor = (
        _replica_class()
        .options(
            num_cpus=group.num_cpus,
            num_gpus=1 if group.kind == "gpu" else 0,
            runtime_env={"env_vars": group.replica_env},
            **placement,
        )
        .remote(settings, str(folder), allow_pickle, imports)
    )
    try:
        await actor.ready.remote()
        where = await actor.node.remote()
        channel = await _open_channel(actor, settings)
    except (RayTaskError, RayActorError) as error:
        ray.kill(actor)
        raise unwrap_ray_error(error, settings.name) from None
    # Where it runs, in the log: placement is Ray's, and a node loss re-places replicas.
    log.info("model %s: replica on node %s (%s)", settings.name, where,
             "socket" if channel is not None else "Ray calls")
    return ReplicaHandle(actor, settings.name, channel, where)
