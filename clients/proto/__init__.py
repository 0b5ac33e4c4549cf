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
