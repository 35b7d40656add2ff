"""How big and how fast is the Explore page's map at 4,200 and 29,000 points?

Why: the dashboard must keep the map interactive (pan, zoom, select without freezing) at the demo's
full size (29,059 items). This measures the chart ``ui.maps`` builds, in two parts:

1. **Server side** (always): time to build the data frame and the Altair chart and to convert it the
   way ``st.altair_chart`` does (Arrow data + Vega-Lite spec), the bytes sent to the browser, and
   for comparison the size of the same chart as Altair's inline JSON.
2. **Browser** (when ``/usr/bin/chromium`` and Playwright work): a throwaway Streamlit server shows
   the chart with the page's selection readout; Chromium measures page load to a drawn canvas, the
   longest main-thread task (``longtask`` entries; >50 ms is what a user feels as a stutter) while
   zooming with the wheel, panning with shift-drag and dragging a selection box, and the time from
   releasing the box to the page showing the selected items (the Streamlit rerun round trip).
   ``--svg`` adds the SVG renderer for contrast; ``--plotly`` adds the alternative component: Plotly's
   WebGL ``Scattergl`` through ``st.plotly_chart(on_select=...)`` (box and lasso selection), one trace
   per colour group (needs ``pip install plotly==7.1.0``; not a dependency of the app, because the
   measurement chose Altair: see docs/results.md's "Map interactivity").

Usage: ``.venv/bin/python benchmarks/map_size.py [--sizes 4200,29059] [--no-browser] [--svg]``
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ui import maps  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
N_CLASSES = 50


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """50 blobs on a plane, like a t-SNE of the demo: the chart's cost depends on n, not on the data."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CLASSES, 2)) * 10
    y = rng.integers(0, N_CLASSES, n)
    xy = (centres[y] + rng.normal(size=(n, 2))).astype(np.float32)
    return xy, np.array([f"class-{k:02d}" for k in y], dtype=object)


def server_side(n: int) -> dict:
    import altair as alt
    from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec, _stabilize_vega_json_spec

    xy, groups = synthetic(n)
    t0 = time.perf_counter()
    frame, _ = maps.map_frame(xy, groups, max_points=n)
    chart = maps.build_chart(frame, "label", "box")
    spec = _convert_altair_to_vega_lite_spec(chart)
    arrow = sum(len(v) for v in spec.pop("datasets", {}).values() if isinstance(v, bytes))
    spec_json = _stabilize_vega_json_spec(json.dumps(spec))
    build_ms = (time.perf_counter() - t0) * 1000
    with alt.data_transformers.disable_max_rows():
        inline = len(chart.to_json())
    return {"points": n, "build_ms": build_ms, "arrow_kb": arrow / 1024, "spec_kb": len(spec_json) / 1024,
            "inline_json_kb": inline / 1024}


APP = '''
import numpy as np
import streamlit as st
from benchmarks.map_size import synthetic
from ui import maps

n = int(st.query_params.get("n", 4200))
renderer = st.query_params.get("renderer", "canvas")
tip = st.query_params.get("tooltip")
xy, groups = synthetic(n)
if st.query_params.get("chart") == "plotly":
    import plotly.graph_objects as go

    fig = go.Figure()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        fig.add_trace(go.Scattergl(x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=str(g), customdata=idx,
                                   marker=dict(size=4, opacity=0.7), hoverinfo="name"))
    fig.update_layout(dragmode="pan", height=600, margin=dict(l=0, r=0, t=0, b=0), uirevision="map",
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    state = st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso"), key="map",
                            config={"scrollZoom": True, "displaylogo": False})
    st.markdown(f"Selection: {len(state.selection.points) if state else 0} items")
    st.stop()
frame, _ = maps.map_frame(xy, groups, max_points=n)
chart = maps.build_chart(frame, "label", "box", tooltip=None if tip is None else tip == "1",
                         mark=st.query_params.get("mark", "circle"), highlight=None if st.query_params.get("highlight") is None else st.query_params.get("highlight") == "1")
if renderer != "canvas":
    chart = chart.properties(usermeta={"embedOptions": {"renderer": renderer}})
state = st.altair_chart(chart, on_select="rerun", selection_mode=["box"], key="map")
rows = maps.selected_rows(state, frame, "box")
st.markdown(f"Selection: {len(rows)} items")
'''

LONGTASKS = """
window.__long = [];
new PerformanceObserver(l => l.getEntries().forEach(e => window.__long.push(e.duration)))
  .observe({type: 'longtask', buffered: true});
"""

DRAWN = """() => {
  const c = document.querySelector('[data-testid="stVegaLiteChart"] canvas');
  if (!c || c.width === 0) return false;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let i = 3; i < d.length; i += 4 * 61) if (d[i] > 0) painted++;
  return painted > 50;
}"""

PLOTLY_DRAWN = """() => !!document.querySelector('.js-plotly-plot canvas')"""

SVG_DRAWN = """() => document.querySelectorAll('[data-testid="stVegaLiteChart"] svg path, [data-testid="stVegaLiteChart"] svg circle').length > 100"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _max_long(page) -> float:
    vals = page.evaluate("window.__long.splice(0)")
    return max(vals) if vals else 0.0


def _frames(page, k: int = 2) -> None:
    page.evaluate(f"new Promise(r => {{ let k = {k}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


@contextlib.contextmanager
def streamlit_server(app: str, *extra: str) -> Iterator[str]:
    """Serve the Streamlit script ``app`` (source text, ``extra`` command-line options) on a free port;
    yields its base URL."""
    tmp = Path(tempfile.mkdtemp(prefix="mmae-map-bench-"))
    (tmp / "map_app.py").write_text(textwrap.dedent(app))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(tmp / "map_app.py"), "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/_stcore/health")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def drag_box(page, cx: float, cy: float, dx: float, dy: float, steps: int) -> None:
    """Press, drag a box of half-size (dx, dy) around (cx, cy); the mouse stays down."""
    page.mouse.move(cx - dx, cy - dy)
    page.mouse.down()
    page.mouse.move(cx + dx, cy + dy, steps=steps)


def select_and_wait(page, prepare: Callable[[], None], finish: Callable[[], None] | None = None) -> float:
    """Seconds from ``finish`` (default: releasing the mouse) to the page printing its selection again."""
    prepare()
    t = time.perf_counter()
    (finish or page.mouse.up)()
    try:
        page.get_by_text("Selection: 0 items").wait_for(state="detached", timeout=60_000)
        page.get_by_text("Selection:").wait_for(timeout=60_000)
        return time.perf_counter() - t
    except Exception:
        return float("nan")


def browser(sizes: list[int], variants: list[tuple[str, dict[str, str]]]) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with streamlit_server(APP) as base, sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        # warm-up: the first page load also pays Streamlit's own start (imports, JS bundle)
        warm = b.new_page()
        warm.goto(f"{base}/?n=100")
        warm.wait_for_function(DRAWN, timeout=180_000, polling=100)
        warm.close()
        for name, params in variants:
            for n in sizes:
                query = "&".join(f"{k}={v}" for k, v in {"n": str(n), **params}.items())
                renderer = params.get("renderer", "canvas")
                plotly = params.get("chart") == "plotly"
                page = b.new_page(viewport={"width": 1400, "height": 1000})
                page.add_init_script(LONGTASKS)
                t0 = time.perf_counter()
                page.goto(f"{base}/?{query}")
                try:
                    drawn = PLOTLY_DRAWN if plotly else DRAWN if renderer == "canvas" else SVG_DRAWN
                    page.wait_for_function(drawn, timeout=180_000, polling=100)
                    if plotly:
                        page.get_by_text("Selection: 0 items").wait_for(timeout=180_000)
                except Exception:
                    out.append({"points": n, "variant": name, "load_s": float("nan")})
                    page.close()
                    continue
                load = time.perf_counter() - t0
                load_long = _max_long(page)
                box = page.locator(".js-plotly-plot" if plotly else '[data-testid="stVegaLiteChart"]').first.bounding_box()
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(cx, cy)
                t = time.perf_counter()
                for _ in range(10):
                    page.mouse.wheel(0, -120)
                    _frames(page)
                zoom_ms = (time.perf_counter() - t) * 100  # per wheel step
                zoom_long = _max_long(page)
                pan_key = None if plotly else "Shift"  # Plotly: drag pans (dragmode "pan"); Altair: shift-drag
                if pan_key:
                    page.keyboard.down(pan_key)
                page.mouse.move(cx, cy)
                page.mouse.down()
                t = time.perf_counter()
                page.mouse.move(cx + 120, cy + 60, steps=20)
                page.mouse.up()
                if pan_key:
                    page.keyboard.up(pan_key)
                _frames(page)
                pan_ms = (time.perf_counter() - t) * 1000 / 20
                pan_long = _max_long(page)
                if plotly:  # the modebar's box tool, as a curator would pick it
                    page.locator('[data-title="Box Select"]').first.click()
                    _max_long(page)
                rerun = select_and_wait(page, lambda: drag_box(page, cx, cy, 150, 100, 20))
                box_long = _max_long(page)
                out.append({"points": n, "variant": name, "load_s": load, "load_longest_ms": load_long,
                            "zoom_step_ms": zoom_ms, "zoom_longest_ms": zoom_long, "pan_move_ms": pan_ms,
                            "pan_longest_ms": pan_long, "box_longest_ms": box_long, "selection_rerun_s": rerun})
                page.close()
        b.close()
    return out


def _table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = " | ".join(h for _, h in cols)
    lines = [head, " | ".join("---" for _ in cols)]
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key, "")
            cells.append(f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4200,29059")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--svg", action="store_true", help="also time the SVG renderer (slow at 29k)")
    ap.add_argument("--compare", action="store_true", help="also time tooltips on every point and square marks")
    ap.add_argument("--plotly", action="store_true", help="also time Plotly's WebGL scatter (pip install plotly==7.1.0)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    print("## Server side: build and payload of the map chart\n")
    server = [server_side(n) for n in sizes]
    print(_table(server, [("points", "points"), ("build_ms", "build (ms)"), ("arrow_kb", "Arrow data sent (KB)"),
                          ("spec_kb", "spec (KB)"), ("inline_json_kb", "same chart as inline JSON (KB)")]))
    if args.no_browser:
        return 0
    if not Path(CHROMIUM).exists():
        print(f"\n(no browser run: {CHROMIUM} is not installed)")
        return 0
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("\n(no browser run: playwright is not installed)")
        return 0
    print("\n## Browser (Chromium, headless): load, interaction, selection round trip\n")
    variants = [("canvas (the page's chart)", {})]
    if args.compare:
        variants += [("canvas + tooltip on every point", {"tooltip": "1"}), ("canvas, square marks", {"mark": "square"}),
                     ("canvas + fading outside the selection", {"highlight": "1"})]
    if args.svg:
        variants += [("SVG", {"renderer": "svg"})]
    if args.plotly:
        variants += [("Plotly Scattergl (WebGL)", {"chart": "plotly"})]
    rows = browser(sizes, variants)
    print(_table(rows, [("points", "points"), ("variant", "chart"), ("load_s", "load→drawn (s)"),
                        ("load_longest_ms", "longest task at load (ms)"), ("zoom_step_ms", "wheel step (ms)"),
                        ("zoom_longest_ms", "longest task zooming (ms)"), ("pan_move_ms", "pan move (ms)"),
                        ("pan_longest_ms", "longest task panning (ms)"), ("box_longest_ms", "longest task box+rerun (ms)"),
                        ("selection_rerun_s", "box release→items shown (s)")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
