"""Dependency groups for structured pruning, traced with torch.fx.

Every tensor in the traced graph carries a *layout*: its channel dimension cut into
segments, each segment a slice of one *channel space*. A Conv or Linear opens a new space
for its outputs; BatchNorm, activations and pooling pass the layout through; an addition
ties the spaces of its operands together (residuals); a concatenation joins layouts; a
flatten repeats each channel H*W times. Spaces that touch the graph inputs, the graph
outputs or an operator we do not understand are frozen. Each remaining space is a `Group`:
all the (module, dim) slices that must lose the same channels.

Pruning goes plan -> check -> apply:

    >>> from augserve.kernels.zoo import resnet20  # doctest: +SKIP
    >>> graph = ChannelGraph(model, (torch.randn(1, 3, 32, 32),))  # doctest: +SKIP
    >>> plan = graph.plan(0.5)  # doctest: +SKIP
    >>> graph.check(plan); graph.apply(plan)  # doctest: +SKIP
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from augserve.kernels.prune import scores as _scores

_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Sigmoid, nn.Tanh,
    nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_PASS_FUNCTIONS = {
    torch.relu, torch.nn.functional.relu, torch.sigmoid, torch.tanh,
    torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.max_pool2d,
    torch.nn.functional.avg_pool2d, torch.nn.functional.silu, torch.nn.functional.gelu,
}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "contiguous", "clone", "detach"}
_ELEMENTWISE = {operator.add, operator.iadd, operator.mul, torch.add, torch.mul}
_ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_"}


@dataclass(frozen=True)
class Node:
    """A module whose parameters can lose channels: `kind` is "conv", "bn" or "linear"."""

    name: str
    kind: str


@dataclass(frozen=True)
class Dependency:
    """One slice of a module's dim tied to a group.

    Attributes:
        node: the module.
        dim: "out" (weight dim 0, bias, BN stats) or "in" (weight dim 1).
        offset: where the group's channels start along that dim (after a concatenation).
        repeat: features per channel along that dim (after a flatten of H*W positions).
    """

    node: Node
    dim: str
    offset: int = 0
    repeat: int = 1


@dataclass(frozen=True)
class Group:
    """Channels that must be pruned together: `size` channels, every `deps` slice."""

    size: int
    deps: tuple[Dependency, ...]
    prunable: bool


@dataclass(frozen=True)
class PrunePlan:
    """Which channels each prunable group keeps: group index -> sorted kept channel ids."""

    keep: tuple[tuple[int, tuple[int, ...]], ...]

    def as_dict(self) -> dict[int, tuple[int, ...]]:
        """The plan as {group index: kept channels}."""
        return dict(self.keep)


@dataclass
class _Spaces:
    parent: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    frozen: list[bool] = field(default_factory=list)

    def new(self, size: int, frozen: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.frozen.append(frozen)
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.frozen[ra] = self.frozen[ra] or self.frozen[rb]

    def freeze(self, a: int) -> None:
        self.frozen[self.find(a)] = True


# A layout: the channel dim as segments (space id, channels, features per channel).
Layout = tuple[tuple[int, int, int], ...]


class ChannelGraph:
    """The channel dependency groups of a model, and the only object that prunes it."""

    def __init__(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> None:
        """Trace `model` with torch.fx and propagate shapes with `example_inputs`."""
        self.model = model
        self.traced = fx.symbolic_trace(model)
        was_training = model.training
        self.traced.eval()
        with torch.no_grad():
            ShapeProp(self.traced).propagate(*example_inputs)
        self.traced.train(was_training)
        self._spaces = _Spaces()
        self._deps: list[tuple[int, Dependency]] = []
        self._trace()
        self.groups = self._collect()
        self._applied = False

    # -- tracing ---------------------------------------------------------------------------
    def _fresh(self, node: fx.Node, frozen: bool) -> Layout:
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        channels = int(shape[1]) if shape is not None and len(shape) >= 2 else 1
        return ((self._spaces.new(channels, frozen), channels, 1),)

    def _freeze(self, layout: Layout | None) -> None:
        for space, _, _ in layout or ():
            self._spaces.freeze(space)

    def _tie(self, node: Node, dim: str, layout: Layout) -> None:
        offset = 0
        for space, channels, repeat in layout:
            self._deps.append((space, Dependency(node, dim, offset, repeat)))
            offset += channels * repeat

    def _unify(self, layouts: list[Layout]) -> Layout:
        first = layouts[0]
        for other in layouts[1:]:
            if [(c, r) for _, c, r in other] != [(c, r) for _, c, r in first]:
                for layout in layouts:
                    self._freeze(layout)
                return first
            for (a, _, _), (b, _, _) in zip(first, other, strict=True):
                self._spaces.union(a, b)
        return first

    def _trace(self) -> None:
        layouts: dict[fx.Node, Layout] = {}
        self._layouts = layouts
        modules = dict(self.traced.named_modules())
        for node in self.traced.graph.nodes:
            inputs = [a for a in node.all_input_nodes if a in layouts]
            head = node.args[0] if node.args else None
            first = layouts.get(head) if isinstance(head, fx.Node) else None
            out: Layout | None = None
            if node.op == "placeholder":
                out = self._fresh(node, frozen=True)
            elif node.op == "output":
                for a in inputs:
                    self._freeze(layouts[a])
            elif node.op == "call_module":
                out = self._module(node, modules[node.target], first)
            elif node.op == "call_function" or node.op == "call_method":
                out = self._function(node, first, [layouts[a] for a in inputs])
            elif node.op == "get_attr":
                out = self._fresh(node, frozen=True)
            if out is None and node.op not in ("output",):
                for a in inputs:
                    self._freeze(layouts[a])
                out = self._fresh(node, frozen=True)
            if out is not None:
                layouts[node] = out

    def _module(self, node: fx.Node, module: nn.Module, first: Layout | None) -> Layout | None:
        name = str(node.target)
        if first is None:
            return None
        if isinstance(module, nn.Conv2d):
            if module.groups == 1:
                self._tie(Node(name, "conv"), "in", first)
                out = self._fresh(node, frozen=False)
                self._tie(Node(name, "conv"), "out", out)
                return out
            if module.groups == module.in_channels == module.out_channels:
                self._tie(Node(name, "conv"), "out", first)  # depthwise: in follows out
                return first
            return None
        if isinstance(module, nn.Linear):
            self._tie(Node(name, "linear"), "in", first)
            out = self._fresh(node, frozen=False)
            self._tie(Node(name, "linear"), "out", out)
            return out
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            self._tie(Node(name, "bn"), "out", first)
            return first
        if isinstance(module, _PASS_MODULES):
            return first
        if isinstance(module, nn.Flatten) and module.start_dim == 1:
            return self._flatten(node.args[0], first)
        return None

    def _flatten(self, source: fx.Node, layout: Layout) -> Layout | None:
        shape = source.meta["tensor_meta"].shape
        spatial = 1
        for s in shape[2:]:
            spatial *= int(s)
        return tuple((space, c, r * spatial) for space, c, r in layout)

    def _function(self, node: fx.Node, first: Layout | None, ins: list[Layout]) -> Layout | None:
        target = node.target
        if target is torch.cat:
            return self._cat(node)
        if first is None:
            return self._fresh(node, frozen=True) if not ins else None
        if target in _PASS_FUNCTIONS or target in _PASS_METHODS:
            return first
        if target in _ELEMENTWISE or target in _ELEMENTWISE_METHODS:
            tensors = [a for a in node.args[:2] if isinstance(a, fx.Node)]
            return self._unify([self._layouts[a] for a in tensors])
        if target in (torch.flatten, "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return self._flatten(node.args[0], first) if start == 1 else None
        return None

    def _cat(self, node: fx.Node) -> Layout | None:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        tensors = node.args[0]
        if not all(isinstance(a, fx.Node) and a in self._layouts for a in tensors):
            return None
        parts = [self._layouts[a] for a in tensors]
        rank = len(node.meta["tensor_meta"].shape)
        if dim in (1, 1 - rank):
            return tuple(seg for part in parts for seg in part)
        return self._unify(parts)

    # -- groups ----------------------------------------------------------------------------
    def _collect(self) -> tuple[Group, ...]:
        by_root: dict[int, list[Dependency]] = defaultdict(list)
        for space, dep in self._deps:
            by_root[self._spaces.find(space)].append(dep)
        groups = []
        for root, deps in by_root.items():
            has_producer = any(d.dim == "out" and d.node.kind != "bn" for d in deps)
            prunable = has_producer and not self._spaces.frozen[root]
            groups.append(Group(self._spaces.size[root], tuple(dict.fromkeys(deps)), prunable))
        return tuple(groups)

    def group_scores(self, group: Group, criterion: str = "l1") -> torch.Tensor:
        """Channel importance within `group` (size,), summed over its producers.

        `criterion` is "l1" or "l2" (filter norms of the Conv/Linear outputs, each layer
        normalized by its mean) or "bn" (|gamma| of the group's BatchNorms).
        """
        total = torch.zeros(group.size)
        for dep in group.deps:
            module = self.model.get_submodule(dep.node.name)
            if dep.dim != "out":
                continue
            if criterion == "bn" and dep.node.kind == "bn":
                score = _scores.bn_scale_scores(module)
            elif criterion in ("l1", "l2") and dep.node.kind != "bn":
                score = _scores.filter_scores(module.weight, criterion)
            else:
                continue
            score = score[dep.offset : dep.offset + group.size]
            total += score / score.mean().clamp_min(1e-12)
        return total

    def plan(self, ratio: float, criterion: str = "l1", round_to: int = 1) -> PrunePlan:
        """Keep the top (1 - ratio) channels of every prunable group by `criterion`.

        `round_to` rounds the kept count up to a multiple (e.g. 8 or 16 for SIMD width).
        """
        self._require_fresh()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        if round_to < 1:
            raise ValueError(f"round_to must be >= 1, got {round_to}")
        keep = []
        for index, group in enumerate(self.groups):
            if not group.prunable:
                continue
            n_keep = max(1, round(group.size * (1.0 - ratio)))
            n_keep = min(group.size, -(-n_keep // round_to) * round_to)
            top = torch.topk(self.group_scores(group, criterion), n_keep).indices
            keep.append((index, tuple(sorted(int(i) for i in top))))
        return PrunePlan(tuple(keep))

    def check(self, plan: PrunePlan) -> None:
        """Raise ValueError unless every entry names a prunable group with valid channels."""
        self._require_fresh()
        for index, kept in plan.keep:
            if not 0 <= index < len(self.groups):
                raise ValueError(f"plan names group {index}; there are {len(self.groups)}")
            group = self.groups[index]
            if not group.prunable:
                raise ValueError(f"group {index} is frozen (touches inputs/outputs/unknown ops)")
            if not kept or list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= group.size:
                raise ValueError(f"group {index}: kept channels must be sorted, unique, in range")

    def removed(self, plan: PrunePlan) -> dict[tuple[str, str], list[int]]:
        """(module name, dim) -> sorted feature indices that `plan` removes along that dim."""
        out: dict[tuple[str, str], set[int]] = defaultdict(set)
        for index, kept in plan.keep:
            group = self.groups[index]
            gone = sorted(set(range(group.size)) - set(kept))
            for dep in group.deps:
                for c in gone:
                    start = dep.offset + c * dep.repeat
                    out[(dep.node.name, dep.dim)].update(range(start, start + dep.repeat))
        return {key: sorted(value) for key, value in out.items()}

    def apply(self, plan: PrunePlan) -> nn.Module:
        """Check `plan`, then physically remove its channels from the model (in place)."""
        from augserve.kernels.prune.shrink import shrink_modules

        self.check(plan)
        shrink_modules(self.model, self.removed(plan))
        self._applied = True
        return self.model

    def _require_fresh(self) -> None:
        if self._applied:
            raise ValueError("this graph was already applied; trace a new ChannelGraph")
