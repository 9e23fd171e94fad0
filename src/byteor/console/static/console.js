// byteor console: keeps the figures of a page up to date from its Server-Sent Events stream, and
// counts the approval's time left down. The page is complete without it; nothing is fetched from
// anywhere but this console.
"use strict";
(() => {
  const body = document.body;
  const status = document.getElementById("live-status");
  const say = (text) => { if (status !== null) status.textContent = text; };

  function apply(data) {
    for (const [id, text] of Object.entries(data.text || {})) {
      const el = document.getElementById(id);
      if (el !== null && el.textContent !== text) el.textContent = text;
    }
    for (const [id, state] of Object.entries(data.state || {})) {
      const el = document.getElementById(id);
      if (el !== null && el.dataset.state !== state) el.dataset.state = state;
    }
  }

  const url = body.dataset.events;
  if (url && "EventSource" in window) {
    const source = new EventSource(url);
    say("Connecting for live figures…");
    source.addEventListener("update", (event) => {
      const data = JSON.parse(event.data);
      const pipelines = data.pipelines === undefined ? null : data.pipelines.join("\n");
      if ((pipelines !== null && pipelines !== (body.dataset.pipelines || "")) ||
          (data.shape && body.dataset.shape && data.shape !== body.dataset.shape)) {
        source.close();
        window.location.reload();  // rows came or went: the server draws the new table
        return;
      }
      apply(data);
      say("Live: updated at " + new Date().toLocaleTimeString() + ".");
    });
    source.addEventListener("ended", () => {
      source.close();
      const state = document.getElementById("hdr-state");
      if (state !== null) { state.textContent = "ENDED"; state.dataset.state = "gone"; }
      say("This run has ended; the figures are the last ones seen.");
    });
    source.addEventListener("error", () => say("Connection lost; reconnecting…"));
  }

  function span(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(s / 86400); s %= 86400;
    const h = Math.floor(s / 3600); s %= 3600;
    const m = Math.floor(s / 60); s %= 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return `${d}d ${h}h ${two(m)}m ${two(s)}s`;
    if (h) return `${h}h ${two(m)}m ${two(s)}s`;
    if (m) return `${m}m ${two(s)}s`;
    return `${s}s`;
  }

  const expiries = document.querySelectorAll("[data-expires-ms]");
  function tick() {
    const now = Date.now();
    for (const el of expiries) {
      const left = Number(el.dataset.expiresMs) - now;
      el.textContent = left > 0 ? `expires in ${span(left)}` : `EXPIRED ${span(-left)} ago`;
      el.dataset.state = left > 3600000 ? "ok" : left > 0 ? "warn" : "bad";
    }
  }
  if (expiries.length) { tick(); window.setInterval(tick, 1000); }
})();
