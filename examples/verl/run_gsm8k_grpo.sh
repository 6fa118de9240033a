#!/usr/bin/env bash
# GRPO on GSM8K with counterfactual token weights, on one node of 8 GPUs (docs/integrations.md, "verl").
# 1. the scorer: a ccapo server on GPUs of its own (or `ccapo serve --ray`), reachable from every node,
#    loading policies from the shared sync directory;
# 2. verl's GSM8K data (verl's examples/data_preprocess/gsm8k.py, from verl's repository);
# 3. training, in an environment with verl 0.9.1, ccapo-client and ccapo-adapters (make verl-env + CUDA torch).
set -euo pipefail
cd "$(dirname "$0")"

export CCAPO_SYNC_DIR=${CCAPO_SYNC_DIR:-/shared/ccapo-sync}
export CCAPO_ADMIN_KEY=${CCAPO_ADMIN_KEY:?set the scorer\'s admin key (policy sync loads checkpoints)}
export CCAPO_SERVER_URL=${CCAPO_SERVER_URL:-http://127.0.0.1:8000}
MODEL=${MODEL:-Qwen/Qwen2.5-3B-Instruct}

if ! curl -sf "$CCAPO_SERVER_URL/readyz" >/dev/null; then
  echo "start the scorer first, e.g. on its own GPU of this node:" >&2
  echo "  CUDA_VISIBLE_DEVICES=7 CCAPO_ADMIN_KEY=\$CCAPO_ADMIN_KEY CCAPO_MODEL_ROOTS=$CCAPO_SYNC_DIR \\" >&2
  echo "    ccapo serve --model $MODEL --host 0.0.0.0 --port 8000" >&2
  exit 1
fi
[ -f "$HOME/data/gsm8k/train.parquet" ] || {
  echo "prepare GSM8K: python verl/examples/data_preprocess/gsm8k.py --local_save_dir ~/data/gsm8k" >&2
  exit 1
}

python main_ccapo.py \
  actor_rollout_ref.model.path="$MODEL" \
  trainer.n_gpus_per_node=7 \
  "$@"
