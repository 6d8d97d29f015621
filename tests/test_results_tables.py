"""The README's benchmark numbers are generated from benchmarks/results/*.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "results_tables.py"


def _check(readme: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--readme", str(readme)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture
def readme_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "README.md"
    copy.write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    return copy


def _ocean_c2st() -> str:
    rows = json.loads((ROOT / "benchmarks/results/ocean.json").read_text())["rows"]
    return f"{rows[0]['c2st']:.3f}"


def test_readme_matches_results(readme_copy: Path) -> None:
    res = _check(readme_copy)
    assert res.returncode == 0, res.stdout + res.stderr


def test_altered_number_fails(readme_copy: Path) -> None:
    text = readme_copy.read_text(encoding="utf-8")
    old = f"| {_ocean_c2st()} |"
    assert old in text
    readme_copy.write_text(text.replace(old, "| 0.555 |", 1), encoding="utf-8")
    res = _check(readme_copy)
    assert res.returncode == 1
    assert "'ocean' disagrees with its JSON" in res.stdout and "0.555" in res.stdout


def test_table_or_number_without_json_fails(readme_copy: Path) -> None:
    text = readme_copy.read_text(encoding="utf-8")
    anchor = "### Inverse kinematics\n"
    assert anchor in text
    readme_copy.write_text(
        text.replace(anchor, anchor + "\n| run | seconds |\n|---|---|\n| a | 12 |\n", 1),
        encoding="utf-8",
    )
    res = _check(readme_copy)
    assert res.returncode == 1 and "table row outside a generated block" in res.stdout
    readme_copy.write_text(
        text.replace(anchor, anchor + "\nThe quick studies took 1m54s.\n", 1), encoding="utf-8"
    )
    res = _check(readme_copy)
    assert res.returncode == 1 and "1m54s" in res.stdout


def test_unknown_or_missing_block_fails(readme_copy: Path) -> None:
    text = readme_copy.read_text(encoding="utf-8")
    start, end = text.index("<!-- table:speed -->"), text.index("<!-- /table:speed -->")
    cut = text[:start] + text[end + len("<!-- /table:speed -->") :]
    unknown = "<!-- table:nope -->\nx\n<!-- /table:nope -->\n\n### Speed close"
    readme_copy.write_text(cut.replace("### Speed close", unknown), encoding="utf-8")
    res = _check(readme_copy)
    assert res.returncode == 1
    assert "'nope': no table of that name" in res.stdout and "'speed' is missing" in res.stdout
