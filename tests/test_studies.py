"""Study registry, every study's grid, and one study end to end with its report."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from vinaflow.cli import main
from vinaflow.errors import ConfigError, DataError
from vinaflow.studies import base as studies
from vinaflow.studies.base import STUDY_MODULES, Study, get_study, list_studies
from vinaflow.studies.grid import Axis, Sweep
from vinaflow.studies.report import load_study_data, write_study_report
from vinaflow.studies.results import load_results, write_results
from vinaflow.studies.sweep import run_sweep

KINEMATICS_STUDIES = ("prior-regularization", "divergences", "latent-dim", "sinkhorn-blur")


def test_registry_lists_the_paper_studies() -> None:
    names = list_studies()
    for name in KINEMATICS_STUDIES:
        assert name in names and get_study(name).name == name
    with pytest.raises(ConfigError, match="unknown study 'nope'"):
        get_study("nope")
    with pytest.raises(ConfigError, match="already registered"):
        studies.register_study(Study("divergences", "dup", {}, []))


@pytest.mark.parametrize("name", KINEMATICS_STUDIES)
@pytest.mark.parametrize("quick", [False, True])
def test_every_study_resolves(name: str, quick: bool) -> None:
    study = get_study(name)
    tasks = study.sweep(quick=quick).tasks()
    seeds = {t.seed for t in tasks}
    assert seeds == ({40, 41} if quick else set(range(40, 61)))
    assert all(t.config["problem"]["name"] == "kinematics" for t in tasks)
    if quick:
        assert all(t.config["training"]["steps"] <= 600 for t in tasks)
        assert len(tasks) <= 24


def test_study_grids_match_the_paper() -> None:
    prior = get_study("prior-regularization").sweep().tasks()
    combos = {
        (t.config["objective"].get("prior"), t.config["objective"]["prior_weight"]) for t in prior
    }
    assert combos == {("gaussian", 0.0), ("gaussian", 1.0), ("gaussian", 100.0)} | {
        ("uniform", 1.0),
        ("uniform", 100.0),
    }
    div = get_study("divergences").sweep().tasks()
    assert {t.config["objective"]["divergence"] for t in div} >= {"kl", "reverse-kl", "js"}
    assert {t.config["model"]["arch"] for t in div} == {"coupling", "iresnet"}
    assert {t.config["objective"]["direction"] for t in div} == {"backward", "forward"}
    lat = get_study("latent-dim").sweep().tasks()
    assert {t.config["model"]["latent_dim"] for t in lat} == {2, 4, 5, 12, 18}
    assert {t.config["objective"]["name"] for t in lat} == {"fdiv", "sinkhorn"}
    blur = get_study("sinkhorn-blur").sweep().tasks()
    assert {t.config["objective"]["blur"] for t in blur} == {0.01, 10.0, 50.0, 250.0}


def test_lazy_registration_from_another_module(tmp_path, monkeypatch) -> None:
    mod = tmp_path / "my_studies_mod.py"
    mod.write_text(
        textwrap.dedent(
            """
            from vinaflow.studies.base import Study, register_study
            from vinaflow.studies.sweep import Axis
            register_study(Study("my-study", "demo", {"problem": {"name": "gaussian-linear"}},
                                 [Axis.of("model.hidden", [8])], seeds="0..1"))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(STUDY_MODULES, "my-study", "my_studies_mod")
    try:
        assert "my-study" not in studies.STUDIES
        assert get_study("my-study").sweep().seeds == [0, 1]
        assert "my-study" in list_studies()
    finally:
        studies.STUDIES.pop("my-study", None)
        sys.modules.pop("my_studies_mod", None)


def _shrink(sweep, tmp_path) -> None:
    """Seconds-long runs, with the study's own grid, figures and report."""
    b = sweep.base
    b["problem"].update(num_simulations=1000, cache_dir=str(tmp_path / "abc"))
    b["model"].update(blocks=2, hidden=32)
    b["training"].update(steps=40, val_every=20, max_seconds=30)
    b["evaluation"].update(num_observations=2, num_samples=200, c2st=True)


def test_prior_regularization_study_end_to_end(tmp_path) -> None:
    study = get_study("prior-regularization")
    sweep = study.sweep(quick=True, seeds="40")
    _shrink(sweep, tmp_path)
    out = tmp_path / "study"
    records = run_sweep(sweep, out, workers=1, progress=False, meta={"study": study.name})
    assert len(records) == 5 and all(r["status"] == "ok" for r in records)
    for r in records:
        m = r["metrics"]
        assert m["resim_error"] > 0 and 0.4 <= m["c2st"] <= 1 and m["w1"] > 0
        assert m["train_seconds"] > 0
        assert (out / "samples" / f"{r['id']}.npz").is_file()
    report = write_study_report(out)
    text = report.read_text()
    assert "Study `prior-regularization`" in text
    assert "| prior | prior_weight | runs | resim error | C2ST | W1 | train time [s] |" in text
    assert text.count("| gaussian |") == 3 and text.count("| uniform |") == 2
    assert "![arm_posteriors](plots/arm_posteriors.png)" in text
    assert (out / "plots" / "arm_posteriors.png").stat().st_size > 10000
    data = load_study_data(out)
    assert len(data.groups()) == 5 and len(data.ok) == 5


def test_divergence_figure_from_records(tmp_path) -> None:
    """Figure 4 from synthetic records (no training): ellipses per arch x direction."""
    sweep = Sweep(
        get_study("divergences").base,
        [
            Axis.of("objective.divergence", ["kl", "js"]),
            Axis.of("model.arch", ["coupling", "iresnet"]),
            Axis.of("objective.direction", ["backward", "forward"]),
        ],
        [0, 1],
    )
    out = tmp_path / "div"
    out.mkdir()
    recs = []
    for i, t in enumerate(sweep.tasks()):
        m = {
            "resim_error": 0.05 + 0.01 * (i % 5),
            "train_seconds": 20.0 + i,
            "c2st": 0.7,
            "w1": 0.1,
        }
        recs.append({"id": t.id, "params": t.params, "seed": t.seed, "status": "ok", "metrics": m})
    write_results(out, recs)
    meta = {
        "base": sweep.base,
        "axes": [{"name": a.name, "values": [[lab, p] for lab, p in a.values]} for a in sweep.axes],
        "seeds": [0, 1],
        "study": "divergences",
    }
    (out / "sweep.json").write_text(json.dumps(meta))
    text = write_study_report(out).read_text()
    assert "plots/time_vs_resim.png" in text and (out / "plots" / "time_vs_resim.png").is_file()
    assert text.count("| kl |") == 4


def test_report_errors(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "folder not found" in capsys.readouterr().err
    with pytest.raises(DataError, match="no sweep.json"):
        write_study_report(tmp_path)
    assert main(["study", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown study" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", KINEMATICS_STUDIES)
def test_quick_study_cli(name: str, tmp_path) -> None:
    """``vinaflow study NAME --quick`` as a user runs it (a few minutes each)."""
    out = tmp_path / name
    assert main(["study", name, "--quick", "--out", str(out), "--quiet"]) == 0
    records = load_results(out)
    assert records and all(r["status"] == "ok" for r in records)
    text = (out / "report.md").read_text()
    assert "## Figures" in text and "± " in text
