"""Pools of Ray worker actors, shared by the services: one restart policy, one worker set-up.

`ActorPool` runs `size` actors of one worker class, or with size 0 one worker in this
process whose calls run on threads. Both the Augment pool and the stream workers are
ActorPools, so both follow the same rules:

- Set-up: every worker's constructor calls `prepare_worker`, which pins OpenCV and
  torch to the worker's threads (the pool provides the parallelism) and, on CUDA,
  keeps cuDNN to deterministic algorithms, so that a call made again gives the same
  bytes.
- Restarts belong to the pool, not to Ray (actors are made with `max_restarts=0`): a
  call whose actor died is made again on a fresh actor put in that actor's place, at
  most `max_retries` times; then it fails with UNAVAILABLE. Calls are idempotent
  (augmentation keys depend only on seed, epoch, sample index and op), so a call made
  again gives what the first would have.
- Each call goes to the least busy actor that has started; only while none has does it
  go to one still starting. A call made again after its actor died thus goes to a
  surviving actor rather than to the replacement, whose new process (importing torch,
  OpenCV) may take tens of seconds on a loaded host: the caller waits for one call, not
  for a process start.
- Placement (`placement_options`): by default the actors spread over the cluster's
  nodes (Ray's SPREAD strategy), so losing a node costs a share of each pool, not a
  whole pool; a replacement goes to a node that is still alive.
- Spreading back (`ActorPool.rebalance`): when a node joins while one node holds two or
  more of a spread pool's actors and a live node holds none, one of them moves: a new
  actor is started on the empty node, takes the old one's slot once it is up, and the
  old one exits after the calls already sent to it (`__ray_terminate__`), so no call is
  lost or made twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any, Generic, TypeVar

from augserve.server.errors import Unavailable

log = logging.getLogger(__name__)

Worker = TypeVar("Worker")
# A moving actor that is not up by then is given up, and a later poll tries again: one
# stream worker's move once stayed pending for minutes in a full test run, holding the rest.
MOVE_START_TIMEOUT_S = 60.0


def prepare_worker(threads: int) -> None:
    """Set up a worker process: `threads` OpenCV and torch threads, deterministic cuDNN."""
    import cv2
    import torch

    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


PLACEMENTS = ("spread", "pack")


def check_placement(placement: str, what: str) -> str:
    """`placement` if valid: "spread", "pack" or the name of a custom node resource.

    Raises:
        ValueError: anything else (`what` names the setting).
    """
    if placement in PLACEMENTS or (placement.replace("_", "").replace("-", "").isalnum()
                                   and not placement[0].isdigit()):
        return placement
    raise ValueError(f"{what} must be one of {PLACEMENTS} or a custom node resource's name, "
                     f"got {placement!r}")


def placement_options(placement: str) -> dict[str, Any]:
    """Ray actor options that place an actor as `placement` says.

    - "spread": over the nodes, one after another (Ray's SPREAD scheduling strategy);
    - "pack": Ray's default, the local node first until it is full;
    - any other string: on a node that advertises that custom resource (e.g. one started
      with `ray start --resources '{"augserve_gpu_box": 100}'`), each actor taking 0.001
      of it. Such an actor is re-placed only on a node with the resource: if the last
      one is lost, replacements wait until one joins.
    """
    if placement == "spread":
        return {"scheduling_strategy": "SPREAD"}
    if placement == "pack":
        return {}
    return {"resources": {placement: 0.001}}


def spread_targets(count: int, nodes: Sequence[Mapping[str, Any]],
                   needs: Mapping[str, float]) -> list[str | None]:
    """The node to prefer for each of `count` spread actors, from `ray.nodes()`'s entries.

    Round robin over the live nodes whose total resources hold one actor's `needs`
    (e.g. {"CPU": 0.5}), in node-id order, so that `count` replicas land one per node
    before any node gets a second. Ray's own SPREAD strategy spreads all of a cluster's
    work together, so a model's two replicas started between other actors can land on
    one node. None for each (Ray's choice) when fewer than two nodes can hold one.
    """
    fit = sorted(
        node["NodeID"] for node in nodes
        if node.get("Alive")
        and all(node.get("Resources", {}).get(name, 0.0) >= amount
                for name, amount in needs.items() if amount > 0)
    )
    if len(fit) < 2:
        return [None] * count
    return [fit[i % len(fit)] for i in range(count)]


def node_of_worker(_worker: object) -> str:
    """The Ray node a worker runs on (run inside its actor through `__ray_call__`)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def rebalance_move(nodes: Sequence[str | None], alive: Collection[str]
                   ) -> tuple[int, str] | None:
    """One move that spreads workers back onto a live node that holds none of them.

    Args:
        nodes: the node of each worker (None: not known yet, e.g. still starting).
        alive: the cluster's live nodes.

    Returns:
        (the index of a worker on the most crowded node, the empty node to move it to),
        or None when no node holds two or more while a live node holds none.
    """
    counts = Counter(node for node in nodes if node is not None)
    empty = sorted(node for node in alive if counts[node] == 0)
    if not empty or not counts:
        return None
    crowded, most = counts.most_common(1)[0]
    if most < 2:
        return None
    return max(i for i, node in enumerate(nodes) if node == crowded), empty[0]


def actor_died_errors() -> tuple[type[BaseException], ...]:
    """Ray's exceptions that mean "the actor is gone" (the call may run elsewhere).

    `OutOfMemoryError` is Ray's memory monitor killing the worker: the call is made again
    on a fresh actor, so other clients' work is not failed by one client's huge request.
    """
    from ray import exceptions

    return tuple(getattr(exceptions, name) for name in
                 ("RayActorError", "ActorDiedError", "ActorUnavailableError",
                  "OutOfMemoryError")
                 if hasattr(exceptions, name))


@dataclasses.dataclass
class ActorCall:
    """A call made on a pool: the method and arguments, where it runs, its result to await.

    Attributes:
        method: the worker method's name.
        args: its arguments.
        slot: the actor's place in the pool (-1: the in-process worker).
        actor: the actor handle (None in-process).
        result: the result to await (cancel it to drop the call).
    """

    method: str
    args: tuple[Any, ...]
    slot: int
    actor: Any
    result: asyncio.Future[Any]


class ActorPool(Generic[Worker]):
    """`size` actors of `worker` (size 0: one worker in this process, called on threads).

    Args:
        worker: the worker class; its constructor should call `prepare_worker`.
        size: the number of actors.
        worker_args: the worker constructor's arguments.
        num_cpus: Ray CPUs per actor.
        num_gpus: Ray GPUs per actor.
        placement: where the actors go (`placement_options`).

    Counters (`busy` and `started` per actor, `in_flight`, `resubmitted`) let tests and
    metrics see inside. Actors start on first use (Ray must be initialised).
    """

    def __init__(self, worker: type[Worker], size: int, worker_args: tuple[Any, ...] = (),
                 num_cpus: float = 1.0, num_gpus: float = 0.0, placement: str = "spread",
                 ) -> None:  # fmt: skip
        self.worker = worker
        self.placement = check_placement(placement, f"{worker.__name__} placement")
        self.size = size
        self.worker_args = worker_args
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.actors: list[Any] = []
        self.busy: list[int] = []
        self.started: list[bool] = []  # set from a Ray thread once the actor's constructor ran
        self.nodes: list[str | None] = []  # each actor's node, once it is up
        self.moved = 0  # actors moved onto a joining node (`rebalance`)
        self.in_flight = 0
        self.resubmitted = 0
        self._local: Worker | None = None
        self._actor_class: Any = None

    def _new_actor(self, **placement: Any) -> Any:
        """Start one actor of the pool's worker (`placement`: Ray options that place it).

        The pool keeps one Ray actor class: Ray exports a class to the GCS at its first
        actor, synchronously, so a class made anew per actor would block the event loop
        (for up to 60 s) whenever the GCS is gone; later actors of a kept class do not.
        """
        import ray

        if self._actor_class is None:
            self._actor_class = ray.remote(self.worker)
        return self._actor_class.options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0,
            max_task_retries=0, **(placement or placement_options(self.placement)),
        ).remote(*self.worker_args)

    def _put_actor(self, slot: int) -> None:
        """Put a fresh actor in `slot`; `started[slot]` turns true once its constructor ran."""
        actor = self._new_actor()
        self.actors[slot], self.started[slot], self.nodes[slot] = actor, False, None

        def holds(future: Any) -> bool:
            # Ray's thread calls back; a slot whose actor was replaced meanwhile is left alone.
            return (not future.cancelled() and future.exception() is None
                    and slot < len(self.actors) and self.actors[slot] is actor)

        def located(node: Any) -> None:
            if holds(node):
                self.nodes[slot] = node.result()

        def up(ready: Any) -> None:
            if holds(ready):
                self.started[slot] = True
                actor.__ray_call__.remote(node_of_worker).future().add_done_callback(located)

        actor.__ray_ready__.remote().future().add_done_callback(up)

    def start(self) -> None:
        """Create the actors (or the in-process worker) if not done yet."""
        if self.size == 0:
            if self._local is None:
                self._local = self.worker(*self.worker_args)
        elif not self.actors:
            self.busy, self.started = [0] * self.size, [False] * self.size
            self.actors, self.nodes = [None] * self.size, [None] * self.size
            for slot in range(self.size):
                self._put_actor(slot)

    def call(self, method: str, *args: Any) -> ActorCall:
        """Call `method` with `args` on the least busy started actor; returns at once."""
        self.start()
        self.in_flight += 1
        if self._local is not None:
            local: Awaitable[Any] = asyncio.to_thread(getattr(self._local, method), *args)
            future = asyncio.ensure_future(local)
            future.add_done_callback(lambda _: self._done(-1))
            return ActorCall(method, args, -1, None, future)
        slot = min(range(len(self.actors)), key=lambda s: (not self.started[s], self.busy[s]))
        self.busy[slot] += 1
        actor = self.actors[slot]
        future = asyncio.wrap_future(getattr(actor, method).remote(*args).future())
        future.add_done_callback(lambda _: self._done(slot))
        return ActorCall(method, args, slot, actor, future)

    def _done(self, slot: int) -> None:
        self.in_flight -= 1
        if slot >= 0:
            self.busy[slot] -= 1

    async def result(self, call: ActorCall, max_retries: int, what: str = "call") -> Any:
        """`call`'s result; if its actor dies, the call is made again on a fresh actor.

        A dead actor is replaced even when its call is not made again.

        Raises:
            Unavailable: the call lost `max_retries + 1` actors (`what` names it).
        """
        died = actor_died_errors() if call.slot >= 0 else ()
        for attempt in range(max_retries + 1):
            try:
                return await call.result
            except died as error:
                self.replace(call)
                if attempt == max_retries:
                    raise Unavailable(f"{what} lost {attempt + 1} workers: {error}") from error
                log.warning("%s worker died (%s); making its %s again",
                            self.worker.__name__, type(error).__name__, what)
                self.resubmitted += 1
                self.on_resubmit()
                call = self.call(call.method, *call.args)
        raise AssertionError("unreachable")

    def on_resubmit(self) -> None:
        """Called each time a call is made again because its actor died (for metrics)."""

    def replace(self, dead: ActorCall) -> None:
        """`dead`'s actor died: put a fresh one in its place (once, whoever notices first)."""
        import ray

        if dead.slot < 0 or self.actors[dead.slot] is not dead.actor:
            return
        log.warning("%s %d died; starting a new one", self.worker.__name__, dead.slot)
        ray.kill(dead.actor)
        self._put_actor(dead.slot)

    async def rebalance(self, alive: Collection[str]) -> int:
        """Move actors onto live nodes that hold none (see the module docstring).

        Only a "spread" pool moves. One actor at a time, until no move is left or one
        fails (its new actor did not come up on the empty node).

        Returns:
            How many actors moved.
        """
        moved = 0
        while self.placement == "spread" and len(self.actors) > 1:
            move = rebalance_move(self.nodes, alive)
            if move is None or not await self._move(*move):
                break
            moved += 1
        return moved

    async def _move(self, slot: int, target: str) -> bool:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        old = self.actors[slot]
        fresh = self._new_actor(
            scheduling_strategy=NodeAffinitySchedulingStrategy(target, soft=True))

        async def located() -> str:
            await fresh.__ray_ready__.remote()
            return await fresh.__ray_call__.remote(node_of_worker)

        try:
            node = await asyncio.wait_for(located(), MOVE_START_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as error:
            log.warning("%s: a new actor for node %s did not start (%s)",
                        self.worker.__name__, target, type(error).__name__ + f": {error}")
            ray.kill(fresh)
            return False
        if node != target or slot >= len(self.actors) or self.actors[slot] is not old:
            # placed elsewhere (the target had no room), or the slot changed meanwhile
            log.info("%s %d: the new actor for node %s started on %s or its slot changed; "
                     "not moved", self.worker.__name__, slot, target, node)
            ray.kill(fresh)
            return False
        self.actors[slot], self.started[slot], self.nodes[slot] = fresh, True, node
        old.__ray_terminate__.remote()  # exits once the calls already sent to it are done
        self.moved += 1
        log.info("%s %d moved to node %s", self.worker.__name__, slot, node)
        return True

    def shutdown(self) -> None:
        """Stop the actors."""
        if self.actors:
            import ray

            for actor in self.actors:
                ray.kill(actor)
        self.actors, self.busy, self.started, self._local = [], [], [], None
        self.nodes = []
