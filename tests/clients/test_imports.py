import subprocess
import sys


def test_clients_import_neither_torch_nor_ray():
    code = (
        "import sys, augserve.clients, augserve.clients.infer; "
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_clients_and_tritonclient_import_in_one_process():
    code = (
        "import tritonclient.grpc, augserve.clients; "
        "from augserve.clients.proto.inference import grpc_service_pb2 as ours; "
        "from tritonclient.grpc import service_pb2 as theirs; "
        "print(ours.ModelInferRequest is not theirs.ModelInferRequest)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"
