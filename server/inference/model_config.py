"""A model's configuration (`<model>/config.toml` or `config.json`), parsed and checked once.

Example `config.toml`:

    platform = "torch_export"          # torch_export | torchscript | state_dict |
                                       # augserve_compressed | pickle
    max_batch_size = 64                # 0: the model does not batch
    precision = "fp32"                 # fp32 | bf16 (autocast + channels_last)
    architecture = "augserve.server.zoo:resnet20"   # state_dict only
    architecture_kwargs = { num_classes = 10 }

    [[input]]
    name = "input"
    datatype = "FP32"
    dims = [3, 32, 32]                 # without the batch dimension; -1 = variable

    [[output]]
    name = "logits"
    datatype = "FP32"
    dims = [10]
    label_filename = "labels.txt"      # optional: one class name a line, in the model folder

    [version_policy]                   # one of: latest = N | all = true | specific = [..]
    latest = 1

    [dynamic_batching]
    max_queue_delay_microseconds = 0   # 0: dispatch as soon as a replica is free
    delay_only_while_busy = false      # true: wait to fill only while another replica is busy
    preferred_batch_size = []
    max_queue_size = 1024              # a full queue answers RESOURCE_EXHAUSTED
    default_timeout_microseconds = 0   # 0: only the client's deadline applies

    [instance_group]
    count = 1                          # replicas (Ray actors)
    kind = "cpu"                       # cpu | gpu
    num_threads = 0                    # torch threads per replica; 0 = Ray's CPU share
    single_thread_max_rows = 4         # batches this small run on one thread (lower latency)
    transport = "auto"                 # auto: a Unix socket to same-node replicas | ray
    placement = "spread"               # spread over the Ray nodes | pack | a node resource
    env = { OMP_WAIT_POLICY = "PASSIVE" }   # over default_replica_env (OpenMP, malloc)
    nice = 10                          # added niceness: the front end preempts replicas

    [warmup]
    batch_sizes = [1]

    [preprocess]                       # optional: images in (see preprocess_config)
    [tta]                              # optional: test-time augmentation
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augserve.clients.datatypes import DATATYPES
from augserve.server.actors import check_placement
from augserve.server.errors import InvalidArgument
from augserve.server.paths import inside

if TYPE_CHECKING:  # preprocess_config builds on TensorSpec, defined here
    from augserve.server.inference.preprocess_config import PreprocessSettings

PLATFORMS: dict[str, str] = {
    "torch_export": "model.pt2",
    "torchscript": "model.pt",
    "state_dict": "model.pth",
    "augserve_compressed": "compressed",
    "pickle": "model.pkl",
}
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, KServe datatype and dims without the batch dimension.

    `label_filename` (outputs only): the file in the model folder naming the classes, one
    a line, for Triton's classification extension (`inference.classification`).
    """

    name: str
    datatype: str
    dims: tuple[int, ...]
    label_filename: str = ""


@dataclass(frozen=True)
class VersionPolicy:
    """Which numbered versions are served: the latest N, all, or a specific list."""

    latest: int | None = 1
    all: bool = False
    specific: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those found on disk, ascending."""
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]


@dataclass(frozen=True)
class BatchingSettings:
    """The dynamic batcher's knobs (see the module docstring).

    `delay_only_while_busy` limits `max_queue_delay_microseconds` to the times when
    another replica is busy: an idle server dispatches at once, a loaded one lets
    batches fill (Triton's semantics, the default, wait whenever a delay is set).
    """

    max_queue_delay_microseconds: int = 0
    delay_only_while_busy: bool = False
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_size: int = 1024
    default_timeout_microseconds: int = 0


# OpenMP threads that spin while waiting steal the cores the gRPC server and the
# clients need: measured on 2 cores, a spinning 2-thread replica served ~200 req/s,
# a passive one 700-850. Replicas of several threads therefore start with passive
# waiting unless a model's config says otherwise. A single-thread replica has no
# worker to spin, and the passive policy only slowed it (ResNet-20 at batch 1: 2.4 ms
# passive vs 1.7 ms active; at 32 clients 0.85 vs 0.82 ms of replica CPU per image).
#
# glibc's malloc hands large blocks back to the kernel when they are freed (blocks
# over its mmap threshold are unmapped; the free top of a heap is trimmed), so a
# replica whose batches change size faults its activation buffers in afresh, page by
# page, batch after batch. Measured at 32 clients on 2 cores (ResNet-20): 38-66 minor
# faults and 0.11-0.16 ms of kernel time per image, against 1 fault and 0.013-0.018 ms
# with the thresholds below (pinned at glibc's ceiling for mmap, 32 MiB, and 256 MiB
# for trimming), so a replica keeps what it freed for the next batch. Other C
# libraries ignore these variables.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def default_replica_env(threads: int) -> dict[str, str]:
    """The environment a replica of `threads` torch threads starts with."""
    return {"OMP_WAIT_POLICY": "ACTIVE" if threads == 1 else "PASSIVE", **MALLOC_ENV}


TRANSPORTS = ("auto", "ray")


@dataclass(frozen=True)
class InstanceGroup:
    """How many replicas run the model, on which device, with how many threads.

    Attributes:
        count: replicas (Ray actors).
        kind: "cpu" or "gpu" (one GPU per replica).
        num_threads: torch threads per replica; 0 uses `num_cpus`.
        num_cpus: Ray CPUs each replica reserves (a scheduling count).
        single_thread_max_rows: batches of at most this many rows run on one thread: waking
            a second thread costs more than it saves there (ResNet-20 at batch 1: 1.8 ms on
            one thread, 2.6-5.6 ms on two, measured on 2 cores).
        transport: how batches reach the replicas: "auto" sends them over a Unix socket
            to replicas on the server's node (`inference.channel`) and through Ray actor
            calls to the others; "ray" always uses Ray actor calls.
        placement: where the replicas run on a Ray cluster: "spread" over the nodes (the
            default: losing a node costs a share of the replicas, not all of them),
            "pack" (Ray's default, this node first) or the name of a custom resource
            that the chosen nodes advertise (`augserve.server.actors.placement_options`).
        env: environment variables of the replica's process, over
            `default_replica_env` (see `replica_env`).
        nice: niceness the replica's threads add to the server's (0-19). Above 0 the
            server's front end, which shares the node's cores with the replicas,
            preempts them as soon as a request or an answer wakes it, so requests and
            answers do not wait behind a batch's time slice; the replicas also yield to
            any other process at normal priority. Measured on 2 cores at 32 clients,
            the replicas reniced between 5 s slices of one server
            (`server/bench/replica_nice.py`), 26 interleaved pairs: 18 faster at 10 than
            at 0, medians 961-983 against 880-897 req/s; at one client no difference
            (8 pairs of 3 s: p50 5.07 against 5.02 ms).
    """

    count: int = 1
    kind: str = "cpu"
    num_threads: int = 0
    num_cpus: float = 1.0
    single_thread_max_rows: int = 4
    transport: str = "auto"
    placement: str = "spread"
    env: dict[str, str] = field(default_factory=dict)
    nice: int = 10

    @property
    def threads(self) -> int:
        """Torch threads each replica runs: `num_threads`, else its Ray CPU share."""
        return self.num_threads or max(1, int(self.num_cpus))

    @property
    def replica_env(self) -> dict[str, str]:
        """The replica process's environment: the configured `env` over the default."""
        return {**default_replica_env(self.threads), **self.env}


@dataclass(frozen=True)
class ModelSettings:
    """The parsed, validated configuration of one model."""

    name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    precision: str = "fp32"
    default_model_filename: str = ""
    architecture: str = ""
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    instance_group: InstanceGroup = field(default_factory=InstanceGroup)
    warmup_batch_sizes: tuple[int, ...] = (1,)
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    preprocess: PreprocessSettings | None = None

    @property
    def public_inputs(self) -> tuple[TensorSpec, ...]:
        """The inputs clients send: the `[preprocess]` input if any, else the model's own."""
        return (self.preprocess.input,) if self.preprocess else self.inputs

    @property
    def model_filename(self) -> str:
        """The file (or folder) inside a version folder that holds the model."""
        return self.default_model_filename or PLATFORMS[self.platform]

    @cached_property
    def _inputs_by_name(self) -> dict[str, TensorSpec]:
        return {spec.name: spec for spec in self.public_inputs}

    def input_named(self, name: str) -> TensorSpec | None:
        """The public input spec called `name` (see `public_inputs`), or None."""
        return self._inputs_by_name.get(name)


def _tensor_specs(entries: Any, what: str, model: str) -> tuple[TensorSpec, ...]:
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"model {model!r}: config needs at least one [[{what}]]")
    specs = []
    for index, entry in enumerate(entries):
        name = entry.get("name")
        datatype = entry.get("datatype", entry.get("data_type", "")).removeprefix("TYPE_")
        datatype = "BYTES" if datatype == "STRING" else datatype
        dims = entry.get("dims")
        if not name or datatype not in DATATYPES or not isinstance(dims, list):
            raise InvalidArgument(
                f"model {model!r}: {what}[{index}] needs name, datatype (one of "
                f"{sorted(DATATYPES)}) and dims"
            )
        if any(not isinstance(d, int) or d == 0 or d < -1 for d in dims):
            raise InvalidArgument(f"model {model!r}: {what} {name!r} dims must be >0 or -1")
        label_filename = entry.get("label_filename", "")
        if not isinstance(label_filename, str):
            raise InvalidArgument(f"model {model!r}: {what} {name!r} label_filename must be a "
                                  f"file name")
        specs.append(TensorSpec(name, datatype, tuple(dims), label_filename))
    return tuple(specs)


def parse_model_config(raw: dict[str, Any], folder_name: str) -> ModelSettings:
    """Check a model's raw config dict and build its ModelSettings.

    Raises:
        InvalidArgument: a field is missing or out of range; the message names it.

    """
    name = raw.get("name", folder_name)
    if name != folder_name:
        raise InvalidArgument(f"model folder {folder_name!r} holds a config named {name!r}")
    platform = raw.get("platform", "")
    if platform not in PLATFORMS:
        raise InvalidArgument(
            f"model {name!r}: platform {platform!r} is not one of {sorted(PLATFORMS)}"
        )
    precision = raw.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise InvalidArgument(f"model {name!r}: precision must be one of {PRECISIONS}")
    max_batch_size = int(raw.get("max_batch_size", 0))
    if max_batch_size < 0:
        raise InvalidArgument(f"model {name!r}: max_batch_size must be >= 0")
    if platform == "state_dict" and ":" not in raw.get("architecture", ""):
        raise InvalidArgument(
            f"model {name!r}: platform state_dict needs architecture = 'module:function'"
        )

    policy_raw = raw.get("version_policy", {})
    policy = VersionPolicy(
        latest=policy_raw.get("latest", None if policy_raw else 1),
        all=bool(policy_raw.get("all", False)),
        specific=tuple(policy_raw.get("specific", ())),
    )
    batching_raw = raw.get("dynamic_batching", {})
    batching = BatchingSettings(
        max_queue_delay_microseconds=int(batching_raw.get("max_queue_delay_microseconds", 0)),
        delay_only_while_busy=bool(batching_raw.get("delay_only_while_busy", False)),
        preferred_batch_size=tuple(batching_raw.get("preferred_batch_size", ())),
        max_queue_size=int(batching_raw.get("max_queue_size", 1024)),
        default_timeout_microseconds=int(batching_raw.get("default_timeout_microseconds", 0)),
    )
    if batching.max_queue_size < 1:
        raise InvalidArgument(f"model {name!r}: dynamic_batching.max_queue_size must be >= 1")
    if any(size < 1 or size > max(max_batch_size, 1) for size in batching.preferred_batch_size):
        raise InvalidArgument(
            f"model {name!r}: dynamic_batching.preferred_batch_size must lie in 1..max_batch_size"
        )
    group_raw = raw.get("instance_group", {})
    group = InstanceGroup(
        count=int(group_raw.get("count", 1)),
        kind=group_raw.get("kind", "cpu"),
        num_threads=int(group_raw.get("num_threads", 0)),
        num_cpus=float(group_raw.get("num_cpus", 1.0)),
        single_thread_max_rows=int(group_raw.get("single_thread_max_rows", 4)),
        transport=group_raw.get("transport", "auto"),
        placement=str(group_raw.get("placement", "spread")),
        env={k: str(v) for k, v in group_raw.get("env", {}).items()},
        nice=int(group_raw.get("nice", 10)),
    )
    if group.count < 1 or group.kind not in ("cpu", "gpu"):
        raise InvalidArgument(f"model {name!r}: instance_group needs count >= 1, kind cpu|gpu")
    if not 0 <= group.nice <= 19:
        raise InvalidArgument(
            f"model {name!r}: instance_group.nice must lie in 0..19, got {group.nice}"
        )
    try:
        check_placement(group.placement, f"model {name!r}: instance_group.placement")
    except ValueError as error:
        raise InvalidArgument(str(error)) from None
    if group.transport not in TRANSPORTS:
        raise InvalidArgument(
            f"model {name!r}: instance_group.transport must be one of {TRANSPORTS}, "
            f"got {group.transport!r}"
        )

    # imported here: preprocess_config builds on this module's TensorSpec
    from augserve.server.inference.preprocess_config import parse_preprocess

    inputs = _tensor_specs(raw.get("input"), "input", name)
    outputs = _tensor_specs(raw.get("output"), "output", name)
    return ModelSettings(
        name=name,
        platform=platform,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=max_batch_size,
        precision=precision,
        default_model_filename=raw.get("default_model_filename", ""),
        architecture=raw.get("architecture", ""),
        architecture_kwargs=dict(raw.get("architecture_kwargs", {})),
        version_policy=policy,
        batching=batching,
        instance_group=group,
        warmup_batch_sizes=tuple(raw.get("warmup", {}).get("batch_sizes", (1,))),
        preprocess=parse_preprocess(raw, inputs, outputs, max_batch_size, name),
    )


def read_labels(model_dir: Path, settings: ModelSettings) -> dict[str, tuple[str, ...]]:
    """Output name -> its class names, read from each output's `label_filename`.

    One label a line (a trailing newline and a Windows line end are dropped); line i
    names class i.

    Raises:
        InvalidArgument: a label file lies outside the model folder, is missing, or is
            not UTF-8 text.
    """
    labels = {}
    for spec in settings.outputs:
        if not spec.label_filename:
            continue
        field_name = f"model {settings.name!r}: output {spec.name!r} label_filename"
        path = inside(model_dir, spec.label_filename, field=field_name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidArgument(f"{field_name}: cannot read {spec.label_filename!r} "
                                  f"({error.__class__.__name__})") from None
        labels[spec.name] = tuple(line.removesuffix("\r") for line in text.splitlines())
    return labels


def read_model_config(model_dir: Path) -> ModelSettings:
    """Read `config.toml` (or `config.json`) from a model folder, and its label files.

    Raises:
        InvalidArgument: the folder has no config, the config is invalid, or a label
            file cannot be read.

    """
    toml_path, json_path = model_dir / "config.toml", model_dir / "config.json"
    try:
        if toml_path.is_file():
            raw = tomllib.loads(toml_path.read_text())
        elif json_path.is_file():
            raw = json.loads(json_path.read_text())
        else:
            raise InvalidArgument(f"model {model_dir.name!r} has no config.toml or config.json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"model {model_dir.name!r}: unreadable config: {error}") from None
    settings = parse_model_config(raw, model_dir.name)
    labels = read_labels(model_dir, settings)
    return replace(settings, labels=labels) if labels else settings
