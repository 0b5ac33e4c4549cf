"""The access table names every method of every service the server registers, and no other."""

from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from augserve.clients.proto.augserve.v1 import augment_pb2, jobs_pb2, stream_pb2
from augserve.clients.proto.inference import grpc_service_pb2
from augserve.server.auth.scopes import ANY_TOKEN, METHOD_ACCESS, OPEN, Scope

FILES = (grpc_service_pb2, augment_pb2, stream_pb2, jobs_pb2, health_pb2, reflection_pb2)


def served_methods() -> set[str]:
    return {f"/{service.full_name}/{method.name}"
            for module in FILES for service in module.DESCRIPTOR.services_by_name.values()
            for method in service.methods}


def test_every_method_of_every_service_has_an_entry():
    methods = served_methods()
    assert methods - set(METHOD_ACCESS) == set(), "methods left out of the access table"
    assert set(METHOD_ACCESS) - methods == set(), "entries of methods that do not exist"


def test_only_probes_are_open_and_the_issue_admin_rpcs_need_admin():
    opened = {m for m, access in METHOD_ACCESS.items() if access == OPEN}
    assert opened == {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                      "/inference.GRPCInferenceService/ServerLive",
                      "/inference.GRPCInferenceService/ServerReady"}
    assert METHOD_ACCESS["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] \
        == ANY_TOKEN
    admin = {m.rsplit("/", 1)[1] for m, access in METHOD_ACCESS.items() if access == Scope.ADMIN}
    assert admin >= {"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload", "Submit",
                     "Cancel", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
                     "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister"}
