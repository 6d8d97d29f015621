"""The documentation: tutorials run, generated tables are current, the site builds strictly.

Each tutorial under ``docs/tutorials/`` is the very script its page embeds; here it runs
as a subprocess with ``VINAFLOW_DOCS_QUICK=1`` (a few seconds of training) and its output
is checked.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"


def _run(args: list[str], tmp_path: Path, timeout: float = 300) -> str:
    env = {
        **os.environ,
        "VINAFLOW_DOCS_QUICK": "1",
        "VINAFLOW_CACHE": str(tmp_path / "cache"),
        "MPLBACKEND": "Agg",
        "NO_MKDOCS_2_WARNING": "1",
    }
    proc = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _value(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"expected a line matching {pattern!r} in:\n{text}"
    return float(m.group(1))


def test_quickstart_tutorial(tmp_path: Path) -> None:
    out = _run([sys.executable, str(TUTORIALS / "quickstart.py")], tmp_path)
    assert "training data: x (2000, 4), y (2000, 2)" in out
    assert "samples: (1, 1000, 4)" in out
    assert "loaded posterior reproduces the samples: True" in out
    # A few seconds of maximum likelihood on this problem already gives C2ST near 0.5.
    assert 0.4 <= _value(r"C2ST against the exact posterior: ([0-9.]+)", out) <= 0.75
    assert 0.4 <= _value(r"evaluate: mean C2ST ([0-9.]+) over 3 observations", out) <= 0.75


def test_objectives_tutorial(tmp_path: Path) -> None:
    out = _run([sys.executable, str(TUTORIALS / "objectives.py")], tmp_path)
    assert 0.4 <= _value(r"nll \(cinn\): C2ST ([0-9.]+)", out) <= 0.75
    # The adversarial and transport objectives get only seconds in quick mode: they must
    # run and report a C2ST, not reach the closed-form posterior.
    assert 0.4 <= _value(r"fdiv kl, backward \(inn\): C2ST ([0-9.]+)", out) <= 1.0
    assert 0.4 <= _value(r"sinkhorn \(inn\): C2ST ([0-9.]+)", out) <= 1.0


def test_generated_tables_are_current(tmp_path: Path) -> None:
    out = _run([sys.executable, "docs/scripts/make_figures.py", "--check"], tmp_path, timeout=60)
    assert "tables up to date" in out


def test_every_figure_and_table_a_page_uses_exists() -> None:
    text = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    figures = set(re.findall(r"\]\(\.\./figures/([\w.-]+)\)", text))
    tables = set(re.findall(r'--8<-- "docs/generated/([\w.-]+)"', text))
    assert figures and tables
    for name in figures:
        assert (ROOT / "docs" / "figures" / name).is_file(), name
    for name in tables:
        assert (ROOT / "docs" / "generated" / name).is_file(), name


def test_getting_started_has_the_readme_commands() -> None:
    """The main job's and the test suite's commands are copied from README.md verbatim."""
    readme = (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "getting-started.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick_start, flags=re.S)
    assert len(blocks) >= 2  # the main job and the test suite
    for block in blocks:
        assert block in page, f"README command not on the getting-started page:\n{block}"


_MKDOCS = all(importlib.util.find_spec(m) for m in ("mkdocs", "material", "mkdocstrings"))


@pytest.mark.skipif(
    not _MKDOCS,
    reason='mkdocs, mkdocs-material or mkdocstrings not installed (pip install -e ".[docs]")',
)
def test_site_builds_strictly(tmp_path: Path) -> None:
    _run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        tmp_path,
        timeout=180,
    )
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "models" / "index.html").is_file()
