"""End to end in a real browser: `streamlit run app.py` on localhost, driven by headless Debian Chromium
through Playwright.

The flow a user follows: Home (choose a source, press Run, wait for the summary) -> Selection (move the ratio
slider with the keyboard, see the kept count follow it) -> Label issues (the most suspicious flagged sample
with its nearest neighbours' thumbnails; mark it bad) -> Export (download the CSV of the subset and of the
full table, check them against what the page says, and check that the CLI writes the same bytes for the
same run, selection and decisions) -> Map and Scores (they render, no traceback). A
second browser context checks that sessions are independent. The review workflows each have a test: a bulk
accept on a filtered view undone in one step, duplicate groups resolved with "keep one per group", the Label
issues grid decided from the keyboard, a map point hovered (its image beside the cursor), clicked open and
decided in its card.

Data: by default a small synthetic dataset built in a tmp folder (240 generated PNG images, one shape per
class, with precomputed embeddings that point at them, so thumbnails exist) so the test takes well under
a minute. Environment switches:
  SELECTOR_E2E_SOURCE=demo   drive the built-in demo (Fashion-MNIST 60k, offline demo encoder) instead; the
                             cache is $SELECTOR_CACHE_DIR or ~/.cache/selector (a cold start takes minutes).
  SELECTOR_SCREENSHOTS=1     write a full-page screenshot of every page to assets/screenshots/<page>.png
                             (the README's pictures: take them with SELECTOR_E2E_SOURCE=demo);
                             SELECTOR_SCREENSHOTS_DIR=<folder> writes them elsewhere.
Skipped only when /usr/bin/chromium is missing (`.ci/setup` installs it on Debian/Ubuntu). Never runs
`playwright install`: Playwright drives the system Chromium.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium chromium-driver) "
                "to run the browser test", allow_module_level=True)
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from selector.optimize import subset_size  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("SELECTOR_SCREENSHOTS_DIR") or ROOT / "assets" / "screenshots")
DEMO = os.environ.get("SELECTOR_E2E_SOURCE", "").strip().lower() == "demo"
SCREENSHOTS = os.environ.get("SELECTOR_SCREENSHOTS", "") == "1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-sync", "--disable-component-update", "--disable-quic", "--disable-dev-shm-usage",
                 "--enable-unsafe-swiftshader"]        # software WebGL for the map's Scattergl
VIEWPORT = {"width": 1280, "height": 900}
RUN_TIMEOUT_S = 1200 if DEMO else 150                   # the pipeline run (demo cold start: training + 60k)
STEP_TIMEOUT_S = 120 if DEMO else 60                    # one rerun / page switch (slow shared CI cores)
MAX_SHOT_BYTES = 290_000
MAX_SHOT_HEIGHT = 2600
N_CLASSES, N_PER_CLASS = 4, 60
COPIES = {7: 6, 8: 6, 70: 69}                            # synthetic data: row -> the row it is an exact copy of
expect.set_options(timeout=STEP_TIMEOUT_S * 1000)       # Streamlit reruns on slow shared cores


# ------------------------------------------------------------------------------------------------ data
def _shape_image(cls: int, rng: np.random.Generator, size: int = 48):
    """A small RGB image whose shape says its class: disc, square, triangle, stripes (colour jittered)."""
    from PIL import Image, ImageDraw
    bg = tuple(int(v) for v in rng.integers(225, 256, 3))
    fg = tuple(int(v) for v in np.clip(np.array([(40, 90, 200), (200, 60, 50), (40, 160, 80), (150, 80, 170)][cls])
                                       + rng.integers(-30, 31, 3), 0, 255))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    o = int(rng.integers(4, 10))
    if cls == 0:
        d.ellipse([o, o, size - o, size - o], fill=fg)
    elif cls == 1:
        d.rectangle([o, o, size - o, size - o], fill=fg)
    elif cls == 2:
        d.polygon([(size // 2, o), (size - o, size - o), (o, size - o)], fill=fg)
    else:
        for x in range(o % 6, size, 8):
            d.rectangle([x, 0, x + 3, size], fill=fg)
    return img


def make_dataset(folder: Path, *, seed: int = 7, d: int = 32) -> Path:
    """A precomputed-embeddings .npz (N = 240, 4 classes) whose `paths` point at generated PNGs: embeddings
    are Gaussian clusters around the class text vectors, so the pipeline's audit finds injected flips. The rows
    of COPIES repeat another row's image and embedding: two groups of near-duplicates (3 copies)."""
    rng = np.random.default_rng(seed)
    names = np.array(["disc", "square", "triangle", "stripes"])
    text = rng.normal(size=(N_CLASSES, d)).astype(np.float32)
    labels = np.repeat(np.arange(N_CLASSES), N_PER_CLASS)
    emb = text[labels] + 0.6 * rng.normal(size=(len(labels), d)).astype(np.float32)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths, drawn = [], {}
    for i, c in enumerate(labels):
        file = images / f"{names[c]}_{i:04d}.png"
        drawn[i] = drawn[COPIES[i]] if i in COPIES else _shape_image(int(c), rng)
        drawn[i].save(file)
        paths.append(str(file))
    for copy, of in COPIES.items():
        emb[copy] = emb[of]
    npz = folder / "shapes.npz"
    np.savez(npz, image_embeddings=emb, labels=labels, class_names=names, text_embeddings=text,
             paths=np.asarray(paths))
    return npz


# ---------------------------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


def start_server(cache_dir: Path, log_path: Path, *, autorun: bool, timeout_s: float = 90.0):
    """`streamlit run app.py` on a free localhost port; returns (process, url) once /_stcore/health is ok.
    autorun: whether the Home page starts the built-in demo by itself on a session's first visit."""
    port = _free_port()
    env = dict(os.environ, SELECTOR_CACHE_DIR=str(cache_dir), PYTHONUNBUFFERED="1",
               SELECTOR_AUTORUN="1" if autorun else "0")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false", "--server.runOnSave", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        if _healthy(url):
            return proc, url
        time.sleep(0.25)
    stop_server(proc)
    raise TimeoutError(f"streamlit did not answer on {url} in {timeout_s:.0f} s:\n{log_path.read_text()[-4000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


# ----------------------------------------------------------------------------------------- page driving
_IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-connection-state') === 'CONNECTED'
      && app.getAttribute('data-test-script-state') === 'notRunning'
      && !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]');
}"""


class App:
    """A Streamlit app in one browser tab, with waits on what the page shows (never bare sleeps)."""

    def __init__(self, page: Page, url: str):
        self.page, self.url = page, url
        self.t_start = self.t_last = time.monotonic()

    def open(self) -> "App":
        """Load the app and wait for Home's title (on the demo, the run then starts by itself)."""
        self.page.goto(self.url, wait_until="domcontentloaded", timeout=STEP_TIMEOUT_S * 1000)
        self.page.get_by_role("heading", name="Training data selection").wait_for(timeout=STEP_TIMEOUT_S * 1000)
        return self

    def idle(self, timeout_s: float = STEP_TIMEOUT_S) -> None:
        """Wait until the script is not running and Streamlit's running indicator is gone."""
        self.page.wait_for_function(_IDLE_JS, timeout=timeout_s * 1000, polling=50)
        self.no_exception()

    def no_exception(self) -> None:
        exc = self.page.locator('[data-testid="stException"]')
        if exc.count():
            raise AssertionError("traceback on the page:\n" + exc.first.inner_text())

    def key(self, key: str):
        """The element of the widget created with key=... (Streamlit adds the class st-key-<key>)."""
        return self.page.locator(f".st-key-{key}")

    def choose(self, key: str, option: str) -> None:
        """Pick `option` in the selectbox `key`, retrying if a rerun closes the dropdown under us."""
        field = self.key(key).locator("input")
        for _ in range(5):
            self.idle()
            if field.input_value() == option:
                return
            field.click()
            try:
                self.page.get_by_role("option", name=option, exact=True).click(timeout=5000)
            except Exception:  # noqa: BLE001 - dropdown re-rendered by a rerun: close it and try again
                self.page.keyboard.press("Escape")
                continue
            expect(field).to_have_value(option, timeout=10_000)
            self.idle()
            return
        raise AssertionError(f"could not choose {option!r} in selectbox {key!r}")

    def type_text(self, key: str, text: str) -> None:
        field = self.key(key).locator("input")
        self.idle()
        field.fill(text)
        field.press("Enter")
        expect(field).to_have_value(text)
        self.idle()

    def step(self, what: str) -> None:
        """Log the time since the last step (shown with -s, and in the captured output of a failure)."""
        now = time.monotonic()
        print(f"[e2e {now - self.t_start:6.1f} s, +{now - self.t_last:5.1f} s] {what}", flush=True)
        self.t_last = now

    def goto(self, title: str) -> None:
        """Client-side switch to a page through the sidebar (keeps this browser session)."""
        self.step(f"go to {title}")
        self.idle()
        self.page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
        self.page.get_by_role("heading", level=1, name=title, exact=True).wait_for(timeout=STEP_TIMEOUT_S * 1000)
        self.idle()

    def metric(self, label: str) -> str:
        box = self.page.locator('[data-testid="stMainBlockContainer"] [data-testid="stMetric"]').filter(
            has=self.page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))
        return box.first.locator('[data-testid="stMetricValue"]').inner_text().strip()

    def metric_int(self, label: str) -> int:
        return int(self.metric(label).replace(",", ""))

    def wait_metric(self, label: str, value: int, timeout_s: float = STEP_TIMEOUT_S) -> None:
        box = self.page.locator('[data-testid="stMainBlockContainer"] [data-testid="stMetric"]').filter(
            has=self.page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))
        expect(box.first.locator('[data-testid="stMetricValue"]')).to_have_text(f"{value:,}", timeout=timeout_s * 1000)
        self.idle()

    def wait_rendered(self) -> None:
        """Charts and tables draw after the script ends: wait for each to have content."""
        page = self.page
        for chart in page.locator('[data-testid="stPlotlyChart"]').all():
            chart.locator(".main-svg").first.wait_for(state="attached", timeout=STEP_TIMEOUT_S * 1000)
        for chart in page.locator('[data-testid="stVegaLiteChart"]').all():
            chart.locator("canvas, svg").first.wait_for(state="attached", timeout=STEP_TIMEOUT_S * 1000)
        for frame in page.locator('[data-testid="stDataFrame"]').all():
            frame.locator("canvas").first.wait_for(state="attached", timeout=STEP_TIMEOUT_S * 1000)
        page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stMain"] img')]
                                   .every(i => i.complete && i.naturalWidth > 0)""",
                               timeout=STEP_TIMEOUT_S * 1000)
        page.evaluate("() => document.fonts.ready")
        self.idle()

    def screenshot(self, name: str) -> None:
        """The whole page as one PNG. Streamlit scrolls inside its main container, so the window is made as
        tall as the content (at most MAX_SHOT_HEIGHT) for the shot, then set back."""
        if not SCREENSHOTS:
            return
        page = self.page
        self.wait_rendered()
        height = page.evaluate("""() => Math.max(...['stMain', 'stAppViewContainer', 'stMainBlockContainer']
            .map(id => document.querySelector(`[data-testid="${id}"]`)).filter(Boolean).map(e => e.scrollHeight))""")
        height = int(min(max(height, VIEWPORT["height"]), MAX_SHOT_HEIGHT))
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
        try:
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            self.wait_rendered()
            page.mouse.move(0, 0)
            save_png(page.screenshot(animations="disabled"), SHOTS / f"{name}.png")
        finally:
            page.set_viewport_size(VIEWPORT)


def save_png(data: bytes, path: Path) -> None:
    """Write a screenshot under MAX_SHOT_BYTES: as is when small, else a 256-colour palette PNG (then cropped
    to its top part if still too big)."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(data) <= MAX_SHOT_BYTES:
        path.write_bytes(data)
        return
    img = Image.open(io.BytesIO(data)).convert("RGB")
    while True:
        buf = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_SHOT_BYTES or img.height <= VIEWPORT["height"]:
            break
        img = img.crop((0, 0, img.width, max(VIEWPORT["height"], int(img.height * 0.8))))
    path.write_bytes(buf.getvalue())


def lasso_tool(page: Page) -> None:
    """Choose the map's lasso in the Plotly toolbar (a drag pans the map until then, so a click picks a point)."""
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.hover()
    chart.locator('.modebar-btn[data-title="Lasso Select"]').click()
    expect(chart.locator('.modebar-btn.active[data-title="Lasso Select"]')).to_have_count(1)


_POINT_JS = """(i) => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  const t = gd._fullData.find(d => d.name === 'samples');
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  const k = Math.floor(i * (t.x.length - 1));
  return {x: box.left + xa._offset + xa.l2p(t.x[k]), y: box.top + ya._offset + ya.l2p(t.y[k])};
}"""


def point_on_map(page: Page, where: float) -> tuple[float, float]:
    """Screen position of the map's sample at fraction `where` of its points (as the chart draws it)."""
    xy = page.evaluate(_POINT_JS, where)
    return xy["x"], xy["y"]


def settled_hover_row(page: Page) -> int:
    """The row in the map's hover label once it stops changing (the label follows the cursor as it moves)."""
    label, seen = page.locator(".hoverlayer .hovertext").first, None
    for _ in range(50):
        now = re.search(r"row (\d+)", label.text_content()).group(1)
        if now == seen:
            return int(now)
        seen = now
        time.sleep(0.2)
    raise AssertionError("the map's hover label kept changing")


def hover_image(page: Page, row: int):
    """The image the map's hover card shows once it shows `row` (PIL, RGB)."""
    from PIL import Image
    card = page.locator("#selector-map-hover")
    expect(card).to_have_attribute("data-row", str(row))
    expect(card).to_be_visible()
    src = card.locator("img").get_attribute("src")
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")


def check_hover_image(page: Page, npz: Path | None, row: int) -> None:
    """The hover card beside the cursor shows `row`'s own image: scaled back to the file's size it matches that
    image, and it is much further from the image of a row of another class."""
    from selector.sources import open_source
    source = open_source("embeddings", path=str(npz)) if npz is not None else open_source("demo")
    shown = hover_image(page, row)
    other = int(np.flatnonzero(source.labels != source.labels[row])[0])
    mine, theirs = (np.asarray(source.image(r).convert("RGB"), np.float32) for r in (row, other))
    back = np.asarray(shown.resize(mine.shape[1::-1]), np.float32)
    near, far = np.abs(back - mine).mean(), np.abs(back - theirs).mean()
    assert near < 12 and far > 2 * near, (near, far)


def run_pipeline(app: App, npz: Path | None) -> None:
    """Home: on the demo, wait for the run it starts by itself; else choose the .npz, 20% uniform noise and a PCA
    map and press Run. Then wait for the dataset summary."""
    summary = app.page.get_by_role("heading", name="Dataset summary")
    if npz is None:
        expect(app.page.get_by_text(re.compile(r"^(Running|Done)"))).not_to_have_count(0)   # started by itself
        summary.wait_for(timeout=RUN_TIMEOUT_S * 1000)
    else:
        app.choose("source", "Precomputed embeddings (.npz)")
        app.type_text("path", str(npz))
        app.choose("noise_mode", "uniform flips")
        if not app.key("map").is_visible():
            app.page.get_by_text("Advanced settings", exact=True).click()
        app.choose("map", "PCA (fast preview)")
        app.idle()
        app.step("press Run")
        app.key("run").locator("button").click()
        summary.wait_for(timeout=RUN_TIMEOUT_S * 1000)
    expect(app.page.locator('[data-testid="stExpander"]').filter(has_text="Done:").first).to_be_visible(
        timeout=STEP_TIMEOUT_S * 1000)
    app.idle(timeout_s=RUN_TIMEOUT_S)
    app.step("pipeline done")


def download(app: App, key: str) -> tuple[str, bytes]:
    """(file name, bytes) of what the download button `key` gives the browser."""
    with app.page.expect_download(timeout=STEP_TIMEOUT_S * 1000) as info:
        app.key(key).locator("button").click()
    dl = info.value
    return dl.suggested_filename, Path(dl.path()).read_bytes()


def read_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), keep_default_na=False)


def cli_export(cache: Path, dataset: Path | None, manifest: dict, out: Path, *extra: str) -> bytes:
    """The CLI's file for the run and selection an app manifest describes, with the decisions the app saved."""
    from selector.__main__ import main
    sel = manifest["selection"]
    source = ["--source", "demo"] if dataset is None else \
        ["--source", "embeddings", "--path", str(dataset), "--noise-mode", "uniform", "--noise-rate", "0.2",
         "--map", "pca"]
    database = cache / "decisions" / "decisions.db"
    assert database.is_file()
    flags = [f"--{'' if sel[k] else 'no-'}{k.replace('_', '-')}" for k in
             ("exclude_flagged", "exclude_duplicates", "class_balance")]
    code = main([*source, "--cache-dir", str(cache), "--ratio", repr(sel["ratio"]), "--strategy", sel["strategy"],
                 "--weights", ",".join(f"{k}={v!r}" for k, v in sel["weights"].items()), *flags,
                 "--decisions", str(database), "--out", str(out), *extra])
    assert code == 0
    return out.read_bytes()


def export_caption_rows(app: App) -> tuple[int, int]:
    text = app.page.get_by_text(re.compile(r"[\d,]+ rows x \d+ columns")).first.inner_text()
    rows, cols = re.search(r"([\d,]+) rows x (\d+) columns", text).groups()
    return int(rows.replace(",", "")), int(cols)


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def dataset(workdir):
    return None if DEMO else make_dataset(workdir / "data")


@pytest.fixture(scope="module")
def cache_dir(workdir):
    from selector.files import default_cache_dir
    return default_cache_dir() if DEMO else workdir / "cache"


@pytest.fixture(scope="module")
def server(workdir, cache_dir):
    proc, url = start_server(cache_dir, workdir / "streamlit.log", autorun=DEMO)
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_app(browser, server):
    contexts = []

    def make() -> App:
        ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True, device_scale_factor=1)
        ctx.set_default_timeout(STEP_TIMEOUT_S * 1000)
        contexts.append(ctx)
        return App(ctx.new_page(), server).open()

    yield make
    for ctx in contexts:
        ctx.close()


# ------------------------------------------------------------------------------------------------- tests
def test_a_user_runs_tunes_audits_and_exports(new_app, dataset, workdir, cache_dir):
    app = new_app()
    app.step("app open")
    page = app.page
    assert app.key("source").locator("input").input_value() == "Built-in demo (Fashion-MNIST)"

    # Home: run the pipeline, see the summary and which encoder produced the scores
    run_pipeline(app, dataset)
    n = app.metric_int("Samples")
    flagged = app.metric_int("Flagged")
    assert n == (60_000 if DEMO else N_CLASSES * N_PER_CLASS)
    assert flagged > 0
    expect(page.get_by_text("Scores produced by:")).to_be_visible()
    expect(page.get_by_text("Audit check against the injected noise")).to_be_visible()
    app.screenshot("home")

    # Selection: the ratio slider moved with the keyboard; the kept count follows it exactly
    app.goto("Selection")
    ratio_input = app.key("sel_ratio").locator('input[type="range"]')
    ratio = float(ratio_input.get_attribute("aria-valuetext") or ratio_input.input_value())
    app.wait_metric("Selected", subset_size(n, ratio))
    before = app.metric_int("Selected")
    for key_name, steps in (("ArrowRight", 3), ("ArrowLeft", 1), ("PageDown", 1)):
        for _ in range(steps):
            ratio_input.focus()
            ratio_input.press(key_name)
            new_ratio = round(float(ratio_input.input_value()), 2)
            assert new_ratio != ratio, f"{key_name} did not move the slider from {ratio}"
            ratio = new_ratio
            expect(app.key("sel_ratio").locator('[data-testid="stSliderThumbValue"]')).to_have_text(f"{ratio:.2f}")
            app.wait_metric("Selected", subset_size(n, ratio))
    after = app.metric_int("Selected")
    assert after != before and after == subset_size(n, ratio)
    expect(page.locator('[data-testid="stSidebar"]').get_by_text(re.compile(rf"Selected: {after:,}\b"))).to_be_visible()
    expect(page.get_by_role("heading", name="Kept and dropped per class")).to_be_visible()
    expect(page.get_by_role("heading", name="Compared with a random subset of the same size")).to_be_visible()
    app.screenshot("selection")

    # Label issues: the most suspicious flagged sample, its neighbours' thumbnails; mark it bad
    app.goto("Label issues")
    expect(page.get_by_text(re.compile(rf"{flagged:,} flagged samples, most suspicious first"))).to_be_visible()
    issues = page.locator('[class*="st-key-issue_"]')
    issues.first.wait_for()
    first = issues.filter(has_not_text="decision:").first     # undecided (a reused demo cache may hold some)
    row = int(re.search(r"st-key-issue_(\d+)", first.get_attribute("class")).group(1))
    expect(first.get_by_text("given:")).to_be_visible()
    expect(first.get_by_text("suggested:")).to_be_visible()
    expect(first.get_by_text("Nearest neighbours")).to_be_visible()
    first.locator("img").nth(2).wait_for()                        # the sample + at least 2 neighbours
    n_imgs = first.locator("img").count()
    assert n_imgs >= 3, f"expected the sample and its neighbours as thumbnails, found {n_imgs} images"
    probs = re.findall(r"\((-?\d\.\d\d)\)", first.inner_text())
    closeness = re.findall(r"\(p(\d{1,3})\)", first.inner_text())  # each neighbour: its similarity's percentile
    assert len(probs) >= 2 and len(closeness) >= 2, first.inner_text()
    assert all(0 <= int(p) <= 100 for p in closeness)
    page.wait_for_function("""(el) => [...el.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)""",
                           arg=first.element_handle())
    app.screenshot("label_issues")
    caption = page.get_by_text(re.compile(r"Decided so far:")).first.inner_text()
    bad_before = int(re.search(r"(\d+) marked bad", caption).group(1))   # a reused demo cache may hold some
    first.get_by_role("button", name="Mark bad").click()
    expect(app.key(f"issue_{row}").get_by_text(re.compile(r"decision:\s*bad"))).to_be_visible()
    app.idle()

    # Export: the subset CSV is what the page says; the full table's `selected` matches the kept count
    app.goto("Export")
    rows, cols = export_caption_rows(app)
    assert rows == after, f"export shows {rows} rows, Selection kept {after}"
    name, subset_bytes = download(app, "download_csv")
    subset = read_csv(subset_bytes)
    assert name.endswith("_subset.csv")
    assert subset.shape == (rows, cols), (subset.shape, rows, cols)
    assert subset["selected"].astype(str).eq("True").all()
    assert {"id", "path", "label", "selected", "noise_score", "flagged", "suggested_label", "alignment",
            "diversity", "decision", "corrected_label"} <= set(subset.columns)
    app.screenshot("export")
    page.get_by_text("Full per-sample table", exact=True).click()
    expect(page.get_by_text(re.compile(rf"^{n:,} rows x \d+ columns"))).to_be_visible()
    app.idle()
    name, full_bytes = download(app, "download_csv")
    full = read_csv(full_bytes)
    assert name.endswith("_full.csv") and len(full) == n
    assert (full["path"].astype(str) != "").all()            # every row says where its image is
    selected = full["selected"].astype(str).eq("True")
    assert int(selected.sum()) == after == subset_size(n, ratio)
    assert set(full.loc[selected, "id"].astype(str)) == set(subset["id"].astype(str))
    bad = full[full["decision"] == "bad"]
    assert row in bad.index and not bool(selected[row]), "the sample marked bad must be in the export, unselected"
    assert len(bad) == bad_before + 1

    # The CLI, given the same run, selection and the decisions the app saved, writes the same bytes
    _, manifest_bytes = download(app, "download_manifest")
    manifest = json.loads(manifest_bytes)
    assert manifest["counts"]["selected"] == after and manifest["counts"]["decisions"] >= 1
    assert cli_export(cache_dir, dataset, manifest, workdir / "cli_full.csv") == full_bytes
    assert cli_export(cache_dir, dataset, manifest, workdir / "cli_subset.csv", "--selected-only") == subset_bytes
    if DEMO:                                     # leave the user's demo decisions as they were
        app.goto("Label issues")
        app.key(f"issue_{row}").get_by_role("button", name="Clear").click()
        expect(app.key(f"issue_{row}").get_by_text("decision:")).to_have_count(0)
        app.idle()

    # Map and Scores render without a traceback
    app.goto("Map")
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
    page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(state="attached")
    # a lasso over the middle of the map (the toolbar's lasso tool) picks every sample inside it, most suspicious first
    lasso_tool(page)
    box = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
    cx, cy, rx, ry = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 3, box["height"] / 3
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    for px, py in ((cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry + 2)):
        page.mouse.move(px, py, steps=8)
    app.step("lasso drawn")
    page.mouse.up()
    picked = page.get_by_text(re.compile(r"^Picked on the map: [\d,]+ samples?$"))
    expect(picked).to_be_visible(timeout=STEP_TIMEOUT_S * 1000)
    n_picked = int(re.search(r"([\d,]+)", picked.inner_text()).group(1).replace(",", ""))
    assert n_picked > 1
    expect(page.get_by_text("Most suspicious first (highest noise score).")).to_be_visible()
    app.idle()
    app.step(f"lasso -> gallery of {n_picked:,} picked samples")
    # a bulk decision on the lasso: every picked sample kept, one undoable step, and the export says so
    db_before = stored(cache_dir)
    page.get_by_text(re.compile(r"^Decide all [\d,]+ picked samples")).first.click()
    app.key("map_bulk_decision").get_by_text("Keep label", exact=True).click()
    apply = app.key("map_bulk_apply").locator("button")
    expect(apply).to_contain_text("Apply 'Keep label' to ")     # the rerun for the choice has drawn the button
    app.idle()
    change = int(re.search(r"Apply 'Keep label' to ([\d,]+) samples", apply.inner_text()).group(1).replace(",", ""))
    assert 0 < change <= n_picked
    apply.click()
    expect(app.key("map_undo")).to_contain_text(f"Undo my last step ({change:,} decision(s), ")
    app.idle()
    name, data = download(app, "map_export")                 # the picked rows, as the one writer writes them
    exported = read_csv(data)
    assert name == "picked_on_map.csv" and len(exported) == n_picked and "corrected_label" in exported.columns
    assert (exported["decision"] == "kept").all()
    assert (exported["corrected_label"] == exported["label"]).all()     # kept: the given label stands
    new = {k: v for k, v in stored(cache_dir).items() if db_before.get(k) != v}
    assert len(new) == change and set(new.values()) == {"kept"}
    app.key("map_undo").locator("button").first.click()          # leave the decisions as they were
    expect(page.get_by_text(f"Undone: {change:,} decision(s) restored to their previous value.")).to_be_visible()
    app.idle()
    assert stored(cache_dir) == db_before
    app.step(f"lasso: {change:,} kept, exported, undone")
    app.screenshot("map")
    app.goto("Scores")
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 3
    app.screenshot("scores")
    app.goto("Duplicates & outliers")
    expect(page.get_by_role("tab", name="Near-duplicates")).to_be_visible()
    page.get_by_role("tab", name="Matches no class").click()
    expect(page.get_by_text(re.compile(r"most unusual first"))).to_be_visible()
    app.step("done")


def test_sessions_are_independent(new_app, dataset):
    """Two browsers on the same run: each one's ratio slider drives only its own subset."""
    one, two = new_app(), new_app()
    for app in (one, two):
        run_pipeline(app, dataset)                              # the second is a cache hit
    n = one.metric_int("Samples")
    for app in (one, two):
        app.goto("Selection")

    def move(app: App, key_name: str) -> float:
        slider = app.key("sel_ratio").locator('input[type="range"]')
        before = float(slider.input_value())
        slider.focus()
        slider.press(key_name)
        ratio = round(float(slider.input_value()), 2)
        assert ratio != before
        app.wait_metric("Selected", subset_size(n, ratio))
        return ratio

    start = float(two.key("sel_ratio").locator('input[type="range"]').input_value())
    ratio_one = move(one, "PageUp")
    ratio_two = move(two, "ArrowLeft")
    assert ratio_two < start < ratio_one
    two.wait_metric("Selected", subset_size(n, ratio_two))
    ratio_one = move(one, "ArrowRight")                         # one's next rerun keeps one's own ratio
    assert ratio_one > start and one.metric_int("Selected") == subset_size(n, ratio_one)
    assert two.metric_int("Selected") == subset_size(n, ratio_two)


def test_a_reload_and_a_shared_link_open_the_same_run(new_app, dataset, browser):
    """The Selection page's address names its run: reloading it, or opening it in another browser (a
    colleague's), shows the run instead of 'Run the pipeline on the Home page first'."""
    app = new_app()
    run_pipeline(app, dataset)
    n = app.metric_int("Samples")
    app.goto("Selection")
    app.page.wait_for_function("() => new URL(location.href).searchParams.get('run')")
    link = app.page.url
    assert "/selection" in link and "run=" in link
    app.page.reload(wait_until="domcontentloaded")
    app.page.get_by_role("heading", level=1, name="Selection", exact=True).wait_for()
    app.wait_metric("Selected", subset_size(n, 0.5))
    other = browser.new_context(viewport=VIEWPORT)
    try:
        page = other.new_page()
        page.goto(link, wait_until="domcontentloaded")
        colleague = App(page, link)
        page.get_by_role("heading", level=1, name="Selection", exact=True).wait_for(timeout=STEP_TIMEOUT_S * 1000)
        colleague.wait_metric("Selected", subset_size(n, 0.5))
        expect(page.get_by_text("Run the pipeline on the Home page first.")).to_have_count(0)
    finally:
        other.close()


# ------------------------------------------------------------------------------------ review workflows
def decided_so_far(app: App) -> dict:
    """The Label issues page's counts: {"accepted": a, "kept": k, "bad": b}."""
    text = app.page.get_by_text(re.compile(r"Decided so far:")).first.inner_text()
    a, k, b = re.search(r"(\d+) suggestion accepted, (\d+) label kept, (\d+) marked bad", text).groups()
    return {"accepted": int(a), "kept": int(k), "bad": int(b)}


def stored(cache_dir: Path) -> dict:
    """Every decision in the app's decisions database, {(dataset, sample id): decision}."""
    from selector.decision_store import DecisionStore
    db = DecisionStore.for_cache(cache_dir)
    return {(d, i): v for d in {e.dataset for e in db.events()} for i, v in db.current(d).items()}


def test_a_bulk_accept_on_a_filtered_view_is_undone_in_one_step(new_app, dataset, cache_dir):
    app = new_app()
    run_pipeline(app, dataset)
    app.goto("Label issues")
    page = app.page
    first = page.locator('[class*="st-key-issue_"]').first
    suggestion = re.search(r"suggested:\s*(.+?) \(", first.inner_text()).group(1)
    app.choose("issues_suggested", suggestion)              # the view: flagged samples the audit would relabel so
    before, db_before = decided_so_far(app), stored(cache_dir)
    page.get_by_text(re.compile(r"^Decide all")).first.click()
    app.key("bulk_decision").get_by_text("Accept suggestion", exact=True).click()
    app.idle()
    preview = page.get_by_text(re.compile(r"'Accept suggestion' would be recorded for")).first.inner_text()
    change, shown = (int(x.replace(",", "")) for x in re.search(r"recorded for ([\d,]+) of the ([\d,]+)", preview)
                     .groups())
    expect(page.get_by_text(re.compile(r"^Decide all")).first).to_contain_text(f"Decide all {shown:,} samples")
    n_flagged = int(re.search(r"([\d,]+) flagged samples", page.get_by_text(re.compile(r"flagged samples, most"))
                              .first.inner_text()).group(1).replace(",", ""))
    assert 0 < change <= shown < n_flagged, preview          # the filtered view, not every flagged sample
    for sample in page.locator('[class*="st-key-issue_"]').all():
        expect(sample).to_contain_text(f"suggested: {suggestion} (")
    app.step(f"bulk accept {change} of {shown}")
    counts = page.get_by_text(re.compile(r"Decided so far:")).first
    app.key("bulk_apply").locator("button").click()
    expect(counts).to_contain_text(re.compile(rf"\b{before['accepted'] + change} suggestion accepted"))
    app.idle()
    expect(app.key("undo_last_step")).to_contain_text(f"Undo my last step ({change:,} decision(s)")   # one step
    db_after = stored(cache_dir)
    new = {k: v for k, v in db_after.items() if db_before.get(k) != v}
    assert len(new) == change and set(new.values()) == {"accepted"}
    app.key("undo_last_step").locator("button").first.click()   # one step back: every one of them at once
    expect(counts).to_contain_text(re.compile(rf"\b{before['accepted']} suggestion accepted"))
    app.idle()
    assert decided_so_far(app) == before and stored(cache_dir) == db_before


def test_a_duplicate_group_is_resolved_keeping_one_per_group(new_app, dataset, cache_dir):
    app = new_app()
    run_pipeline(app, dataset)
    app.goto("Duplicates & outliers")
    page = app.page
    summary = page.get_by_text(re.compile(r"^[\d,]+ groups of near-identical images \([\d,]+ copies\)")).first
    groups, copies = (int(x.replace(",", "")) for x in re.search(r"([\d,]+) groups .*?\(([\d,]+) copies",
                                                                   summary.inner_text()).groups())
    if not DEMO:
        assert (groups, copies) == (2, len(COPIES))          # the planted copies, and nothing else
        expect(page.get_by_text(re.compile(r"^#6 .*\(kept\)$"))).to_be_visible()
    db_before = stored(cache_dir)
    button = app.key("dups_keep_one").locator("button")
    pending = int(re.search(r"mark ([\d,]+) copies bad", button.inner_text()).group(1).replace(",", ""))
    assert 0 < pending <= copies
    button.click()
    expect(button).to_contain_text("mark 0 copies bad")     # nothing left to mark
    expect(button).to_be_disabled()
    app.idle()
    expect(app.key("dups_undo")).to_contain_text(f"Undo my last step ({pending:,} decision(s), ")   # one step
    marked = {k: v for k, v in stored(cache_dir).items() if db_before.get(k) != v}
    assert len(marked) == pending and set(marked.values()) == {"bad"}
    if not DEMO:
        assert sorted(int(i.rsplit("/", 1)[1]) for _, i in marked) == sorted(COPIES)
        for row in COPIES:
            expect(page.get_by_text(re.compile(rf"^#{row} .* - bad$"))).to_be_visible()
    app.key("dups_undo").locator("button").first.click()          # leave the decisions as they were
    expect(button).to_contain_text(f"mark {pending:,} copies bad")
    app.idle()
    assert stored(cache_dir) == db_before


def test_the_grid_view_is_driven_from_the_keyboard(new_app, dataset, cache_dir):
    """Label issues' grid: B marks the sample in focus bad and moves on, K keeps, U undoes (back to that
    sample), the arrows move the focus, N and P turn the page."""
    app = new_app()
    run_pipeline(app, dataset)
    app.goto("Label issues")
    page = app.page
    app.key("issues_show").get_by_text("not decided yet", exact=True).click()
    app.idle()
    app.key("issues_view").get_by_text("grid", exact=True).click()
    card = app.key("grid_focus")
    expect(card).to_contain_text("In focus: 1 of ")
    app.idle()
    app.screenshot("label_issues_grid")
    n = int(re.search(r"In focus: 1 of ([\d,]+)", card.inner_text()).group(1).replace(",", ""))
    cells = page.locator('[class*="st-key-cell_"]')
    assert min(n, 40) == cells.count() and cells.first.locator("img").count() == 1

    def focused_row() -> int:
        return int(re.search(r"\(row (\d+)\)", card.inner_text()).group(1))

    def press(key: str, expect_text: str) -> None:
        page.evaluate("() => document.activeElement && document.activeElement.blur()")   # keys go to the page
        t0 = time.monotonic()
        page.keyboard.press(key)
        # while the rerun draws, the card drawn before may still be on the page (a message above it moved it)
        expect(page.locator(".st-key-grid_focus", has_text=expect_text)).to_have_count(1)
        app.idle()
        expect(card).to_have_count(1)
        app.step(f"key {key}: card updated and page idle in {time.monotonic() - t0:.2f} s")

    before, db_before = decided_so_far(app), stored(cache_dir)
    first = focused_row()
    press("b", f"of {n - 1:,}")                              # decided: it leaves the 'not decided yet' view
    expect(card).to_contain_text("In focus: 1 of ")
    second = focused_row()
    assert second != first and decided_so_far(app) == dict(before, bad=before["bad"] + 1)
    changed = {k: v for k, v in stored(cache_dir).items() if db_before.get(k) != v}
    assert list(changed.values()) == ["bad"]
    press("k", f"of {n - 2:,}")
    assert decided_so_far(app) == dict(before, bad=before["bad"] + 1, kept=before["kept"] + 1)
    press("u", f"of {n - 1:,}")                              # the keep is undone; its sample is in focus again
    assert focused_row() == second and decided_so_far(app) == dict(before, bad=before["bad"] + 1)
    press("ArrowRight", "In focus: 2 of ")
    press("ArrowLeft", "In focus: 1 of ")
    press("u", f"of {n:,}")                                  # the first sample is back, undecided, in focus
    assert focused_row() == first and decided_so_far(app) == before and stored(cache_dir) == db_before
    if n > 40:
        press("n", "In focus: 41 of ")
        expect(app.key("issues_page").locator("input")).to_have_value("2")
        press("p", "In focus: 1 of ")
    app.step("keyboard done")


def test_a_map_point_shows_its_image_on_hover_and_opens_in_a_card_on_click(new_app, dataset, cache_dir):
    app = new_app()
    run_pipeline(app, dataset)
    app.goto("Map")
    page = app.page
    page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(state="attached")
    app.wait_rendered()
    card = app.key("map_card")
    for where in (0.5, 0.25, 0.75, 0.1, 0.9):               # a point with no neighbour drawn on top of it
        x, y = point_on_map(page, where)
        page.mouse.move(x - 4, y)
        page.mouse.move(x, y, steps=2)
        hover = page.locator(".hoverlayer .hovertext")
        try:
            hover.first.wait_for(timeout=3000)
        except Exception:  # noqa: BLE001 - no hover label here: try another point
            continue
        row = settled_hover_row(page)
        check_hover_image(page, dataset, row)
        if SCREENSHOTS:                                      # the window as it is: the card is beside the cursor
            save_png(page.screenshot(animations="disabled"), SHOTS / "map_hover.png")
        t0 = time.monotonic()
        page.mouse.down()
        page.mouse.up()
        expect(card).to_contain_text(f"Clicked sample (row {row})")
        app.idle()
        app.step(f"click -> card in {time.monotonic() - t0:.2f} s")
        break
    else:
        raise AssertionError("no map point showed a hover label")
    for what in ("given", "suggested", "noise score", "decision "):
        expect(card).to_contain_text(what)
    expect(card.locator("img")).to_have_count(1)
    db_before = stored(cache_dir)
    prior = re.search(r"decision (\w+)", card.inner_text()).group(1)  # an earlier test may have decided it
    button, decision = ("Keep label", "kept") if prior == "bad" else ("Mark bad", "bad")
    card.get_by_role("button", name=button).first.click()
    expect(card).to_contain_text(f"decision {decision}")
    app.idle()
    changed = {k: v for k, v in stored(cache_dir).items() if db_before.get(k) != v}
    assert list(changed.values()) == [decision]
    app.key("map_undo").locator("button").first.click()     # one step back: the decisions as they were
    expect(card).to_contain_text(f"decision {prior}")
    app.idle()
    assert stored(cache_dir) == db_before
