"""The whole server over TLS and mutual TLS: augserve's clients and tritonclient, unchanged.

Two in-process servers on loopback: one with TLS, one with mutual TLS. The blocking
clients run in threads, off the event loop that serves them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from augserve.clients import AsyncInferClient, AugmentClient, InferClient, RemoteLoader, TlsSettings
from augserve.clients.jobs import JobClient
from augserve.server.app import start_server
from augserve.server.config import ServerConfig
from augserve.server.inference.loading import load_module
from augserve.server.inference.model_config import read_model_config

from ..certs import Authority, Pem, make_authority

IMAGES = np.random.default_rng(3).random((5, 1, 8, 8), dtype=np.float32)


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Pem
    client: Pem
    stranger: Pem  # a client certificate from another CA

    def trusting(self, client: Pem | None = None) -> TlsSettings:
        return TlsSettings.from_files(self.ca.pem.cert, client and client.cert,
                                      client and client.key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = make_authority(folder, "ca"), make_authority(folder, "other")
    return Pki(ca, ca.issue("server", server=True), ca.issue("client", server=False),
               other.issue("stranger", server=False))


async def _start(model_repository, pki: Pki, mutual: bool):
    config = ServerConfig(
        port=0, metrics_port=0, model_repository=model_repository, load_models=("digits",),
        shutdown_grace_s=2.0, tls_cert=pki.server.cert, tls_key=pki.server.key,
        tls_client_ca=pki.ca.pem.cert if mutual else None)
    return await start_server(config)


@pytest.fixture(scope="module")
async def tls_url(ray_session, model_repository, pki):
    running = await _start(model_repository, pki, mutual=False)
    yield f"127.0.0.1:{running.port}"
    await running.stop()


@pytest.fixture(scope="module")
async def mtls_url(ray_session, model_repository, pki):
    running = await _start(model_repository, pki, mutual=True)
    yield f"127.0.0.1:{running.port}"
    await running.stop()


@pytest.fixture(scope="module")
def expected_logits(model_repository) -> np.ndarray:
    settings = read_model_config(model_repository / "digits")
    module = load_module(settings, model_repository / "digits" / "1", allow_pickle=False)
    with torch.inference_mode():
        return module(torch.from_numpy(IMAGES)).numpy()


def infer(url: str, tls: TlsSettings | None) -> np.ndarray:
    with InferClient(url, timeout=30, tls=tls) as client:
        return client.infer("digits", {"input": IMAGES})["logits"]


def infer_error(url: str, tls: TlsSettings | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        infer(url, tls)
    return error.value.code()


def inference_count(url: str, tls: TlsSettings) -> int:
    with InferClient(url, timeout=30, tls=tls) as client:
        return sum(m.inference_count for m in client.statistics("digits").model_stats)


async def test_infer_over_tls_with_augserve_clients(tls_url, pki, expected_logits):
    logits = await asyncio.to_thread(infer, tls_url, pki.trusting())
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    async with AsyncInferClient(tls_url, tls=pki.trusting()) as client:
        logits = (await client.infer("digits", {"input": IMAGES}, timeout=30))["logits"]
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


async def test_plaintext_to_a_tls_server_is_refused(tls_url):
    assert await asyncio.to_thread(infer_error, tls_url, None) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_not_trusting_the_servers_ca_is_refused(tls_url, pki, tmp_path):
    stranger_ca = make_authority(tmp_path, "stranger")
    tls = TlsSettings.from_files(stranger_ca.pem.cert)
    assert await asyncio.to_thread(infer_error, tls_url, tls) == grpc.StatusCode.UNAVAILABLE


def augment_jobs_and_stream(url: str, tls: TlsSettings):
    photo = np.zeros((16, 16, 3), np.uint8)
    with AugmentClient(url, tls=tls) as client:
        augmented = client.augment([photo], pipeline={"ops": [{"resize": {"size": [8, 8]}}]})
    with JobClient(url, tls=tls) as jobs, pytest.raises(grpc.RpcError) as unknown:
        jobs.result("no-such-job", timeout=30)
    with RemoteLoader(url, "digits", 600, pipeline={"ops": []}, shuffle=False,
                      shared_memory=False, tls=tls) as loader:
        labels = [len(batch_labels) for _, batch_labels in loader]
    return augmented.images.shape, unknown.value.code(), labels


async def test_augment_jobs_and_stream_clients_over_mutual_tls(mtls_url, pki):
    shape, unknown_job, labels = await asyncio.to_thread(
        augment_jobs_and_stream, mtls_url, pki.trusting(pki.client))
    assert shape[0] == 1 and shape[-2:] == (8, 8)
    assert unknown_job == grpc.StatusCode.NOT_FOUND  # the RPC ran, over mutual TLS
    assert labels == [600, 600, 597]


async def test_mutual_tls_with_a_client_certificate(mtls_url, pki, expected_logits):
    logits = await asyncio.to_thread(infer, mtls_url, pki.trusting(pki.client))
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


async def test_mutual_tls_refuses_clients_at_the_handshake_and_runs_no_rpc(mtls_url, pki):
    with_cert = pki.trusting(pki.client)
    before = await asyncio.to_thread(inference_count, mtls_url, with_cert)
    for tls in (pki.trusting(), pki.trusting(pki.stranger), None):
        assert await asyncio.to_thread(infer_error, mtls_url, tls) == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.to_thread(inference_count, mtls_url, with_cert) == before


def triton_infer(url: str, **ssl_options) -> np.ndarray:
    with triton.InferenceServerClient(url, ssl=True, **ssl_options) as client:
        assert client.is_server_live()
        tensor = triton.InferInput("input", list(IMAGES.shape), "FP32")
        tensor.set_data_from_numpy(IMAGES)
        return client.infer("digits", [tensor], client_timeout=30).as_numpy("logits")


async def test_tritonclient_with_ssl_and_its_root_certificates(tls_url, mtls_url, pki,
                                                               expected_logits):
    roots = str(pki.ca.pem.cert)
    logits = await asyncio.to_thread(triton_infer, tls_url, root_certificates=roots)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    logits = await asyncio.to_thread(
        triton_infer, mtls_url, root_certificates=roots, private_key=str(pki.client.key),
        certificate_chain=str(pki.client.cert))  # fmt: skip
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        await asyncio.to_thread(triton_infer, mtls_url, root_certificates=roots)
