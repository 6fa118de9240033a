from rich.console import Console

from ccapo.display import render_importance
from ccapo.result import AnswerRegion, SpanImportance, TraceImportance

COMPLETION = "First 12 × 4 = 48.\nLet me think.\n#### 48"


def _span(text: str, drop: float) -> SpanImportance:
    start = COMPLETION.index(text)
    return SpanImportance(start, start + len(text), 0, 1, text, "calc", -1.0 - drop, drop)


def _scored(spans: list[SpanImportance]) -> TraceImportance:
    answer_start = COMPLETION.index("####")
    return TraceImportance(
        status="ok",
        completion=COMPLETION,
        tokens=["t"] * 10,
        token_weights=[0.5, 1.0, 4.0, 1.5],
        base_logprob=-0.25,
        spans=spans,
        answer=AnswerRegion(answer_start, len(COMPLETION), 8, 10, "#### 48", "####"),
    )


def _render(results: list[TraceImportance], titles: list[str] | None = None) -> str:
    console = Console(record=True, width=100)
    render_importance(results, console, titles)
    return console.export_text()


def test_spans_legend_and_summaries_appear() -> None:
    text = _render([_scored([_span("12 × 4 = 48", 2.5), _span("Let me think.", -0.3)])], ["example"])
    assert "supports the answer" in text and "distractor" in text
    assert "example" in text
    assert text.count("12 × 4 = 48") == 2  # shaded completion and span table
    assert text.count("Let me think.") == 2
    assert "+2.500" in text and "-0.300" in text
    assert text.index("+2.500") < text.index("-0.300")  # sorted by drop
    assert "-0.250" in text  # base answer log-prob
    assert "min 0.50" in text and "mean 1.75" in text and "max 4.00" in text


def test_unscorable_reason_is_shown() -> None:
    unscorable = TraceImportance(
        status="unscorable",
        completion="I am not sure.",
        tokens=["I"],
        token_weights=[1.0],
        reason="no answer marker found",
    )
    text = _render([unscorable, _scored([_span("12 × 4 = 48", 1.0)])])
    assert "no answer marker found" in text
    assert "trace 0" in text and "trace 1" in text


def test_zero_spans_and_empty_weights_do_not_crash() -> None:
    empty = _scored([])
    empty.token_weights = []
    text = _render([empty, _scored([_span("12 × 4 = 48", 0.0)])])
    assert "no spans probed" in text and "no tokens" in text
    assert _render([]).strip()  # the legend alone


def test_long_span_text_is_shortened() -> None:
    long = "word " * 40
    completion = long + "\n#### 1"
    result = TraceImportance(
        status="ok",
        completion=completion,
        tokens=["w"] * 41,
        token_weights=[1.0] * 41,
        base_logprob=-1.0,
        spans=[SpanImportance(0, len(long), 0, 40, long, "sentence", -2.0, 1.0)],
    )
    assert "…" in _render([result])
