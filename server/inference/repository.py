"""The model repository: what is on disk, what is loaded, and loading or unloading at runtime.

Disk layout: `<root>/<model>/config.toml|json` and numbered version folders
`<root>/<model>/<n>/<model file>`. Loading a model starts its replicas (Ray
actors, `inference.replicas`) for every version its policy selects, warms them
up, and only then swaps them in, so a reload never drops requests to the old
versions. A replica that dies is restarted by its batcher: a warm spare of its version
(`inference.spares`, `InferenceSettings.warm_spares`) takes its place if one is ready,
else a new replica starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import ray

from augserve.kernels.resolve import AllowList
from augserve.server.actors import rebalance_move, spread_targets
from augserve.server.errors import (
    AugserveError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from augserve.server.imports import allow_list
from augserve.server.inference.batcher import BatchQueue, RunBatch
from augserve.server.inference.loading import architecture_field
from augserve.server.inference.model_config import ModelSettings, read_model_config
from augserve.server.inference.replicas import ReplicaHandle, start_replica
from augserve.server.inference.settings import InferenceSettings
from augserve.server.inference.spares import SparePool, StartGate
from augserve.server.inference.statistics import ModelStats
from augserve.server.paths import check_name, check_version, inside, is_name

log = logging.getLogger(__name__)

# How long a replica moved off a crowded node may take to answer the batches it holds.
MOVE_DRAIN_S = 60.0


@dataclass
class LoadedVersion:
    """One served model version: its replicas, its batcher and its statistics."""

    settings: ModelSettings
    version: int
    replicas: list[ReplicaHandle]
    queue: BatchQueue
    stats: ModelStats
    spares: SparePool
    start: Callable[[str | None], Awaitable[ReplicaHandle]]  # one replica [on a node]


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


Started = TypeVar("Started")


async def _all_or_none(starts: list[Awaitable[Started]],
                       stop: Callable[[Started], Awaitable[None]]) -> list[Started]:
    """Await every start at once; if one fails, stop those that started and raise its error."""
    started = await asyncio.gather(*starts, return_exceptions=True)
    failure = next((r for r in started if isinstance(r, BaseException)), None)
    if failure is not None:
        await asyncio.gather(*(stop(r) for r in started if not isinstance(r, BaseException)))
        raise failure
    return started


class ModelRepository:
    """Models under `root`, and the ones currently served.

    Args:
        root: the repository folder.
        allow_pickle: whether pickled whole modules may be loaded.
        settings: the server-wide serving limits (batches in flight per replica, replica
            deaths a request rides through).
        imports: the modules a model's architecture may come from (default:
            `augserve.server.imports.allow_list()`).

    """

    def __init__(self, root: Path, allow_pickle: bool = False,
                 settings: InferenceSettings | None = None,
                 imports: AllowList | None = None) -> None:
        self.root = root
        self.allow_pickle = allow_pickle
        self.settings = settings or InferenceSettings()
        self.imports = imports or allow_list()
        self._models: dict[str, _Model] = {}
        self._gate = StartGate()  # replacements before spare starts, across every model

    def names_on_disk(self) -> list[str]:
        """Model folders under the root that have a config file (valid names, not escaping)."""
        return sorted(p.name for p in self.root.iterdir() if is_name(p.name) and self._is_model(p))

    def _is_model(self, folder: Path) -> bool:
        try:
            return inside(self.root, folder.name).is_dir() and any(
                inside(self.root, folder.name, config).is_file()
                for config in ("config.toml", "config.json"))
        except InvalidArgument:  # a symlink out of the repository is no model of it
            return False

    def _model_dir(self, name: str) -> Path:
        if not inside(self.root, check_name(name, "model_name"), field="model_name").is_dir():
            raise NotFound(f"model {name!r} is not in the repository")
        return self.root / name

    def _check_tree(self, path: Path, name: str) -> None:
        """`path` (a file, or a folder and all it holds) must resolve inside the repository.

        Raises:
            InvalidArgument: a symlink (or the path itself) leads outside the repository.
        """
        if not path.exists():
            return  # read_model_config and load_module report what is missing
        entries = [path, *path.rglob("*")] if path.is_dir() else [path]
        for entry in entries:
            inside(self.root, str(entry.relative_to(self.root)), field=f"model {name!r}: file")

    async def load(self, name: str) -> None:
        """Load (or reload) `name`: start and warm up new replicas, then swap them in.

        Raises:
            NotFound: no such model folder, or no version folder the policy selects.
            InvalidArgument: the config is invalid (ImportRefused: its architecture is
                outside the allowed modules).
            Internal: a replica failed to load or warm up (the old versions keep serving).

        """
        folder = self._model_dir(name)
        model = self._models.setdefault(name, _Model())
        async with model.lock:
            try:
                for config in ("config.toml", "config.json"):
                    self._check_tree(folder / config, name)
                settings = read_model_config(folder)
                if settings.platform == "pickle" and not self.allow_pickle:
                    raise FailedPrecondition(
                        f"model {name!r} is a pickled module; loading it can run arbitrary "
                        "code, so the server refuses it unless started with --allow-pickle"
                    )
                if settings.platform == "state_dict":  # refused here, before a replica starts
                    self.imports.check(settings.architecture, architecture_field(settings))
                on_disk = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
                selected = settings.version_policy.select(on_disk)
                if not selected:
                    raise NotFound(f"model {name!r} has no version folder its policy selects")
                for version in selected:
                    self._check_tree(folder / str(version) / settings.model_filename, name)
                for version in selected:
                    model.states[str(version)] = VersionState(name, str(version), "LOADING")
                fresh = await self._start_versions(settings, folder, selected)
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

    async def _start_versions(self, settings: ModelSettings, folder: Path,
                              versions: list[int]) -> dict[int, LoadedVersion]:
        """Start every selected version at once; if one fails, stop the others and raise."""
        started = await _all_or_none(
            [self._start_version(settings, folder / str(v), v) for v in versions],
            self._stop_version,
        )
        return dict(zip(versions, started, strict=True))

    async def _start_version(
        self, settings: ModelSettings, folder: Path, version: int
    ) -> LoadedVersion:
        def start(node: str | None = None) -> Awaitable[ReplicaHandle]:
            return start_replica(settings, folder, self.allow_pickle, self.imports, node)

        group = settings.instance_group
        targets: list[str | None] = [None] * group.count
        if group.placement == "spread" and group.count > 1:  # one per node first
            needs = {"CPU": group.num_cpus, "GPU": 1.0 if group.kind == "gpu" else 0.0}
            targets = spread_targets(group.count, await asyncio.to_thread(ray.nodes), needs)
        replicas = await _all_or_none([start(node) for node in targets], ReplicaHandle.stop)
        # Spares start once the version serves, in the background: loading waits for none.
        spares = SparePool(settings.name, self.settings.warm_spares, start,
                           lambda: start(ray.get_runtime_context().get_node_id()),
                           gate=self._gate)

        async def restart(index: int) -> RunBatch:
            await replicas[index].stop()
            log.warning("model %s version %d: replacing replica %d", settings.name, version,
                        index)
            replicas[index] = await spares.replacement()
            return replicas[index].run

        stats = ModelStats(settings.name, str(version))
        queue = BatchQueue(
            [replica.run for replica in replicas],
            settings.max_batch_size,
            settings.batching,
            stats,
            self.settings.replica_max_in_flight,
            restart,
            self.settings.max_replica_deaths,
            self.settings.no_replica_wait_s,
        )
        return LoadedVersion(settings, version, replicas, queue, stats, spares, start)

    async def _stop_version(self, loaded: LoadedVersion) -> None:
        await loaded.queue.close()
        await loaded.spares.close()
        await asyncio.gather(*(replica.stop() for replica in loaded.replicas))

    async def unload(self, name: str) -> None:
        """Stop serving `name`: drain its queues, then stop its replicas (no-op if not loaded).

        Raises:
            NotFound: the repository has no such model.

        """
        model = self._models.get(check_name(name, "model_name"))
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

    async def rebalance(self, alive: Collection[str]) -> int:
        """Move replicas of spread models off a crowded node onto a live node with none.

        One replica at a time (`actors.rebalance_move`): a new one is started on the empty
        node; once it is up it takes the old one's place in the batcher, and the old one
        is stopped after the batches already sent to it are answered, so no request is
        dropped or run twice. A move whose replica lands elsewhere is undone.

        Returns:
            How many replicas moved.
        """
        moved = 0
        for model in list(self._models.values()):
            for loaded in list(model.versions.values()):
                if loaded.settings.instance_group.placement != "spread":
                    continue
                while move := rebalance_move([r.node or None for r in loaded.replicas], alive):
                    if not await self._move(loaded, *move):
                        break
                    moved += 1
        return moved

    async def _move(self, loaded: LoadedVersion, index: int, node: str) -> bool:
        name, old = loaded.settings.name, loaded.replicas[index]
        try:
            fresh = await loaded.start(node)
        except AugserveError as error:
            log.warning("model %s: no replica could start on node %s (%s)", name, node, error)
            return False
        if fresh.node != node or loaded.replicas[index] is not old \
                or not loaded.queue.swap(index, fresh.run):
            await fresh.stop()  # placed elsewhere, or the slot changed (died, unloaded)
            return False
        loaded.replicas[index] = fresh
        log.info("model %s version %d: replica %d moved to node %s", name, loaded.version,
                 index, node)
        await old.drain_and_stop(MOVE_DRAIN_S)
        return True

    async def unload_all(self) -> None:
        """Unload every loaded model (used at shutdown)."""
        await asyncio.gather(
            *(self.unload(name) for name, model in self._models.items() if model.versions)
        )

    def get(self, name: str, version: str = "") -> LoadedVersion:
        """The ready version `version` of `name` ("" = the newest ready one).

        Raises:
            InvalidArgument: the name or version breaks the name rule (`server.paths`).
            NotFound: the model or version is not loaded.

        """
        model = self._models.get(check_name(name, "model_name"))
        check_version(version, "model_version")
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
