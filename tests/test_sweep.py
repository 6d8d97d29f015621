"""Sweeps: grid and seed parsing, resumable results file, local pool and Ray backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vinaflow.cli import main
from vinaflow.errors import ConfigError, DataError, TrainingDivergedError
from vinaflow.studies import sweep as sweep_mod
from vinaflow.studies.sweep import (
    Axis,
    Sweep,
    load_results,
    parse_grid,
    parse_seeds,
    run_sweep,
)


def tiny_config(cache: Path) -> dict:
    """A seconds-long kinematics run (no C2ST, two held-out observations)."""
    return {
        "problem": {"name": "kinematics", "num_simulations": 600, "cache_dir": str(cache)},
        "model": {"kind": "inn", "blocks": 1, "hidden": 16, "latent_dim": 2},
        "objective": {"name": "nll"},
        "training": {"steps": 10, "batch_size": 64, "val_every": 5},
        "evaluation": {
            "num_observations": 2,
            "num_samples": 100,
            "num_calibration": 0,
            "plots": False,
            "c2st": False,
        },
    }


@pytest.fixture
def base(tmp_path) -> dict:
    return tiny_config(tmp_path / "abc-cache")


def test_parse_grid_and_seeds() -> None:
    (a, b) = parse_grid(["model.hidden=16,32", "objective.prior_low=[0,1],[2,3]"])
    assert a.name == "model.hidden" and [p for _, p in a.values] == [
        {"model.hidden": 16},
        {"model.hidden": 32},
    ]
    assert [p["objective.prior_low"] for _, p in b.values] == [[0, 1], [2, 3]]
    assert parse_seeds("40..60") == list(range(40, 61))
    assert parse_seeds("3,1") == [3, 1] and parse_seeds("7") == [7]
    with pytest.raises(ConfigError, match="empty range"):
        parse_seeds("5..1")
    for bad in ("", "a..b", "1,1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
    for bad in (["hidden=1"], ["model.hidden="], ["model.hidden"]):
        with pytest.raises(ConfigError, match="--grid"):
            parse_grid(bad)


@pytest.mark.parametrize(
    "item, match",
    [
        ("model.hiden=1,2", "model.hiden"),
        ("problem.lenghts=[1,1,1]", "no parameter 'lenghts'"),
        ("modle.hidden=1", "unknown section"),
        ("model.arch=coupling,nope", "unknown value 'nope'"),
        ("objective.divergence=kl", "objective 'nll' takes none"),
    ],
)
def test_unknown_grid_key_is_a_clear_error(base: dict, tmp_path, item: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_sweep(Sweep(base, parse_grid([item]), [0]), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_tasks_are_stable_and_seeded(base: dict) -> None:
    sw = Sweep(base, [Axis.of("model.hidden", [8, 16])], [1, 2])
    tasks = sw.tasks()
    assert [t.seed for t in tasks] == [1, 2, 1, 2]
    assert tasks[0].config["training"]["seed"] == 1 and tasks[2].config["model"]["hidden"] == 16
    assert [t.id for t in tasks] == [t.id for t in sw.tasks()]
    assert len({t.id for t in tasks}) == 4


def test_sweep_resumes_and_never_loses_results(base: dict, tmp_path, monkeypatch) -> None:
    out = tmp_path / "sw"
    sw = Sweep(base, [Axis.of("model.hidden", [8, 16])], [0, 1])
    calls: list[str] = []
    real = sweep_mod.execute_task

    def crash_after_two(payload):  # an interruption after two finished runs
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(payload["id"])
        return real(payload)

    monkeypatch.setattr(sweep_mod, "execute_task", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sw, out, workers=1, progress=False)
    first = load_results(out)
    assert [r["id"] for r in first] == calls and all(r["status"] == "ok" for r in first)
    text = (out / "results.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 2  # whole lines only

    calls.clear()
    monkeypatch.setattr(sweep_mod, "execute_task", lambda p: (calls.append(p["id"]), real(p))[1])
    records = run_sweep(sw, out, workers=1, progress=False)
    assert len(calls) == 2 and len(records) == 4  # only the unfinished runs ran
    assert {r["id"] for r in records} == {t.id for t in sw.tasks()}
    calls.clear()
    run_sweep(sw, out, workers=1, progress=False)
    assert calls == []  # all done: nothing reruns
    m = records[0]["metrics"]
    assert m["resim_error"] > 0 and m["w1"] > 0 and m["train_seconds"] > 0

    # A corrupted file: clear error, nothing overwritten.
    damaged = (out / "results.jsonl").read_text() + '{"id": "x", "sta'
    (out / "results.jsonl").write_text(damaged)
    with pytest.raises(DataError, match="corrupted at line 5"):
        run_sweep(sw, out, workers=1, progress=False)
    assert (out / "results.jsonl").read_text() == damaged

    # Another base config in the same folder is refused.
    (out / "results.jsonl").write_text("".join(damaged.splitlines(True)[:4]))
    other = Sweep({**base, "training": {"steps": 11}}, sw.axes, [0])
    with pytest.raises(ConfigError, match="different base config"):
        run_sweep(other, out, workers=1, progress=False)


def test_failed_runs_are_recorded_and_retried(base: dict, tmp_path, monkeypatch) -> None:
    out = tmp_path / "sw"
    sw = Sweep(base, [], [0])

    def boom(*args, **kwargs):
        raise TrainingDivergedError("loss is NaN")

    monkeypatch.setattr("vinaflow.experiments.pipeline.run", boom)
    (rec,) = run_sweep(sw, out, workers=1, progress=False)
    assert rec["status"] == "failed" and "NaN" in rec["error"]
    monkeypatch.undo()
    assert run_sweep(sw, out, workers=1, progress=False)[0]["status"] == "failed"
    (rec,) = run_sweep(sw, out, workers=1, progress=False, retry_failed=True)
    assert rec["status"] == "ok"


def test_cli_sweep_local_pool_and_report(base: dict, tmp_path, capsys) -> None:
    cfg = tmp_path / "base.yaml"
    cfg.write_text(yaml.safe_dump(base))
    out = tmp_path / "cli"
    argv = ["sweep", str(cfg), "--grid", "model.hidden=8,16", "--seeds", "0..1"]
    argv += ["--out", str(out), "--workers", "2", "--quiet"]
    assert main(argv) == 0
    records = load_results(out)
    assert len(records) == 4 and len({r["worker"] for r in records}) >= 1
    report = (out / "report.md").read_text()
    assert "| hidden | runs |" in report and "± " in report
    assert (out / "plots" / "grid_points.png").is_file()
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["seeds"] == [0, 1] and meta["num_tasks"] == 4

    capsys.readouterr()
    bad = ["sweep", str(cfg), "--grid", "model.hidden=8", "--seeds", "3..1", "--out", str(out)]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty range" in err
    assert len(load_results(out)) == 4


@pytest.mark.xdist_group("ray")
def test_unreachable_ray_address(base: dict, tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster"):
        run_sweep(
            Sweep(base, [], [0]),
            tmp_path / "r",
            backend="ray",
            ray_address="127.0.0.1:9",
            progress=False,
        )
    with pytest.raises(ConfigError, match="needs --backend ray"):
        run_sweep(Sweep(base, [], [0]), tmp_path / "r", ray_address="x:1", progress=False)


@pytest.mark.xdist_group("ray")
def test_ray_backend_local_instance(base: dict, tmp_path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    sw = Sweep(base, [Axis.of("model.hidden", [8, 16])], [0])
    records = run_sweep(sw, out, backend="ray", workers=2, progress=False)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    # Same seeds, same results as the local backend.
    local = run_sweep(sw, tmp_path / "local", workers=1, progress=False)
    by_id = {r["id"]: r["metrics"]["resim_error"] for r in local}
    for r in records:
        assert r["metrics"]["resim_error"] == pytest.approx(by_id[r["id"]], rel=1e-6)
