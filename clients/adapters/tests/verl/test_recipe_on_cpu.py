"""examples/verl end to end on CPU, as a user runs it: a Ray cluster, then run_gsm8k_grpo.sh itself, twice.

1. `ray start --head` in its own process, with its own temp dir and ports, and none of the script's
   variables (the cluster exists before the script, as on a real cluster). What it does get is the
   machine's description: verl's CPU platform and CPU rollout (`cpu_platform.py`, `cpu_rollout.py`),
   and logical GPUs for Ray's resource pools.
2. `run_gsm8k_grpo.sh` with a tiny GSM8K-style policy and parquet and small batches through its own
   variables, plus overrides: it deploys the scorer with `ccapo serve --ray --detach` (the main
   environment's `ccapo`) into that cluster and runs main_ccapo.py -> verl's `run_ppo` -> ccapo's
   task runner -> verl's v1 sync trainer, which scores through the Ray Serve app (`provider: ray`).
3. The first launch runs step 1 (sync before the update, a checkpoint after it); the second resumes
   from `global_step_1` (`trainer.resume_mode=auto`) and runs step 2, scoring over HTTP on the
   scorer the first launch deployed (the script's `SCORER_URL`: `provider: remote`), so both ways
   the script reaches a scorer run, and the second launch does not redeploy it.

What verl cannot run here is left out by configuration and said so: the reference model
(`use_kl_loss=false`: verl's FSDP2 reference pins its offloaded parameters,
`workers/engine/fsdp/transformer_impl.py` `CPUOffloadPolicy(pin_memory=True)`, which torch refuses
without an accelerator), flash-attention and packed sequences (CUDA kernels), and vLLM (the CPU
rollout generates instead).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import torch
from adapter_traces import COMPLETIONS
from cpu_platform import verl_cpu_env
from cpu_workers import CPU_MODEL_OVERRIDES
from scoring_server import ADMIN_KEY, main_python

ROOT = Path(__file__).resolve().parents[4]
SCRIPT = ROOT / "examples" / "verl" / "run_gsm8k_grpo.sh"
QUESTION = "Q: What is 4 * 6 - 3?"
# Two answers to one question, one right: the policy learns both, so a group almost always has rewards 1 and 0.
ANSWERS = [COMPLETIONS[1], COMPLETIONS[1].replace("#### 21", "#### 20")]
TEMPERATURE = 0.5  # the rollout's: sharp enough that a briefly taught policy rarely strays, the last digit a coin flip
RUN = (
    *CPU_MODEL_OVERRIDES,
    "actor_rollout_ref.actor.use_kl_loss=false",  # see the module docstring
    "actor_rollout_ref.rollout.n=8",  # a group of 8 all right or all wrong: 1 in 128
    f"actor_rollout_ref.rollout.temperature={TEMPERATURE}",
    "actor_rollout_ref.rollout.agent.num_workers=1",  # one agent-loop process, not eight, on two cores
    "reward.num_workers=1",  # one reward-loop process, not eight
    "data.dataloader_num_workers=0",  # the task runner loads the four rows itself, not in eight processes
    "data.max_prompt_length=64",
    "data.max_response_length=48",
    "data.filter_overlong_prompts=false",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    "ray_kwargs.ray_init.num_cpus=null",
    "trainer.save_freq=1",
    "trainer.test_freq=-1",
    "trainer.val_before_train=false",
    "trainer.logger=[console,file]",
    "counterfactual.sync_every=1",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_env() -> dict[str, str]:
    """This machine as any process sees it: no ccapo settings, verl's CPU platform, Ray without auth tokens."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CCAPO_", "RAY_"))}
    return {**env, **verl_cpu_env(), "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def policy_and_data(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny llama taught the two answers, and verl's GSM8K parquet layout
    (`examples/data_preprocess/gsm8k.py`) with that question.

    Taught until nearly every sample (at the rollout's temperature) is one of the two answers: then
    a group holds right and wrong answers (rewards 1 and 0, so advantages that are not zero) and
    every completion carries the answer marker the scorer needs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy, data = tmp_path_factory.mktemp("policy"), tmp_path_factory.mktemp("gsm8k")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": QUESTION}]
    chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    prompt = list(chat["input_ids"])
    rows = [prompt + tokenizer(a, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for a in ANSWERS]
    ids = torch.tensor(rows)
    labels = ids.clone()
    labels[:, : len(prompt)] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    floor = math.log(2) / int((labels[0] != -100).sum())  # the last digit stays a coin flip between the two
    for _ in range(300):
        loss = model(input_ids=ids, labels=labels).loss
        if loss.item() < floor + 0.02:  # about 100 steps; then 64 of 64 samples answered at TEMPERATURE
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    samples = model.generate(
        torch.tensor([prompt] * 8),
        do_sample=True,
        temperature=TEMPERATURE,
        max_new_tokens=48,
        pad_token_id=tokenizer.eos_token_id,
    )
    answered = sum("#### 2" in tokenizer.decode(row[len(prompt) :]) for row in samples)
    assert answered >= 7, f"the tiny policy answers {answered} of 8 samples after a loss of {loss.item():.3f}"
    model.save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    record = {"data_source": "openai/gsm8k", "prompt": messages, "ability": "math"}
    records = [
        {
            **record,
            "reward_model": {"style": "rule", "ground_truth": "21"},
            "extra_info": {"split": "train", "index": i},
        }
        for i in range(4)
    ]
    pd.DataFrame(records).to_parquet(data / "train.parquet")
    pd.DataFrame(records[:2]).to_parquet(data / "test.parquet")
    return policy, data


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """`ray start --head` in its own process, temp dir and ports; stopped by its own processes' ids."""
    root = tmp_path_factory.mktemp("cluster")
    temp_dir, port = Path("/tmp") / f"ccapo-verl-{os.getpid()}", free_port()
    ports = {
        flag: str(free_port())
        for flag in (
            "--ray-client-server-port",
            "--dashboard-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
            "--node-manager-port",
            "--object-manager-port",
        )
    }
    ray = str(Path(sys.executable).with_name("ray"))
    env = {**machine_env(), "VERL_FILE_LOGGER_ROOT": str(root / "metrics")}
    command = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", f"--port={port}"]
    command += ["--num-cpus=64", "--num-gpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    command += [f"{flag}={value}" for flag, value in ports.items()]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    try:
        yield {"address": f"127.0.0.1:{port}", "metrics": root / "metrics"}
    finally:
        stop(str(temp_dir))


def stop(temp_dir: str) -> None:
    """End the cluster's processes (found by its own temp dir), never anyone else's Ray."""
    listed = subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True).stdout
    found = [int(pid) for pid in listed.split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(alive(pid) for pid in found):
            time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def launch(
    cluster: dict, policy: Path, data: Path, run: Path, *overrides: str, scorer_url: str | None = None
) -> subprocess.CompletedProcess:
    """run_gsm8k_grpo.sh as a user runs it: its variables, the cluster's address, extra overrides;
    with `scorer_url`, on a scorer already running there instead of deploying one."""
    env = {
        **machine_env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `python`, `ray`: verl's env
        "RAY_ADDRESS": cluster["address"],
        "CCAPO": str(Path(main_python()).with_name("ccapo")),
        "CCAPO_ADMIN_KEY": ADMIN_KEY,
        "CCAPO_SYNC_DIR": str(run / "sync"),
        "CCAPO_PORT": str(cluster.setdefault("http_port", free_port())),  # the Serve proxy's port, not 8000
        "GPUS_PER_NODE": "2",  # logical GPUs: one for verl, one for the scorer's replica
        "SCORER_GPUS": "1",
        "MODEL": str(policy),
        "DATA_DIR": str(data),
        "PROMPTS_PER_GPU": "2",
        "MINI_BATCH_PER_GPU": "2",
        **({"SCORER_URL": scorer_url} if scorer_url else {}),
    }
    where = [f"trainer.default_local_dir={run / 'checkpoints'}", f"hydra.run.dir={run / 'hydra'}"]
    command = ["bash", str(SCRIPT), *RUN, *where, *overrides]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def metrics(cluster: dict, experiment: str) -> dict[int, dict]:
    path = cluster["metrics"] / "ccapo_verl" / f"{experiment}.jsonl"
    return {line["step"]: line["data"] for line in map(json.loads, path.read_text().splitlines())}


def test_the_recipe_trains_syncs_checkpoints_and_resumes_through_verls_controller(cluster, policy_and_data, tmp_path):
    policy, data = policy_and_data
    run = tmp_path / "run"
    first = launch(cluster, policy, data, run, "trainer.total_training_steps=1", "trainer.experiment_name=first")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    step_1 = run / "checkpoints" / "global_step_1"
    saved = {p.relative_to(step_1): p.stat().st_size for p in step_1.rglob("*") if p.is_file()}
    scorer_url = f"http://127.0.0.1:{cluster['http_port']}"  # the Serve proxy in front of the first launch's scorer
    resume = ("trainer.total_training_steps=2", "trainer.experiment_name=second")
    second = launch(cluster, policy, data, run, *resume, scorer_url=scorer_url)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    # verl resumed from global_step_1: the second launch ran step 2 only, and left global_step_1 as it was.
    first_steps, second_steps = metrics(cluster, "first"), metrics(cluster, "second")
    assert sorted(first_steps) == [1] and sorted(second_steps) == [2]
    assert {p.relative_to(step_1): p.stat().st_size for p in step_1.rglob("*") if p.is_file()} == saved
    assert (run / "checkpoints" / "global_step_2").is_dir()
    # Each step was scored by the scorer holding the policy it updated: every sync went live (lag 0),
    # the scorer serves the last synced update, and only its folder is left.
    steps = {**first_steps, **second_steps}
    assert all(steps[step]["ccapo/policy_lag_steps"] == 0.0 for step in (1, 2))
    assert sorted(os.listdir(run / "sync")) == ["ccapo_policy_update_1"]
    served = httpx.get(f"{scorer_url}/v1/model", timeout=30).json()
    assert served["id"] == "ccapo_policy_update_1/huggingface", served  # named from the scorer's model root
    # The rows were scored, and the weighted loss is not the uniform one: tokens of the same completion
    # got different weights where the advantages are not zero.
    for step in (1, 2):
        data = steps[step]
        assert data["ccapo/weights/scored_share"] > 0, data
        assert data["ccapo/weights/max"] > data["ccapo/weights/min"], data
        assert data["critic/advantages/max"] > 0 > data["critic/advantages/min"], data
