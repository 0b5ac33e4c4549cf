#!/usr/bin/env bash
# Regenerates the Python stubs in clients/proto/ from the .proto files here.
#
#   bash protos/generate.sh          rewrite the stubs
#   bash protos/generate.sh --check  fail if the committed stubs are stale
#
# The stubs are generated with protoc 25 (grpcio-tools 1.62): its output carries
# no runtime-version guard, so it imports under protobuf 5.29 through 7.x and
# under the grpcio that Ray and tritonclient want. A newer protoc would pin the
# protobuf runtime to its own major version. The generator lives in its own
# venv so that its old protobuf never touches the project's environment.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tool_venv=${AUGSERVE_PROTOC_VENV:-$root/.cache/protoc-venv}
grpc_tools_version=1.62.3

if [ ! -x "$tool_venv/bin/python" ] || ! "$tool_venv/bin/python" -c "import grpc_tools" 2>/dev/null; then
  python3 -m venv "$tool_venv"
  "$tool_venv/bin/pip" install -q "grpcio-tools==$grpc_tools_version"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$root/protos"
mapfile -t sources < <(find . -name '*.proto' -printf '%P\n' | sort)
"$tool_venv/bin/python" -m grpc_tools.protoc -I . \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${sources[@]}"

# protoc writes imports relative to protos/; make them absolute package imports.
# Our messages live in a private descriptor pool: tritonclient registers the same
# `inference.*` names in the default pool, and both must import in one process.
find "$out" \( -name '*.py' -o -name '*.pyi' \) | while read -r f; do
  sed -i -E \
    -e 's/^from (inference|augserve\.v1)( import )/from augserve.clients.proto.\1\2/' \
    -e 's/^from google\.protobuf import descriptor_pool as _descriptor_pool$/from augserve.clients.proto import POOL as _POOL/' \
    -e 's/_descriptor_pool\.Default\(\)/_POOL/' "$f"
done
cat > "$out/__init__.py" <<'PY'
"""Generated protobuf stubs (bash protos/generate.sh).

Every augserve message is registered in POOL, a descriptor pool of its own, so
that these stubs and tritonclient's (same `inference.*` names, default pool)
import side by side in one process. The well-known types our messages use are
registered in it first.
"""

from google.protobuf import struct_pb2
from google.protobuf.descriptor_pool import DescriptorPool

POOL = DescriptorPool()
POOL.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
PY
# Every generated folder is a package.
find "$out" -type d -exec sh -c 'for d; do [ -f "$d/__init__.py" ] || printf "%s\n" "\"\"\"Generated protobuf stubs (bash protos/generate.sh).\"\"\"" > "$d/__init__.py"; done' _ {} +

target=$root/clients/proto
if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$out" "$target" >/dev/null; then
    diff -r "$out" "$target" | head -20
    echo "clients/proto is stale: run bash protos/generate.sh" >&2
    exit 1
  fi
  echo "clients/proto is up to date"
else
  rm -rf "$target"
  cp -r "$out" "$target"
  echo "wrote $target"
fi
