"""Two training processes launched as a user launches them (`accelerate launch --multi_gpu --num_processes 2
-m ccapo_trainer`), on CPU over gloo, with the tiny word-level policy and counterfactual weights: the
processes stay identical, each scores its own samples, the logs cover both, resuming repeats the
uninterrupted run, and with a scoring server the policy is pushed once per step, not once per process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from ccapo_trainer.distributed import param_checksum
from ccapo_trainer.metrics import read_completions, read_metrics
from live_server import free_port, start_server
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from word_policy import PROBLEMS

PROCESSES = 2
PROMPTS_PER_STEP = 2  # per process
GENERATIONS = 4
STEPS = 2
SAMPLES_PER_STEP = PROCESSES * PROMPTS_PER_STEP * GENERATIONS
LAUNCH_TIMEOUT_S = 600  # a collective call that one process never makes hangs the others: fail, don't hang


def launch(config: Path, *args: str, cwd: Path, processes: int = PROCESSES, cpu_flag: bool = False):
    """`accelerate launch ... -m ccapo_trainer --config CONFIG ARGS` with this environment's accelerate."""
    accelerate = Path(sys.executable).with_name("accelerate")
    mode = ["--cpu"] if cpu_flag else ["--multi_gpu"]
    command = [
        str(accelerate), "launch", *mode, "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "ccapo_trainer", "--config", str(config), *args,
    ]  # fmt: skip
    # CPU and gloo even where a GPU is present; one thread per process, so two share two cores calmly.
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # A session of its own, so that a run past the time limit takes its training processes with it.
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def write_config(tmp_path: Path, word_model_dir: Path, output_dir: Path, **settings) -> Path:
    base = dict(
        model=str(word_model_dir), dataset=str(tmp_path / "problems.jsonl"), prompts_per_step=PROMPTS_PER_STEP,
        num_generations=GENERATIONS, max_completion_length=16, temperature=1.0, top_p=1.0, rewards=["format"],
        dynamic_sampling=False,
        counterfactual={"weighting": "counterfactual", "scoring": {"segmenter": "sentence", "min_span_tokens": 2}},
        steps=STEPS, save_every=1, learning_rate=1e-3, micro_batch_size=3, log_completions=True,
        log_param_checksum=True, output_dir=str(output_dir),
    )  # fmt: skip
    base.update(settings)
    rows = "".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in PROBLEMS)
    (tmp_path / "problems.jsonl").write_text(rows)
    path = tmp_path / f"{output_dir.name}.yaml"
    path.write_text(json.dumps(base))  # JSON is YAML
    return path


def untimed(record: dict) -> dict:
    timed = ("ccapo/score_seconds", "scoring_overhead_pct")
    return {k: v for k, v in record.items() if not k.startswith("time/") and k not in timed}


@pytest.fixture(scope="module")
def two_process_run(word_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted 2-step run on 2 processes, shared by the tests that read it."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    config = write_config(tmp_path, word_model_dir, tmp_path / "whole")
    done = launch(config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    return tmp_path / "whole"


@pytest.mark.slow  # two training processes
def test_the_processes_hold_identical_weights_after_every_step(two_process_run):
    records = read_metrics(two_process_run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for record in records:
        digests = record["params/sha256"]
        assert len(digests) == PROCESSES and len(set(digests)) == 1, record["step"]
        # ... and they are the weights the checkpoint of that step holds
        checkpoint = two_process_run / "checkpoints" / f"step-{record['step']}"
        assert param_checksum(AutoModelForCausalLM.from_pretrained(checkpoint / "model")) == digests[0]
    assert records[0]["params/sha256"] != records[1]["params/sha256"]  # the steps did train
    assert all(r["update/skipped"] == 0 and r["grad_norm"] > 0 for r in records)


@pytest.mark.slow  # two training processes
def test_each_process_samples_its_own_prompts_and_the_metrics_cover_both(two_process_run):
    records = read_metrics(two_process_run)
    completions = read_completions(two_process_run)
    for record in records:
        rows = [c for c in completions if c["step"] == record["step"]]
        assert len(rows) == SAMPLES_PER_STEP
        by_process = {rank: [c for c in rows if c["process"] == rank] for rank in range(PROCESSES)}
        assert all(len(own) == SAMPLES_PER_STEP // PROCESSES for own in by_process.values())
        problems = [{c["problem"] for c in own} for own in by_process.values()]
        assert len(problems[0]) == len(problems[1]) == PROMPTS_PER_STEP and not problems[0] & problems[1]
        rewards = [c["reward"] for c in rows]
        assert record["reward/mean"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-6)
        assert record["accuracy"] == pytest.approx(sum(r >= 1 for r in rewards) / len(rewards), abs=1e-6)
        assert record["groups/generated"] == record["groups/kept"] == PROCESSES * PROMPTS_PER_STEP
        # the weight histogram counts every process's completion tokens
        assert sum(record["ccapo/weights/hist"]) == pytest.approx(record["completion_length/mean"] * SAMPLES_PER_STEP)
    assert any(r["ccapo/weights/scored_share"] > 0 for r in records)  # counterfactual weights, not uniform ones


@pytest.mark.slow  # two training processes
def test_resume_on_two_processes_repeats_the_uninterrupted_run(two_process_run, word_model_dir, tmp_path):
    # The run as if stopped after step 1: its files up to step 1's checkpoint.
    split = tmp_path / "split"
    shutil.copytree(two_process_run, split)
    shutil.rmtree(split / "checkpoints" / f"step-{STEPS}")
    config = write_config(tmp_path, word_model_dir, split)
    resumed = launch(config, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    assert [untimed(r) for r in read_metrics(split)] == [untimed(r) for r in read_metrics(two_process_run)]
    assert read_completions(split) == read_completions(two_process_run)
    final = f"checkpoints/step-{STEPS}/model/model.safetensors"
    whole_weights, split_weights = load_file(two_process_run / final), load_file(split / final)
    assert whole_weights.keys() == split_weights.keys()
    assert all((whole_weights[k] == split_weights[k]).all() for k in whole_weights)


@pytest.mark.slow  # two training processes
def test_dynamic_sampling_rounds_and_skips_are_decided_together(word_model_dir, tmp_path):
    # Each process refills its own batch; they need different numbers of rounds (or find nothing and
    # skip), and every collective call must still be made by both: the run finishes, in step.
    config = write_config(
        tmp_path, word_model_dir, tmp_path / "dynamic", dynamic_sampling=True, prompts_per_step=1,
        max_sampling_rounds=3, steps=3, save_every=0,
    )  # fmt: skip
    done = launch(config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    records = read_metrics(tmp_path / "dynamic")
    completions = read_completions(tmp_path / "dynamic")
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        rows = [c for c in completions if c["step"] == record["step"]]
        assert len(rows) == record["groups/generated"] * GENERATIONS
        assert record["groups/kept"] <= PROCESSES and 1 <= record["rounds"] <= 3
        assert len(set(record["params/sha256"])) == 1
        if "skipped" in record:  # a process found no group with a signal: nobody updates
            assert record["groups/kept"] < PROCESSES and "loss" not in record
        else:
            assert record["groups/kept"] == PROCESSES and "loss" in record


@pytest.mark.slow  # two training processes
def test_remote_scoring_syncs_the_policy_once_per_step(word_model_dir, tmp_path):
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    env = {"CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(sync_dir)}
    with start_server(str(word_model_dir), env=env) as url:
        config = write_config(
            tmp_path, word_model_dir, tmp_path / "remote", save_every=0,
            counterfactual={"weighting": "counterfactual", "scoring": {"segmenter": "sentence", "min_span_tokens": 2},
                            "provider": "remote", "server_url": url, "admin_key": "admin", "sync_every": 1,
                            "sync_dir": str(sync_dir)},
        )  # fmt: skip
        done = launch(config, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-4000:]
        exposition = httpx.get(f"{url}/metrics", timeout=10).text
    records = read_metrics(tmp_path / "remote")
    assert [r["ccapo/policy_lag_steps"] for r in records] == [0.0] * STEPS  # each step scored by the last policy
    # One push of the starting policy (step 0), then one after each step: from the main process only (each a
    # swap started with `Prefer: respond-async`, answered 202, then polled until live).
    assert _counter(exposition, "ccapo_requests_total", route="/v1/model", method="POST", status="202") == STEPS + 1
    # Every sample of every process was scored or counted as skipped (its weights unused by the loss, or
    # an identical sample's taken), and not the global batch on each process (which would double the
    # count); beyond the samples, the server sees only each process's start-up check.
    traces = sum(r["ccapo/weights/scored_traces"] for r in records)
    skips = [f"ccapo/weights/skipped_{why}" for why in ("nonpositive", "zero_advantage", "duplicates")]
    assert traces + sum(r[key] for r in records for key in skips) == STEPS * SAMPLES_PER_STEP
    scored = _counter(exposition, "ccapo_batch_traces_sum")
    assert traces <= scored <= traces + PROCESSES
    assert any(r["ccapo/weights/scored_share"] > 0 for r in records)


def test_accelerate_cpu_flag_with_several_processes_is_refused(word_model_dir, tmp_path):
    # accelerate's --cpu launcher starts one process unless mpirun launches it: say so instead of training alone.
    config = write_config(tmp_path, word_model_dir, tmp_path / "refused")
    refused = launch(config, cwd=tmp_path, cpu_flag=True)
    assert refused.returncode != 0
    said = " ".join(refused.stderr.split())  # rich wraps long lines
    assert "started one process" in said and "accelerate launch --multi_gpu" in said
    assert not (tmp_path / "refused" / "checkpoints").exists()


def _counter(exposition: str, name: str, **labels: str) -> float:
    """A Prometheus sample's value, summed over the series whose labels include `labels`."""
    total = 0.0
    for line in exposition.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
    return total
