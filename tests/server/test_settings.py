"""Settings come from CCAPO_* variables, flags win; the startup curl example is a working command."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from ccapo_server.cli import curl_example, settings_from_args
from ccapo_server.settings import ServerSettings


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCAPO_PORT", "1234")
    monkeypatch.setenv("CCAPO_MAX_WAIT_MS", "25")
    monkeypatch.setenv("CCAPO_MODEL_ROOTS", os.pathsep.join(["/models/a", "/models/b"]))
    settings = settings_from_args(["--port", "9000", "--model", "/m"])
    assert (settings.port, settings.max_wait_ms, settings.model) == (9000, 25, "/m")
    assert settings.model_roots == [Path("/models/a"), Path("/models/b")]
    flagged = settings_from_args(["--model-root", "/x", "--model-root", "/y"])
    assert flagged.model_roots == [Path("/x"), Path("/y")]


def test_model_roots_also_take_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCAPO_MODEL_ROOTS", '["/a b", "/c"]')
    assert settings_from_args([]).model_roots == [Path("/a b"), Path("/c")]


def test_a_bad_value_exits_with_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCAPO_SERVER_BATCH_TOKENS", "0")
    with pytest.raises(SystemExit) as exit_info:
        settings_from_args([])
    assert exit_info.value.code == 2


def test_the_curl_example_is_a_valid_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCAPO_API_KEY", "secret")
    command = curl_example(settings_from_args(["--host", "0.0.0.0", "--port", "8123"]))
    words = shlex.split(command)
    assert words[:3] == ["curl", "-s", "http://127.0.0.1:8123/v1/importance"]
    assert "secret" not in command and "Authorization: Bearer $CCAPO_API_KEY" in words
    body = json.loads(words[words.index("-d") + 1])
    assert body["traces"][0]["completion"].endswith("#### 5")


def test_empty_environment_variables_count_as_unset(monkeypatch):
    monkeypatch.setenv("CCAPO_MODEL", "")
    monkeypatch.setenv("CCAPO_API_KEY", "")
    settings = ServerSettings()
    assert settings.model is None and settings.api_key is None


def test_the_old_batch_budget_name_still_works_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCAPO_MAX_BATCH_TOKENS", "123")
    with pytest.warns(FutureWarning, match="CCAPO_SERVER_BATCH_TOKENS"):
        assert settings_from_args([]).server_batch_tokens == 123
    with pytest.warns(FutureWarning):
        assert settings_from_args(["--server-batch-tokens", "456"]).server_batch_tokens == 456  # the new name wins
    monkeypatch.delenv("CCAPO_MAX_BATCH_TOKENS")
    assert settings_from_args(["--engine-batch-tokens", "64"]).engine_batch_tokens == 64


def test_cost_limits_must_nest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCAPO_MAX_FEED_TOKENS_PER_REQUEST", "1000")  # under the per-trace default
    with pytest.raises(SystemExit) as exit_info:
        settings_from_args([])
    assert exit_info.value.code == 2
