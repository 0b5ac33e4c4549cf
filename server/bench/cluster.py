"""A two-node Ray cluster on this machine, started the way a user starts a real one.

`RayCluster` runs `ray start --head` and `ray start --address` (each `--block`, in a
process group of its own through `lifecycle.ProcessGroup`, with its own `--temp-dir`
and `--num-cpus`), so a server joins it with `--ray-address` exactly as it joins a
cluster of machines. Each node advertises a custom resource named after it
(`node:head`, `node:worker` become `augserve_head`, `augserve_worker`), which a
model's or a pool's `placement` may name to pin actors to it.

Faults: `kill_worker()` SIGKILLs the worker node's raylet (its workers go with it, the
GCS marks the node dead); `start_worker()` brings a fresh worker node back;
`kill_head()` SIGKILLs the head's whole group (the GCS is gone). `stop()` stops every
node's group, and runs on leaving the `with` block whatever happened; a bench under
`lifecycle.exit_on_sigterm()` runs it on SIGTERM too.

The GCS health checks are shortened (`HEALTH_CHECK_ENV`), so a dead node is noticed
in about 3 s rather than Ray's default 15 s.

Example:
    >>> with RayCluster(tmp) as cluster:  # doctest: +SKIP
    ...     cluster.start()
    ...     serve(["--ray-address", cluster.address])
    ...     cluster.kill_worker()
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

import psutil

from augserve.server.bench.lifecycle import ProcessGroup, child_env, free_port, wait_for

# The GCS pings each raylet every period; this many misses in a row mark the node dead. A
# killed raylet refuses at once (dead in about 3 s, against Ray's 15 s default); a raylet
# stalled on a busy 2-core host gets 1.5 s per ping. Raylets may take long to register.
HEALTH_CHECK_ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1500",
    "RAY_health_check_failure_threshold": "6",
    "RAY_raylet_start_wait_time_s": "120",
}
START_TIMEOUT_S = 120.0


def _ray_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def node_resource(node: str) -> str:
    """The custom resource that the node named `node` ("head", "worker") advertises."""
    return f"augserve_{node}"


class RayCluster:
    """A head and a worker node on this machine (see the module docstring).

    Args:
        root: where the nodes' logs go (`head.log`, `worker-N.log`).
        num_cpus: logical CPUs per node.
        resources: extra custom resources per node (beside `node_resource(name)`).
    """

    def __init__(self, root: Path, num_cpus: float = 1, resources: float = 100) -> None:
        self.root = Path(root)
        self.num_cpus = num_cpus
        self.resources = resources
        self.port = 0
        self.head: ProcessGroup | None = None
        self.worker: ProcessGroup | None = None
        self._workers_started = 0
        # Unix socket paths are bounded (108 bytes): the nodes' temp folders stay short.
        self._temp = Path(tempfile.mkdtemp(prefix="augc-"))
        self.token_file = self._temp / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)

    @property
    def address(self) -> str:
        """The head's GCS address, for `--ray-address` / `ray.init(address=...)`."""
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment of the nodes and of the processes that join the cluster.

        The cluster's own token (`RAY_AUTH_MODE=token`, `RAY_AUTH_TOKEN_PATH`), as a user
        secures a real one, and the GCS's short health checks.
        """
        return child_env(None, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file),
                         **HEALTH_CHECK_ENV)

    def _spawn(self, name: str, *args: str) -> tuple[ProcessGroup, Path]:
        """Start one node's `ray start --block`; its group and log."""
        temp = self._temp / name
        temp.mkdir(parents=True, exist_ok=True)
        resources = json.dumps({node_resource(name.split("-")[0]): self.resources})
        command = _ray_command(
            "start", "--block", "--disable-usage-stats",
            "--num-cpus", str(self.num_cpus), "--num-gpus", "0", "--temp-dir", str(temp),
            "--node-ip-address", "127.0.0.1", "--resources", resources, *args,
        )  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        with log.open("w") as out:
            group = ProcessGroup(command, self.env(), stdout=out, stderr=subprocess.STDOUT)
        return group, log

    @staticmethod
    def _wait_started(name: str, group: ProcessGroup, log: Path) -> None:
        """Return once the node says it runs; stop it if it does not."""
        try:
            # `ray start` prints this once its raylet has registered with the GCS.
            wait_for(lambda: "Ray runtime started" in log.read_text(), START_TIMEOUT_S,
                     lambda: group.process.poll() is not None, f"Ray node {name}", log,
                     interval_s=0.2)  # fmt: skip
        except BaseException:
            group.stop(5.0)
            raise

    def _gcs_listens(self) -> bool:
        with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
            return True
        return False

    def start(self) -> None:
        """Start the head and one worker node.

        The worker's `ray start` begins as soon as the head's GCS listens, not once the
        whole head is up: the two nodes' start-up (Python imports, raylets, agents) then
        overlaps, which saves about a third of the cluster's start on a 2-core host.
        """
        self.port = free_port()
        head, head_log = self._spawn("head", "--head", "--port", str(self.port),
                                     "--include-dashboard=false")
        self.head = head
        try:
            wait_for(self._gcs_listens, START_TIMEOUT_S, lambda: head.process.poll() is not None,
                     "the head's GCS", head_log, interval_s=0.2)  # fmt: skip
        except BaseException:
            head.stop(5.0)
            raise
        self._workers_started += 1
        name = f"worker-{self._workers_started}"
        worker, worker_log = self._spawn(name, "--address", self.address)
        self.worker = worker
        self._wait_started("head", head, head_log)
        self._wait_started(name, worker, worker_log)

    def start_worker(self) -> None:
        """Start a worker node (again, after `kill_worker`)."""
        self._workers_started += 1
        name = f"worker-{self._workers_started}"
        group, log = self._spawn(name, "--address", self.address)
        self._wait_started(name, group, log)
        self.worker = group

    def alive_nodes(self) -> int:
        """How many nodes the GCS holds alive (0 when it cannot be asked); about 2 s of CPU."""
        done = subprocess.run(_ray_command("status", "--address", self.address),
                              capture_output=True, text=True, env=self.env(), timeout=60,
                              check=False)  # fmt: skip
        if done.returncode != 0:
            return 0
        active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))

    def raylet(self, group: ProcessGroup) -> psutil.Process | None:
        """The raylet process of a node's group (None once it is gone)."""
        for process in group.descendants():
            with suppress(psutil.Error):
                if process.name() == "raylet" or "raylet" in " ".join(process.cmdline()[:1]):
                    return process
        return None

    def kill_worker(self) -> float:
        """SIGKILL the worker node's raylet, then stop what is left of it; the time it took."""
        assert self.worker is not None, "no worker node"
        started = time.monotonic()
        raylet = self.raylet(self.worker)
        if raylet is not None:
            with suppress(psutil.Error):
                raylet.kill()
        self.worker.kill()
        self.worker = None
        return time.monotonic() - started

    def kill_head(self) -> None:
        """SIGKILL the head node's whole group: the GCS and the head's raylet are gone."""
        if self.head is not None:
            self.head.kill()
            self.head = None

    def stop(self) -> None:
        """Stop every node (worker first), then remove the nodes' temp folders."""
        for group in (self.worker, self.head):
            if group is not None:
                group.stop(2.0)  # a node whose head is gone may sit on SIGTERM
        self.worker = self.head = None
        shutil.rmtree(self._temp, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
