"""The package as a newcomer meets it: the notebook lines in the README run without streamlit, the public API
is what __all__ says, there is no import cycle, modules stay small, and the README's architecture and
column tables match the code."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import selector
from selector.table import COLUMNS
from tests.synthetic import make_embeddings

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "selector"
README = (ROOT / "README.md").read_text()
MAX_MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    """dotted name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _readme_block(heading: str, fence: str = "") -> str:
    """The first fenced block after a README heading."""
    start = README.index(heading)
    m = re.search(rf"```{fence}\n(.*?)```", README[start:], re.S)
    assert m, f"no ``` block after {heading!r}"
    return m.group(1)


def test_the_readme_notebook_lines_run_without_streamlit(tmp_path):
    make_embeddings(tmp_path / "embedded.npz", n_per_class=40)
    snippet = _readme_block("### From Python", "python")
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 5
    guard = ("import sys\n"
             "class Refuse:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in ('streamlit', 'plotly'):\n"
             "            raise ModuleNotFoundError(f'{name} is not installed here')\n"
             "sys.meta_path.insert(0, Refuse())\n")
    check = ("\nimport pandas as pd\n"
             "assert 'streamlit' not in sys.modules and 'plotly' not in sys.modules\n"
             "assert int(table['selected'].sum()) == 48\n"
             "assert pd.read_csv('subset.csv')['selected'].sum() == 48\n"
             "from selector.__main__ import main\n"
             "assert main(['--source', 'embeddings', '--path', 'embedded.npz', '--map', 'none', '--out', 'cli.csv']) == 0\n"
             "assert 'streamlit' not in sys.modules\n")
    env = dict(os.environ, SELECTOR_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", guard + snippet + check], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "subset.manifest.json").exists() and (tmp_path / "cli.manifest.json").exists()


def test_public_api():
    assert set(selector.__all__) >= {"open_source", "open_encoder", "Config", "run", "load_or_run", "Selection",
                                     "apply", "export", "Result"}
    for name in selector.__all__:
        assert getattr(selector, name) is not None, name


def test_no_import_cycle():
    modules = _modules()
    edges = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):       # deferred imports inside functions count too
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            edges[name] |= {t for t in targets if t in modules and t != name}
    state, cycle = {}, []

    def visit(m, trail):
        state[m] = "open"
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                cycle.append(trail[trail.index(t):] + [t] if t in trail else [m, t])
            elif t not in state:
                visit(t, trail + [t])
        state[m] = "done"
    for m in modules:
        if m not in state:
            visit(m, [m])
    assert not cycle, f"import cycles: {cycle}"


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not big, f"split these by concept: {big}"


def test_readme_architecture_lists_every_module():
    block = _readme_block("## Architecture")
    listed = set(re.findall(r"^ {2,}((?:\w+/)*\w+\.py)\b", block, re.M))   # the indented lines under selector/
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert listed == actual, f"README lists {sorted(listed - actual)} that do not exist and misses {sorted(actual - listed)}"


def test_readme_column_table_is_the_table():
    section = README[README.index("### The per-sample table"):]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    described = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert described == set(COLUMNS)
