#!/usr/bin/env bash
# GRPO on GSM8K with counterfactual token weights (docs/integrations.md, "verl"), all in one Ray cluster:
# the scorer is a Ray Serve application on SCORER_GPUS of each node's GPUs, placed by Ray; verl takes the rest.
#   1. the cluster: `ray start --head` (then `ray start --address=HEAD:6379` on the other nodes), from the
#      trainer's environment: verl[vllm]==0.9.1, ccapo-client[ray], ccapo-adapters;
#   2. ccapo's own environment (pip install '.[ray]' from a clone, the cluster's Python and Ray versions) at the same
#      path on every node: CCAPO names its `ccapo` command; the scorer's replicas run on its Python;
#   3. verl's GSM8K data (verl's examples/data_preprocess/gsm8k.py, from verl's repository) in DATA_DIR.
# trainer.v1.trainer_mode=ccapo_separate_async generates on GPUs of its own: ROLLOUT_GPUS of each node.
# SCORER_URL: score over HTTP on a scorer already running there (provider remote) instead of deploying one.
# `run_gsm8k_grpo.sh --print-overrides` prints the overrides given to main_ccapo.py, one a line, and exits.
set -euo pipefail
cd "$(dirname "$0")"

GPUS_PER_NODE=${GPUS_PER_NODE:-8}  # GPUs on each node
NNODES=${NNODES:-1}
SCORER_GPUS=${SCORER_GPUS:-1}      # GPUs of each node for scorer replicas (one GPU each); verl gets the rest
ROLLOUT_GPUS=${ROLLOUT_GPUS:-0}    # GPUs of each node for a separate rollout (ccapo_separate_async only)
TRAINER_GPUS=$((GPUS_PER_NODE - SCORER_GPUS - ROLLOUT_GPUS))
MODEL=${MODEL:-Qwen/Qwen2.5-3B-Instruct}
DATA_DIR=${DATA_DIR:-$HOME/data/gsm8k}
PROMPTS_PER_GPU=${PROMPTS_PER_GPU:-32}        # train_batch_size per trainer GPU
MINI_BATCH_PER_GPU=${MINI_BATCH_PER_GPU:-8}   # ppo_mini_batch_size per trainer GPU
export CCAPO_SYNC_DIR=${CCAPO_SYNC_DIR:-/shared/ccapo-sync}  # on a filesystem every node shares

# Batch sizes per trainer GPU, so that verl's division of the batch over its GPUs holds for any count.
# The ccapo settings are given here, from this shell: verl reads its config in a Ray actor that
# has the environment `ray start` had, not this one.
overrides=(
  "actor_rollout_ref.model.path=$MODEL"
  "trainer.nnodes=$NNODES"
  "trainer.n_gpus_per_node=$TRAINER_GPUS"
  "data.train_files=$DATA_DIR/train.parquet"
  "data.val_files=$DATA_DIR/test.parquet"
  "data.train_batch_size=$((PROMPTS_PER_GPU * TRAINER_GPUS * NNODES))"
  "actor_rollout_ref.actor.ppo_mini_batch_size=$((MINI_BATCH_PER_GPU * TRAINER_GPUS * NNODES))"
  "counterfactual.sync_dir=$CCAPO_SYNC_DIR"
)
if [ "$ROLLOUT_GPUS" -gt 0 ]; then
  overrides+=("actor_rollout_ref.rollout.nnodes=$NNODES" "actor_rollout_ref.rollout.n_gpus_per_node=$ROLLOUT_GPUS")
fi
if [ -n "${SCORER_URL:-}" ]; then
  overrides+=("counterfactual.provider=remote" "counterfactual.server_url=$SCORER_URL")
fi
if [ "${1:-}" = "--print-overrides" ]; then
  printf '%s\n' "${overrides[@]}"
  exit 0
fi

export CCAPO_ADMIN_KEY=${CCAPO_ADMIN_KEY:?set an admin key: policy sync has the scorer load the policy}
export RAY_ADDRESS=${RAY_ADDRESS:-auto}
ray status >/dev/null 2>&1 || {
  echo "start the Ray cluster first: ray start --head (ray start --address=HEAD:6379 on other nodes)" >&2
  exit 1
}
[ -f "$DATA_DIR/train.parquet" ] || {
  echo "prepare GSM8K: python verl/examples/data_preprocess/gsm8k.py --local_save_dir $DATA_DIR" >&2
  exit 1
}

if [ -z "${SCORER_URL:-}" ]; then
  CCAPO=${CCAPO:?set CCAPO to the ccapo command of ccapo\'s own environment, e.g. /shared/ccapo-env/bin/ccapo}
  # The scorer: deployed into this cluster as the application "ccapo" (the config's counterfactual.ray_app), ready on return.
  "$CCAPO" serve --ray --detach --replicas "$((SCORER_GPUS * NNODES))" --replicas-per-node "$SCORER_GPUS" --replica-gpus 1 --model "$MODEL" \
    --model-root "$CCAPO_SYNC_DIR"
fi

python main_ccapo.py "${overrides[@]}" "$@"
