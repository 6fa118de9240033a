/* The scoring page: fills the form from the bundled examples, posts to /v1/importance like any
 * other client, and draws the result with ccapoView (view.js). URLs are relative, so the page also
 * works behind a proxy that serves the server under a path prefix. */
(function () {
  "use strict";

  const KEY_STORAGE = "ccapo.apiKey";
  const byId = (id) => document.getElementById(id);
  const form = byId("score-form");
  const examplePick = byId("example");
  const keyField = byId("api-key");
  const button = byId("score");
  const status = byId("status");
  const errorBox = byId("error");
  const output = byId("output");
  let examples = [];

  // What each API error type means to a person; the server's own message follows it.
  const ERROR_TITLES = {
    unauthorized: "This server needs an API key",
    forbidden: "This API key may not do that",
    invalid_json: "The request could not be read",
    invalid_request: "The server rejected the request",
    invalid_trace: "The server rejected the trace",
    payload_too_large: "The trace is too large for this server",
    queue_full: "The server is busy",
    not_ready: "The server is not ready yet",
    deadline_exceeded: "Scoring took too long",
    internal: "The server failed",
  };
  const ERROR_HINTS = {
    unauthorized: "Enter the key in the API key field above and press Score again.",
    queue_full: "Wait a moment and press Score again.",
    not_ready: "Wait a moment and press Score again.",
  };

  /** JSON.parse, but bare NaN and +-Infinity (a log-prob can be -Infinity) become numbers, not an error. */
  function parseJson(text) {
    const tagged = text.replace(/"(?:[^"\\]|\\.)*"|-?Infinity|NaN/g, (token) =>
      token.startsWith('"') ? token : `{"__number__":"${token}"}`,
    );
    return JSON.parse(tagged, (_, value) =>
      value && typeof value === "object" && typeof value.__number__ === "string" ? Number(value.__number__) : value,
    );
  }

  function showError(title, lines, detail) {
    errorBox.replaceChildren();
    const heading = document.createElement("strong");
    heading.textContent = title;
    errorBox.append(heading);
    for (const line of lines) {
      const body = document.createElement("div");
      body.textContent = line;
      errorBox.append(body);
    }
    if (detail) {
      const small = document.createElement("p");
      small.className = "detail";
      small.textContent = detail;
      errorBox.append(small);
    }
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
  }

  function apiError(response, body) {
    const error = body && body.error;
    const type = (error && error.type) || "";
    const title = ERROR_TITLES[type] || `The server answered ${response.status} ${response.statusText}`.trim();
    const text = (error && error.message) || "it gave no reason";
    const message = text.charAt(0).toUpperCase() + text.slice(1);
    const lines = ERROR_HINTS[type] ? [message, ERROR_HINTS[type]] : [message];
    showError(title, lines, `HTTP ${response.status}${type ? " \u00b7 " + type : ""}`);
  }

  function headers() {
    const key = keyField.value.trim();
    const base = { "Content-Type": "application/json", Accept: "application/json" };
    return key ? Object.assign(base, { Authorization: `Bearer ${key}` }) : base;
  }

  function request() {
    return {
      traces: [{ prompt: byId("prompt").value, completion: byId("completion").value }],
      config: {
        segmenter: byId("segmenter").value,
        intervention: byId("intervention").value,
        weights: { scheme: byId("scheme").value },
      },
    };
  }

  function show(data, sent) {
    const result = data.results[0];
    const config = sent.config;
    const run = document.createElement("p");
    run.className = "run muted";
    run.textContent =
      `${data.model.id} (version ${data.model.version}) \u00b7 ${config.segmenter} spans \u00b7 ` +
      `${config.intervention} \u00b7 ${config.weights.scheme} weights \u00b7 ` +
      `${Math.round(data.usage.compute_ms)} ms scoring, ${Math.round(data.usage.queue_ms)} ms queued`;
    const scale = ccapoView.maxAbsDrop([result]);
    const trace = ccapoView.renderTrace(result, { title: "Result", scale });
    output.replaceChildren(run, ccapoView.renderLegend(scale), trace);
    // On a phone the result lands below the form: bring it into view.
    if (output.getBoundingClientRect().top > window.innerHeight / 2) output.scrollIntoView({ block: "start" });
  }

  async function score(event) {
    event.preventDefault();
    clearError();
    const sent = request();
    button.disabled = true;
    status.textContent = "Scoring\u2026";
    try {
      let response;
      try {
        response = await fetch("v1/importance", { method: "POST", headers: headers(), body: JSON.stringify(sent) });
      } catch (err) {
        showError("Could not reach the server", [err.message, "Is it still running?"]);
        return;
      }
      const text = await response.text();
      let body = null;
      try {
        body = parseJson(text);
      } catch {
        // Not JSON (a proxy's error page, say): the status line is all there is to show.
      }
      if (!response.ok) {
        apiError(response, body);
      } else if (!body || !Array.isArray(body.results)) {
        showError("Unexpected answer", ["The server's reply held no results."], text.slice(0, 200));
      } else {
        show(body, sent);
      }
    } finally {
      button.disabled = false;
      status.textContent = "";
    }
  }

  function shorten(text, limit) {
    const flat = text.split(/\s+/).filter(Boolean).join(" ");
    return flat.length <= limit ? flat : flat.slice(0, limit - 1) + "\u2026";
  }

  async function loadExamples() {
    try {
      const response = await fetch("v1/examples");
      if (!response.ok) return; // the form still works without them
      examples = await response.json();
    } catch {
      return;
    }
    examples.forEach((example, i) => {
      const option = document.createElement("option");
      option.value = String(i);
      const prompt = typeof example.prompt === "string" ? example.prompt : JSON.stringify(example.prompt);
      option.textContent = `${i + 1}. ${shorten(prompt, 70)}`;
      examplePick.append(option);
    });
  }

  function pickExample() {
    const example = examples[Number(examplePick.value)];
    if (!examplePick.value || !example) return;
    byId("prompt").value = typeof example.prompt === "string" ? example.prompt : JSON.stringify(example.prompt);
    byId("completion").value = example.completion || "";
  }

  async function showModel() {
    const label = byId("model");
    try {
      const response = await fetch("readyz");
      const body = await response.json();
      label.textContent = response.ok ? `model: ${body.model.id}` : "the model is still loading";
    } catch {
      label.textContent = "the server cannot be reached";
    }
  }

  keyField.value = localStorage.getItem(KEY_STORAGE) || "";
  keyField.addEventListener("input", () => {
    const key = keyField.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  });
  examplePick.addEventListener("change", pickExample);
  form.addEventListener("submit", score);
  loadExamples();
  showModel();
})();
