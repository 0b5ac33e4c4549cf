"""The audit log: one JSON line per admin RPC, on the `augserve.audit` logger.

Each line says who called (token name, peer), what (the method), which model,
job or shared-memory region, and the outcome (the status code's name), whether
the call was served or refused:

    {"event": "rpc", "method": "/inference.GRPCInferenceService/RepositoryModelLoad",
     "token": "ops", "peer": "ipv4:127.0.0.1:50312", "target": {"model_name": "digits"},
     "code": "OK"}

Route the logger to a file of its own with the logging configuration as usual.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc

from augserve.server.auth.identity import Identity

log = logging.getLogger("augserve.audit")

#: The fields of a request or response that name what an admin RPC acted on.
#: (Shared-memory keys and handles are never logged: only the region's name.)
TARGET_FIELDS = ("model_name", "job_id", "name")


def _targets(message: Any) -> dict[str, str]:
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None:
        return {}
    return {name: getattr(message, name) for name in TARGET_FIELDS
            if name in descriptor.fields_by_name and getattr(message, name)}


def audit(method: str, identity: Identity, code: grpc.StatusCode,
          request: Any = None, response: Any = None) -> None:
    """Write the audit line of one admin call (`request`/`response`: its messages, if any)."""
    target = {**_targets(request), **_targets(response)}
    line = {"event": "rpc", "method": method, "token": identity.token_name,
            "peer": identity.peer, "target": target, "code": code.name}
    log.info(json.dumps(line, sort_keys=False))
