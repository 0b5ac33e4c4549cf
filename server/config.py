"""The server's one typed configuration: defaults here, overridable by file and flags.

Precedence: built-in defaults < `--config FILE` (TOML) < command-line flags.
Every limit the server enforces is a field of `ServerConfig`, documented below,
and validated once at start-up (`ServerConfig.validated`).

Example:
    >>> config = ServerConfig(port=0)
    >>> config.validated().port
    0

"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augserve.server.augment.settings import AugmentSettings
from augserve.server.jobs.settings import JobSettings
from augserve.server.stream.settings import StreamSettings


@dataclass(frozen=True)
class ServerConfig:
    """Everything `augserve serve` needs.

    Attributes:
        host: interface to listen on; "127.0.0.1" keeps the server on loopback.
        port: gRPC port (0 picks a free one, reported in the log and on `ready_file`).
        metrics_port: Prometheus text endpoint (0 disables it).
        model_repository: repository folder; None serves the built-in demo repository.
        ray_address: an existing Ray cluster ("auto" or "ray://..."); None starts an
            embedded local Ray, which the server shuts down on exit.
        ray_num_cpus: CPUs the embedded Ray may schedule (None: all of them).
        allow_pickle: allow `platform = "pickle"` models (a pickle runs code on load).
        max_message_bytes: largest request or response message; larger ones get
            RESOURCE_EXHAUSTED from gRPC itself.
        shutdown_grace_s: on SIGTERM, how long in-flight requests may take to drain.
        load_models: models to load at start (empty: every model in the repository).
        demo_cache: where the demo repository is built (once) when none is given.
        ready_file: if set, the bound port is written there once the server is ready.
        stream: the StreamBatches service: window, pool, datasets (`[stream]` table, with
            `[stream.datasets.NAME]` sub-tables; see `StreamSettings`).
        jobs: the Jobs service: task CPUs, threads, running limit (`[jobs]` table; see
            `JobSettings`).

    """

    host: str = "127.0.0.1"
    port: int = 8001
    metrics_port: int = 8002
    model_repository: Path | None = None
    ray_address: str | None = None
    ray_num_cpus: int | None = None
    allow_pickle: bool = False
    max_message_bytes: int = 64 * 1024 * 1024
    shutdown_grace_s: float = 10.0
    load_models: tuple[str, ...] = field(default_factory=tuple)
    demo_cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "augserve" / "demo")
    ready_file: Path | None = None
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    jobs: JobSettings = field(default_factory=JobSettings)

    def validated(self) -> ServerConfig:
        """Return self after checking every field; raise ValueError naming the bad one."""
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"{name} must be in 0..65535, got {value}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
        if self.ray_num_cpus is not None and self.ray_num_cpus < 1:
            raise ValueError(f"ray_num_cpus must be >= 1, got {self.ray_num_cpus}")
        if self.model_repository is not None and not self.model_repository.is_dir():
            raise ValueError(f"model_repository {self.model_repository} is not a folder")
        return self


_PATH_FIELDS = {"model_repository", "demo_cache", "ready_file"}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per `ServerConfig` field, plus `--config FILE`."""
    parser.add_argument("--config", type=Path, help="TOML file with ServerConfig fields")
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gRPC port (default 8001; 0 = any free)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (default 8002; 0 = off)")
    parser.add_argument("--model-repository", type=Path, help="model repository folder")
    parser.add_argument("--ray-address", help="existing Ray cluster to join (default: embedded)")
    parser.add_argument("--ray-num-cpus", type=int, help="CPUs for the embedded Ray")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        default=None,
        help="allow pickled whole-module models (a pickle can run code on the server)",
    )
    parser.add_argument("--max-message-bytes", type=int, help="largest gRPC message")
    parser.add_argument("--shutdown-grace-s", type=float, help="drain time on SIGTERM")
    parser.add_argument(
        "--load-model", dest="load_models", action="append", help="load only these models"
    )
    parser.add_argument("--demo-cache", type=Path, help="where the demo repository is built")
    parser.add_argument("--ready-file", type=Path, help="write the bound port here when ready")
    parser.add_argument("--augment-pool-size", type=int, help="Ray actors augmenting (default 2)")
    parser.add_argument(
        "--augment-backend", choices=("auto", "fast", "kornia"), help="augment backend"
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Merge defaults, the `--config` file and the flags into a validated ServerConfig."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(tomllib.loads(Path(args.config).read_text()))
    known = {f.name for f in dataclasses.fields(ServerConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
    for name in known:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    for name in _PATH_FIELDS & set(values):
        values[name] = Path(values[name]) if values[name] is not None else None
    if "load_models" in values:
        values["load_models"] = tuple(values["load_models"])
    augment = dict(values.pop("augment", {}))
    for flag, key in (("augment_pool_size", "pool_size"), ("augment_backend", "backend")):
        if getattr(args, flag, None) is not None:
            augment[key] = getattr(args, flag)
    values["augment"] = AugmentSettings(**augment)
    values["stream"] = StreamSettings(**values.pop("stream", {}))
    values["jobs"] = JobSettings(**values.pop("jobs", {}))
    return ServerConfig(**values).validated()
