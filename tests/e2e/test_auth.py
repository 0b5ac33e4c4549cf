"""Every RPC of the access table, on a real in-process server run with `--auth-tokens`.

Each scoped method refuses a missing, unknown or malformed token (UNAUTHENTICATED)
and a token without its scope (PERMISSION_DENIED, naming the scope); a token with
the scope gets through to the handler. Probes stay open. Admin RPCs are audited.
"""

from __future__ import annotations

import json
import logging

import grpc
import pytest

from augserve.clients.auth import bearer_metadata
from augserve.server.auth.scopes import METHOD_ACCESS, OPEN, Scope
from augserve.server.auth.tokens import hash_token
from augserve.server.config import ServerConfig
from tests.server.auth.test_scopes import FILES

#: One token per scope, named after it.
TOKENS = {scope: f"secret-of-{scope.value}" for scope in Scope}
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def token_file_text(tokens: dict[Scope, str]) -> str:
    return "".join(f'[[tokens]]\nname = "{scope.value}-only"\n'
                   f'sha256 = "{hash_token(token).hex()}"\nscopes = ["{scope.value}"]\n'
                   for scope, token in tokens.items())


def kinds() -> dict[str, tuple[bool, bool]]:
    """Method -> (client streams, server streams), from the protos."""
    return {f"/{service.full_name}/{method.name}": (method.client_streaming,
                                                     method.server_streaming)
            for module in FILES for service in module.DESCRIPTOR.services_by_name.values()
            for method in service.methods}


@pytest.fixture(scope="module")
async def channel(ray_session, model_repository, tmp_path_factory):
    from augserve.server.app import start_server

    path = tmp_path_factory.mktemp("auth") / "tokens.toml"
    path.write_text(token_file_text(TOKENS))
    config = ServerConfig(port=0, metrics_port=0, model_repository=model_repository,
                          load_models=("digits",), auth_tokens=path, shutdown_grace_s=1.0)
    running = await start_server(config)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel
    await running.stop()


async def _no_requests():
    return
    yield


async def status(channel, method: str, metadata) -> tuple[grpc.StatusCode, str]:
    """The status one call with an empty message gets (OK once a stream sends a message)."""
    client_streams, server_streams = kinds()[method]
    factory = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
               (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    request = _no_requests() if client_streams else b""
    call = factory[client_streams, server_streams](method)(request, metadata=metadata,
                                                           timeout=60)
    try:
        if not server_streams:
            await call
            return grpc.StatusCode.OK, ""
        if await call.read() is not grpc.aio.EOF:
            call.cancel()
            return grpc.StatusCode.OK, ""
        return await call.code(), await call.details()
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()


SCOPED = sorted(m for m, access in METHOD_ACCESS.items() if isinstance(access, Scope))
GATED = sorted(m for m, access in METHOD_ACCESS.items() if access != OPEN)
BAD_HEADERS = [None, bearer_metadata("no-such-token"), (("authorization", "Token abc"),),
               (("authorization", "Bearer"),), (("authorization", "Bearer a b"),),
               (("authorization", "Basic dXNlcjpwYXNz"),),
               (*bearer_metadata(TOKENS[Scope.ADMIN]), *bearer_metadata(TOKENS[Scope.ADMIN]))]


@pytest.mark.parametrize("method", GATED)
async def test_a_missing_unknown_or_malformed_token_is_unauthenticated(channel, method):
    for metadata in BAD_HEADERS:
        code, details = await status(channel, method, metadata)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (metadata, code, details)
        assert "authorization" in details or details == "unknown token"


@pytest.mark.parametrize("method", SCOPED)
async def test_a_token_without_the_scope_is_denied_naming_it(channel, method):
    needed = METHOD_ACCESS[method]
    for scope, token in TOKENS.items():
        if scope == needed:
            continue
        code, details = await status(channel, method, bearer_metadata(token))
        assert code == grpc.StatusCode.PERMISSION_DENIED, (scope, code, details)
        assert details == (f"token '{scope.value}-only' lacks the scope '{needed.value}', "
                           f"which {method} needs")


@pytest.mark.parametrize("method", SCOPED)
async def test_a_token_with_the_scope_reaches_the_handler(channel, method):
    code, details = await status(channel, method, bearer_metadata(TOKENS[METHOD_ACCESS[method]]))
    assert code not in REFUSED, (code, details)


@pytest.mark.parametrize("method", sorted(m for m, a in METHOD_ACCESS.items() if a == OPEN))
async def test_probes_are_open_to_every_caller(channel, method):
    for metadata in [None, *BAD_HEADERS]:
        code, details = await status(channel, method, metadata)
        assert code == grpc.StatusCode.OK, (metadata, code, details)


async def test_reflection_answers_a_token_of_any_scope(channel):
    method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    for token in TOKENS.values():
        assert await status(channel, method, bearer_metadata(token)) == (grpc.StatusCode.OK, "")


async def test_inference_with_the_infer_token_returns_logits(channel):
    import numpy as np

    from augserve.clients.infer import build_infer_request, parse_infer_response
    from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc

    request = build_infer_request("digits", {"input": np.zeros((2, 1, 8, 8), np.float32)})
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    reply = await stub.ModelInfer(request, metadata=bearer_metadata(TOKENS[Scope.INFER]))
    assert parse_infer_response(reply)["logits"].shape == (2, 10)


def audit_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "augserve.audit"]


async def test_admin_rpcs_write_one_audit_line_each_served_or_refused(channel, caplog):
    from augserve.clients.proto.inference import grpc_service_pb2 as pb
    from augserve.clients.proto.inference import grpc_service_pb2_grpc as pb_grpc

    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    load = pb.RepositoryModelLoadRequest(model_name="digits")
    with caplog.at_level(logging.INFO, logger="augserve.audit"):
        await stub.RepositoryModelLoad(load, metadata=bearer_metadata(TOKENS[Scope.ADMIN]))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.RepositoryModelLoad(load, metadata=bearer_metadata(TOKENS[Scope.INFER]))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="nope"),
                                             metadata=bearer_metadata(TOKENS[Scope.ADMIN]))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.RepositoryModelLoad(load)
        await stub.ModelReady(pb.ModelReadyRequest(name="digits"),
                              metadata=bearer_metadata(TOKENS[Scope.INFER]))  # not audited
    lines = audit_lines(caplog)
    load_method = "/inference.GRPCInferenceService/RepositoryModelLoad"
    unload_method = "/inference.GRPCInferenceService/RepositoryModelUnload"
    assert [(line["method"], line["token"], line["target"], line["code"]) for line in lines] == [
        (load_method, "admin-only", {"model_name": "digits"}, "OK"),
        (load_method, "infer-only", {"model_name": "digits"}, "PERMISSION_DENIED"),
        (unload_method, "admin-only", {"model_name": "nope"}, "NOT_FOUND"),
        (load_method, None, {"model_name": "digits"}, "UNAUTHENTICATED"),
    ]
    assert all(line["peer"].startswith("ipv4:127.0.0.1:") for line in lines)


async def test_a_job_rpc_names_the_job_in_its_audit_line(channel, caplog):
    from augserve.clients.proto.augserve.v1 import jobs_pb2 as pb
    from augserve.clients.proto.augserve.v1 import jobs_pb2_grpc as pb_grpc

    stub = pb_grpc.JobServiceStub(channel)
    with caplog.at_level(logging.INFO, logger="augserve.audit"), \
            pytest.raises(grpc.aio.AioRpcError):
        await stub.Cancel(pb.JobRef(job_id="job-that-is-not"),
                          metadata=bearer_metadata(TOKENS[Scope.ADMIN]))
    [line] = audit_lines(caplog)
    assert (line["method"], line["target"]) == ("/augserve.v1.JobService/Cancel",
                                                {"job_id": "job-that-is-not"})
    assert line["code"] in {"NOT_FOUND", "INVALID_ARGUMENT"}
