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


def _ocean_coverage() -> str:
    rows = json.loads((ROOT / "benchmarks/results/ocean.json").read_text())["rows"]
    return f"{rows[0]['coverage']:.3f}"


def test_readme_matches_results(readme_copy: Path) -> None:
    res = _check(readme_copy)
    assert res.returncode == 0, res.stdout + res.stderr


def test_altered_number_fails(readme_copy: Path) -> None:
    text = readme_copy.read_text(encoding="utf-8")
    old = f"| {_ocean_coverage()} |"
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


def test_tables_json_holds_the_rendered_cells(tables) -> None:  # noqa: ANN001
    record = tables.tables_record()["tables"]
    assert set(record) == set(tables.TABLES)
    kin = record["kinematics"]
    assert kin["sources"] == ["kinematics.json"]
    grid = kin["tables"][0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for row in grid["rows"]:
        assert len(row) == len(grid["header"])
        assert "| " + " | ".join(row) + " |" in readme
    # an interval end the README shows is in the record, as the cell it is part of
    rows = json.loads((ROOT / "benchmarks/results/kinematics.json").read_text())["rows"]
    r = rows[0]
    cell = tables.ci(
        tables.summary_interval(
            r["resim_error"], r["resim_error_std_over_obs"], r["num_observations"]
        )
    )
    assert any(cell in r for r in grid["rows"])


def test_stale_tables_json_fails(tables, readme_copy: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    stale = tmp_path / "tables.json"
    stale.write_text("{}\n", encoding="utf-8")
    monkeypatch.setattr(tables, "TABLES_JSON", stale)
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    assert tables.main(["--check", "--readme", str(readme_copy)]) == 1
    assert tables.main(["--readme", str(readme_copy)]) == 0
    assert json.loads(stale.read_text())["tables"]["kinematics"]["sources"] == ["kinematics.json"]
    assert tables.main(["--check", "--readme", str(readme_copy)]) == 0


# --- intervals and verdicts in the generated tables ------------------------------------


@pytest.fixture(scope="module")
def tables():  # noqa: ANN201 - the scripts/results_tables module
    sys.path.insert(0, str(ROOT / "scripts"))
    import results_tables

    return results_tables


def test_ci_cell_format(tables) -> None:  # noqa: ANN001
    assert tables.ci({"mean": 0.589, "low": 0.565, "high": 0.613}) == "0.589 [0.565, 0.613]"
    assert tables.ci({"mean": 23.8, "low": 14.3, "high": 33.3}) == "23.8 [14.3, 33.3]"
    assert tables.ci({"mean": 0.017, "low": -0.0004, "high": 0.035}) == "0.017 [0.000, 0.035]"
    nan = float("nan")
    assert tables.ci({"mean": 0.5, "low": nan, "high": nan}) == "0.500 (1 seed)"


def test_ocean_verdict_uses_the_interval_upper_end(tables, monkeypatch) -> None:  # noqa: ANN001
    """A mean under the target whose interval reaches above it is 'within noise', not met;
    an interval wholly under it is 'met', wholly above 'not met'."""
    real = tables.load

    def fake(name: str):  # noqa: ANN202
        data = real(name)
        if name in tables.OCEAN_FILES:
            data = json.loads(json.dumps(data))
            for r in data["rows"]:
                n = len(r["per_observation_c2st"])
                r["per_observation_c2st"] = (
                    [0.55, 0.56] * (n // 2) if name == "ocean.json" else [0.58, 0.62] * (n // 2)
                )
            if name == "ocean.json":
                data["rows"][0]["per_observation_c2st"] = [0.70, 0.72] * 10
        return data

    monkeypatch.setattr(tables, "load", fake)
    lines = [ln for ln in tables.ocean_table().splitlines() if ln.startswith("| ") and "`" in ln]
    verdicts = [ln.split(" | ")[2] for ln in lines]
    assert verdicts == ["not met", "met", "met", "within noise"]


def test_flow_study_tables_use_ddof1_intervals_of_the_records(tables) -> None:  # noqa: ANN001
    from vinaflow.evaluation.intervals import seed_interval

    recs = [
        json.loads(line)
        for line in (ROOT / "benchmarks/results/study-heavy-tails/results.jsonl")
        .read_text()
        .splitlines()
        if line.strip()
    ]
    v = [
        r["metrics"]["w1_slog"]
        for r in recs
        if r["params"] == {"base": "gaussian", "alpha": 1} and r["status"] == "ok"
    ]
    assert len(v) >= 3
    cell = tables.ci(seed_interval(v))
    text = tables.heavy_tails_table()
    assert f"| {cell} |" in text and "ddof=1" in text
    # the population std (ddof=0) gives a narrower interval: not what the table shows
    n = len(v)
    narrow = dict(seed_interval(v))
    half = (narrow["high"] - narrow["mean"]) * ((n - 1) / n) ** 0.5
    narrow.update(low=narrow["mean"] - half, high=narrow["mean"] + half)
    assert tables.ci(narrow) not in text


def test_speed_table_does_not_call_a_mixed_ratio_overhead(tables, monkeypatch) -> None:  # noqa: ANN001
    real = tables.load

    def with_floor(name: str):  # noqa: ANN202
        data = json.loads(json.dumps(real(name)))
        if name == "peers_speed.json":
            r = data["results"]
            r["compiled_floor_steps_per_s"] = 120.0
            r["compiled_train_overhead_ratio"] = 120.0 / r["compiled_train_steps_per_s"]
        return data

    text = tables.speed_table()
    assert "unconditional" in text
    if "compiled_floor_steps_per_s" not in real("peers_speed.json")["results"]:
        row = next(ln for ln in text.splitlines() if "compiled (`torch.compile`)" in ln)
        assert row.rstrip().endswith("| not compiled in this run | n/a |")
        assert "not of framework overhead" in text
    monkeypatch.setattr(tables, "load", with_floor)
    text = tables.speed_table()
    row = next(ln for ln in text.splitlines() if "compiled (`torch.compile`)" in ln)
    ratio = 120.0 / real("peers_speed.json")["results"]["compiled_train_steps_per_s"]
    assert row.rstrip().endswith(f"| 120.0 | {ratio:.2f} |")
    assert "not of framework overhead" not in text


def test_peers_seeds_table_pairs_by_seed_and_judges_the_interval(tables, monkeypatch) -> None:  # noqa: ANN001
    """Cells are means over seeds; the paired difference uses only the seeds both methods
    have; the target is met only when the whole interval is under it."""
    real = tables.load
    c2st = {
        "sbi-nsf": {0: 0.58, 1: 0.57, 2: 0.59},
        "sbi-fmpe": {0: 0.70, 1: 0.72},
        "vinaflow-default": {0: 0.520, 1: 0.522, 2: 0.518},
    }

    def fake(name: str):  # noqa: ANN202
        data = json.loads(json.dumps(real(name)))
        if name == "peers_seeds.json":
            data["rows"] = [
                {"task": "two_moons", "budget": 10000, "method": m, "seed": k, "c2st": v}
                for m, by in c2st.items()
                for k, v in by.items()
            ] + [{"task": "two_moons", "budget": 10000, "method": "sbi-fmpe", "seed": 2,
                  "error": "diverged"}]  # fmt: skip
        return data

    monkeypatch.setattr(tables, "load", fake)
    text = tables.peers_seeds_table()
    from vinaflow.evaluation.intervals import seed_interval

    row = next(ln for ln in text.splitlines() if ln.startswith("| two_moons"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == tables.ci(seed_interval([0.58, 0.57, 0.59])) + " (3)"
    assert cells[3].endswith("(2)")  # the failed seed is not counted
    assert cells[5] == "0.53: met"
    fmpe = tables.ci(seed_interval([0.520 - 0.70, 0.522 - 0.72]))
    assert f"minus `sbi-fmpe`: {fmpe} over seeds 0, 1 (lower)" in text
    c2st["vinaflow-default"] = {0: 0.50, 1: 0.56, 2: 0.53}
    assert "| 0.53: within noise |" in tables.peers_seeds_table()
