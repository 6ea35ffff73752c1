"""App speed in a real browser: cold start, warm start and slider -> updated charts latency on the demo.

    python bench/app_speed.py [--quick | --embeddings PATH] [--map pca|umap] [--moves 20] [--sessions 2]
                              [--out bench/results/app_speed.md] [--cache-dir DIR]

Starts `streamlit run app.py` on a free localhost port and drives headless Debian Chromium (/usr/bin/chromium)
with Playwright, as a user would:
  (a) cold start: empty SELECTOR_CACHE_DIR -> launch the server, open the app (the built-in demo starts by
      itself on a session's first visit: Fashion-MNIST train, 60,000 images, offline demo encoder, 20% planted
      flips), wait for the dataset summary, go to Selection; timed until its counts are shown and Streamlit is
      idle. Includes embedding 60k images with the shipped demo encoder, the audit and the UMAP map.
  (b) warm start: the same cache, a new server process, the same steps.
  (c) slider latency: on Selection, press an arrow key on the ratio slider --moves times; each time from the
      key press until the "Selected" count shows round(ratio x n) for the new ratio AND Streamlit's script
      is no longer running (no running indicator), plus two animation frames so the charts are painted.
  (d) page switches at that size: sidebar click -> page idle with its charts, tables and images drawn.
  (e) lasso: on the Map, three lassos of different sizes; each from mouse release until the picked samples'
      gallery is drawn. Then (demo only: it has images) the mouse moved onto a dozen samples in turn, each timed
      until the hover card beside the cursor shows that sample's image.
  (f) sessions: --sessions browser sessions join the warm server one by one; its memory is read after each.
--quick: the app has no smaller demo, so --quick runs (a)-(f) on a synthetic precomputed-embeddings file
  (60,000 x 64, 10 classes, no images, PCA map) instead: no encoder training or embedding, same slider path.
--embeddings PATH [--map umap]: (a)-(f) on any precomputed-embeddings .npz, e.g. the synthetic 1.28M x 512 x
  1,000-class file of bench/scale.py: the app at ImageNet size.
Prints a markdown table and writes it, with the machine, date and command, to --out (figures as JSON beside it).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _machine import cpu_and_memory

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-sync", "--disable-component-update", "--disable-quic", "--disable-dev-shm-usage",
                 "--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 1280, "height": 900}
PAGES = ("Map", "Scores", "Label issues", "Export", "Duplicates & outliers", "Selection")

_IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-connection-state') === 'CONNECTED'
      && app.getAttribute('data-test-script-state') === 'notRunning'
      && !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]');
}"""
_METRIC_JS = """(label) => {
  for (const m of document.querySelectorAll('[data-testid="stMain"] [data-testid="stMetric"]')) {
    const l = m.querySelector('[data-testid="stMetricLabel"]');
    if (l && l.innerText.trim() === label) {
      const v = m.querySelector('[data-testid="stMetricValue"]');
      return v ? v.innerText.trim() : null;
    }
  }
  return null;
}"""
_SETTLED_JS = "(" + _IDLE_JS + ")() && (" + _METRIC_JS + ")('Selected') === expected"
_RENDERED_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return false;
  const ok = (sel, inner) => [...main.querySelectorAll(sel)].every(e => e.querySelector(inner));
  return ok('[data-testid="stPlotlyChart"]', '.main-svg') && ok('[data-testid="stVegaLiteChart"]', 'canvas, svg')
      && ok('[data-testid="stDataFrame"]', 'canvas')
      && [...main.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0);
}"""
_STATUS_JS = """() => {
  for (const d of document.querySelectorAll('[data-testid="stMain"] details')) {
    const s = d.querySelector('summary [data-testid="stMarkdownContainer"]');
    if (s && /^(Running|Done|The run)/.test(s.innerText.trim()))
      return {label: s.innerText.trim()};
  }
  return null;
}"""
_TWO_FRAMES_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


# --------------------------------------------------------------------------------------------- helpers
def fmt_s(sec) -> str:
    if sec is None:
        return "-"
    if sec < 1:
        return f"{sec * 1e3:.0f} ms"
    if sec < 120:
        return f"{sec:.1f} s"
    return f"{sec / 60:.1f} min ({sec:.0f} s)"


def percentile(values, q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def subset_size(n: int, ratio: float) -> int:
    from selector.optimize import subset_size as engine
    return engine(n, ratio)


def machine() -> str:
    try:
        chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        chromium = "chromium ?"
    import streamlit
    from selector import neighbors
    gpu = "faiss GPU" if neighbors.gpu_available() else "no GPU"
    return (f"{platform.platform()}; {cpu_and_memory()}, {gpu}; "
            f"Python {platform.python_version()}, streamlit {streamlit.__version__}, {chromium} (headless)")


def make_synthetic(path: Path, n: int = 60_000, n_classes: int = 10, d: int = 64, seed: int = 0) -> Path:
    """--quick's stand-in for the demo: Gaussian class clusters around class text vectors, no images."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n_classes, d)).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    emb = text[labels] + 0.8 * rng.normal(size=(n, d)).astype(np.float32)
    np.savez(path, image_embeddings=emb, labels=labels, class_names=np.array([f"class_{c}" for c in range(n_classes)]),
             text_embeddings=text)
    return path


# ---------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


class Server:
    """`streamlit run app.py` in its own process group; `t_launch` is the perf_counter at Popen."""

    def __init__(self, cache_dir: Path, log_path: Path, *, autorun: bool):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, SELECTOR_CACHE_DIR=str(cache_dir), PYTHONUNBUFFERED="1",
                   SELECTOR_AUTORUN="1" if autorun else "0")
        # Python's default, as on a user's machine: the first launch compiles the project's modules to
        # __pycache__ and later launches reuse them (a shell with this set would recompile at every start)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        with open(log_path, "ab") as log:
            self.t_launch = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                 "--server.port", str(self.port), "--server.address", "127.0.0.1",
                 "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout_s: float = 180.0) -> float:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            if healthy(self.url):
                return time.perf_counter() - self.t_launch
            time.sleep(0.1)
        raise TimeoutError(f"streamlit did not answer in {timeout_s:.0f} s:\n{self.log_tail()}")

    def peak_rss_gb(self, field: str = "VmHWM") -> float | None:
        """The server's peak (VmHWM) or current (VmRSS) resident memory in GB."""
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024 ** 2
        except OSError:
            return None
        return None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=15)


# ------------------------------------------------------------------------------------------ the browser
class Tab:
    def __init__(self, browser, url: str, step_timeout_s: float):
        self.ctx = browser.new_context(viewport=VIEWPORT)
        self.ctx.set_default_timeout(step_timeout_s * 1000)
        self.page = self.ctx.new_page()
        self.url = url
        self.step_timeout_ms = step_timeout_s * 1000

    def idle(self, timeout_ms: float | None = None) -> None:
        self.page.wait_for_function(_IDLE_JS, timeout=timeout_ms or self.step_timeout_ms, polling="raf")
        exc = self.page.locator('[data-testid="stException"]')
        if exc.count():
            raise RuntimeError("traceback on the page:\n" + exc.first.inner_text())

    def rendered(self) -> None:
        self.page.wait_for_function(_RENDERED_JS, timeout=self.step_timeout_ms, polling=100)
        self.page.evaluate(_TWO_FRAMES_JS)

    def open(self) -> None:
        """Load the app; returns once Home's title is drawn (the demo may already be running by itself)."""
        self.page.goto(self.url, wait_until="domcontentloaded")
        self.page.get_by_role("heading", name="Training data selection").wait_for()

    def choose(self, key: str, option: str) -> None:
        field = self.page.locator(f".st-key-{key} input")
        for _ in range(5):
            self.idle()
            if field.input_value() == option:
                return
            field.click()
            try:
                self.page.get_by_role("option", name=option, exact=True).click(timeout=5000)
            except Exception:  # noqa: BLE001 - a rerun closed the dropdown: try again
                self.page.keyboard.press("Escape")
                continue
            self.page.wait_for_function(f"() => document.querySelector('.st-key-{key} input').value === "
                                        f"{option!r}")
            self.idle()
            return
        raise RuntimeError(f"could not choose {option!r} in {key!r}")

    def configure_synthetic(self, npz: Path, map_label: str = "PCA (fast preview)") -> None:
        self.choose("source", "Precomputed embeddings (.npz)")
        field = self.page.locator(".st-key-path input")
        field.fill(str(npz))
        field.press("Enter")
        self.idle()
        self.choose("noise_mode", "uniform flips")
        if not self.page.locator(".st-key-map").is_visible():
            self.page.get_by_text("Advanced settings", exact=True).click()
        self.choose("map", map_label)

    def wait_summary(self, timeout_s: float, *, press_run: bool) -> tuple[float, list[tuple[float, str]]]:
        """Press Run (unless the demo started by itself) and wait for the dataset summary, noting the progress
        labels the page shows. Returns (seconds from now until the summary is shown and the app idle, labels)."""
        page = self.page
        t0 = time.perf_counter()
        if press_run:
            self.idle()
            t0 = time.perf_counter()
            page.locator(".st-key-run button").click()
        summary = page.get_by_role("heading", name="Dataset summary")
        labels: list[tuple[float, str]] = []
        deadline = t0 + timeout_s
        while True:
            try:
                summary.wait_for(timeout=500)
                break
            except Exception:  # noqa: BLE001 - still running: note the progress label the page shows
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"the run did not finish in {timeout_s:.0f} s")
                if page.locator('[data-testid="stException"]').count():
                    raise RuntimeError(page.locator('[data-testid="stException"]').first.inner_text())
                status = page.evaluate(_STATUS_JS)
                text = status["label"] if status else ""
                if text and (not labels or labels[-1][1] != text):
                    labels.append((time.perf_counter() - t0, text))
                    print(f"  {labels[-1][0]:6.1f} s  {text}", flush=True)
        self.idle(timeout_ms=timeout_s * 1000)
        return time.perf_counter() - t0, labels

    def goto(self, title: str) -> float:
        """Sidebar click -> the page's title shown, the script idle and its charts/tables/images drawn."""
        page = self.page
        self.idle()
        t0 = time.perf_counter()
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
        page.get_by_role("heading", level=1, name=title, exact=True).wait_for()
        self.idle()
        self.rendered()
        return time.perf_counter() - t0

    def metric(self, label: str) -> str | None:
        return self.page.evaluate(_METRIC_JS, label)

    def close(self) -> None:
        self.ctx.close()


# ------------------------------------------------------------------------------------------ measurements
def start_to_interactive(browser, cache_dir: Path, log: Path, *, npz: Path | None, run_timeout_s: float,
                         step_timeout_s: float, map_label: str = "PCA (fast preview)"):
    """Launch a server and a browser tab; the demo starts by itself on the first visit (--quick: choose the
    synthetic file and press Run); then open Selection. Returns (server, tab, timings)."""
    server = Server(cache_dir, log, autorun=npz is None)
    t = {}
    try:
        t["server answers /_stcore/health"] = server.wait_healthy()
        tab = Tab(browser, server.url, step_timeout_s)
        tab.open()
        t["Home page first drawn"] = time.perf_counter() - server.t_launch
        if npz is not None:
            tab.configure_synthetic(npz, map_label)
        t_run, labels = tab.wait_summary(run_timeout_s, press_run=npz is not None)
        t["pipeline: start -> dataset summary"] = t_run
        caption = tab.page.get_by_text(re.compile(r"^Run time:")).first
        t["_run_time_caption"] = caption.inner_text() if caption.count() else ""
        status = tab.page.evaluate(_STATUS_JS) or {"label": ""}
        t["_done_label"] = status["label"]
        t["_progress"] = labels
        tab.goto("Selection")
        if tab.metric("Selected") is None:
            raise RuntimeError("the Selection page shows no 'Selected' count")
        t["total: launch -> Selection shows counts"] = time.perf_counter() - server.t_launch
        return server, tab, t
    except BaseException:
        print(server.log_tail(), file=sys.stderr)
        server.stop()
        raise


def slider_latency(tab: Tab, n: int, moves: int) -> tuple[list[float], list[float]]:
    """Press arrow keys on the ratio slider; seconds from each press until the new count is shown and idle."""
    page = tab.page
    slider = page.locator('.st-key-sel_ratio input[type="range"]')
    latencies, ratios = [], []
    half = moves // 2 + moves % 2
    for i in range(moves):
        tab.idle()
        key = "ArrowRight" if i < half else "ArrowLeft"
        before = float(slider.input_value())
        slider.focus()
        t0 = time.perf_counter()
        slider.press(key)
        ratio = round(float(slider.input_value()), 2)
        if ratio == round(before, 2):
            raise RuntimeError(f"{key} did not move the slider from {before}")
        expected = f"{subset_size(n, ratio):,}"
        page.wait_for_function(f"(expected) => {_SETTLED_JS}", arg=expected, polling="raf",
                               timeout=tab.step_timeout_ms)
        page.evaluate(_TWO_FRAMES_JS)
        latencies.append(time.perf_counter() - t0)
        ratios.append(ratio)
        print(f"  move {i + 1:2d}: ratio {ratio:.2f} -> Selected {expected:>7}  {latencies[-1] * 1e3:6.0f} ms",
              flush=True)
    return latencies, ratios


def lasso_latency(tab: Tab, repeats: int = 3) -> list[tuple[float, int]]:
    """[(seconds, samples picked)]: on the Map, a lasso over the middle third of the chart (the toolbar's lasso
    tool), from releasing the mouse until 'Picked on the map: N samples' shows, the script is idle and the
    gallery of the picked samples is drawn; then 'Clear the picked samples' for the next one."""
    page, out = tab.page, []
    tab.goto("Map")
    for k in range(repeats):
        chart = page.locator('[data-testid="stPlotlyChart"]').first
        chart.hover()
        chart.locator('.modebar-btn[data-title="Lasso Select"]').click()
        chart.locator('.modebar-btn.active[data-title="Lasso Select"]').wait_for()
        box = chart.locator(".nsewdrag").first.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        rx, ry = box["width"] / (3 + k), box["height"] / (3 + k)        # a different region each time
        page.mouse.move(cx - rx, cy - ry)
        page.mouse.down()
        for px, py in ((cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry + 2)):
            page.mouse.move(px, py, steps=8)
        t0 = time.perf_counter()
        page.mouse.up()
        picked = page.get_by_text(re.compile(r"^Picked on the map: [\d,]+ samples?$"))
        picked.wait_for()
        tab.idle()
        tab.rendered()
        sec = time.perf_counter() - t0
        out.append((sec, int(re.search(r"([\d,]+)", picked.inner_text()).group(1).replace(",", ""))))
        print(f"  lasso {k + 1}: {out[-1][1]:,} samples in {fmt_s(sec)}", flush=True)
        page.get_by_role("button", name="Clear the picked samples").click()
        picked.wait_for(state="detached")
        tab.idle()
        tab.rendered()
        page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.wait_for()
    return out


_POINT_JS = """(i) => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  const t = gd._fullData.find(d => d.name === 'samples');
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  const k = Math.floor(i * (t.x.length - 1));
  return {x: box.left + xa._offset + xa.l2p(t.x[k]), y: box.top + ya._offset + ya.l2p(t.y[k])};
}"""
_CARD_SHOWS_HOVERED_JS = """() => {
  const card = document.getElementById('selector-map-hover'), label = document.querySelector('.hoverlayer .hovertext');
  const m = label && label.textContent.match(/row (\\d+)/);
  return !!(card && m && card.style.display === 'block' && card.dataset.row === m[1]
            && card.querySelector('img').complete);
}"""


def hover_latency(tab: Tab, points: int = 12) -> list[float]:
    """[seconds]: on the Map, the mouse moved onto `points` samples spread over the chart, one after another;
    each from the move until the hover card beside the cursor shows the image of the sample Plotly's label
    names (a sample not hovered before, so its image comes from the server, unless the cursor crossed it on
    the way). A point where Plotly shows no label within 3 s (another marker on top) is skipped."""
    page, out = tab.page, []
    tab.goto("Map")
    page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(state="attached")
    tab.rendered()
    for k in range(points):
        xy = page.evaluate(_POINT_JS, (k + 0.5) / points)
        page.mouse.move(xy["x"] - 30, xy["y"] - 30)
        t0 = time.perf_counter()
        page.mouse.move(xy["x"], xy["y"], steps=2)
        try:
            page.wait_for_function(_CARD_SHOWS_HOVERED_JS, timeout=3000)
        except Exception:  # noqa: BLE001 - no label at this point, or it moved on: not a timing
            continue
        out.append(time.perf_counter() - t0)
        print(f"  hover {k + 1}: card in {fmt_s(out[-1])}", flush=True)
    page.mouse.move(5, 5)
    tab.idle()
    return out


def session_memory(browser, server: Server, first: Tab, sessions: int, *, npz: Path | None, map_label: str,
                   run_timeout_s: float) -> list[tuple[int, float, float]]:
    """(sessions open, server RSS GB, seconds for the newcomer to reach Selection then Map) as sessions join.
    A newcomer opens the same run as the first session (for a .npz: the same settings and Run, a cache hit)."""
    rows = [(1, server.peak_rss_gb("VmRSS") or 0.0, 0.0)]
    tabs = []
    try:
        for k in range(2, sessions + 1):
            tab = Tab(browser, server.url, first.step_timeout_ms / 1000)
            tabs.append(tab)
            t0 = time.perf_counter()
            tab.open()
            if npz is not None:
                tab.configure_synthetic(npz, map_label)
            tab.wait_summary(run_timeout_s, press_run=npz is not None)
            tab.goto("Selection")
            tab.goto("Map")
            rows.append((k, server.peak_rss_gb("VmRSS") or 0.0, time.perf_counter() - t0))
            print(f"  {k} sessions: server RSS {rows[-1][1]:.2f} GB ({rows[-1][2]:.1f} s to Selection and Map)",
                  flush=True)
    finally:
        for tab in tabs:
            tab.close()
    return rows


def n_samples_of(tab: Tab) -> int:
    """Samples in the run, from the sidebar ('<name> - 60,000 samples, 10 classes')."""
    text = tab.page.locator('[data-testid="stSidebar"]').inner_text()
    m = re.search(r"([\d,]+) samples", text)
    if not m:
        raise RuntimeError(f"no sample count in the sidebar: {text!r}")
    return int(m.group(1).replace(",", ""))


# ---------------------------------------------------------------------------------------------- report
def load_note(loads) -> str:
    """1-minute load averages seen during the run: other work on the machine slows every number here."""
    if not loads:
        return ""
    return (f"- load average (1 min) during the run: min {min(loads):.1f}, max {max(loads):.1f} on {os.cpu_count()} "
            "logical CPUs (above the CPU count means other processes competed for the cores)")


def npz_run(args) -> bool:
    return bool(args.quick or args.embeddings)


def render(args, started, elapsed, source_desc, results, command) -> str:
    cold, warm = results.get("cold", {}), results["warm"]
    lat = results["latency"]
    kind = (f"precomputed embeddings, {results.get('n', 0):,} rows" if args.embeddings
            else ("quick" if args.quick else "full"))
    lines = [f"## App speed in a real browser ({kind} run)", "",
             f"- date: {started:%Y-%m-%d %H:%M} (local), whole benchmark {fmt_s(elapsed)}",
             f"- machine: {machine()}",
             f"- command: `{command}`",
             f"- data: {source_desc}",
             "- browser: headless Debian Chromium driven by Playwright; viewport 1280x900; server and browser on "
             "the same machine (localhost)",
             "- times are wall clock measured by the driver; cold = empty SELECTOR_CACHE_DIR, warm = same cache, "
             "new server process", "- pipeline start: " + ("the Run button" if npz_run(args) else
             "the demo starts by itself on a session's first visit (SELECTOR_AUTORUN), so from Home first drawn"),
             load_note(results.get("loads", [])), ""]
    lines += ["| measurement | cold start | warm start |", "|---|---:|---:|"]
    for key in ("server answers /_stcore/health", "Home page first drawn", "pipeline: start -> dataset summary",
                "total: launch -> Selection shows counts"):
        name = f"**{key}**" if key.startswith("total") else key
        lines.append(f"| {name} | {fmt_s(cold.get(key))} | {fmt_s(warm.get(key))} |")
    lines.append(f"| app's own run time (status label) | {cold.get('_done_label', '-') or '-'} | "
                 f"{warm.get('_done_label', '-') or '-'} |")
    lines += ["", "Cold start progress as the page showed it (status label, seconds after the pipeline start): "
              + ("; ".join(f"{t:.0f} s {label!r}" for t, label in cold.get("_progress", [])[:15]) or "-")]
    if cold.get("_run_time_caption"):
        lines += ["", f"Pipeline timings reported by the app (cold): {cold['_run_time_caption']}"]
    lines += ["", f"### Slider -> updated counts and charts at N = {results['n']:,}", "",
              f"{len(lat)} moves of the Selection ratio slider by one step (arrow keys; ratios "
              f"{min(results['ratios']):.2f}-{max(results['ratios']):.2f}). Each time: key press -> the 'Selected' "
              "count equals round(ratio x N), the script is no longer running (no running indicator) and two animation "
              "frames have passed. Includes Streamlit's slider debounce, the rerun of the page (selection, class "
              "breakdown, random-subset comparison, sidebar) and the browser's redraw.", "",
              "| slider moves | median | p95 | min | max | under 1 s |", "|---:|---:|---:|---:|---:|---:|",
              f"| {len(lat)} | {fmt_s(statistics.median(lat))} | {fmt_s(percentile(lat, 95))} | {fmt_s(min(lat))} | "
              f"{fmt_s(max(lat))} | {sum(x < 1.0 for x in lat)}/{len(lat)} |", ""]
    lines += [f"### Page switches at N = {results['n']:,} (warm server)", "",
              "Sidebar click -> title shown, script idle, every chart, table and thumbnail drawn.", "",
              "| page | time |", "|---|---:|"]
    for page, sec in results["pages"]:
        lines.append(f"| {page} | {fmt_s(sec)} |")
    lasso = results.get("lasso") or []
    if lasso:
        lines += ["", f"### Lasso on the map at N = {results['n']:,} (warm server)", "",
                  "Mouse released on a lasso over the middle of the map -> 'Picked on the map' shown, script idle, "
                  "the picked samples' gallery drawn (most suspicious first).", "",
                  "| lasso | samples picked | time |", "|---:|---:|---:|"]
        lines += [f"| {k} | {m:,} | {fmt_s(sec)} |" for k, (sec, m) in enumerate(lasso, 1)]
        lines.append(f"\nMedian {fmt_s(statistics.median(sec for sec, _ in lasso))}.")
    hover = results.get("hover") or []
    if hover:
        lines += ["", f"### Hover card on the map at N = {results['n']:,} (warm server)", "",
                  "The mouse moved onto a sample not hovered before -> the card beside the cursor shows the image of "
                  "the sample Plotly's hover label names (its image asked of the server).", "",
                  "| hovers | median | p95 | max |", "|---:|---:|---:|---:|",
                  f"| {len(hover)} | {fmt_s(statistics.median(hover))} | {fmt_s(percentile(hover, 95))} | "
                  f"{fmt_s(max(hover))} |"]
    sessions = results.get("session_rss") or []
    if len(sessions) > 1:
        lines += ["", "### Memory per browser session (warm server)", "",
                  "Sessions join one at a time (a new browser context each: Home, then Selection, then Map); the "
                  "server's current RSS (VmRSS) after each. Runs are shared by every session; sliders and picks "
                  "are per session.", "", "| sessions open | server RSS | newcomer to Selection + Map |",
                  "|---:|---:|---:|"]
        lines += [f"| {k} | {gb:.2f} GB | {fmt_s(sec) if k > 1 else '-'} |" for k, gb, sec in sessions]
        lines.append(f"\nEach extra session added {(sessions[-1][1] - sessions[0][1]) / (len(sessions) - 1) * 1024:.0f} "
                     "MB on average.")
    rss = results.get("rss")
    if rss:
        phases = ("warm",) if args.warm_only else ("cold", "warm")
        lines += ["", "Server peak RSS (VmHWM of the streamlit process): "
                  + ", ".join(f"{ph} {gb:.2f} GB" for ph, gb in zip(phases, rss)) + "."]
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="synthetic 60k precomputed embeddings instead of the demo (no encoder training/embedding)")
    p.add_argument("--moves", type=int, default=20, help="slider moves to time (at least 15)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "app_speed.md"))
    p.add_argument("--cache-dir", default="", help="SELECTOR_CACHE_DIR for the runs (default: a fresh temporary "
                                                   "folder, removed afterwards); must be empty for a cold start")
    p.add_argument("--keep-cache", action="store_true", help="keep the temporary cache (and server logs) afterwards")
    p.add_argument("--run-timeout", type=float, default=1800, help="seconds allowed for the cold pipeline run")
    p.add_argument("--embeddings", default="", help="a precomputed-embeddings .npz to run on instead of the demo "
                                                    "(e.g. bench/scale.py's synthetic 1.28M x 512 file)")
    p.add_argument("--map", choices=("umap", "pca"), default="pca", help="the map for --quick / --embeddings")
    p.add_argument("--sessions", type=int, default=2, help="browser sessions open at once on the warm server "
                                                           "(the server's memory is read after each joins)")
    p.add_argument("--json", default="", help="figures as JSON (default: --out with .json)")
    p.add_argument("--warm-only", action="store_true", help="skip the cold start: --cache-dir already holds the "
                                                            "run (e.g. from an earlier --keep-cache run)")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).exists():
        p.error(f"{CHROMIUM} not found: apt-get install chromium (the benchmark drives a real browser)")
    moves = max(15, args.moves)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/app_speed.py", *(argv or sys.argv[1:])])
    started, t_all = dt.datetime.now(), time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="app_speed_"))
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else work / "cache"
    if args.warm_only and not args.cache_dir:
        p.error("--warm-only needs --cache-dir holding the run")
    if not args.warm_only and cache.exists() and any(cache.iterdir()):
        p.error(f"--cache-dir {cache} is not empty: a cold start needs an empty cache")
    cache.mkdir(parents=True, exist_ok=True)
    npz = None
    map_label = {"umap": "UMAP", "pca": "PCA (fast preview)"}[args.map]
    if args.embeddings:
        npz = Path(args.embeddings).expanduser().resolve()
        if not npz.is_file():
            p.error(f"--embeddings {npz} does not exist")
        source_desc = (f"--embeddings: precomputed embeddings {npz.name} ({npz.stat().st_size / 1e9:.1f} GB), "
                       f"{map_label} map, 20% uniform planted flips; the cold start runs the whole pipeline in the app")
    elif args.quick:
        npz = make_synthetic(work / "synthetic60k.npz")
        source_desc = ("--quick: synthetic precomputed embeddings (60,000 x 64, 10 classes, no images), PCA map, "
                       "20% uniform planted flips - NOT the demo (the app has no smaller demo); no encoder training "
                       "or embedding in the cold start")
        if args.map == "umap":
            source_desc = source_desc.replace("PCA map", "UMAP map")
    else:
        source_desc = ("the app's default: built-in demo, Fashion-MNIST train (60,000 images, 10 classes) from "
                       "Debian's dataset-fashion-mnist, offline demo encoder, 20% uniform planted flips, UMAP map")

    from playwright.sync_api import sync_playwright
    results = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            rss = []
            for phase in (("warm",) if args.warm_only else ("cold", "warm")):
                results.setdefault("loads", []).append(os.getloadavg()[0])
                print(f"# {phase} start (cache {cache})", flush=True)
                server, tab, timings = start_to_interactive(
                    browser, cache, work / f"streamlit_{phase}.log", npz=npz,
                    run_timeout_s=args.run_timeout, step_timeout_s=600 if args.embeddings else 180,
                    map_label=map_label)
                for k, v in timings.items():
                    if not k.startswith("_"):
                        print(f"  {k:<45} {fmt_s(v)}", flush=True)
                results[phase] = timings
                try:
                    if phase == "warm":
                        n = n_samples_of(tab)
                        results["n"] = n
                        print(f"# slider latency at N = {n:,}", flush=True)
                        results["latency"], results["ratios"] = slider_latency(tab, n, moves)
                        print("# page switches", flush=True)
                        results["pages"] = []
                        for page in PAGES:
                            sec = tab.goto(page)
                            results["pages"].append((page, sec))
                            print(f"  {page:<15} {fmt_s(sec)}", flush=True)
                        print("# lasso on the map", flush=True)
                        results["lasso"] = lasso_latency(tab)
                        if npz is None:                   # the demo has images; an embeddings file has none
                            print("# hover card on the map", flush=True)
                            results["hover"] = hover_latency(tab)
                        results["session_rss"] = session_memory(browser, server, tab, args.sessions, npz=npz,
                                                                map_label=map_label, run_timeout_s=args.run_timeout)
                    rss.append(server.peak_rss_gb() or 0.0)
                finally:
                    tab.close()
                    server.stop()
            results["rss"] = rss
            results["loads"].append(os.getloadavg()[0])
        finally:
            browser.close()

    text = render(args, started, time.perf_counter() - t_all, source_desc, results, command)
    print()
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    figures = {"machine": machine(), "date": started.isoformat(timespec="seconds"), "command": command,
               "data": source_desc, "load_1min": results.get("loads", []), "n": results.get("n"),
               "cold_s": {k: v for k, v in results.get("cold", {}).items() if not k.startswith("_")},
               "warm_s": {k: v for k, v in results["warm"].items() if not k.startswith("_")},
               "slider_s": {"median": statistics.median(results["latency"]), "p95": percentile(results["latency"], 95),
                            "max": max(results["latency"]), "moves": len(results["latency"])},
               "pages_s": dict(results["pages"]),
               "lasso_s": [[sec, m] for sec, m in results.get("lasso", [])],
               "hover_s": results.get("hover", []),
               "peak_rss_gb": dict(zip(("warm",) if args.warm_only else ("cold", "warm"), results.get("rss", []))),
               "sessions_rss_gb": [[k, gb] for k, gb, _ in results.get("session_rss", [])]}
    json_path = Path(args.json) if args.json else out.with_suffix(".json")
    json_path.write_text(json.dumps(figures, indent=1))
    print(f"wrote {json_path}")
    if args.keep_cache or args.cache_dir:
        print(f"kept {work} (server logs{'' if args.cache_dir else ' and cache'})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
