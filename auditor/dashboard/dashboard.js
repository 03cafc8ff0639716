// The auditor's public dashboard. It reads only the auditor's public API and
// refreshes itself; no external scripts or fonts.
"use strict";

const $ = (id) => document.getElementById(id);
const text = (id, value) => { $(id).textContent = value; };

function bytes(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
  return n + " B";
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function renderStatus(s) {
  document.body.dataset.state = s.state;
  const badge = $("state");
  badge.dataset.state = s.state;
  badge.textContent = { ok: "verified", lagging: "lagging", failed: "failed" }[s.state] || s.state;
  text("reason", s.reason || "Every signed epoch is verified and co-signed.");
  text("namespace", s.namespace || "–");
  text("seen-epoch", s.last_seen_epoch ?? "–");
  text("verified-epoch", s.last_verified_epoch ?? "–");
  document.body.dataset.verifiedEpoch = s.last_verified_epoch ?? "";
  text("lag", s.lag + (s.lag === 1 ? " epoch" : " epochs"));
  text("root", s.last_verified_root || "–");
  text("head-age", s.last_head_timestamp_ms ? ago(s.last_head_timestamp_ms) : "–");
  text("directory-key", s.directory_key);
  text("auditor-key", s.auditor_key);
}

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function renderChart(epochs) {
  const svg = $("chart");
  svg.replaceChildren();
  const data = epochs.filter((e) => e.epoch > 0);
  if (data.length === 0) {
    const t = el("text", { x: 400, y: 110, "text-anchor": "middle", fill: "#656d76" });
    t.textContent = "no epochs with proofs verified yet";
    svg.append(t);
    return;
  }
  const W = 800, H = 220, L = 50, R = 50, T = 12, B = 28;
  const maxU = Math.max(1, ...data.map((e) => e.updates));
  const maxV = Math.max(1, ...data.map((e) => e.verify_ms));
  const step = (W - L - R) / data.length;
  const y = (v, max) => H - B - (v / max) * (H - T - B);
  svg.append(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#d0d7de" }));
  let points = [];
  data.forEach((e, i) => {
    const x = L + i * step;
    const bar = el("rect", {
      x: x + step * 0.15, y: y(e.updates, maxU), width: Math.max(1, step * 0.7),
      height: H - B - y(e.updates, maxU), fill: "#54aeff",
    });
    const tip = el("title", {});
    tip.textContent = `epoch ${e.epoch}: ${e.updates} updates, verified in ${e.verify_ms} ms`;
    bar.append(tip);
    svg.append(bar);
    points.push(`${x + step / 2},${y(e.verify_ms, maxV)}`);
  });
  svg.append(el("polyline", { points: points.join(" "), fill: "none", stroke: "#bf3989", "stroke-width": 2 }));
  const label = (x, yy, s, anchor) => {
    const t = el("text", { x, y: yy, "font-size": 11, fill: "#656d76", "text-anchor": anchor });
    t.textContent = s;
    svg.append(t);
  };
  label(L - 6, T + 10, String(maxU), "end");
  label(L - 6, H - B, "0", "end");
  label(W - R + 6, T + 10, maxV + " ms", "start");
  label(L, H - 8, "epoch " + data[0].epoch, "start");
  label(W - R, H - 8, "epoch " + data[data.length - 1].epoch, "end");
}

function renderEpochs(epochs) {
  const body = $("epochs").querySelector("tbody");
  body.replaceChildren();
  for (const e of epochs.slice().reverse().slice(0, 25)) {
    const tr = document.createElement("tr");
    const cells = [
      e.epoch, e.root.slice(0, 16) + "…", e.updates, bytes(e.proof_bytes),
      e.verify_ms + " ms", new Date(e.verified_at_ms).toISOString().replace("T", " ").slice(0, 19),
    ];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (i === 1) { td.className = "mono"; td.title = e.root; }
      tr.append(td);
    });
    body.append(tr);
  }
}

function renderEvidence(list) {
  const ul = $("evidence");
  ul.replaceChildren();
  $("evidence-empty").hidden = list.length > 0;
  for (const ev of list) {
    const li = document.createElement("li");
    const title = document.createElement("strong");
    title.textContent = `#${ev.id} ${ev.kind.replace("_", " ")} at epoch ${ev.epoch}`;
    const when = document.createElement("span");
    when.className = "muted";
    when.textContent = ` (${ev.source}, ${new Date(ev.detected_at_ms).toISOString()}) `;
    const reason = document.createElement("div");
    reason.textContent = ev.reason;
    const link = document.createElement("a");
    link.href = "/v1/evidence/" + ev.id;
    link.textContent = "signed material";
    li.append(title, when, reason, link);
    if (ev.blob_name) {
      const blob = document.createElement("a");
      blob.href = `/v1/evidence/${ev.id}/blob`;
      blob.textContent = " · rejected proof";
      li.append(blob);
    }
    ul.append(li);
  }
}

function renderWitness(w) {
  text("witness-vkey", w.vkey || "–");
  const c = w.cosigned;
  text("checkpoint", c
    ? "size " + c.size + " (epochs 0 to " + (c.size - 1) + "), root " + c.root + ", co-signed " + ago(c.cosigned_at * 1000)
    : "none yet");
  document.body.dataset.checkpointSize = c ? String(c.size) : "";
}

async function refresh() {
  try {
    const [status, epochs, evidence, witness] = await Promise.all([
      getJson("/v1/status"), getJson("/v1/epochs?limit=60"), getJson("/v1/evidence"), getJson("/v1/witness"),
    ]);
    renderWitness(witness);
    renderStatus(status);
    renderChart(epochs.epochs);
    renderEpochs(epochs.epochs);
    renderEvidence(evidence.evidence);
    text("updated", "updated " + new Date().toLocaleTimeString());
    document.body.dataset.loaded = "1";
  } catch (e) {
    text("updated", "refresh failed: " + e.message);
  }
  setTimeout(refresh, 5000);
}

refresh();
