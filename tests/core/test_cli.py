"""`ccapo` commands, in-process, on a tiny model saved like any HF checkpoint."""

from __future__ import annotations

import json

import pytest

from ccapo import Scorer, ScoringConfig
from ccapo.cli import main

COMPLETION = "We have 3 + 4 = 7 apples in the basket now.\nDoubling gives 7 × 2 = 14 apples.\n#### 14"


@pytest.fixture
def traces_file(tmp_path):
    lines = [
        json.dumps({"prompt": "How many apples?", "completion": COMPLETION}),
        "{not json",
        json.dumps({"prompt_ids": [1, 2], "completion_ids": [5, 10**7]}),
        "",
        json.dumps({"prompt": "Q", "completion": "no marker here"}),
        json.dumps({"prompt": "Q"}),
        json.dumps({"prompt": "How many?", "completion": COMPLETION, "spans": [[8, 17]]}),
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_score_reports_bad_lines_and_scores_the_rest(tiny_model_dir, traces_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    code = main(["score", str(traces_file), "-o", str(out), "--model", tiny_model_dir, "--segmenter", "line"])
    assert code == 1  # some lines failed; the output is still complete
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 6  # one per non-blank input line, in order
    assert records[0]["status"] == "ok" and records[0]["spans"]
    assert records[1] == {"line": 2, "error": records[1]["error"]} and "not valid JSON" in records[1]["error"]
    assert records[2]["line"] == 3 and "outside the model's vocabulary" in records[2]["error"]
    assert records[3]["status"] == "unscorable"
    assert records[4]["line"] == 6 and "completion" in records[4]["error"]
    assert [(s["start"], s["end"]) for s in records[5]["spans"]] == [(8, 17)]
    err = capsys.readouterr().err
    assert "line 2:" in err and "line 3:" in err and "3 of 6 lines failed" in err


def test_score_pretty_shows_spans(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"prompt": "How many apples?", "completion": COMPLETION}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["score", str(path), "-o", str(out), "--model", tiny_model_dir, "--pretty"]) == 0
    shown = capsys.readouterr().out
    assert "3 + 4 = 7" in shown and "answer log-prob" in shown


def test_score_pretty_without_output_shows_the_view_on_stdout(tiny_model_dir, tmp_path, capsys):
    """Without -o the results went to stdout, which was closed before the view was printed."""
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"prompt": "How many apples?", "completion": COMPLETION}) + "\n")
    assert main(["score", str(path), "--model", tiny_model_dir, "--pretty"]) == 0
    shown = capsys.readouterr().out
    assert "3 + 4 = 7" in shown and "answer log-prob" in shown
    assert '"token_weights"' not in shown  # the view replaces the JSON lines
    assert main(["score", str(path), "--model", tiny_model_dir]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"


def test_models_lists_the_cache(default_model_dir, capsys):
    assert main(["models"]) == 0
    assert "smollm2-135m-instruct (default)" in capsys.readouterr().out


def test_serve_help_names_the_command_the_user_typed(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ccapo serve ")


def test_score_takes_the_horizon_estimator_and_its_knobs(tiny_model_dir, llama, tokenizer, tmp_path):
    trace = {"prompt": "How many apples?", "completion": COMPLETION}
    path, out = tmp_path / "one.jsonl", tmp_path / "out.jsonl"
    path.write_text(json.dumps(trace) + "\n")
    flags = ["--estimator", "horizon", "--horizon-window", "2", "--horizon-verify", "1", "--segmenter", "line"]
    assert main(["score", str(path), "-o", str(out), "--model", tiny_model_dir, *flags]) == 0
    record = json.loads(out.read_text())
    config = ScoringConfig(estimator="horizon", horizon_window=2, horizon_verify=1, segmenter="line")
    (expected,) = Scorer(llama, tokenizer).score([trace], config)
    assert [s["drop"] for s in record["spans"]] == pytest.approx([s.drop for s in expected.spans], abs=1e-4)
    assert [s["exact"] for s in record["spans"]] == [s.exact for s in expected.spans]
    assert any(s["exact"] for s in record["spans"])  # the verified span, at least


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--horizon-window", "8"], "--horizon-window set the horizon estimator: add --estimator horizon"),
        (["--estimator", "horizon", "--horizon-tail", "-1"], "horizon_tail: Input should be greater than or equal"),
        (["--max-spans", "0"], "max_spans"),
    ],
)
def test_bad_scoring_flags_are_usage_errors_before_any_model_loads(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["score", str(tmp_path / "absent.jsonl"), "--model", str(tmp_path / "no-model"), *flags])
    assert exited.value.code == 2 and message in capsys.readouterr().err
