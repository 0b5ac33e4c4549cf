"""Builds and runs the grpc.aio server: services, health, reflection, limits, metrics, shutdown.

Start-up order: connect Ray, open the port (ServerLive answers at once), load
the models, then report ready (ServerReady, grpc.health.v1 SERVING). Before any
of it, a server configured to listen beyond loopback without TLS and tokens refuses
to start (`augserve.server.exposure`). On SIGHUP: reread the TLS certificates. On
SIGTERM or SIGINT: report not ready, refuse new calls with UNAVAILABLE, drain in-flight
requests for up to `shutdown_grace_s`, stop the server, unload the models, shut
down an embedded Ray, exit 0. On SIGHUP: run the reload hooks (`server/reload.py`),
which reread the token file. While the Ray cluster is unreachable: not ready, every
call but health and liveness refused with UNAVAILABLE, and after `ray_lost_grace_s`
exit 3 (`server/runtime.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from dataclasses import dataclass

import prometheus_client
import uvloop
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from augserve.clients.proto import POOL
from augserve.clients.proto.inference import grpc_service_pb2 as pb
from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc
from augserve.server.augment.servicer import add_augment_service, build_pool
from augserve.server.auth.interceptor import AuthInterceptor
from augserve.server.auth.tokens import TokenStore
from augserve.server.config import ServerConfig, config_from_args
from augserve.server.drain import DrainGate
from augserve.server.exposure import StartRefused, refusal
from augserve.server.inference.demo import build_demo_repository
from augserve.server.inference.repository import ModelRepository
from augserve.server.inference.servicer import InferenceServicer
from augserve.server.inflight import InflightInterceptor, inflight_slots
from augserve.server.interceptors import ErrorMappingInterceptor
from augserve.server.jobs.servicer import add_jobs_service
from augserve.server.reload import ReloadHooks
from augserve.server.runtime import RayRuntime
from augserve.server.stream.servicer import SERVICE_NAME as STREAM_SERVICE
from augserve.server.stream.servicer import StreamServicer, add_stream_service
from augserve.server.tls import ServerTls

log = logging.getLogger(__name__)

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


@dataclass
class RunningServer:
    """A started server and what it owns; `stop()` shuts all of it down in order."""

    config: ServerConfig
    server: aio.Server
    port: int
    runtime: RayRuntime
    repository: ModelRepository
    inference: InferenceServicer
    stream: StreamServicer
    health: health.aio.HealthServicer
    gate: DrainGate
    reload: ReloadHooks
    tls: ServerTls | None = None
    watch: asyncio.Task[None] | None = None
    nodes: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """Stop accepting, drain in-flight calls, unload models, release Ray."""
        for task in (self.watch, self.nodes):
            if task is not None:
                task.cancel()
        self.inference.ready.clear()
        await self.health.enter_graceful_shutdown()
        time_left = await self.gate.close_and_drain(self.config.shutdown_grace_s)
        await self.server.stop(time_left)
        await self.stream.aclose()
        await self.repository.unload_all()
        self.runtime.stop()


def _register_reflection(server: aio.Server, service_names: list[str]) -> None:
    # Our stubs live in a private descriptor pool; reflection answers from it, so
    # the health and reflection protos are added to it as well.
    for descriptor in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        try:
            POOL.FindFileByName(descriptor.name)
        except KeyError:
            POOL.AddSerializedFile(descriptor.serialized_pb)
    reflection.enable_server_reflection([*service_names, reflection.SERVICE_NAME], server, POOL)


def _server_tls(config: ServerConfig) -> ServerTls | None:
    """Check that the server may start as configured; its TLS, if any (files read and checked).

    Raises:
        StartRefused: a non-loopback host without TLS and tokens (and no `insecure`), or
            TLS files that do not load.
    """
    files = config.certificate_files()
    # `auth_tokens` is the token file's field (ServerConfig gains it with the tokens).
    has_tokens = config.auth_tokens is not None
    reason = refusal(config.host, has_tls=files is not None, has_tokens=has_tokens,
                     insecure=config.insecure)
    if reason:
        raise StartRefused(reason)
    try:
        return None if files is None else ServerTls(files)
    except ValueError as error:
        raise StartRefused(str(error)) from error


async def start_server(config: ServerConfig) -> RunningServer:
    """Start Ray, the gRPC server and the metrics endpoint; load models; report ready.

    Raises:
        StartRefused: before anything starts, see `_server_tls`.
    """
    # Read first: an invalid token file or certificate stops the start before Ray does.
    tokens = TokenStore.from_file(config.auth_tokens) if config.auth_tokens else None
    tls = _server_tls(config)
    reload = ReloadHooks()
    if tokens is not None:
        reload.on_sighup(tokens.reload)
    if tls is not None:
        reload.on_sighup(tls.reload)
    runtime = RayRuntime(config.ray_address, config.ray_num_cpus)
    runtime.start()
    root = config.model_repository or build_demo_repository(config.demo_cache)
    imports = config.import_allow_list()
    repository = ModelRepository(root, allow_pickle=config.allow_pickle,
                                 settings=config.inference, imports=imports)

    gate = DrainGate()
    inflight = inflight_slots(config)
    server = aio.server(
        # Auth runs inside error mapping, which turns its refusals into statuses; the
        # in-flight bound inside auth, which tells it who the caller is.
        interceptors=[ErrorMappingInterceptor(gate), AuthInterceptor(tokens),
                      InflightInterceptor(inflight)],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    inference = InferenceServicer(repository, config.inference, inflight)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    augment_pool = build_pool(config.augment)
    augment_service = add_augment_service(server, config.augment, augment_pool)
    stream = add_stream_service(server, config.stream, config.augment.pipelines,
                                max_ops=config.augment.max_ops)
    jobs_service = add_jobs_service(server, repository, config.jobs, imports,
                                    dict(config.stream.datasets))
    services = [
        INFERENCE_SERVICE, augment_service, STREAM_SERVICE, jobs_service, health.SERVICE_NAME
    ]
    _register_reflection(server, services)

    address = f"{config.host}:{config.port}"
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.grpc_credentials())
    await server.start()
    transport = "plaintext" if tls is None else "mutual TLS" if tls.files.mutual else "TLS"
    log.info("augserve listening on %s:%d (%s), models from %s",
             config.host, port, transport, root)
    if config.metrics_port and tls is not None:
        tls.start_metrics(config.metrics_port, config.host)
    elif config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port, addr=config.host)

    names = list(config.load_models) or repository.names_on_disk()
    results = await asyncio.gather(*(repository.load(n) for n in names), return_exceptions=True)
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            log.error("model %s failed to load: %s", name, result)

    inference.ready.set()
    for service in ("", INFERENCE_SERVICE, augment_service, STREAM_SERVICE, jobs_service):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    if config.ready_file:
        config.ready_file.write_text(f"{port}\n")
    log.info("augserve ready: %d model version(s) loaded", len(repository.loaded()))
    services = ["", INFERENCE_SERVICE, augment_service, STREAM_SERVICE, jobs_service]
    running = RunningServer(
        config, server, port, runtime, repository, inference, stream, health_servicer, gate,
        reload, tls,
    )
    running.watch = asyncio.create_task(runtime.watch(
        lambda: _set_serving(running, services, False),
        lambda: _set_serving(running, services, True),
        config.ray_probe_interval_s, config.ray_lost_grace_s,
    ))  # fmt: skip
    if config.ray_rebalance_poll_s > 0:
        async def spread_onto(alive: set[str]) -> int:
            # at once: each move waits for a new actor's process, tens of seconds when loaded
            moved = await asyncio.gather(augment_pool.rebalance(alive),
                                         stream.pool.rebalance(alive),
                                         repository.rebalance(alive))
            return sum(moved)

        running.nodes = asyncio.create_task(
            runtime.watch_nodes(spread_onto, config.ray_rebalance_poll_s))
    return running


RAY_LOST = "the Ray cluster is unreachable; retry on another server"


async def _set_serving(running: RunningServer, services: list[str], serving: bool) -> None:
    """Ray lost (`serving` False) or back: readiness, health and the gate follow."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else (
        health_pb2.HealthCheckResponse.NOT_SERVING)
    if serving:
        running.gate.reopen()
        running.inference.ready.set()
    else:
        running.gate.refuse(RAY_LOST)
        running.inference.ready.clear()
    for service in services:
        await running.health.set(service, status)


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start_server(config)
    # A full collection walks every live object: with torch and Ray imported, one took
    # 146 ms on the 2-core box, a pause that every request in flight waited out (it set
    # the p99 of `bench infer`). What start-up made (modules, models, Ray's state) leaves
    # the collector's reach, so later full collections walk only what serving allocates
    # (0.4-0.5 ms, measured with gc.callbacks).
    gc.freeze()
    # Installed after ray.init(), which sets handlers of its own for these signals.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.reload.run)
    await stop.wait()
    log.info("augserve stopping: draining in-flight requests")
    await running.stop()
    log.info("augserve stopped")


def serve_forever(args: argparse.Namespace) -> int:
    """`augserve serve`: parse the config and run the server; returns the exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except ValueError as error:
        return _refuse(error)
    try:
        # uvloop's event loop cut the server's CPU per request by about 8% at 32 clients
        # (0.28 vs 0.32 ms, measured with the bench's load generator); grpc.aio and Ray's
        # awaitables run on it unchanged.
        uvloop.run(serve(config))
    except StartRefused as error:
        return _refuse(error)
    return 0


def _refuse(error: ValueError) -> int:
    """Say in one line why the server does not start; the exit status for that."""
    print(f"augserve serve: {error}", file=sys.stderr)
    return 2
