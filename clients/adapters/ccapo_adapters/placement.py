"""Whether a trainer's per-node placement groups fit the accelerators Ray has free, checked before it waits on them.

verl asks Ray for one STRICT_PACK placement group per node and pool (all of a group's GPUs on one
node) and waits on `pg.ready()` without a timeout; verl itself checks only the cluster's total.
With a scorer's replicas in the same cluster, replicas packed onto one node leave it short, and
the trainer would wait forever, silently. `check_groups_fit` raises instead, naming each node's
free GPUs and what to change. Deploy the scorer with `ccapo serve --ray --replicas-per-node K`
(K scorer GPUs on every node) so that it never comes to that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

__all__ = ["PlacementError", "check_groups_fit", "fits", "free_per_node"]


class PlacementError(RuntimeError):
    """The trainer's placement groups cannot all be placed on the free accelerators: it would wait forever."""


def fits(groups: Sequence[float], free: Sequence[float]) -> bool:
    """Whether every group (an amount that must sit on one node) fits the nodes' free amounts together.

    Exact (a search over assignments, the largest group first, nodes with equal free amounts tried
    once): a wrong "no" would stop a run that could start.
    """
    ordered = tuple(sorted((g for g in groups if g > 0), reverse=True))

    @cache
    def place(index: int, room: tuple[float, ...]) -> bool:
        if index == len(ordered):
            return True
        need = ordered[index]
        for node, left in enumerate(room):
            if left >= need and left not in room[:node]:
                rest = tuple(sorted((*room[:node], left - need, *room[node + 1 :]), reverse=True))
                if place(index + 1, rest):
                    return True
        return False

    return place(0, tuple(sorted(free, reverse=True)))


def check_groups_fit(
    groups: Mapping[str, Sequence[float]], free: Mapping[str, float], resource: str = "GPU"
) -> None:
    """Raise `PlacementError` unless the placement groups fit the free `resource` of each node.

    `groups` maps a pool's name to its groups' sizes (verl's `resource_pool_spec`: one group of
    `n_gpus_per_node` per node); `free` maps each node to its free amount of `resource`.
    """
    sizes = [size for pool in groups.values() for size in pool]
    if fits(sizes, list(free.values())):
        return
    wanted = ", ".join(f"{name}: {len(pool)} x {max(pool, default=0):g}" for name, pool in groups.items())
    nodes = ", ".join(f"{node}: {amount:g}" for node, amount in sorted(free.items())) or "none"
    raise PlacementError(
        f"the trainer needs placement groups of {resource} that each sit on one node ({wanted}), and the free "
        f"{resource} per node ({nodes}) cannot hold them: Ray would wait for them forever. Deploy the scorer with "
        f"`ccapo serve --ray --replicas-per-node K` (K = its {resource}s on each node) so that every node keeps the "
        "trainer's share, or lower the trainer's GPUs per node"
    )


def free_per_node(resource: str = "GPU") -> dict[str, float]:
    """The free amount of `resource` on each live node of the Ray cluster this process joined, by node address.

    Ray's own per-node view (`ray._private.state.available_resources_per_node`, which verl's
    resource check reads too): Ray has no public call for it.
    """
    import ray

    available = ray._private.state.available_resources_per_node()
    address = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
    named: dict[str, float] = {}
    for node_id, resources in available.items():
        if node_id in address:
            name = address[node_id] if address[node_id] not in named else f"{address[node_id]} ({node_id[:8]})"
            named[name] = float(resources.get(resource, 0.0))
    return named
