"""The server's one typed configuration: defaults here, overridable by file and flags.

Precedence: built-in defaults < `--config FILE` (TOML) < command-line flags.
Every limit the server enforces is a field of `ServerConfig` or of one of its service
tables, declared with `options.option` (its help, default and flag in one place, which
`augserve serve --help` and `docs/configuration.md` both show), and validated once at
start-up (`ServerConfig.validated`).

Example:
    >>> config = ServerConfig(port=0)
    >>> config.validated().port
    0

"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augserve.kernels.resolve import AllowList
from augserve.server.augment.settings import AugmentSettings
from augserve.server.imports import allow_list
from augserve.server.inference.settings import InferenceSettings
from augserve.server.jobs.settings import JobSettings
from augserve.server.options import add_flag, option
from augserve.server.stream.settings import StreamSettings
from augserve.server.tls import CertificateFiles

#: The service tables of the config file, each a settings dataclass of its own.
TABLES: dict[str, type] = {
    "inference": InferenceSettings,
    "augment": AugmentSettings,
    "stream": StreamSettings,
    "jobs": JobSettings,
}


@dataclass(frozen=True)
class ServerConfig:
    """Everything `augserve serve` needs; each field's `help` says what it means.

    The service tables (`[inference]`, `[augment]`, `[stream]`, `[jobs]`) are settings
    dataclasses of their own; `docs/configuration.md` lists every field of all of them.
    """

    host: str = option(
        "127.0.0.1", flag="--host",
        help='interface to listen on; "127.0.0.1" keeps the server on loopback')
    port: int = option(
        8001, flag="--port",
        help="gRPC port (0 picks a free one, reported in the log and in `ready_file`)")
    metrics_port: int = option(
        8002, flag="--metrics-port",
        help="Prometheus text endpoint (0 disables it); served over HTTPS with the gRPC "
             "certificate (and client CA) when TLS is on")
    tls_cert: Path | None = option(
        None, flag="--tls-cert", parse=Path,
        help="PEM certificate chain of the server; with `tls_key`, gRPC is served over TLS "
             "(reread on SIGHUP)")
    tls_key: Path | None = option(
        None, flag="--tls-key", parse=Path,
        help="PEM private key of `tls_cert` (reread on SIGHUP)")
    tls_client_ca: Path | None = option(
        None, flag="--tls-client-ca", parse=Path,
        help="PEM CA certificates for mutual TLS: clients without a certificate signed by "
             "one are refused at the handshake (reread on SIGHUP)")
    insecure: bool = option(
        False, flag="--insecure",
        help="start on a non-loopback `host` without TLS or tokens (by default the server "
             "refuses to)")
    model_repository: Path | None = option(
        None, flag="--model-repository", parse=Path,
        help="model repository folder; unset serves the built-in demo repository")
    ray_address: str | None = option(
        None, flag="--ray-address", parse=str,
        help='an existing Ray cluster to join ("auto" or "ray://..."); unset starts an '
             "embedded local Ray, which the server shuts down on exit")
    ray_num_cpus: int | None = option(
        None, flag="--ray-num-cpus", parse=int,
        help="logical CPUs the embedded Ray may schedule (unset: the machine's count, at "
             "least 16, so that small actors fit beside the replicas)")
    ray_probe_interval_s: float = option(
        1.0, flag="--ray-probe-interval-s",
        help="how often the server asks Ray's GCS whether the cluster is still there, in "
             "seconds (each probe may take as long before it counts as failed)")
    ray_lost_grace_s: float = option(
        10.0, flag="--ray-lost-grace-s",
        help="once the Ray cluster is unreachable, the server reports not ready and answers "
             "UNAVAILABLE; if it stays unreachable this many seconds, the server exits with "
             "status 3 so that a supervisor restarts it (Ray's own driver gives up after "
             "60 s)")
    ray_rebalance_poll_s: float = option(
        5.0, flag="--ray-rebalance-poll-s",
        help="how often the server looks for nodes that joined the cluster, in seconds; "
             "on a join, spread pools and models whose actors crowd one node move some onto "
             "it (0: never)")
    allow_pickle: bool = option(
        False, flag="--allow-pickle",
        help='allow `platform = "pickle"` models (loading a pickle can run arbitrary code '
             "on the server)")
    import_prefixes: tuple[str, ...] = option(
        default_factory=tuple, flag="--allow-import-prefix", parse=str, append=True,
        help="modules, besides augserve's own and torchvision.models, that a model config "
             "or a job may name an architecture from (`package.module:factory`); each "
             "prefix allows the module and everything below it (repeat the flag for more)")
    max_message_bytes: int = option(
        64 * 1024 * 1024, flag="--max-message-bytes", shown="67108864 (64 MiB)",
        help="largest request or response message; a larger one gets RESOURCE_EXHAUSTED "
             "from gRPC itself")
    max_inflight_per_client: int = option(
        256, flag="--max-inflight-per-client",
        help="requests one client identity (its token's name, else its address) may have in "
             "flight at once: unary calls (ModelInfer, Augment, ...) and ModelStreamInfer "
             "requests not yet answered; one more gets RESOURCE_EXHAUSTED (health, "
             "ServerLive and ServerReady are exempt)")
    shutdown_grace_s: float = option(
        10.0, flag="--shutdown-grace-s",
        help="on SIGTERM, how long in-flight requests may take to drain, in seconds")
    load_models: tuple[str, ...] = option(
        default_factory=tuple, flag="--load-model", parse=str, append=True,
        help="models to load at start (repeat the flag; none: every model in the repository)")
    demo_cache: Path = option(
        default_factory=lambda: Path.home() / ".cache" / "augserve" / "demo",
        flag="--demo-cache", parse=Path, shown="~/.cache/augserve/demo",
        help="where the demo repository is built (once) when no repository is given")
    ready_file: Path | None = option(
        None, flag="--ready-file", parse=Path,
        help="if set, the bound port is written there once the server is ready")
    auth_tokens: Path | None = option(
        None, flag="--auth-tokens", parse=Path,
        help="TOML file of token hashes with scopes (`augserve token new` makes entries); "
             "every RPC but health, ServerLive and ServerReady then needs a token with its "
             "scope; reread on SIGHUP; unset: no authentication")
    inference: InferenceSettings = option(
        default_factory=InferenceSettings,
        help="the inference service: stream window, replica deaths (`[inference]` table)")
    augment: AugmentSettings = option(
        default_factory=AugmentSettings,
        help="the Augment service: limits, pool, pipelines (`[augment]` table)")
    stream: StreamSettings = option(
        default_factory=StreamSettings,
        help="the StreamBatches service: window, limits, pool, datasets (`[stream]` table)")
    jobs: JobSettings = option(
        default_factory=JobSettings,
        help="the Jobs service: task CPUs, threads, running limit (`[jobs]` table)")

    def validated(self) -> ServerConfig:
        """Return self after checking every field; raise ValueError naming the bad one."""
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"{name} must be in 0..65535, got {value}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        if self.max_inflight_per_client < 1:
            raise ValueError(f"max_inflight_per_client must be >= 1, got "
                             f"{self.max_inflight_per_client}")
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
        if self.ray_probe_interval_s <= 0 or self.ray_lost_grace_s <= 0:
            raise ValueError("ray_probe_interval_s and ray_lost_grace_s must be > 0")
        if self.ray_rebalance_poll_s < 0:
            raise ValueError(f"ray_rebalance_poll_s must be >= 0, got {self.ray_rebalance_poll_s}")
        if self.ray_num_cpus is not None and self.ray_num_cpus < 1:
            raise ValueError(f"ray_num_cpus must be >= 1, got {self.ray_num_cpus}")
        self.certificate_files()  # raises ValueError for a missing or unpaired file
        if self.model_repository is not None and not self.model_repository.is_dir():
            raise ValueError(f"model_repository {self.model_repository} is not a folder")
        if self.auth_tokens is not None and not self.auth_tokens.is_file():
            raise ValueError(f"auth_tokens {self.auth_tokens} is not a file")
        self.import_allow_list()  # raises ValueError naming a prefix that is no module name
        return self

    def certificate_files(self) -> CertificateFiles | None:
        """The TLS files (None: plaintext); raise ValueError if one is missing or unpaired."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_cert is None or self.tls_key is None:
            if self.tls_client_ca is not None:
                raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)")
            return None
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} is not a file")
        return CertificateFiles(self.tls_cert, self.tls_key, self.tls_client_ca)

    def import_allow_list(self) -> AllowList:
        """The modules architectures may be imported from: augserve's plus `import_prefixes`."""
        return allow_list(self.import_prefixes)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--config FILE` and the flag of every `ServerConfig` field that has one.

    A service table's fields land in `TABLE_FIELD` (e.g. `args.augment_pool_size`).
    """
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML file with ServerConfig fields (flags override it)")
    for f in dataclasses.fields(ServerConfig):
        if f.name in TABLES:
            for sub in dataclasses.fields(TABLES[f.name]):
                add_flag(parser, sub, f"{f.name}_{sub.name}")
        else:
            add_flag(parser, f, f.name)


def _table(name: str, raw: Any, args: argparse.Namespace) -> Any:
    cls = TABLES[name]
    values = dict(raw)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown [{name}] keys {sorted(unknown)}; known: {sorted(known)}")
    for key in known:
        flag = getattr(args, f"{name}_{key}", None)
        if flag is not None:
            values[key] = flag
    return cls(**values)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Merge defaults, the `--config` file and the flags into a validated ServerConfig."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(tomllib.loads(Path(args.config).read_text()))
    fields = {f.name: f for f in dataclasses.fields(ServerConfig)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(fields)}")
    for name, f in fields.items():
        if name in TABLES:
            values[name] = _table(name, values.get(name, {}), args)
            continue
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
        if name not in values:
            continue
        if f.metadata.get("parse") is Path and values[name] is not None:
            values[name] = Path(values[name])
        if f.metadata.get("append"):
            values[name] = tuple(values[name])
    return ServerConfig(**values).validated()
