"""augserve.server: the grpc.aio server, its Ray runtime, services and benchmarks."""
