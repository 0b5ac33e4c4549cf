"""The model repository: what is on disk, what is loaded, and loading or unloading at runtime.

Disk layout: `<root>/<model>/config.toml|json` and numbered version folders
`<root>/<model>/<n>/<model file>`. Loading a model starts its replicas (Ray
actors) for every version its policy selects, warms them up, opens a direct
channel to those on this node, and only then swaps them in, so a reload never
drops requests to the old versions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from augserve.server.errors import (
    AugserveError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from augserve.server.inference.batcher import BatchQueue, RunBatch
from augserve.server.inference.channel import ReplicaChannel
from augserve.server.inference.model_config import ModelSettings, read_model_config
from augserve.server.inference.replica import ModelReplica
from augserve.server.inference.statistics import ModelStats

log = logging.getLogger(__name__)


@dataclass
class LoadedVersion:
    """One served model version: its replicas, its batcher and its statistics."""

    settings: ModelSettings
    version: int
    replicas: list[Any]
    queue: BatchQueue
    stats: ModelStats
    channels: list[ReplicaChannel] = field(default_factory=list)


@dataclass
class VersionState:
    """A row of the repository index."""

    name: str
    version: str
    state: str  # READY, LOADING, UNLOADING or UNAVAILABLE
    reason: str = ""


@dataclass
class _Model:
    settings: ModelSettings | None = None
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    states: dict[str, VersionState] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _unwrap(error: Exception, model: str) -> AugserveError:
    creation_error = getattr(error, "cause", None)
    if isinstance(error, RayActorError) and isinstance(creation_error, RayTaskError):
        error = creation_error  # the replica's __init__ raised: report that error
    if isinstance(error, RayTaskError) and isinstance(error.cause, AugserveError):
        return error.cause
    if isinstance(error, RayTaskError) and error.cause is not None:
        cause = error.cause
        return Internal(f"model {model!r} raised {type(cause).__name__}: {cause}")
    if isinstance(error, RayActorError):
        return Unavailable(f"a replica of model {model!r} died: {error}")
    return Internal(f"model {model!r}: {type(error).__name__}: {error}")


def _ray_runner(actor: Any, model: str) -> RunBatch:
    async def run(parts: list[list[np.ndarray]]) -> tuple[list[np.ndarray], int]:
        inputs = [arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for arrays in parts]
        try:
            return await actor.infer.remote(inputs)
        except (RayTaskError, RayActorError) as error:
            raise _unwrap(error, model) from None

    return run


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
        log.warning("model %s: replica socket %s unreachable (%s); using Ray calls",
                    settings.name, path, error)
        return None
    return channel


class ModelRepository:
    """Models under `root`, and the ones currently served.

    Args:
        root: the repository folder.
        allow_pickle: whether pickled whole modules may be loaded.
        max_in_flight: batches each replica may hold at once.

    """

    def __init__(self, root: Path, allow_pickle: bool = False, max_in_flight: int = 1) -> None:
        self.root = root
        self.allow_pickle = allow_pickle
        self.max_in_flight = max_in_flight
        self._models: dict[str, _Model] = {}

    def names_on_disk(self) -> list[str]:
        """Model folders under the root that have a config file."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and ((p / "config.toml").is_file() or (p / "config.json").is_file())
        )

    def _model_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise InvalidArgument(f"model name {name!r} is not a valid folder name")
        folder = self.root / name
        if not folder.is_dir():
            raise NotFound(f"model {name!r} is not in the repository")
        return folder

    async def load(self, name: str) -> None:
        """Load (or reload) `name`: start and warm up new replicas, then swap them in.

        Raises:
            NotFound: no such model folder, or no version folder the policy selects.
            InvalidArgument: the config is invalid.
            Internal: a replica failed to load or warm up (the old versions keep serving).

        """
        folder = self._model_dir(name)
        model = self._models.setdefault(name, _Model())
        async with model.lock:
            try:
                settings = read_model_config(folder)
                if settings.platform == "pickle" and not self.allow_pickle:
                    raise FailedPrecondition(
                        f"model {name!r} is a pickled module; loading it can run arbitrary "
                        "code, so the server refuses it unless started with --allow-pickle"
                    )
                on_disk = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
                selected = settings.version_policy.select(on_disk)
                if not selected:
                    raise NotFound(f"model {name!r} has no version folder its policy selects")
                for version in selected:
                    model.states[str(version)] = VersionState(name, str(version), "LOADING")
                fresh = {
                    v: await self._start_version(settings, folder / str(v), v) for v in selected
                }
            except AugserveError as error:
                loading = [s for s in model.states.values() if s.state == "LOADING"]
                for state in loading:
                    state.state, state.reason = "UNAVAILABLE", str(error)
                if not loading and not model.versions:
                    model.states = {"": VersionState(name, "", "UNAVAILABLE", str(error))}
                raise
            old = model.versions
            model.settings, model.versions = settings, fresh
            model.states = {str(v): VersionState(name, str(v), "READY") for v in fresh}
        await asyncio.gather(*(self._stop_version(loaded) for loaded in old.values()))
        log.info("model %s ready, versions %s", name, sorted(fresh))

    async def _start_version(
        self, settings: ModelSettings, folder: Path, version: int
    ) -> LoadedVersion:
        group = settings.instance_group
        options = {
            "num_cpus": group.num_cpus,
            "num_gpus": 1 if group.kind == "gpu" else 0,
            "runtime_env": {"env_vars": group.env},
        }
        actor_class = ray.remote(ModelReplica).options(**options)
        actors = [
            actor_class.remote(settings, str(folder), self.allow_pickle) for _ in range(group.count)
        ]
        try:
            await asyncio.gather(*(actor.ready.remote() for actor in actors))
            opened = await asyncio.gather(*(_open_channel(a, settings) for a in actors))
        except (RayTaskError, RayActorError) as error:
            for actor in actors:
                ray.kill(actor)
            raise _unwrap(error, settings.name) from None
        runners = [
            channel.run if channel else _ray_runner(actor, settings.name)
            for actor, channel in zip(actors, opened, strict=True)
        ]
        stats = ModelStats(settings.name, str(version))
        queue = BatchQueue(
            runners,
            settings.max_batch_size,
            settings.batching,
            stats,
            self.max_in_flight,
        )
        channels = [channel for channel in opened if channel]
        return LoadedVersion(settings, version, actors, queue, stats, channels)

    async def _stop_version(self, loaded: LoadedVersion) -> None:
        await loaded.queue.close()
        await asyncio.gather(*(channel.close() for channel in loaded.channels))
        for actor in loaded.replicas:
            ray.kill(actor)

    async def unload(self, name: str) -> None:
        """Stop serving `name`: drain its queues, then stop its replicas (no-op if not loaded).

        Raises:
            NotFound: the repository has no such model.

        """
        model = self._models.get(name)
        if model is None or not model.versions:
            self._model_dir(name)
            return
        async with model.lock:
            for state in model.states.values():
                state.state = "UNLOADING"
            old, model.versions = model.versions, {}
            await asyncio.gather(*(self._stop_version(loaded) for loaded in old.values()))
            model.states = {
                v: VersionState(name, v, "UNAVAILABLE", "unloaded") for v in model.states
            }

    async def unload_all(self) -> None:
        """Unload every loaded model (used at shutdown)."""
        await asyncio.gather(
            *(self.unload(name) for name, model in self._models.items() if model.versions)
        )

    def get(self, name: str, version: str = "") -> LoadedVersion:
        """The ready version `version` of `name` ("" = the newest ready one).

        Raises:
            NotFound: the model or version is not loaded.

        """
        model = self._models.get(name)
        if model is None or not model.versions:
            raise NotFound(f"model {name!r} is not loaded")
        if not version:
            return model.versions[max(model.versions)]
        if not version.isdigit() or int(version) not in model.versions:
            raise NotFound(f"model {name!r} has no ready version {version!r}")
        return model.versions[int(version)]

    def loaded(self) -> list[LoadedVersion]:
        """Every served model version."""
        return [v for m in self._models.values() for v in m.versions.values()]

    def index(self) -> list[VersionState]:
        """Every model on disk with each known version's state."""
        rows: list[VersionState] = []
        for name in self.names_on_disk():
            model = self._models.get(name)
            if model is None or not model.states:
                rows.append(VersionState(name, "", "UNAVAILABLE", "not loaded"))
            else:
                rows.extend(model.states.values())
        return rows
