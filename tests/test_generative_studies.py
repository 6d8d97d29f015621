"""Flow studies: records, resume, report, and the process pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import vinaflow.studies.flows as gs
from vinaflow.errors import ConfigError
from vinaflow.experiments.generative import evaluate_flow, fit_flow
from vinaflow.problems.targets import make_target


def _tiny_run(p: dict[str, Any], seed: int, quick: bool) -> tuple[dict[str, Any], Any]:
    if p["objective"] == "broken":
        raise ConfigError("deliberately broken grid point")
    x = make_target({"name": "uniform", "low": 0.0, "high": 1.0}).sample(
        500, torch.Generator().manual_seed(seed)
    )
    model, res = fit_flow(
        x,
        {"blocks": 1, "hidden": 4, "base": "uniform", "base_offset": float(p["offset"])},
        {"name": p["objective"], "blur": 0.05} if p["objective"] == "sinkhorn" else {"name": "nll"},
        {"steps": 20, "lr": 0.05, "batch_size": 128, "seed": seed, "progress": False},
    )
    ev = evaluate_flow(model, x, {"certificate": False, "num_samples": 500, "seed": seed})
    return {"w1": ev["w1"], "train_seconds": res.train_seconds}, (
        x,
        model.sample(500, torch.Generator().manual_seed(seed)),
    )


@pytest.fixture
def tiny_study(monkeypatch: pytest.MonkeyPatch) -> str:
    spec = {
        "description": "tiny test study",
        "grid": lambda quick: [
            {"objective": "sinkhorn", "offset": 0},
            {"objective": "sinkhorn", "offset": 3},
            {"objective": "broken", "offset": 0},
        ],
        "run": _tiny_run,
        "seeds": [0, 1],
        "quick_seeds": [0],
        "metrics": ("w1", "train_seconds"),
    }
    monkeypatch.setitem(gs.GENERATIVE_STUDIES, "support-mismatch", spec)
    return "support-mismatch"


def test_study_records_every_run_resumes_and_reports(tiny_study: str, tmp_path: Path) -> None:
    out = tmp_path / "study"
    report = gs.run_study(tiny_study, out, log=None, workers=1)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6
    assert sum(r["status"] == "failed" for r in records) == 2
    assert all("deliberately broken" in r["error"] for r in records if r["status"] == "failed")
    ok = [r for r in records if r["status"] == "ok"]
    assert all(r["metrics"]["w1"] >= 0 for r in ok)
    # a base displaced by 3 with 20 steps cannot have moved onto U(0, 1) as well as d = 0
    w1 = {r["params"]["offset"]: r["metrics"]["w1"] for r in ok if r["seed"] == 0}
    assert w1[3] > w1[0]
    assert (out / "samples" / "0.npz").is_file()
    text = report.read_text()
    assert "support-mismatch" in text and "w1" in text

    # the sweeps' results format: every record has an id, read back by load_results
    from vinaflow.studies.results import load_results

    assert [r["id"] for r in load_results(out)] == [r["id"] for r in records]
    assert len({r["id"] for r in records}) == 6

    # resume: nothing is rerun, nothing is lost
    before = (out / "results.jsonl").read_text()
    gs.run_study(tiny_study, out, log=None, workers=1)
    assert (out / "results.jsonl").read_text() == before

    # results of earlier versions (no id) still resume and report
    legacy = [{k: v for k, v in r.items() if k != "id"} for r in records[:4]]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in legacy))
    gs.run_study(tiny_study, out, log=None, workers=1)
    again = load_results(out)
    assert len(again) == 6 and [r["metrics"] for r in again[:4]] == [
        r.get("metrics") for r in legacy
    ]


def test_damaged_results_file_is_a_clear_error(tiny_study: str, tmp_path: Path) -> None:
    out = tmp_path / "study"
    out.mkdir()
    (out / "results.jsonl").write_text('{"label": "x", "seed": 0}\n{not json\n')
    with pytest.raises(Exception, match="corrupted"):
        gs.run_study(tiny_study, out, log=None, workers=1)
    assert (out / "results.jsonl").read_text().startswith('{"label": "x"')


def test_unknown_study_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown study"):
        gs.run_study("no-such-study", tmp_path, log=None)


def test_real_study_runs_on_a_process_pool(tmp_path: Path) -> None:
    # The real precision-recall quick grid (NLL + three lambdas) on two worker processes:
    # the spawn pool must import the study, run it and return records the parent writes.
    out = tmp_path / "heavy"
    gs.run_study("precision-recall", out, seeds=[0], quick=True, log=None, workers=2)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert (out / "report.md").is_file()
