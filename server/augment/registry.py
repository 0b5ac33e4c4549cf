"""Pipelines registered by id, parsed once at start, and how a request names its pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from augserve.server.augment.settings import AugmentSettings
from augserve.server.augment.spec import IMAGENET_TRAIN, PipelineSpec, parse_pipeline
from augserve.server.errors import InvalidArgument, NotFound


class PipelineRegistry:
    """"imagenet_train" plus the operator's pipelines (id -> JSON spec).

    Parsing happens here, at start, so a bad registered pipeline fails the server's start
    rather than a request.
    """

    def __init__(self, registered: Mapping[str, str] | None = None,
                 max_ops: int = AugmentSettings.max_ops) -> None:
        """Parse the `registered` pipelines; every pipeline may have at most `max_ops` ops."""
        self.max_ops = max_ops
        self._specs: dict[str, PipelineSpec] = {"imagenet_train": IMAGENET_TRAIN}
        for pipeline_id, text in (registered or {}).items():
            self._specs[pipeline_id] = parse_pipeline(text, max_ops)

    def resolve(self, request: Any) -> PipelineSpec:
        """The pipeline a request names: its `pipeline_choice` oneof, an id or an inline spec.

        Raises:
            NotFound: the id is not registered.
            InvalidArgument: the request names no pipeline, or the inline one is invalid.
        """
        which = request.WhichOneof("pipeline_choice")
        if which == "pipeline_id":
            if request.pipeline_id not in self._specs:
                raise NotFound(
                    f"pipeline_id {request.pipeline_id!r} is not registered "
                    f"(known: {', '.join(sorted(self._specs))})"
                )
            return self._specs[request.pipeline_id]
        if which is None:
            raise InvalidArgument("pipeline: give a pipeline or a pipeline_id")
        return parse_pipeline(request.pipeline, self.max_ops)
