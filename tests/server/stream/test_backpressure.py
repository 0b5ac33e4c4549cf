"""A consumer that stops reading for 10 s keeps the server's memory bounded (measured RSS)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil

from augserve.clients.proto.augserve.v1 import stream_pb2 as pb
from augserve.clients.proto.augserve.v1 import stream_pb2_grpc as pb_grpc
from augserve.server.bench.lifecycle import ProcessGroup

from ...waiting import wait_until

WINDOW = 4
BATCH = 32
BATCH_BYTES = BATCH * 3 * 224 * 224  # uint8 ImageNet crops
SLACK = 64 << 20  # allocator noise, gRPC's own buffers, one message being serialized
STALL_S = 10.0


def test_stalled_reader_keeps_server_memory_bounded(ray_session, tmp_path):
    port_file = tmp_path / "port"
    with (tmp_path / "log").open("w") as log:
        group = ProcessGroup(
            [sys.executable, str(Path(__file__).with_name("stream_server.py")),
             "--ray-address", ray_session.get_runtime_context().gcs_address,
             "--port-file", str(port_file), "--window", str(WINDOW)],
            dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    server = group.process
    try:
        wait_until(lambda: port_file.exists() or server.poll() is not None, 120,
                   what="the stream server writing its port")
        assert server.poll() is None, (tmp_path / "log").read_text()[-2000:]
        process = psutil.Process(server.pid)
        channel = grpc.insecure_channel(f"127.0.0.1:{int(port_file.read_text())}",
                                        options=[("grpc.max_receive_message_length", 64 << 20)])
        stream = pb_grpc.StreamServiceStub(channel).StreamBatches(pb.StreamRequest(
            dataset="photos", pipeline_id="imagenet_train", batch_size=BATCH, seed=1,
            shuffle=True))
        seen = list(next(stream).sample_indices)  # the pool is up
        started = time.monotonic()
        for _ in range(3):
            seen += next(stream).sample_indices
        rate = 3 * BATCH / (time.monotonic() - started)
        # The reader stops here. The window's batches are made during the stall: the
        # bound below allows for them.
        baseline = process.memory_info().rss
        peak = baseline
        stall_end = time.monotonic() + STALL_S
        while time.monotonic() < stall_end:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.2)  # the stall under test: sample the RSS while nothing is read
        for batch in stream:
            seen += batch.sample_indices
        channel.close()
    finally:
        group.stop()
    growth = peak - baseline
    bound = WINDOW * BATCH_BYTES + SLACK
    unbounded = rate * STALL_S * BATCH_BYTES / BATCH
    print(f"RSS growth {growth / 2**20:.1f} MiB during a {STALL_S:.0f} s stall; bound "
          f"{bound / 2**20:.1f} MiB; an unbounded producer at {rate:.0f} samples/s would "
          f"have made {unbounded / 2**20:.0f} MiB")
    assert growth < bound
    assert sorted(seen) == list(range(512))  # and the stream resumed, exactly once
