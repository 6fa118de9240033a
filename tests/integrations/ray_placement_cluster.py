"""Two Ray nodes on this machine, the scorer placed while only the first is up, and a verl-shaped trainer after.

    python ray_placement_cluster.py MODEL_DIR   # prints one JSON line per scenario

Ray's own multi-node harness (`ray.cluster_utils.Cluster`) starts real raylets, each with 4
logical GPUs (Ray's bookkeeping only: nothing runs on a GPU). As on a cluster whose nodes join
one after the other, the scorer's 2 replicas (1 GPU each) are placed while only the head node is
up; then the second node joins, and the trainer asks for what verl's trainer asks for with
`n_gpus_per_node=3, nnodes=2`: two STRICT_PACK placement groups of three 1-GPU bundles.

- "packed": two 1-GPU actors on the head node, where Serve's placement (a preference to spread,
  which packs onto the nodes that are up) put both replicas; plain actors, as the replicas'
  model is not what is placed.
- "per-node": the real Ray Serve application with `replicas_per_node=1`.

Per scenario: the free GPUs per node, how many of the trainer's groups were placed within
READY_S (verl waits forever), and `check_groups_fit`'s error, if any. It runs as its own process
with its own RAY_TMPDIR: a test process may hold another Ray already.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import ray
from ccapo_adapters.placement import PlacementError, check_groups_fit, free_per_node
from ccapo_server.ray_serve import build_application
from ccapo_server.settings import ServerSettings
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

GPUS_PER_NODE = 4
TRAINER = {"global_pool": [3, 3]}  # verl's resource_pool_spec for n_gpus_per_node=3, nnodes=2
READY_S = 10.0


@ray.remote(num_cpus=0, num_gpus=1)
class Replica:
    def ready(self) -> bool:
        return True


def trainer_outcome(name: str) -> dict[str, Any]:
    """What the trainer meets now: free GPUs per node, the check's verdict, and how many of its groups Ray places."""
    outcome: dict[str, Any] = {"scenario": name, "free": sorted(free_per_node().values()), "error": None}
    try:
        check_groups_fit(TRAINER, free_per_node())
    except PlacementError as err:
        outcome["error"] = str(err)
    groups = [placement_group([{"GPU": 1}] * size, strategy="STRICT_PACK") for size in TRAINER["global_pool"]]
    ready, _ = ray.wait([group.ready() for group in groups], num_returns=len(groups), timeout=READY_S)
    outcome["groups_placed"] = len(ready)
    for group in groups:
        remove_placement_group(group)
    return outcome


def packed(cluster: Cluster) -> dict[str, Any]:
    head = ray.get_runtime_context().get_node_id()
    on_head = NodeAffinitySchedulingStrategy(head, soft=False)
    replicas = [Replica.options(scheduling_strategy=on_head).remote() for _ in range(2)]
    ray.get([replica.ready.remote() for replica in replicas])
    second = cluster.add_node(num_cpus=1, num_gpus=GPUS_PER_NODE)
    outcome = trainer_outcome("packed")
    for replica in replicas:
        ray.kill(replica)
    cluster.remove_node(second)
    return outcome


def running_replicas(app: str) -> int:
    status = serve.status().applications.get(app)
    if status is None or "ScorerReplica" not in status.deployments:
        return 0
    return status.deployments["ScorerReplica"].replica_states.get("RUNNING", 0)


def per_node(cluster: Cluster, model: str) -> dict[str, Any]:
    application = build_application(
        ServerSettings(model=model), replicas=2, replica_cpus=0, replica_gpus=1, replicas_per_node=1
    )
    deploying = threading.Thread(target=serve.run, args=(application,), kwargs={"name": "per-node"})
    deploying.start()
    deadline = time.monotonic() + 600
    while running_replicas("per-node") < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)  # Serve places the second replica within its next control loop, if it may
    waited = running_replicas("per-node")
    cluster.add_node(num_cpus=1, num_gpus=GPUS_PER_NODE)
    deploying.join(600)
    outcome = trainer_outcome("per-node")
    return {**outcome, "running_before_second_node": waited, "replicas": running_replicas("per-node")}


def main(model: str) -> None:
    head = {"num_cpus": 2, "num_gpus": GPUS_PER_NODE, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        print(json.dumps(packed(cluster)), flush=True)
        serve.start(http_options={"host": "127.0.0.1", "port": 0})
        print(json.dumps(per_node(cluster, model)), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
