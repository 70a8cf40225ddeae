// SVG charts for the dashboard, drawn by this file alone: horizontal bars, columns over
// time, and a sparkline. Each returns an <svg> element with a <title> and an aria-label.
"use strict";

const Chart = (() => {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function frame(width, height, label) {
    const svg = el("svg", {
      viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label,
    });
    svg.appendChild(el("title", {}, label));
    return svg;
  }

  function fmt(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(0) + "k";
    if (n >= 100 || Number.isInteger(n)) return String(Math.round(n));
    return n.toFixed(1);
  }

  // data: [{label, value}], one bar per row.
  function bars(data, label) {
    const row = 24, left = 140, width = 600;
    const height = Math.max(row * data.length + 8, 40);
    const svg = frame(width, height, label);
    if (data.length === 0) {
      svg.appendChild(el("text", { x: 8, y: 24 }, "no data"));
      return svg;
    }
    const max = Math.max(...data.map((d) => d.value), 1);
    data.forEach((d, i) => {
      const y = 4 + i * row;
      const w = Math.max(((width - left - 60) * d.value) / max, 1);
      svg.appendChild(el("text", { x: left - 6, y: y + 15, "text-anchor": "end" },
        d.label.length > 20 ? d.label.slice(0, 19) + "…" : d.label));
      const bar = el("rect", { class: "bar", x: left, y, width: w, height: row - 6, rx: 2 });
      bar.appendChild(el("title", {}, `${d.label}: ${d.value}`));
      svg.appendChild(bar);
      svg.appendChild(el("text", { x: left + w + 6, y: y + 15 }, fmt(d.value)));
    });
    return svg;
  }

  // points: [{t: Date, value}], evenly spaced buckets, drawn as columns.
  function columns(points, label) {
    const width = 600, height = 180, left = 40, bottom = 22, top = 8;
    const svg = frame(width, height, label);
    const max = Math.max(...points.map((p) => p.value), 1);
    const plotW = width - left - 8, plotH = height - top - bottom;
    svg.appendChild(el("line", { class: "axis", x1: left, y1: top + plotH, x2: width - 8, y2: top + plotH }));
    svg.appendChild(el("text", { x: left - 4, y: top + 10, "text-anchor": "end" }, fmt(max)));
    svg.appendChild(el("text", { x: left - 4, y: top + plotH, "text-anchor": "end" }, "0"));
    const w = plotW / Math.max(points.length, 1);
    points.forEach((p, i) => {
      const h = (plotH * p.value) / max;
      if (p.value > 0) {
        const r = el("rect", { class: "bar", x: left + i * w + 1, y: top + plotH - h,
          width: Math.max(w - 2, 1), height: h });
        r.appendChild(el("title", {}, `${p.t.toLocaleTimeString()}: ${p.value}`));
        svg.appendChild(r);
      }
    });
    if (points.length > 0) {
      const first = points[0].t, last = points[points.length - 1].t;
      svg.appendChild(el("text", { x: left, y: height - 6 }, first.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
      svg.appendChild(el("text", { x: width - 8, y: height - 6, "text-anchor": "end" },
        last.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    }
    return svg;
  }

  // values: numbers, oldest first.
  function sparkline(values, label) {
    const width = 600, height = 100, pad = 4;
    const svg = frame(width, height, label);
    if (values.length < 2) return svg;
    const max = Math.max(...values, 1);
    const step = (width - 2 * pad) / (values.length - 1);
    const d = values.map((v, i) =>
      `${i === 0 ? "M" : "L"}${(pad + i * step).toFixed(1)},${(height - pad - ((height - 2 * pad) * v) / max).toFixed(1)}`
    ).join(" ");
    svg.appendChild(el("path", { class: "line", d }));
    svg.appendChild(el("text", { x: width - pad, y: 12, "text-anchor": "end" }, `max ${fmt(max)}`));
    return svg;
  }

  return { bars, columns, sparkline, fmt };
})();
