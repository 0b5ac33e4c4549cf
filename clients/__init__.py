"""augserve.clients: typed gRPC clients for augserve. Imports neither torch nor Ray."""

from augserve.clients.augment import AugmentClient as AugmentClient
from augserve.clients.classify import Classification
from augserve.clients.infer import AsyncInferClient, InferClient, ModelInfo, TensorInfo
from augserve.clients.loader import RemoteLoader as RemoteLoader
from augserve.clients.tls import TlsSettings as TlsSettings

__all__ = ["AsyncInferClient", "Classification", "InferClient", "ModelInfo", "TensorInfo"]
