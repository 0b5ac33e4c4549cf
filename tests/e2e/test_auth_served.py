"""`augserve serve --auth-tokens`: the clients' `token=`, tritonclient's headers, SIGHUP rotation.

The tokens come from `augserve token new`, so its output is checked to parse and its
token to authenticate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from augserve.clients.augment import AugmentClient
from augserve.clients.infer import InferClient
from augserve.clients.jobs import JobClient
from augserve.clients.loader import RemoteLoader
from tests.e2e.conftest import ServeProcess
from tests.waiting import wait_until


def token_new(name: str, scopes: str) -> tuple[str, str]:
    """(token, [[tokens]] entry) printed by `augserve token new`."""
    out = subprocess.run(
        [sys.executable, "-m", "augserve.server.cli", "token", "new", "--name", name,
         "--scopes", scopes], capture_output=True, text=True, check=True).stdout
    token = out.splitlines()[0].removeprefix("token: ")
    entry = out[out.index("[[tokens]]"):]
    [parsed] = tomllib.loads(entry)["tokens"]
    assert parsed["name"] == name and parsed["scopes"] == scopes.split(",")
    assert token not in entry and len(token) >= 40
    return token, entry


@pytest.fixture(scope="module")
def tokens():
    return {"all": token_new("all", "infer,augment,stream,jobs,admin"),
            "infer": token_new("infer-only", "infer")}


@pytest.fixture(scope="module")
def served_auth(model_repository, tmp_path_factory, tokens):
    """One server for the module: the rotation test, which changes its tokens, runs last."""
    work = tmp_path_factory.mktemp("auth-served")
    path = work / "tokens.toml"
    path.write_text(tokens["all"][1] + tokens["infer"][1])
    serve = ServeProcess(model_repository, work, "--auth-tokens", str(path),
                         "--load-model", "digits")
    serve.tokens_path = path
    yield serve
    serve.terminate()


def test_token_new_refuses_an_unknown_scope():
    result = subprocess.run(
        [sys.executable, "-m", "augserve.server.cli", "token", "new", "--name", "x",
         "--scopes", "infer,root"], capture_output=True, text=True)
    assert result.returncode != 0 and result.stdout == ""
    assert "unknown scope 'root'; known: infer, augment, stream, jobs, admin" in result.stderr


def infer_digits(client: InferClient) -> np.ndarray:
    return client.infer("digits", {"input": np.zeros((1, 1, 8, 8), np.float32)})["logits"]


def test_clients_send_their_token_and_tritonclient_its_headers(served_auth, tokens):
    token = tokens["all"][0]
    with InferClient(served_auth.url, token=token) as client:
        assert infer_digits(client).shape == (1, 10)
    with InferClient(served_auth.url) as client, pytest.raises(grpc.RpcError) as caught:
        infer_digits(client)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with InferClient(served_auth.url, token=tokens["infer"][0]) as client, \
            pytest.raises(grpc.RpcError) as caught:
        client.load_model("digits")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks the scope 'admin'" in caught.value.details()

    images = np.zeros((2, 16, 16, 3), np.uint8)
    pipeline = {"ops": []}
    with AugmentClient(served_auth.url, token=token) as client:
        assert client.augment(images, pipeline=pipeline).images.shape == (2, 3, 16, 16)
    with JobClient(served_auth.url, token=token) as client, \
            pytest.raises(grpc.RpcError) as caught:
        client.cancel("job-that-is-not")
    assert caught.value.code() not in {grpc.StatusCode.UNAUTHENTICATED,
                                       grpc.StatusCode.PERMISSION_DENIED}
    loader = RemoteLoader(served_auth.url, dataset="digits", batch_size=4, pipeline=pipeline,
                          token=token)
    images, labels = next(iter(loader))
    assert len(images) == len(labels) == 4
    loader.close()

    with triton.InferenceServerClient(served_auth.url) as client:
        assert client.is_server_live() and client.is_server_ready()
        tensor = triton.InferInput("input", [1, 1, 8, 8], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))
        reply = client.infer("digits", [tensor], headers={"authorization": f"Bearer {token}"})
        assert reply.as_numpy("logits").shape == (1, 10)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("digits", [tensor])
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"


def test_a_token_rotated_on_sighup_works_and_the_old_one_is_refused(served_auth, tokens):
    old = tokens["infer"][0]
    new, entry = token_new("infer-rotated", "infer")
    served_auth.tokens_path.write_text(tokens["all"][1] + entry)
    os.kill(served_auth.group.process.pid, signal.SIGHUP)

    def status(token: str) -> grpc.StatusCode:
        with InferClient(served_auth.url, token=token) as client:
            try:
                infer_digits(client)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    wait_until(lambda: status(new) == grpc.StatusCode.OK, 30, "the rotated token to work")
    assert status(old) == grpc.StatusCode.UNAUTHENTICATED

    served_auth.tokens_path.write_text('[[tokens]]\nname = "x"\nsha256 = "zz"\nscopes = []\n')
    os.kill(served_auth.group.process.pid, signal.SIGHUP)
    wait_until(lambda: "token file not reloaded, the old tokens stay" in
               served_auth.log.read_text(), 30, "the bad file to be refused")
    assert "tokens[0]: sha256 of 'x' must be 64 hex digits" in served_auth.log.read_text()
    assert status(new) == grpc.StatusCode.OK


def test_a_bad_token_file_stops_the_server_naming_the_entry(model_repository, tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text('[[tokens]]\nname = "ci"\nsha256 = "' + "ab" * 32 + '"\nscopes = ["root"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "augserve.server.cli", "serve", "--port", "0",
         "--metrics-port", "0", "--model-repository", str(model_repository),
         "--auth-tokens", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"{path}: tokens[0]: unknown scope 'root'" in result.stderr
