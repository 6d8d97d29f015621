"""Flow studies: registry entries of kind "flow", run by the sweep runner, one report.

The three flow studies are :class:`~vinaflow.studies.base.Study` objects whose runs are
``vinaflow flow`` configs; ``vinaflow study``, ``vinaflow study --list`` and
``vinaflow report`` treat them like the posterior studies, and folders written by
earlier versions (``benchmarks/results/study-*``) still report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vinaflow.cli import main
from vinaflow.errors import ConfigError
from vinaflow.evaluation.intervals import seed_interval
from vinaflow.studies.base import STUDIES, Study, get_study, list_studies
from vinaflow.studies.flows import FLOW_STUDIES, figure_flow_samples, run_study, study_summary
from vinaflow.studies.grid import Axis
from vinaflow.studies.results import load_results

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture
def tiny_study(monkeypatch: pytest.MonkeyPatch) -> str:
    """A two-point flow study that trains in a second."""
    study = Study(
        name="tiny-flow-study",
        description="tiny test study",
        kind="flow",
        base={
            "target": {"name": "uniform", "low": 0.0, "high": 1.0},
            "data": {"num_train": 400, "num_validation": 20, "num_test": 400},
            "model": {"blocks": 1, "hidden": 4, "base": "uniform", "normalization": "none"},
            "objective": {"name": "sinkhorn", "blur": 0.05},
            "training": {"steps": 20, "lr": 0.05, "batch_size": 128, "progress": False},
            "evaluation": {"num_samples": 400, "certificate": False, "plots": False},
        },
        axes=[Axis("offset", [(str(d), {"model.base_offset": float(d)}) for d in (0, 3)])],
        seeds="0,1",
        figures=[figure_flow_samples],
        demo_samples=100,
        metrics=("w1", "train_seconds"),
    )
    monkeypatch.setitem(STUDIES, study.name, study)
    return study.name


def test_flow_study_runs_through_the_sweep_runner_resumes_and_reports(
    tiny_study: str, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    assert main(["study", tiny_study, "--out", str(out), "--workers", "1", "--quiet"]) == 0
    records = load_results(out)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert len({r["id"] for r in records}) == 4
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["kind"] == "flow" and sweep["study"] == tiny_study
    # a base displaced by 3 with 20 steps cannot have moved onto U(0, 1) as well as d = 0
    w1 = {r["params"]["offset"]: r["metrics"]["w1"] for r in records if r["seed"] == 0}
    assert w1["3"] > w1["0"]
    # the first seed's runs keep model and held-out samples for the figures
    saved = sorted((out / "samples").glob("*.npz"))
    assert len(saved) == 2
    with np.load(saved[0]) as f:
        assert f["samples"].shape == (100, 1) and f["data"].shape == (100, 1)
    text = (out / "report.md").read_text()
    assert f"Study `{tiny_study}`" in text and "| offset | runs | W1 |" in text
    assert (out / "plots" / "samples_0.png").is_file()
    summary = study_summary(out)
    assert [row["params"] for row in summary] == [{"offset": 0}, {"offset": 3}]
    assert summary[0]["n"] == 2 and summary[0]["stats"]["w1"][2] == 2

    # resume: nothing is rerun, nothing is lost
    before = (out / "results.jsonl").read_text()
    assert run_study(tiny_study, out, log=None, workers=1) == out / "report.md"
    assert (out / "results.jsonl").read_text() == before
    assert main(["report", str(out)]) == 0


def test_vinaflow_sweep_runs_a_flow_config(tmp_path: Path) -> None:
    cfg = tmp_path / "flow.yaml"
    cfg.write_text(
        "target: {name: uniform}\ndata: {num_train: 300, num_validation: 20, num_test: 300}\n"
        "model: {blocks: 1, hidden: 4}\ntraining: {steps: 10, progress: false}\n"
        "evaluation: {num_samples: 300, certificate: false, plots: false}\n"
    )
    out = tmp_path / "sweep"
    grid = ["--grid", "model.hidden=4,8", "--seeds", "0", "--set", "training.lr=0.01"]
    assert main(["sweep", str(cfg), *grid, "--out", str(out), "--workers", "1", "--quiet"]) == 0
    records = load_results(out)
    assert sorted(r["params"]["model.hidden"] for r in records) == ["4", "8"]
    assert all(r["status"] == "ok" and r["metrics"]["w1"] >= 0 for r in records)
    text = (out / "report.md").read_text()
    assert "# Sweep" in text and "held-out target samples" in text and "precision" in text
    assert (out / "plots" / "grid_points.png").is_file()
    # problem is a section of run configs, not of flow configs
    assert main(["sweep", str(cfg), "--grid", "problem.noise=0.1", "--out", str(out)]) == 2


def test_flow_studies_are_in_the_one_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(FLOW_STUDIES) <= set(list_studies())
    assert main(["study", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in FLOW_STUDIES:
        assert f"{name}: {get_study(name).description}" in listed
        assert get_study(name).kind == "flow"


@pytest.mark.parametrize("quick", [False, True])
def test_flow_study_grids_keep_their_settings(quick: bool) -> None:
    support = get_study("support-mismatch").sweep(quick=quick).tasks()
    offsets = {t.config["model"]["base_offset"] for t in support}
    assert offsets == ({0.0, 5.0, 25.0} if quick else {0.0, 3.0, 5.0, 10.0, 15.0, 20.0, 25.0})
    assert {t.config["objective"]["name"] for t in support} == {"sinkhorn", "fdiv"}
    assert len(support) == (12 if quick else 140)
    heavy = get_study("heavy-tails").sweep(quick=quick).tasks()
    assert {t.config["model"]["base"] for t in heavy} == {"gaussian", "student-t"}
    assert all(t.config["evaluation"]["w1_scale"] == "slog" for t in heavy)
    pr = get_study("precision-recall").sweep(quick=quick).tasks()
    lams = {t.config["objective"].get("lam") for t in pr}
    assert lams == ({None, 0.1, 1.0, 10.0} if quick else {None, 0.1, 0.3, 1.0, 3.0, 10.0})
    # every run is pre-trained by maximum likelihood, then trained with its objective
    assert all(t.config["pretraining"]["objective"]["name"] == "nll" for t in pr)
    nll = [t for t in pr if t.params["objective"] == "nll"]
    assert {t.params["lam"] for t in nll} == {"none"}
    assert all(t.config["objective"]["name"] == "nll" for t in nll)


@pytest.mark.parametrize("name", ["support-mismatch", "heavy-tails", "precision-recall"])
def test_results_of_earlier_versions_still_report(name: str, tmp_path: Path) -> None:
    out = Path(shutil.copytree(RESULTS / f"study-{name}", tmp_path / name))
    old = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert "id" not in old[0]  # written by an earlier version
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    study = get_study(name)
    assert f"Study `{name}`" in text and f"{len(old)} finished" in text
    grid = json.loads((out / "study.json").read_text())["grid"]
    rows = study_summary(out)
    assert len(rows) == len(grid)
    # benchmarks/results/generative.json summarizes these records with the one interval
    # convention (vinaflow.evaluation.intervals: ddof=1, Student-t 95%)
    before = json.loads((RESULTS / "generative.json").read_text())[name]["rows"]
    by_params = {json.dumps(r["params"], sort_keys=True): r for r in rows}
    assert len(by_params) == len(before)
    ok = [r for r in old if r["status"] == "ok"]
    for r in before:
        key = json.dumps(r["params"], sort_keys=True)
        now = by_params[key]
        assert now["n"] == r["n"] and now["failed"] == r["failed"]
        runs = [x for x in ok if json.dumps(x["params"], sort_keys=True) == key]
        assert len(runs) == r["n"]
        for m in study.metrics:
            (mean, std, n), (mean0, std0, n0) = now["stats"][m], r["stats"][m]
            assert (mean, std, n) == (
                pytest.approx(mean0, rel=1e-12),
                pytest.approx(std0, rel=1e-12),
                n0,
            ), m
            values = np.array([x["metrics"][m] for x in runs], dtype=float)
            assert std0 == pytest.approx(values.std(ddof=1), rel=1e-12), m  # not ddof=0
            ref = seed_interval(values)
            assert r["ci95"][m] == [pytest.approx(ref["low"]), pytest.approx(ref["high"])], m
            assert list(now["ci95"][m]) == r["ci95"][m], m
    figures = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert figures
    if name == "support-mismatch":
        assert "samples_sinkhorn_0.png" in figures  # from the old samples/0.npz


def test_running_into_a_folder_of_an_earlier_version_is_a_clear_error(tmp_path: Path) -> None:
    out = Path(shutil.copytree(RESULTS / "study-heavy-tails", tmp_path / "old"))
    before = (out / "results.jsonl").read_text()
    with pytest.raises(ConfigError, match="earlier version"):
        run_study("heavy-tails", out, quick=True, log=None, workers=1)
    assert (out / "results.jsonl").read_text() == before


# Opt-in: about a minute on 2 cores. The default suite covers the spawn pool
# (test_sweep.py::test_cli_sweep_local_pool_and_report, 2 workers) and this study's grid
# and sweep wiring (the parametrized quick-grid tests above) separately.
@pytest.mark.slow
def test_real_study_runs_on_a_process_pool(tmp_path: Path) -> None:
    # The real precision-recall quick grid (NLL + three lambdas) on two worker processes:
    # the spawn pool must import the study, run it and return records the parent writes.
    out = tmp_path / "pr"
    run_study("precision-recall", out, seeds=[0], quick=True, log=None, workers=2)
    records = load_results(out)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert all(r["metrics"]["pretrain_steps"] == 400 for r in records)
    assert all(0 <= r["metrics"]["precision"] <= 1 for r in records)
    assert (out / "report.md").is_file() and (out / "plots" / "pr_curve.png").is_file()
