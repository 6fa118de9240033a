#!/usr/bin/env bash
# REINFORCE++-baseline (GRPO-style group baseline) on GSM8K with counterfactual token weights, one node
# of 8 GPUs (docs/integrations.md, "OpenRLHF"). Start the scorer first, on a GPU of its own:
#   CUDA_VISIBLE_DEVICES=7 ccapo serve --model Qwen/Qwen2.5-1.5B-Instruct --host 0.0.0.0 --port 8000
# and point examples/openrlhf/ccapo.json's server_url at it (reachable from every Ray node).
set -euo pipefail
cd "$(dirname "$0")"
MODEL=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}

python train_ppo_ccapo.py --ccapo ccapo.json \
  --actor.model_name_or_path "$MODEL" \
  --actor.num_gpus_per_node 4 --ref.num_gpus_per_node 1 --vllm.num_engines 2 \
  --algo.advantage.estimator reinforce_baseline --rollout.n_samples_per_prompt 8 \
  --data.prompt_dataset openai/gsm8k --data.prompt_split train --data.input_key question \
  --data.label_key answer --data.apply_chat_template \
  --reward.remote_url "$PWD/gsm8k_reward.py" \
  --rollout.batch_size 128 --train.batch_size 128 --rollout.max_new_tokens 1024 \
  --ckpt.output_dir "${OUTPUT_DIR:-./ckpt/gsm8k-ccapo}" \
  "$@"
