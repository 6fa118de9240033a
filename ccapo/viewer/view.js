/* The importance view: draws one scoring result (a TraceImportance dict, exactly as
 * POST /v1/importance returns it) as shaded text, a token-weight strip and a span table.
 *
 * A plain script with no build step: the scoring server serves it and `ccapo render` inlines it,
 * so the page and the report cannot drift apart. It only builds DOM nodes and sets styles through
 * the CSSOM, so the page can run under a strict Content-Security-Policy. */
(function (global) {
  "use strict";

  // ColorBrewer PiYG ends: green supports the answer, magenta distracts. Unlike red and green the
  // pair stays apart under red-green color blindness, and both ends are light enough for dark text.
  const NEUTRAL = [247, 247, 247];
  const SUPPORT = [127, 188, 65];
  const DISTRACT = [222, 119, 174];
  // Deeper shades of the same hues underline each span: the sign of a drop stays visible where the
  // drop is too small to tint the background.
  const SUPPORT_LINE = "#4d9221";
  const DISTRACT_LINE = "#c51b7d";
  // Weight bars: grey for reasoning outside any span; a span's bars turn from grey to its deep hue
  // as its |drop| grows, so the strip agrees with the text without drowning it.
  const PLAIN_BAR = [154, 163, 173];
  const SUPPORT_BAR = [77, 146, 33];
  const DISTRACT_BAR = [197, 27, 125];
  const ANSWER_BAR = "#2f6db5";
  const PAD_BAR = "#d5dae0";
  const SVG = "http://www.w3.org/2000/svg";
  const STRIP_HEIGHT = 100; // viewBox units; the CSS sets the drawn height
  const TABLE_TEXT_CHARS = 120;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  /** The largest finite |drop| over all spans of `results`: the drop that gets the full shade. */
  function maxAbsDrop(results) {
    let scale = 0;
    for (const result of results) {
      for (const span of result.spans || []) {
        if (Number.isFinite(span.drop)) scale = Math.max(scale, Math.abs(span.drop));
      }
    }
    return scale;
  }

  /** A drop as a signed shade in [-1, 1]; an infinite drop (a zero-probability answer) is a full shade. */
  function intensity(drop, scale) {
    if (Number.isNaN(drop)) return 0;
    if (!Number.isFinite(drop)) return Math.sign(drop);
    if (!(scale > 0)) return 0;
    return Math.max(-1, Math.min(1, drop / scale));
  }

  function rgb(color) {
    return `rgb(${color.join(", ")})`;
  }

  function mix(from, to, k) {
    return rgb(from.map((a, i) => Math.round(a + (to[i] - a) * k)));
  }

  /** Background for a signed shade: neutral at 0, the full support or distractor hue at +-1. */
  function shade(t) {
    return mix(NEUTRAL, t < 0 ? DISTRACT : SUPPORT, Math.min(Math.abs(t), 1));
  }

  function signed(magnitude, sign) {
    return (sign > 0 ? "+" : sign < 0 ? "\u2212" : "") + magnitude;
  }

  /** A drop for people: three decimals, tiny ones in exponent form, a real minus sign. */
  function formatDrop(drop) {
    if (Number.isNaN(drop)) return "n/a";
    if (!Number.isFinite(drop)) return signed("\u221e", Math.sign(drop));
    const size = Math.abs(drop);
    const digits = size === 0 || size >= 0.001 ? size.toFixed(3) : size.toExponential(1);
    return signed(digits, Math.sign(drop));
  }

  function formatLogprob(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
    if (!Number.isFinite(value)) return signed("\u221e", Math.sign(value));
    return (value < 0 ? "\u2212" : "") + Math.abs(value).toFixed(3);
  }

  function oneLine(text, limit) {
    const flat = text.split(/\s+/).filter(Boolean).join(" ");
    return flat.length <= limit ? flat : flat.slice(0, limit - 1) + "\u2026";
  }

  /** Spans with their index in `result.spans` (the key that links text pieces and table rows). */
  function indexedSpans(result) {
    return (result.spans || []).map((span, index) => Object.assign({ index }, span));
  }

  function header(result, title) {
    const head = el("header");
    head.append(el("h2", "trace-title", title || "trace"));
    const facts = el("p", "facts");
    const fact = (label, value, className) => {
      const item = el("span", "fact" + (className ? " " + className : ""));
      item.append(el("span", "fact-label", label), " ", el("strong", "", value));
      facts.append(item);
    };
    if (result.status !== "ok") fact("status", result.status, "warn");
    if (result.base_logprob !== null && result.base_logprob !== undefined) {
      fact("answer log-prob", formatLogprob(result.base_logprob), "base-logprob");
    }
    if (result.answer) fact("answer", oneLine(result.answer.text, 40));
    if (result.target === "reference") fact("target", "reference answer");
    fact("spans", String((result.spans || []).length));
    fact("tokens", String(result.tokens.length));
    head.append(facts);
    return head;
  }

  function spanTitle(span, result) {
    const before = formatLogprob(result.base_logprob);
    const after = formatLogprob(span.masked_logprob);
    return `drop ${formatDrop(span.drop)} (answer log-prob ${before} \u2192 ${after}) \u00b7 ${span.kind} span`;
  }

  /** The completion, cut at every span and answer boundary; offsets count code points, as Python's do. */
  function completionText(result, spans, scale) {
    const chars = Array.from(result.completion);
    const answer = result.answer;
    const cuts = new Set([0, chars.length]);
    for (const span of spans) cuts.add(span.start).add(span.end);
    if (answer) cuts.add(answer.start).add(answer.end);
    const points = [...cuts].filter((c) => c >= 0 && c <= chars.length).sort((a, b) => a - b);
    const box = el("div", "completion");
    for (let k = 0; k + 1 < points.length; k++) {
      const [a, b] = [points[k], points[k + 1]];
      const piece = chars.slice(a, b).join("");
      const span = spans.find((s) => s.start <= a && b <= s.end);
      const inAnswer = answer && answer.start <= a && b <= answer.end;
      if (!span && !inAnswer) {
        box.append(piece);
        continue;
      }
      const node = el("span", "", piece);
      if (span) {
        const t = intensity(span.drop, scale);
        node.className = "span";
        node.dataset.drop = String(span.drop);
        node.dataset.span = String(span.index);
        node.tabIndex = 0;
        node.title = spanTitle(span, result);
        node.style.background = shade(t);
        node.style.borderBottomColor = span.drop < 0 ? DISTRACT_LINE : SUPPORT_LINE;
      }
      if (inAnswer) {
        node.classList.add("answer");
        if (!span) node.title = `the scored answer (${answer.marker})`;
      }
      box.append(node);
    }
    return box;
  }

  /** A span's bars go from plain grey to its deep hue as its |drop| grows, like its text's shade. */
  function barColor(index, tokenSpan, result, scale) {
    const span = tokenSpan[index];
    if (span) {
      const t = intensity(span.drop, scale);
      return mix(PLAIN_BAR, t < 0 ? DISTRACT_BAR : SUPPORT_BAR, Math.abs(t));
    }
    const answer = result.answer;
    if (answer && index >= answer.token_start && index < answer.token_end) return ANSWER_BAR;
    if (answer && index >= answer.token_end) return PAD_BAR;
    return rgb(PLAIN_BAR);
  }

  function stats(values) {
    let min = Infinity;
    let max = -Infinity;
    let sum = 0;
    for (const v of values) {
      min = Math.min(min, v);
      max = Math.max(max, v);
      sum += v;
    }
    return { min, max, mean: sum / values.length };
  }

  /** One bar per completion token, as tall as its weight, in token order; a dashed line marks weight 1. */
  function weightStrip(result, spans, scale) {
    const weights = result.token_weights;
    const figure = el("figure", "weights");
    if (!weights.length) {
      figure.append(el("figcaption", "", "token weights: no tokens"));
      return figure;
    }
    const tokenSpan = new Array(weights.length).fill(null);
    for (const span of spans) {
      for (let i = span.token_start; i < Math.min(span.token_end, weights.length); i++) tokenSpan[i] = span;
    }
    const { min, max, mean } = stats(weights);
    const top = Math.max(max, 1);
    const n = weights.length;
    const chart = svg("svg", {
      viewBox: `0 0 ${n} ${STRIP_HEIGHT}`,
      preserveAspectRatio: "none",
      class: "strip",
      role: "img",
      "aria-label": `token weights of ${n} tokens, from ${min.toFixed(2)} to ${max.toFixed(2)}`,
    });
    weights.forEach((weight, i) => {
      const height = (Math.max(weight, 0) / top) * STRIP_HEIGHT;
      const bar = svg("rect", {
        x: i + 0.1,
        y: STRIP_HEIGHT - height,
        width: 0.8,
        height,
        fill: barColor(i, tokenSpan, result, scale),
      });
      const tip = svg("title", {});
      tip.textContent = `token ${i} ${JSON.stringify(result.tokens[i] ?? "")}: weight ${weight.toFixed(3)}`;
      bar.append(tip);
      chart.append(bar);
    });
    const one = STRIP_HEIGHT - STRIP_HEIGHT / top;
    chart.append(svg("line", { x1: 0, x2: n, y1: one, y2: one, class: "unit", "vector-effect": "non-scaling-stroke" }));
    const caption = el("figcaption");
    caption.append(
      el("span", "strip-title", "token weights"),
      el("span", "muted", ` min ${min.toFixed(2)} \u00b7 mean ${mean.toFixed(2)} \u00b7 max ${max.toFixed(2)}`),
    );
    const key = el("span", "strip-key");
    for (const [color, label] of [
      [SUPPORT_LINE, "supporting span"],
      [DISTRACT_LINE, "distractor span"],
      [rgb(PLAIN_BAR), "other reasoning"],
      [ANSWER_BAR, "answer"],
    ]) {
      const chip = el("span", "chip");
      chip.style.background = color;
      const item = el("span", "key-item");
      item.append(chip, label);
      key.append(item);
    }
    key.append(el("span", "key-item", "dashed: weight 1"));
    caption.append(key);
    figure.append(chart, caption);
    return figure;
  }

  /** Spans ranked by drop, most supporting first; a NaN drop sorts last. */
  function spanTable(result, spans, scale) {
    if (!spans.length) return el("p", "muted no-spans", "No spans were probed.");
    const ranked = [...spans].sort((a, b) => (Number.isNaN(a.drop) ? 1 : Number.isNaN(b.drop) ? -1 : b.drop - a.drop));
    const table = el("table", "span-table");
    const head = el("tr");
    for (const [label, className] of [
      ["#", "num"],
      ["drop", "num"],
      ["kind", "narrow-hide"],
      ["tokens", "narrow-hide num"],
      ["text", "text"],
    ]) {
      head.append(el("th", className, label));
    }
    table.append(el("thead"));
    table.tHead.append(head);
    const body = el("tbody");
    ranked.forEach((span, rank) => {
      const row = el("tr");
      row.dataset.span = String(span.index);
      row.tabIndex = 0;
      const swatch = el("span", "swatch");
      swatch.style.background = shade(intensity(span.drop, scale));
      swatch.style.borderColor = span.drop < 0 ? DISTRACT_LINE : SUPPORT_LINE;
      const drop = el("td", "num drop");
      drop.append(swatch, formatDrop(span.drop));
      const text = el("td", "text", oneLine(span.text, TABLE_TEXT_CHARS));
      text.title = span.text;
      row.append(
        el("td", "num muted", String(rank + 1)),
        drop,
        el("td", "narrow-hide", span.kind),
        el("td", "narrow-hide num muted", `${span.token_start}\u2013${span.token_end}`),
        text,
      );
      body.append(row);
    });
    table.append(body);
    const wrap = el("div", "table-wrap");
    wrap.append(table);
    return wrap;
  }

  /** Pointing at a span (text or table row) lights up both, and says its drop in the readout: titles
   * alone never show on touch screens. */
  function linkSpans(card, result, readout) {
    const spans = result.spans || [];
    const light = (key) => {
      for (const node of card.querySelectorAll(".hot")) node.classList.remove("hot");
      readout.textContent = "";
      if (key === null) return;
      for (const node of card.querySelectorAll(`[data-span="${key}"]`)) node.classList.add("hot");
      const span = spans[Number(key)];
      const what = ` \u00b7 ${span.kind} \u00b7 ${oneLine(span.text, 80)}`;
      readout.append(el("strong", "", `drop ${formatDrop(span.drop)}`), what);
    };
    const keyOf = (event) => {
      const node = event.target.closest && event.target.closest("[data-span]");
      return node && card.contains(node) ? node.dataset.span : null;
    };
    card.addEventListener("mouseover", (event) => light(keyOf(event)));
    card.addEventListener("focusin", (event) => light(keyOf(event)));
    card.addEventListener("mouseleave", () => light(null));
  }

  /** One result as an <article>: title and facts, shaded completion, weight strip, ranked spans.
   * `options.scale` is the |drop| that gets the full shade (default: this result's largest). */
  function renderTrace(result, options) {
    const opts = options || {};
    const scale = opts.scale === undefined ? maxAbsDrop([result]) : opts.scale;
    const spans = indexedSpans(result);
    const card = el("article", "trace");
    card.append(header(result, opts.title));
    if (result.status !== "ok") {
      card.append(el("p", "notice", `Not scored: ${result.reason || "no reason given"}. Its weights are uniform.`));
    }
    card.append(completionText(result, spans, scale));
    if (spans.length) {
      const readout = el("p", "readout muted");
      readout.setAttribute("aria-live", "polite");
      card.append(readout);
      linkSpans(card, result, readout);
    }
    card.append(weightStrip(result, spans, scale), spanTable(result, spans, scale));
    return card;
  }

  /** The key to the colors: a ramp from the strongest distractor to the strongest support. */
  function renderLegend(scale) {
    const legend = el("div", "legend");
    const ramp = el("span", "ramp");
    ramp.style.background = `linear-gradient(to right, ${shade(-1)}, ${shade(0)}, ${shade(1)})`;
    const rampBox = el("span", "ramp-box");
    const ticks = el("span", "ticks");
    ticks.append(el("span", "", formatDrop(-scale)), el("span", "", "0"), el("span", "", formatDrop(scale)));
    rampBox.append(ramp, ticks);
    const distract = el("span", "legend-label distract", "distractor");
    const support = el("span", "legend-label support", "supports the answer");
    const colors = el("span", "legend-scale");
    colors.append(distract, rampBox, support);
    const answer = el("span", "legend-item");
    answer.append(el("span", "answer sample", "#### 42"), " the scored answer");
    const note = el(
      "p",
      "legend-note muted",
      "Shade \u221d drop: how much the answer's log-prob falls when the span is masked. " +
        "Positive drops support the answer; negative ones are distractors. Hover over or tap a span for its numbers.",
    );
    const row = el("div", "legend-row");
    row.append(colors, answer);
    legend.append(row, note);
    return legend;
  }

  global.ccapoView = { renderTrace, renderLegend, maxAbsDrop };
})(window);
