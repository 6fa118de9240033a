"""`ccapo render`: results from `Scorer` on a tiny model as one standalone page, and a PNG of it."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from span_colors import hue, rgb

from ccapo import Scorer, ScoringConfig
from ccapo.cli import main
from ccapo.examples import load_examples
from ccapo.render import render_report

# Anything that would make a browser fetch: a src/href, a CSS url() or @import, pointing off the page.
FETCHES = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)
DATA = re.compile(r"const report = (.*);\n")


@pytest.fixture(scope="module")
def results(llama, tokenizer) -> list[dict[str, Any]]:
    traces = [*load_examples()[:3], {"prompt": "Q", "completion": "no answer marker here"}]
    return [r.to_dict() for r in Scorer(llama, tokenizer).score(traces, ScoringConfig(segmenter="line"))]


@pytest.fixture
def results_file(tmp_path: Path, results: list[dict[str, Any]]) -> Path:
    """What `ccapo score -o` writes, with an error record and a stray line among the results."""
    lines = [json.dumps(r, ensure_ascii=False) for r in results[:2]]
    lines += [json.dumps({"line": 3, "error": "not valid JSON: Expecting value"}), "", '{"hello": 1}']
    lines += [json.dumps(r, ensure_ascii=False) for r in results[2:]]
    path = tmp_path / "scored.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_render_writes_a_standalone_page_of_every_result(results_file, results, tmp_path, capsys) -> None:
    out = tmp_path / "report.html"
    assert main(["render", str(results_file), "-o", str(out), "--title", "Muffins & more"]) == 0
    err = capsys.readouterr().err
    assert "line 3 skipped" in err and "error record" in err and "line 5 skipped" in err
    html = out.read_text(encoding="utf-8")

    assert "<title>Muffins &amp; more</title>" in html
    embedded = json.loads(DATA.search(html).group(1))
    assert embedded["results"] == results  # every result, whole, in order; the error lines are gone
    assert embedded["labels"] == ["line 1", "line 2", "line 6", "line 7"]  # named by their line in the file
    for result in results:
        for span in result["spans"]:
            assert json.dumps(span["text"], ensure_ascii=False) in html
            assert json.dumps(span["drop"]) in html
    assert "supports the answer" in html and "distractor" in html  # the legend
    assert not FETCHES.search(html), FETCHES.search(html)
    assert "default-src 'none'" in html  # and the browser is told not to fetch anything either


def test_render_skips_a_file_without_results(tmp_path, capsys) -> None:
    path = tmp_path / "errors.jsonl"
    path.write_text(json.dumps({"line": 1, "error": "bad"}) + "\n")
    assert main(["render", str(path), "-o", str(tmp_path / "r.html")]) == 1
    assert "no results to render" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_text_in_the_data_cannot_end_the_script(results) -> None:
    hostile = dict(results[0], completion="</script><script>alert(1)</script>", spans=[], answer=None)
    html = render_report([hostile], title="<b>x</b>")
    assert "</script><script>alert" not in html and "<b>x</b>" not in html


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_png_and_the_report_in_a_browser(browser, results_file, results, tmp_path, artifacts) -> None:
    out, png = tmp_path / "report.html", tmp_path / "report.png"
    assert main(["render", str(results_file), "-o", str(out), "--png", str(png)]) == 0
    width, height = _png_size(png)
    assert width == 2 * 1280 and height > 2 * 900  # twice the CSS pixels, and the whole page
    shutil.copy(png, artifacts / "report.png")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(out.as_uri())
    assert page.locator("article.trace").count() == len(results)
    assert "supports the answer" in page.text_content(".legend")
    drawn = page.eval_on_selector_all(
        ".completion .span", "nodes => nodes.map(n => [Number(n.dataset.drop), getComputedStyle(n).backgroundColor])"
    )
    spans = [s for r in results for s in r["spans"]]
    assert len(drawn) == len(spans)
    scale = max(abs(s["drop"]) for s in spans)  # one scale for the whole report
    for drop, background in drawn:
        if abs(drop) > 0.05 * scale:
            assert hue(rgb(background)) == ("support" if drop > 0 else "distractor")
    assert "no answer marker" in page.text_content("article.trace >> nth=3")
    assert requested == [out.as_uri()]  # the file itself, and nothing else
    page.close()
