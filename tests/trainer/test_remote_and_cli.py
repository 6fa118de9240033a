"""The trainer against a real scoring server (with policy sync), and `ccapo train/eval/plot` as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ccapo_trainer.loop import Trainer
from ccapo_trainer.metrics import read_metrics
from cli_in_process import exit_code
from live_server import spawn_server, start_server, wait_ready
from transformers import AutoModelForCausalLM
from word_policy import PROBLEMS, REWARDS, WORDS


def test_remote_scoring_with_a_policy_sync_every_step(train_config, word_model_dir, tmp_path):
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    env = {"CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(sync_dir)}
    with start_server(str(word_model_dir), env=env) as url:
        config = train_config(
            counterfactual={"provider": "remote", "server_url": url, "admin_key": "admin", "sync_every": 1,
                            "sync_dir": str(sync_dir)},
            steps=2,
        )
        Trainer(config, train_problems=PROBLEMS, reward_fns=REWARDS).train()
    first, second = read_metrics(config.output_dir)
    assert first["ccapo/weights/scored_share"] > 0 and second["ccapo/weights/scored_share"] > 0
    assert first["ccapo/policy_lag_steps"] == 0  # the starting policy was pushed at step 0
    assert second["ccapo/policy_lag_steps"] == 0  # and loaded step 1's policy before step 2's rollouts were scored
    loaded = AutoModelForCausalLM.from_pretrained(sync_dir)  # the policy after the last step, as the server has it
    assert loaded.config.vocab_size == len(WORDS)


def test_a_policy_load_slower_than_the_client_timeout_never_stops_training(
    train_config, word_model_dir, tmp_path, caplog
):
    """Each push loads for 4 s against a 1 s client timeout: the trainer keeps scoring with the live
    model (once, httpx.ReadTimeout ended the run at step 0), and a later step takes the push once live."""
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    env = {"CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(sync_dir)}
    server = spawn_server(str(word_model_dir), env, load_delay_s=4.0)
    try:
        wait_ready(server)
        counterfactual = {"provider": "remote", "server_url": server.url, "admin_key": "admin", "sync_every": 1,
                          "sync_dir": str(sync_dir), "request_timeout_s": 1.0, "swap_wait_s": 0.1}
        config = train_config(counterfactual=counterfactual, steps=2)
        with caplog.at_level("WARNING", logger="ccapo_adapters.provider"):
            Trainer(config, train_problems=PROBLEMS, reward_fns=REWARDS).train()
    finally:
        server.discard()
    steps = read_metrics(config.output_dir)
    assert len(steps) == 2 and all(step["ccapo/weights/scored_share"] > 0 for step in steps)
    assert "still loading the policy of step 0" in caplog.text


def ccapo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccapo.cli", *args], cwd=cwd, capture_output=True, text=True)


def write_config(tmp_path: Path, word_model_dir: Path, **settings) -> Path:
    base = dict(
        model=str(word_model_dir), dataset=str(tmp_path / "problems.jsonl"), prompts_per_step=2, num_generations=4,
        max_completion_length=16, temperature=1.0, top_p=1.0, rewards=["format"], dynamic_sampling=False,
        counterfactual={"scoring": {"segmenter": "sentence", "min_span_tokens": 2}}, output_dir=str(tmp_path / "run"),
        save_every=0,
    )
    base.update(settings)
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n"
                                                     for p in PROBLEMS))
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(base))  # JSON is YAML
    return path


def test_sigterm_saves_a_loadable_checkpoint_and_resume_finishes_the_run(word_model_dir, tmp_path):
    config = write_config(tmp_path, word_model_dir, steps=1000)
    process = subprocess.Popen(
        [sys.executable, "-m", "ccapo.cli", "train", "--config", str(config)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output
    [checkpoint] = (tmp_path / "run" / "checkpoints").iterdir()
    stopped_at = int(checkpoint.name.removeprefix("step-"))
    assert AutoModelForCausalLM.from_pretrained(checkpoint / "model").config.vocab_size == len(WORDS)

    finished = ccapo("train", "--config", str(config), f"steps={stopped_at + 1}", "--resume", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == list(range(1, stopped_at + 2))


def test_train_cli_overrides_and_errors(word_model_dir, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, word_model_dir)
    done = ccapo("train", "--config", str(config), "steps=1", "counterfactual.weighting=uniform", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "finished at step 1" in done.stderr
    assert "step 1/1" in done.stderr  # no terminal, so no live bar: a log line per step instead
    monkeypatch.chdir(tmp_path)
    assert exit_code(["train", "--config", str(config), "steps=1"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert exit_code(["train", "--config", str(config), "stepz=1"]) == 2
    assert "stepz" in capsys.readouterr().err


def test_eval_and_plot_commands(word_model_dir, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, word_model_dir, steps=2, eval_every=1, eval_problems=4,
                          counterfactual={"weighting": "counterfactual", "scoring": {"segmenter": "sentence",
                                                                                    "min_span_tokens": 2}})
    assert ccapo("train", "--config", str(config), cwd=tmp_path).returncode == 0
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [0, 1, 2] and all("eval/accuracy" in r for r in records)

    monkeypatch.chdir(tmp_path)  # eval and plot in this process: `ccapo train` above ran the real command
    assert exit_code(["eval", "--model", str(word_model_dir), "--data", str(tmp_path / "problems.jsonl"), "--split",
                      "train", "--max-new-tokens", "8", "--reward", "format", "-o", str(tmp_path / "eval.json")]) == 0
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["total"] == 4 and len(summary["samples"]) == 4 and 0 <= summary["accuracy"] <= 1

    capsys.readouterr()
    assert exit_code(["plot", str(tmp_path / "run"), "-o", str(tmp_path / "plots")]) == 0
    names = {Path(line).name for line in capsys.readouterr().out.split()}
    assert {"reward.png", "accuracy.png", "eval_accuracy.png", "weights.png"} <= names
    assert all((tmp_path / "plots" / name).stat().st_size > 1000 for name in names)


@pytest.mark.parametrize("missing", ["nope/metrics-less"])
def test_plot_names_a_directory_that_is_not_a_run(tmp_path, missing, capsys):
    assert exit_code(["plot", str(tmp_path / missing)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
