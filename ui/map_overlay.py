"""The large map's component: the server's raster as a plain ``<img>`` with a box drawn over it in a few
lines of JavaScript (``st.components.v2``: in the page, no iframe, no chart library).

Why not the Vega-Lite layer it replaces (measured by ``benchmarks/map_render.py``, table in ``ui.maps``):
Vega's chunk has to load and compile a spec before the image shows, and every selection rerun re-rendered
the chart; this component paints as fast as ``st.image`` of the same PNG and its box comes back in one
plain rerun. The box is reported in map coordinates and resolved on the server against every point.
The drawn box is kept by the element, not sent in the data, so an unchanged map is re-sent by Streamlit
as a cached message (a selection rerun ships no image).
"""
from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

JS = r"""export default function (component) {
  const { data, setStateValue, parentElement } = component;
  const root = parentElement;
  let wrap = root.querySelector(".mm-map");
  if (!wrap) {
    wrap = document.createElement("div");
    wrap.className = "mm-map";
    wrap.innerHTML = '<div class="mm-plot"><img class="mm-img" draggable="false" alt=""/><div class="mm-box"></div></div><div class="mm-legend"></div>';
    root.appendChild(wrap);
  }
  const plot = wrap.querySelector(".mm-plot"), img = wrap.querySelector(".mm-img"), box = wrap.querySelector(".mm-box");
  plot.style.height = data.height + "px";
  if (img.getAttribute("src") !== data.url) img.setAttribute("src", data.url);
  img.setAttribute("alt", data.alt || "");
  const legend = wrap.querySelector(".mm-legend");
  const esc = (s) => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  const lhtml = (data.title ? '<div class="mm-title">' + esc(data.title) + "</div>" : "") + data.legend.map(
    ([name, colour]) => '<div class="mm-key"><span style="background:' + esc(colour) + '"></span>' + esc(name) + "</div>").join("");
  if (legend.innerHTML !== lhtml) legend.innerHTML = lhtml;
  const [x0, x1, y0, y1] = data.extent;
  const show = (b) => {
    if (!b) { box.style.display = "none"; return; }
    const w = plot.clientWidth, h = plot.clientHeight;
    const l = (b.x[0] - x0) / (x1 - x0) * w, r = (b.x[1] - x0) / (x1 - x0) * w;
    const t = (y1 - b.y[1]) / (y1 - y0) * h, btm = (y1 - b.y[0]) / (y1 - y0) * h;
    Object.assign(box.style, { display: "block", left: l + "px", top: t + "px", width: (r - l) + "px", height: (btm - t) + "px" });
  };
  if (wrap._cleanup) wrap._cleanup();
  show(wrap._box);
  const at = (ev) => { const r = plot.getBoundingClientRect();
    return [Math.min(Math.max(ev.clientX - r.left, 0), r.width), Math.min(Math.max(ev.clientY - r.top, 0), r.height), r.width, r.height]; };
  const toMap = (px, py, w, h) => [x0 + px / w * (x1 - x0), y1 - py / h * (y1 - y0)];
  let start = null;
  const move = (ev) => { if (!start) return; const [px, py] = at(ev);
    Object.assign(box.style, { display: "block", left: Math.min(px, start[0]) + "px", top: Math.min(py, start[1]) + "px",
      width: Math.abs(px - start[0]) + "px", height: Math.abs(py - start[1]) + "px" }); };
  const up = (ev) => { if (!start) return; const [px, py, w, h] = at(ev); const s = start; start = null;
    if (Math.abs(px - s[0]) < 3 && Math.abs(py - s[1]) < 3) { show(wrap._box); return; }
    const [ax, ay] = toMap(s[0], s[1], w, h), [bx, by] = toMap(px, py, w, h);
    wrap._box = { x: [Math.min(ax, bx), Math.max(ax, bx)], y: [Math.min(ay, by), Math.max(ay, by)] };
    setStateValue("box", wrap._box); };
  const down = (ev) => { if (ev.button !== 0) return; ev.preventDefault(); start = at(ev).slice(0, 2); };
  const clear = () => { wrap._box = null; show(null); setStateValue("box", null); };
  plot.addEventListener("mousedown", down);
  window.addEventListener("mousemove", move);
  window.addEventListener("mouseup", up);
  plot.addEventListener("dblclick", clear);
  wrap._cleanup = () => { plot.removeEventListener("mousedown", down); window.removeEventListener("mousemove", move);
    window.removeEventListener("mouseup", up); plot.removeEventListener("dblclick", clear); wrap._cleanup = null; };
  return wrap._cleanup;
}
"""

CSS = r""".mm-map { display: flex; gap: 12px; align-items: flex-start; font-family: sans-serif; font-size: 12px; }
.mm-plot { position: relative; flex: 1 1 auto; cursor: crosshair; user-select: none; overflow: hidden; }
.mm-img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: fill; pointer-events: none; }
.mm-box { position: absolute; display: none; border: 1px solid #333; background: rgba(51, 51, 51, 0.12); pointer-events: none; }
.mm-legend { flex: 0 0 auto; max-height: 560px; overflow-y: auto; columns: auto; }
.mm-title { font-weight: bold; margin-bottom: 4px; }
.mm-key { white-space: nowrap; line-height: 16px; }
.mm-key span { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 5px; }
"""

_render = st.components.v2.component("mmae_raster_map", js=JS, css=CSS)


def raster_map(data: Mapping, key: str) -> dict:
    """Show the map described by ``data`` (``ui.maps.overlay_data``) and return the curator's box as the
    selection state ``ui.maps.selected_rows`` reads: ``{"selection": {"box": {"x": [..], "y": [..]}}}``
    or ``{}``."""
    result = _render(key=key, data=dict(data), default={"box": None}, on_box_change=lambda: None)
    box = result.get("box") if result is not None else None
    return {"selection": {"box": box}} if box else {}
