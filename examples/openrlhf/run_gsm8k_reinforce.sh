#!/usr/bin/env bash
# REINFORCE++-baseline (GRPO-style group baseline) on GSM8K with counterfactual token weights
# (docs/integrations.md, "OpenRLHF"), all in one Ray cluster: the scorer is a Ray Serve application on
# SCORER_GPUS of each node's GPUs, placed by Ray; OpenRLHF's actor, reference and vLLM engines take the rest.
#   1. the cluster: `ray start --head` (then `ray start --address=HEAD:6379` on the other nodes), from the
#      trainer's environment: openrlhf==0.11.2 with its GPU stack, ccapo-client[ray], ccapo-adapters;
#   2. ccapo's own environment (pip install '.[ray]' from a clone, the cluster's Ray version) at the same path on every
#      node: CCAPO names its `ccapo` command; the scorer's replicas run on its Python.
# The scorer elsewhere, over HTTP: set counterfactual.json's provider to "remote" and server_url to an address every
# Ray node reaches (e.g. http://scorer-host:8000), and leave SCORER_GPUS for the trainer (SCORER_GPUS=0).
# `run_gsm8k_reinforce.sh --print-args` prints the arguments given to train_ppo_ccapo.py, one a line, and exits.
set -euo pipefail
cd "$(dirname "$0")"

GPUS_PER_NODE=${GPUS_PER_NODE:-8}  # GPUs on each node
SCORER_GPUS=${SCORER_GPUS:-1}      # scorer replicas, one GPU each
TRAINER_GPUS=$((GPUS_PER_NODE - SCORER_GPUS))
ACTOR_GPUS=$((TRAINER_GPUS / 2))   # half for the actor (DeepSpeed), one for the reference, the rest for vLLM
VLLM_ENGINES=$((TRAINER_GPUS - ACTOR_GPUS - 1))
MODEL=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}
export CCAPO_SYNC_DIR=${CCAPO_SYNC_DIR:-/shared/ccapo-sync}  # OpenRLHF saves the policy here; the scorer loads it

args=(
  --counterfactual counterfactual.json
  --actor.model_name_or_path "$MODEL"
  --actor.num_gpus_per_node "$ACTOR_GPUS" --ref.num_gpus_per_node 1 --vllm.num_engines "$VLLM_ENGINES"
  --algo.advantage.estimator reinforce_baseline --rollout.n_samples_per_prompt 8
  --data.prompt_dataset openai/gsm8k --data.prompt_split train --data.input_key question
  --data.label_key answer --data.apply_chat_template
  --reward.remote_url "$PWD/gsm8k_reward.py"
  --rollout.batch_size $((16 * ACTOR_GPUS)) --train.batch_size $((16 * ACTOR_GPUS)) --rollout.max_new_tokens 1024
  --ckpt.output_dir "$CCAPO_SYNC_DIR"
)
if [ "${1:-}" = "--print-args" ]; then
  printf '%s\n' "${args[@]}"
  exit 0
fi

export CCAPO_ADMIN_KEY=${CCAPO_ADMIN_KEY:?set an admin key: policy sync has the scorer load the policy}
export RAY_ADDRESS=${RAY_ADDRESS:-auto}
ray status >/dev/null 2>&1 || {
  echo "start the Ray cluster first: ray start --head (ray start --address=HEAD:6379 on other nodes)" >&2
  exit 1
}
if [ "$SCORER_GPUS" -gt 0 ]; then
  CCAPO=${CCAPO:?set CCAPO to the ccapo command of ccapo\'s own environment, e.g. /shared/ccapo-env/bin/ccapo}
  # The scorer: deployed into this cluster as the application "ccapo" (counterfactual.json's ray_app), ready on return.
  "$CCAPO" serve --ray --detach --replicas "$SCORER_GPUS" --replica-gpus 1 --model "$MODEL" --model-root "$CCAPO_SYNC_DIR"
fi

python train_ppo_ccapo.py "${args[@]}" "$@"
