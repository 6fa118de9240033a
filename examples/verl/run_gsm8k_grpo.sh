#!/usr/bin/env bash
# GRPO on GSM8K with counterfactual token weights (docs/integrations.md, "verl"), all in one Ray cluster:
# the scorer is a Ray Serve application on SCORER_GPUS of each node's GPUs, placed by Ray; verl takes the rest.
#   1. the cluster: `ray start --head` (then `ray start --address=HEAD:6379` on the other nodes), from the
#      trainer's environment: verl[vllm]==0.9.1, ccapo-client[ray], ccapo-adapters;
#   2. ccapo's own environment (pip install 'ccapo[ray]', the cluster's Python and Ray versions) at the same
#      path on every node: CCAPO names its `ccapo` command; the scorer's replicas run on its Python;
#   3. verl's GSM8K data (verl's examples/data_preprocess/gsm8k.py, from verl's repository).
# `run_gsm8k_grpo.sh --print-overrides` prints the overrides given to main_ccapo.py, one a line, and exits.
set -euo pipefail
cd "$(dirname "$0")"

GPUS_PER_NODE=${GPUS_PER_NODE:-8}  # GPUs on each node
NNODES=${NNODES:-1}
SCORER_GPUS=${SCORER_GPUS:-1}      # GPUs of each node for scorer replicas (one GPU each); verl gets the rest
TRAINER_GPUS=$((GPUS_PER_NODE - SCORER_GPUS))
MODEL=${MODEL:-Qwen/Qwen2.5-3B-Instruct}
export CCAPO_SYNC_DIR=${CCAPO_SYNC_DIR:-/shared/ccapo-sync}  # on a filesystem every node shares

# Batch sizes per trainer GPU, so that verl's division of the batch over its GPUs holds for any count.
overrides=(
  "actor_rollout_ref.model.path=$MODEL"
  "trainer.nnodes=$NNODES"
  "trainer.n_gpus_per_node=$TRAINER_GPUS"
  "data.train_batch_size=$((32 * TRAINER_GPUS * NNODES))"
  "actor_rollout_ref.actor.ppo_mini_batch_size=$((8 * TRAINER_GPUS * NNODES))"
)
if [ "${1:-}" = "--print-overrides" ]; then
  printf '%s\n' "${overrides[@]}"
  exit 0
fi

export CCAPO_ADMIN_KEY=${CCAPO_ADMIN_KEY:?set an admin key: policy sync has the scorer load the policy}
export RAY_ADDRESS=${RAY_ADDRESS:-auto}
CCAPO=${CCAPO:?set CCAPO to the ccapo command of ccapo\'s own environment, e.g. /shared/ccapo-env/bin/ccapo}
ray status >/dev/null 2>&1 || {
  echo "start the Ray cluster first: ray start --head (ray start --address=HEAD:6379 on other nodes)" >&2
  exit 1
}
[ -f "$HOME/data/gsm8k/train.parquet" ] || {
  echo "prepare GSM8K: python verl/examples/data_preprocess/gsm8k.py --local_save_dir ~/data/gsm8k" >&2
  exit 1
}

# The scorer: deployed into this cluster as the application "ccapo" (the config's counterfactual.ray_app), ready on return.
"$CCAPO" serve --ray --detach --replicas "$((SCORER_GPUS * NNODES))" --replicas-per-node "$SCORER_GPUS" --replica-gpus 1 \
  --model "$MODEL" --model-root "$CCAPO_SYNC_DIR"

python main_ccapo.py "${overrides[@]}" "$@"
