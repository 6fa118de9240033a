"""`RemoteScorer` against a real `python -m ccapo_server` gives what `ccapo.Scorer` gives in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ccapo_client import ForbiddenError, RemoteScorer, TraceImportance, UnauthorizedError
from live_server import start_server

from ccapo import Scorer, ScoringConfig, Trace

COMPLETIONS = [
    "Each box holds 12 muffins.\nSo 11 boxes hold 11 × 12 = 132 muffins.\n#### 132",
    "He starts with 5 apples. After buying 7 more, 5 + 7 = 12 apples.\nThe answer is 12",
    "First, 3 × 4 = 12. Then 12 + 6 = 18. Let me double check: 18 - 6 = 12.\n#### 18",
    "No marker here, so there is no answer to score.",
    "Half of 40 is 40 / 2 = 20. Twice that is 20 × 2 = 40.\n\\boxed{40}",
]


@pytest.fixture(scope="module")
def scorer(tiny_model_dir: str) -> Scorer:
    return Scorer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def split_server_url(tiny_model_dir: str) -> Iterator[str]:
    with start_server(tiny_model_dir, env={"CCAPO_MAX_TRACES_PER_REQUEST": "2"}) as url:
        yield url


def text_traces() -> list[dict]:
    return [{"prompt": f"Question {i}?", "completion": c} for i, c in enumerate(COMPLETIONS)]


def id_traces(scorer: Scorer) -> list[Trace]:
    tokenizer = scorer.tokenizer
    return [
        Trace(
            prompt_ids=tokenizer(f"Question {i}?").input_ids,
            completion_ids=[*tokenizer(c, add_special_tokens=False).input_ids, tokenizer.eos_token_id],
        )
        for i, c in enumerate(COMPLETIONS)
    ]


def assert_same(remote: list[TraceImportance], local: list) -> None:
    assert len(remote) == len(local)
    for r, expected in zip(remote, local, strict=True):
        e = expected.to_dict()
        assert (r.status, r.reason, r.tokens, r.completion) == (e["status"], e["reason"], e["tokens"], e["completion"])
        assert r.token_weights == pytest.approx(e["token_weights"], abs=1e-4)
        if e["base_logprob"] is None:
            assert r.base_logprob is None
        else:
            assert r.base_logprob == pytest.approx(e["base_logprob"], abs=1e-4)
        assert [(s.token_start, s.token_end, s.text) for s in r.spans] == [
            (s["token_start"], s["token_end"], s["text"]) for s in e["spans"]
        ]
        assert [s.drop for s in r.spans] == pytest.approx([s["drop"] for s in e["spans"]], abs=1e-4)
        assert r.to_dict()["answer"] == e["answer"]


def test_text_traces_match_in_process(server_url: str, scorer: Scorer):
    with RemoteScorer(server_url) as remote:
        results = remote.score(text_traces())
        assert_same(results, scorer.score(text_traces()))
        assert [r.ok for r in results] == [True, True, True, False, True]
        assert remote.last_model_version == remote.model_info().version


def test_token_id_traces_and_a_config_model_match_in_process(server_url: str, scorer: Scorer):
    config = ScoringConfig(intervention="pad", segmenter="sentence")
    with RemoteScorer(server_url) as remote:
        assert_same(remote.score(id_traces(scorer), config), scorer.score(id_traces(scorer), config))


def test_inputs_over_the_request_limit_are_split(split_server_url: str, scorer: Scorer):
    with RemoteScorer(split_server_url) as remote:
        assert remote.model_info().limits["max_traces_per_request"] == 2
        sizes: list[int] = []
        send = remote.client.score

        def counted(traces, config=None):
            sizes.append(len(traces))
            return send(traces, config)

        remote.client.score = counted
        assert_same(remote.score(text_traces()), scorer.score(text_traces()))
    assert sorted(sizes) == [1, 2, 2]


@pytest.mark.parametrize("url_fixture", ["server_url", "split_server_url"])
def test_a_bad_trace_raises_value_error_naming_it(url_fixture: str, request: pytest.FixtureRequest, scorer: Scorer):
    traces: list = id_traces(scorer)
    traces[3] = Trace(prompt_ids=[1, 2], completion_ids=[5, scorer.vocab_size + 7])
    with pytest.raises(ValueError, match="outside the model's vocabulary") as local:
        scorer.score(traces)
    with RemoteScorer(request.getfixturevalue(url_fixture)) as remote, pytest.raises(ValueError) as info:
        remote.score(traces)
    assert info.value.trace_index == local.value.trace_index == 3
    assert str(info.value).startswith("trace 3: completion_ids[1]")


def test_keys_and_loading_a_model(tiny_model_dir: str, scorer: Scorer):
    env = {"CCAPO_API_KEY": "user", "CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(Path(tiny_model_dir).parent)}
    with start_server(tiny_model_dir, env=env) as url:
        with RemoteScorer(url) as anonymous, pytest.raises(UnauthorizedError):
            anonymous.score(text_traces())
        with RemoteScorer(url, api_key="user") as user, pytest.raises(ForbiddenError):
            user.load_model(tiny_model_dir)
        with RemoteScorer(url, api_key="user", admin_key="admin") as admin:
            admin.score(text_traces()[:1])
            first = admin.last_model_version
            assert admin.load_model(tiny_model_dir).version != first
            assert_same(admin.score(text_traces()), scorer.score(text_traces()))
            assert admin.last_model_version == admin.model_info().version != first
