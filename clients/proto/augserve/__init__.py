"""Generated protobuf stubs (bash protos/generate.sh)."""
