"""The stream service's Prometheus metrics count batches, samples and bytes per transport."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from augserve.clients import RemoteLoader

from .conftest import settings, start

KWARGS = {"dataset": "digits32", "pipeline_id": "small", "batch_size": 100, "seed": 5}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def totals() -> dict[str, float]:
    return {f"{name}/{transport}": sample(f"augserve_stream_{name}_total", transport=transport)
            for name in ("batches", "samples", "pixel_bytes")
            for transport in ("inline", "shared_memory")}


def read(target: str, shared_memory: bool) -> int:
    with RemoteLoader(target, shared_memory=shared_memory, **KWARGS) as loader:
        return sum(len(labels) for _, labels in loader)


async def test_batches_samples_and_bytes_are_counted_per_transport(tmp_path):
    running = await start(settings(shared_memory_dir=str(tmp_path)))
    try:
        before = totals()
        assert await asyncio.to_thread(read, running.target, True) == 1797
        assert await asyncio.to_thread(read, running.target, False) == 1797
        after = totals()
    finally:
        await running.server.stop(None)
    delta = {key: after[key] - before[key] for key in after}
    for transport in ("inline", "shared_memory"):
        assert delta[f"batches/{transport}"] == 18
        assert delta[f"samples/{transport}"] == 1797
        assert delta[f"pixel_bytes/{transport}"] == 1797 * 3 * 24 * 24
    assert sample("augserve_stream_active") == 0
