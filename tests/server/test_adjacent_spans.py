"""Adjacent character spans over HTTP: the server applies the library's straddling-token rule."""

from __future__ import annotations

import re

import httpx

INDENTED = "To water the flower bed:\n   - Each plant needs 2 liters\n   - There are 7 plants\n#### 14"


def test_adjacent_line_spans_are_scored_and_overlapping_ones_quoted(server_url: str) -> None:
    lines = [list(m.span()) for m in re.finditer(r"[^\n]*\n", INDENTED)][:3]
    trace = {"prompt": "How much water?", "completion": INDENTED, "spans": lines}
    answer = httpx.post(f"{server_url}/v1/importance", json={"traces": [trace]}, timeout=120)
    assert answer.status_code == 200, answer.text
    spans = answer.json()["results"][0]["spans"]
    assert len(spans) == 3
    assert [a["token_end"] for a in spans[:-1]] == [b["token_start"] for b in spans[1:]]

    overlapping = {**trace, "spans": [[0, 30], [25, 40]]}
    refused = httpx.post(f"{server_url}/v1/importance", json={"traces": [overlapping]}, timeout=120)
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert repr(INDENTED[0:30]) in message and repr(INDENTED[25:40]) in message
