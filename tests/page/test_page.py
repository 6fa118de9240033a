"""The heatmap page at `GET /`: served by a real server process on a tiny model, used in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_server import start_server
from span_colors import FULL_SUPPORT, hue, rgb, strength

KEY = "page-test-key"
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 900}
TOMATO_EXAMPLE = "3"  # the bundled example with five reasoning lines; option values index the examples

READ_SPANS = """nodes => nodes.map(n => ({
    index: Number(n.dataset.span), drop: Number(n.dataset.drop), text: n.textContent, title: n.title,
    background: getComputedStyle(n).backgroundColor}))"""


@pytest.fixture(scope="module")
def keyed_server_url(tiny_model_dir: str) -> Iterator[str]:
    with start_server(tiny_model_dir, env={"CCAPO_API_KEY": KEY}) as url:
        yield url


def test_page_files_and_examples_are_served_without_a_key(keyed_server_url: str) -> None:
    page = httpx.get(f"{keyed_server_url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert '<option value="line">line</option>' in page.text and "this server needs a key" in page.text
    assert "$" not in page.text  # every blank of the template was filled
    for name, kind in (("view.js", "text/javascript"), ("page.js", "text/javascript"), ("view.css", "text/css")):
        asset = httpx.get(f"{keyed_server_url}/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    missing = httpx.get(f"{keyed_server_url}/static/secrets.py")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    examples = httpx.get(f"{keyed_server_url}/v1/examples").json()
    assert len(examples) == 4 and all({"prompt", "completion"} <= set(e) for e in examples)
    assert httpx.post(f"{keyed_server_url}/v1/importance", json={"traces": examples[:1]}).status_code == 401


def _score_form(page: Any, url: str, example: str, segmenter: str = "line") -> dict[str, Any]:
    """Load the page, pick an example and settings, press Score; the API's result for the trace."""
    page.goto(f"{url}/")
    page.wait_for_selector(f'#example option[value="{example}"]', state="attached")
    page.select_option("#example", example)
    page.select_option("#segmenter", segmenter)
    page.select_option("#intervention", "delete")
    page.select_option("#scheme", "normalized")
    with page.expect_response("**/v1/importance") as answer:
        page.click("#score")
    return answer.value.json()


def test_scoring_shades_each_span_by_its_drop(browser: Any, server_url: str, artifacts) -> None:
    page = browser.new_page(viewport=LAPTOP)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    body = _score_form(page, server_url, TOMATO_EXAMPLE)
    result = body["results"][0]
    assert result["status"] == "ok" and len(result["spans"]) >= 3
    page.wait_for_selector("#output .completion .span")
    drawn = page.eval_on_selector_all("#output .completion .span", READ_SPANS)

    # Every span is drawn, with its own text and drop, and says its drop on hover.
    assert sorted({d["index"] for d in drawn}) == list(range(len(result["spans"])))
    for i, span in enumerate(result["spans"]):
        pieces = [d for d in drawn if d["index"] == i]
        assert "".join(d["text"] for d in pieces) == span["text"]
        assert all(d["drop"] == pytest.approx(span["drop"], abs=1e-12) for d in pieces)
        assert all(d["title"].startswith("drop ") and span["kind"] in d["title"] for d in pieces)

    # Colors follow the drops: the sign picks the hue, |drop| the strength, the largest gets the full shade.
    scale = max(abs(s["drop"]) for s in result["spans"])
    for d in drawn:
        color = rgb(d["background"])
        if abs(d["drop"]) > 0.05 * scale:  # below that a shade rounds to almost neutral
            assert hue(color) == ("support" if d["drop"] > 0 else "distractor"), d
    for sign in (1, -1):
        same = sorted((d for d in drawn if d["drop"] * sign > 0), key=lambda d: abs(d["drop"]))
        strengths = [strength(rgb(d["background"])) for d in same]
        assert strengths == sorted(strengths), same
    strongest = max(drawn, key=lambda d: abs(d["drop"]))
    assert strength(rgb(strongest["background"])) == max(strength(rgb(d["background"])) for d in drawn)

    # The rest of the view: base log-prob, a weight bar per token, the spans ranked by drop, the legend.
    shown_logprob = page.text_content("#output .base-logprob strong").replace("\u2212", "-")
    assert float(shown_logprob) == pytest.approx(result["base_logprob"], abs=1e-3)
    assert page.locator("#output svg.strip rect").count() == len(result["tokens"])
    ranked = page.eval_on_selector_all("#output .span-table tbody tr", "rows => rows.map(r => Number(r.dataset.span))")
    by_drop = sorted(range(len(result["spans"])), key=lambda i: -result["spans"][i]["drop"])
    assert ranked == by_drop
    assert "supports the answer" in page.text_content("#output .legend")
    assert page.locator("#output .completion .answer").first.text_content().startswith("\\boxed")
    assert page.is_hidden("#error")

    # Nothing came from anywhere but the server itself.
    assert requested and all(url.startswith(server_url) for url in requested), requested

    page.screenshot(path=str(artifacts / "page.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
    page.screenshot(path=str(artifacts / "page-phone.png"), full_page=True)
    page.close()


def _made_up_result(drops: list[float]) -> dict[str, Any]:
    """A result with one four-letter span per drop, then the answer "#### 1"."""
    completion = " ".join("abcdefgh"[i] * 4 for i in range(len(drops))) + " #### 1"
    answer_start = 5 * len(drops)
    return {
        "status": "ok",
        "completion": completion,
        "tokens": [completion[5 * i : 5 * i + 5] for i in range(len(drops))] + ["####", " 1"],
        "token_weights": [1.0] * (len(drops) + 2),
        "reason": None,
        "base_logprob": -1.5,
        "spans": [
            {
                "start": 5 * i,
                "end": 5 * i + 4,
                "token_start": i,
                "token_end": i + 1,
                "text": completion[5 * i : 5 * i + 4],
                "kind": "line",
                "masked_logprob": -1.5 - drop,
                "drop": drop,
            }
            for i, drop in enumerate(drops)
        ],
        "answer": {
            "start": answer_start,
            "end": answer_start + 6,
            "token_start": len(drops),
            "token_end": len(drops) + 2,
            "text": "#### 1",
            "marker": "####",
        },
        "target": "completion",
    }


def test_the_view_maps_known_drops_to_colors(browser: Any, server_url: str) -> None:
    page = browser.new_page(viewport=LAPTOP)
    page.goto(f"{server_url}/")
    drawn = page.evaluate(
        """result => {
            const card = ccapoView.renderTrace(result);
            document.body.append(card);
            return [...card.querySelectorAll('.completion .span')].map(n => getComputedStyle(n).backgroundColor);
        }""",
        _made_up_result([2.0, 0.5, -1.0, -0.25]),
    )
    colors = [rgb(c) for c in drawn]
    assert [hue(c) for c in colors] == ["support", "support", "distractor", "distractor"]
    assert strength(colors[0]) > strength(colors[1]) and strength(colors[2]) > strength(colors[3])
    assert colors[0] == FULL_SUPPORT  # the largest |drop| gets the full shade
    page.close()


def test_the_page_reads_infinite_and_nan_values_from_the_api(browser: Any, server_url: str) -> None:
    """A model can give an answer zero probability: the server then sends a bare -Infinity, as Python writes it."""
    result = _made_up_result([float("inf"), 0.5, float("nan"), -0.25])
    result["spans"][0]["masked_logprob"] = float("-inf")
    answer = {"model": {"id": "made-up", "version": "1"}, "results": [result]}
    answer["usage"] = {"traces": 1, "counterfactuals": 4, "forward_tokens": 10, "queue_ms": 1.0, "compute_ms": 2.0}
    body = json.dumps(answer)
    assert "-Infinity" in body and "NaN" in body
    page = browser.new_page(viewport=LAPTOP)
    page.route("**/v1/importance", lambda route: route.fulfill(status=200, content_type="application/json", body=body))
    page.goto(f"{server_url}/")
    page.fill("#prompt", "Q")
    page.fill("#completion", result["completion"])
    page.click("#score")
    page.wait_for_selector("#output .completion .span")
    first = page.locator('#output .completion .span[data-span="0"]')
    assert rgb(first.evaluate("n => getComputedStyle(n).backgroundColor")) == FULL_SUPPORT
    assert first.get_attribute("title").startswith("drop +\u221e (answer log-prob \u22121.500 \u2192 \u2212\u221e)")
    drops = page.eval_on_selector_all("#output .span-table td.drop", "cells => cells.map(c => c.textContent)")
    assert drops == ["+\u221e", "+0.500", "\u22120.250", "n/a"]  # ranked, the NaN last
    assert page.is_hidden("#error")
    page.close()


def test_api_errors_are_shown_as_messages_and_the_key_is_kept(browser: Any, keyed_server_url: str, artifacts) -> None:
    page = browser.new_page(viewport=LAPTOP)
    assert _score_form(page, keyed_server_url, "0")["error"]["type"] == "unauthorized"
    page.wait_for_selector("#error", state="visible")
    shown = page.text_content("#error")
    assert "This server needs an API key" in shown  # a title a person reads first
    assert "server needs an API key: send 'Authorization: Bearer <key>'" in shown  # then the API's own message
    assert "Enter the key" in shown and "HTTP 401" in shown
    page.screenshot(path=str(artifacts / "page-error.png"))

    page.fill("#api-key", "not-the-key")
    with page.expect_response("**/v1/importance"):
        page.click("#score")
    page.locator("#error", has_text="The API key is wrong").wait_for()
    assert page.locator("#output .span").count() == 0

    page.fill("#api-key", KEY)
    with page.expect_response("**/v1/importance") as answer:
        page.click("#score")
    assert answer.value.status == 200
    page.wait_for_selector("#output .completion .span")
    assert page.is_hidden("#error")

    page.reload()  # the key stays in this browser, so a reload needs no retyping
    assert page.input_value("#api-key") == KEY
    page.close()
