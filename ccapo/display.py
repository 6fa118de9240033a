"""Terminal view of scoring results: completions shaded by how much the answer depends on each span."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from rich.color import Color
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.style import Style
from rich.table import Table
from rich.text import Text

from ccapo.result import SpanImportance, TraceImportance

# Shades run from a dark neutral (drop 0) to full green or red; white text stays readable on all
# of them, on dark and light terminals alike.
_NEUTRAL = (60, 60, 60)
_SUPPORT = (0, 135, 60)
_DISTRACT = (185, 30, 30)
_TEXT_COLOR = "bright_white"
_ANSWER_STYLE = Style(bold=True, underline=True)
_SPAN_TEXT_CHARS = 60


def render_importance(
    results: Sequence[TraceImportance], console: Console, titles: Sequence[str] | None = None
) -> None:
    """Print a legend, then one panel per result: shaded completion, span table, summary lines.

    Shading is scaled by the largest |drop| over all results shown, so panels are comparable.
    """
    if titles is not None and len(titles) != len(results):
        raise ValueError(f"got {len(titles)} titles for {len(results)} results")
    console.print(_legend())
    scale = max((abs(span.drop) for result in results for span in result.spans), default=0.0)
    for i, result in enumerate(results):
        title = titles[i] if titles is not None else f"trace {i}"
        body = _result_body(result, scale) if result.ok else _unscorable_body(result)
        console.print(Panel(body, title=title, title_align="left"))


def _legend() -> Text:
    legend = Text("legend: ")
    legend.append(" supports the answer ", style=_span_style(1.0))
    legend.append("  ")
    legend.append(" distractor ", style=_span_style(-1.0))
    legend.append("  ")
    legend.append("answer", style=_ANSWER_STYLE)
    legend.append("   shade ∝ |drop| (answer log-prob lost)", style="dim")
    return legend


def _span_style(intensity: float) -> Style:
    """Background for a signed intensity in [-1, 1]: green supports, red distracts."""
    target = _SUPPORT if intensity >= 0 else _DISTRACT
    t = min(abs(intensity), 1.0)
    rgb = (round(a + (b - a) * t) for a, b in zip(_NEUTRAL, target, strict=True))
    return Style(color=_TEXT_COLOR, bgcolor=Color.from_rgb(*rgb))


def _result_body(result: TraceImportance, scale: float) -> RenderableType:
    completion = Text(result.completion)
    for span in result.spans:
        completion.stylize(_span_style(span.drop / scale if scale > 0 else 0.0), span.start, span.end)
    if result.answer is not None:
        completion.stylize(_ANSWER_STYLE, result.answer.start, result.answer.end)
    parts: list[RenderableType] = [completion, Text()]
    parts.append(_span_table(result.spans) if result.spans else Text("no spans probed", style="dim"))
    if result.base_logprob is not None:
        parts.append(Text(f"answer log-prob {result.base_logprob:.3f}"))
    parts.append(Text(_weight_summary(result.token_weights), style="dim"))
    return Group(*parts)


def _unscorable_body(result: TraceImportance) -> RenderableType:
    return Group(
        Text(f"unscorable: {result.reason}", style="yellow"),
        Text(result.completion, style="dim"),
        Text(_weight_summary(result.token_weights), style="dim"),
    )


def _span_table(spans: Sequence[SpanImportance]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("drop", justify="right")
    table.add_column("kind")
    table.add_column("text", overflow="ellipsis", no_wrap=True)
    ranked = sorted(spans, key=lambda span: span.drop, reverse=True)
    for rank, span in enumerate(ranked, start=1):
        drop = Text(f"{span.drop:+.3f}", style="green" if span.drop >= 0 else "red")
        table.add_row(str(rank), drop, span.kind, _shorten(span.text, _SPAN_TEXT_CHARS))
    return table


def _shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters: newlines would break the table's rows."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _weight_summary(weights: Sequence[float]) -> str:
    if not weights:
        return "weights: no tokens"
    return (
        f"weights over {len(weights)} tokens: min {min(weights):.2f}  mean {fmean(weights):.2f}  max {max(weights):.2f}"
    )
