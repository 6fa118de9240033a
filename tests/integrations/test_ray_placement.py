"""Scorer replicas placed so that a verl trainer's per-node placement groups fit, or a clear error before verl waits.

`ray_placement_cluster.py` runs two real Ray nodes (4 logical GPUs each), places the scorer's two
replicas while only the first is up, then asks for verl's two STRICT_PACK groups of 3 GPUs. Packed
on the first node (where Serve's preference to spread put them), one group can never be placed
and `check_groups_fit` says so; the real Serve application with `replicas_per_node=1` keeps its
second replica waiting for the second node, and both groups are placed. Cost: one subprocess,
about a minute on 2 quiet cores (its Ray nodes and two replicas' start), marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ccapo_adapters.placement import PlacementError, check_groups_fit, fits

SCRIPT = Path(__file__).with_name("ray_placement_cluster.py")


@pytest.mark.slow
def test_verls_groups_fit_when_replicas_are_placed_per_node_and_a_clear_error_otherwise(tiny_model_dir):
    with tempfile.TemporaryDirectory(prefix="rp", dir="/tmp") as ray_tmp:  # short: Ray's socket paths
        done = subprocess.run(
            [sys.executable, str(SCRIPT), tiny_model_dir],
            env={**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""},
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    packed, per_node = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    # Both replicas on the node that was up: the trainer would wait forever, and the check says so first.
    assert packed["free"] == [2.0, 4.0] and packed["groups_placed"] == 1
    assert "--replicas-per-node" in packed["error"] and "wait for them forever" in packed["error"]
    # One replica per node: the second waited for the second node, every node keeps 3 GPUs, verl's groups fit.
    assert per_node["running_before_second_node"] == 1 and per_node["replicas"] == 2
    assert per_node["free"] == [3.0, 3.0] and per_node["groups_placed"] == 2 and per_node["error"] is None


@pytest.mark.parametrize(
    ("groups", "free", "expected"),
    [
        ([3, 3], [3, 3], True),
        ([3, 3], [2, 4], False),
        ([3, 3], [6], True),
        ([4, 2, 2], [4, 4], True),
        ([3, 3, 2], [4, 4], False),
        ([2, 2, 2, 2], [3, 3, 3], False),
        ([], [], True),
    ],
)
def test_fits_is_exact(groups, free, expected):
    assert fits(groups, free) is expected


def test_the_error_names_each_nodes_free_gpus():
    with pytest.raises(PlacementError, match=r"10\.0\.0\.1: 2, 10\.0\.0\.2: 4"):
        check_groups_fit({"global_pool": [3, 3]}, {"10.0.0.2": 4, "10.0.0.1": 2})
