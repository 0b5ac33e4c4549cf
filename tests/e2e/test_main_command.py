"""The README's main command, `augserve serve` with no flags: the demo repository, served."""

from __future__ import annotations

import socket
import urllib.request

from augserve.clients import InferClient
from augserve.server.inference.demo import load_digits_split


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_with_no_repository_the_demo_classifier_is_served_with_metrics(serve_process, tmp_path):
    metrics_port = _free_port()
    serve = serve_process(None, tmp_path, "--metrics-port", str(metrics_port))
    try:
        _, _, test_x, test_y = load_digits_split()
        with InferClient(serve.url, timeout=60) as client:
            assert client.is_server_ready() and client.is_model_ready("digits")
            logits = client.infer("digits", {"input": test_x[:64]})["logits"]
        assert float((logits.argmax(1) == test_y[:64]).mean()) >= 0.9
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'model="digits"' in text
    finally:
        assert serve.terminate() == 0, serve.log.read_text()[-3000:]
