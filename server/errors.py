"""augserve's one exception hierarchy, each class bound to the gRPC status it maps to.

Domain code raises these; `augserve.server.interceptors.ErrorMappingInterceptor`
turns them into the status the client receives, in one place.

Example:
    >>> raise InvalidArgument("input 'x': expected FP32, got INT8")  # doctest: +SKIP

"""

from __future__ import annotations

import grpc

from augserve.kernels import resolve


class AugserveError(Exception):
    """Base class: an error whose message is safe to show to the client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(AugserveError):
    """The request is malformed; the message names the offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ImportRefused(InvalidArgument, resolve.ImportRefused):
    """A `module:attribute` name (an architecture) outside the server's allowed modules.

    Raised by the server's `augserve.kernels.resolve.AllowList` (see
    `ServerConfig.import_allow_list`); the message names the field and the allowed prefixes.
    """


class NotFound(AugserveError):
    """A named model, version, dataset, pipeline or job does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AugserveError):
    """A named thing (a shared-memory region) is already registered."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(AugserveError):
    """The caller may not do this (e.g. map this host's memory from another host)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(AugserveError):
    """A bounded queue or size limit is full; the client may retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(AugserveError):
    """The request's deadline or the configured timeout passed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(AugserveError):
    """The target exists but cannot serve now (not ready, shutting down)."""

    code = grpc.StatusCode.UNAVAILABLE


class ReplicaDied(Unavailable):
    """A model replica's process went away; the batcher restarts it."""


class FailedPrecondition(AugserveError):
    """The system is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(AugserveError):
    """The request carries no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Internal(AugserveError):
    """The server or a model failed while serving this request."""

    code = grpc.StatusCode.INTERNAL


class Cancelled(AugserveError):
    """The work was cancelled (by the client or an operator)."""

    code = grpc.StatusCode.CANCELLED
