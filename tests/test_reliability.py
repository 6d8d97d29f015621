"""Crash safety and exact resume: SIGKILLed runs and banks, rollback, safe loading."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vinaflow.atomic import atomic_path, atomic_write_text
from vinaflow.errors import ConfigError, ModelFileError, TrainingDivergedError
from vinaflow.experiments.pipeline import _check_resumable
from vinaflow.models import ConditionalINN
from vinaflow.objectives.losses import CompositeObjective, NLLObjective, Objective
from vinaflow.problems import GaussianLinear, load_bank
from vinaflow.training import Trainer, TrainingConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "vinaflow"

#: A run bounded by steps only (a wall-time budget would make the lr schedule, and so
#: the weights, depend on the machine's speed), checkpointing often.
TINY_RUN = [
    "problem.num_simulations=600",
    "model.blocks=2",
    "model.hidden=16",
    "training.steps=400",
    "training.max_seconds=null",
    "training.batch_size=32",
    "training.checkpoint_every=10",
    "training.val_every=50",
    "evaluation.num_observations=1",
    "evaluation.num_samples=50",
    "evaluation.num_calibration=0",
    "evaluation.c2st=false",
    "evaluation.plots=false",
    "evaluation.certificate=false",
]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vinaflow", *args]


def _run_args(out: Path, *extra: str) -> list[str]:
    sets = [a for s in TINY_RUN for a in ("--set", s)]
    return _cmd("run", "--out", str(out), "--no-progress", *sets, *extra)


def _checkpoint_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:  # noqa: BLE001 - absent or being replaced
        return None


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"process ended before it could be killed: {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("process made no progress")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkilled_run_resumes_bit_identical(tmp_path: Path) -> None:
    ref, out = tmp_path / "ref", tmp_path / "killed"
    res = subprocess.run(_run_args(ref), capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr

    proc = subprocess.Popen(
        _run_args(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env()
    )
    # Kill between checkpoints, mid-training (not at a checkpoint boundary).
    _kill_when(proc, lambda: (_checkpoint_step(out / "checkpoint.pt") or 0) >= 150)
    step = _checkpoint_step(out / "checkpoint.pt")
    assert step is not None and step < 400, "the kill should land mid-training"
    assert not (out / "metrics.json").exists()

    res = subprocess.run(
        _run_args(out, "--resume"), capture_output=True, text=True, env=_env(), timeout=600
    )
    assert res.returncode == 0, res.stderr
    # A kill during a checkpoint write leaves its temporary; the resumed run removes it.
    assert not list(out.glob(".*")), "no temporary files left beside the outputs"
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    h_ref = json.loads((ref / "history.json").read_text())
    h_out = json.loads((out / "history.json").read_text())
    assert h_ref == h_out
    metrics = json.loads((ref / "metrics.json").read_text())
    assert metrics["peak_memory_mb"] > 0


def test_resume_without_checkpoint_starts_from_scratch(tmp_path: Path) -> None:
    sets = [a for s in TINY_RUN for a in ("--set", s)]
    res = subprocess.run(
        _cmd("run", "--out", str(tmp_path / "r"), "--no-progress", "--resume", *sets)
        + ["--set", "training.steps=20"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "no checkpoint" in res.stderr
    assert (tmp_path / "r" / "metrics.json").is_file()


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    cfg = {
        "problem": {"name": "gaussian-linear", "num_simulations": 600},
        "model": {"hidden": 16},
        "objective": {"name": "nll"},
        "training": {"steps": 100, "seed": 0},
    }
    atomic_write_text(tmp_path / "config.yaml", json.dumps(cfg))
    # More steps is a legitimate resume; another seed or network is not.
    _check_resumable(tmp_path, {**cfg, "training": {"steps": 500, "seed": 0}})
    with pytest.raises(ConfigError, match="training.seed"):
        _check_resumable(tmp_path, {**cfg, "training": {"steps": 100, "seed": 1}})
    with pytest.raises(ConfigError, match="model.hidden"):
        _check_resumable(tmp_path, {**cfg, "model": {"hidden": 32}})


def test_diverging_run_is_one_line_error(tmp_path: Path) -> None:
    res = subprocess.run(
        _run_args(tmp_path / "d", "--set", "training.lr=1.0e+30", "--set", "training.grad_clip=0"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("vinaflow: error")]
    assert len(errors) == 1 and "training diverged" in errors[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "d" / "model.safetensors").exists(), "no NaN model is written"


# -- rollback ---------------------------------------------------------------------------------


def _data(n: int = 400):  # noqa: ANN202
    problem = GaussianLinear(dim_x=2, dim_y=1, noise=0.3, seed=2)
    g = torch.Generator().manual_seed(0)
    x = problem.sample_prior(n, g)
    return x, problem.simulate(x, g)


class _NaNAfter(Objective):
    """NLL that turns NaN for every call past ``good`` calls."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good, self.calls = good, 0

    def generator_loss(self, model, x_s, y_s):  # noqa: ANN001, ANN201
        self.calls += 1
        loss = model.nll(x_s, y_s).mean()
        return (loss * float("nan") if self.calls > self.good else loss), {}


def test_rollback_restores_weights_and_lr_reductions_compound(capsys) -> None:  # noqa: ANN001
    x, y = _data()
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    cfg = TrainingConfig(steps=50, batch_size=40, progress=False, val_every=10, max_retries=3)
    trainer = Trainer(cfg)
    with pytest.raises(TrainingDivergedError, match="step 21"):
        trainer.fit(model, _NaNAfter(25), x, y, x[:40], y[:40])
    err = capsys.readouterr().err
    assert "non-finite loss at step 26: rolled back to step 20" in err
    assert "lr x0.5" in err and "lr x0.25" in err and "lr x0.125" in err
    # The snapshot is a copy: changing the live weights does not change it.
    snap = trainer._state(detached=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    trainer._load_state(snap)
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap["model"][k])


def test_resuming_an_early_stopped_run_does_not_train_on(tmp_path: Path) -> None:
    x, y = _data()
    ckpt = tmp_path / "c.pt"

    def fit(resume: bool):  # noqa: ANN202
        torch.manual_seed(0)
        model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8, seed=0)
        cfg = TrainingConfig(
            steps=3000, batch_size=40, progress=False, val_every=5, patience=1, lr=0.05
        )
        obj = CompositeObjective([(NLLObjective(), 1.0)])
        r = Trainer(cfg).fit(model, obj, x, y, x[:40], y[:40], checkpoint=ckpt, resume=resume)
        return model, r

    m1, r1 = fit(False)
    assert r1.stopped == "early_stopping" and r1.steps < 3000
    m2, r2 = fit(True)
    assert (r2.stopped, r2.steps) == (r1.stopped, r1.steps)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# -- crash-safe writes and safe loading -------------------------------------------------------


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_temporaries_of_a_killed_writer_are_removed_from_the_run_folder(tmp_path: Path) -> None:
    """A SIGKILL inside ``atomic_path`` leaves its temporary (no cleanup runs); the run
    folder's cleanup removes those of the outputs and of the figures, nothing else."""
    from vinaflow.experiments.pipeline import remove_temporaries

    (tmp_path / "plots").mkdir()
    keep = [tmp_path / "plots" / "loss_curves.png", tmp_path / "metrics.json"]
    for k in keep:
        k.write_text("x")
    code = (
        "import sys, time\n"
        "from vinaflow.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1], suffix=sys.argv[2]) as tmp:\n"
        "    open(tmp, 'w').write('half')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    for target, suffix in (
        (tmp_path / "plots" / "coverage.png", ".png"),
        (tmp_path / "checkpoint.pt", ""),
    ):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(target), suffix], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    left = sorted(p.name for p in tmp_path.rglob(".*"))
    assert len(left) == 2 and any(n.startswith(".coverage.png.") for n in left), left
    remove_temporaries(tmp_path)
    assert not list(tmp_path.rglob(".*"))
    assert all(k.read_text() == "x" for k in keep)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    x, y = _data()
    path = tmp_path / "evil.pt"
    # An arbitrary (non-tensor) object needs unpickling code: weights_only must refuse it.
    torch.save({"model": GaussianLinear()}, path)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    cfg = TrainingConfig(steps=2, progress=False)
    with pytest.raises(ModelFileError, match="unreadable or corrupted"):
        Trainer(cfg).fit(
            model,
            CompositeObjective([(NLLObjective(), 1.0)]),
            x,
            y,
            None,
            None,
            checkpoint=path,
            resume=True,
        )


def test_no_unsafe_deserialisation_in_the_sources() -> None:
    offences = []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offences.append(f"{path.name}: torch.load without weights_only=True")
        # np.load defaults to allow_pickle=False (numpy >= 1.16.3): only an explicit True is unsafe.
        if re.search(r"allow_pickle\s*=\s*True", text):
            offences.append(f"{path.name}: allow_pickle=True")
        if re.search(r"^\s*(import pickle|from pickle|import dill|import cloudpickle)", text, re.M):
            offences.append(f"{path.name}: imports pickle")
    assert not offences, offences


# -- banks ------------------------------------------------------------------------------------


def test_sigkilled_simulate_resumes_to_the_same_bank(tmp_path: Path) -> None:
    args = ["simulate", "gaussian-linear", "-n", "60000", "--chunk-size", "2000",
            "--set", "noise=0.2", "--no-progress"]  # fmt: skip
    ref, out = tmp_path / "ref.npz", tmp_path / "bank.npz"
    res = subprocess.run(_cmd(*args, "--out", str(ref)), capture_output=True, env=_env())
    assert res.returncode == 0, res.stderr
    proc = subprocess.Popen(
        _cmd(*args, "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=_env(),
    )  # fmt: skip
    parts = tmp_path / "bank.npz.parts"
    _kill_when(proc, lambda: len(list(parts.glob("chunk_*.npz"))) >= 3)
    assert not out.exists()
    res = subprocess.run(_cmd(*args, "--out", str(out)), capture_output=True, text=True, env=_env())
    assert res.returncode == 0, res.stderr
    assert "resumed" in res.stdout
    assert not parts.exists()
    with np.load(ref) as a, np.load(out) as b:
        assert a.files == b.files
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k


# -- numerical edge cases through the whole pipeline ------------------------------------------


def _edge_bank(path: Path, case: str) -> None:
    rng = np.random.default_rng(0)
    n = 400
    u = rng.normal(size=(n, 2))
    x, y = u, u @ np.array([[1.0], [0.5]]) + 0.1 * rng.normal(size=(n, 1))
    if case == "constant-columns":
        x = np.concatenate([u, np.full((n, 1), 3.0)], 1)
        y = np.concatenate([y, np.full((n, 1), -7.0)], 1)
    elif case == "tiny-x-huge-y":
        x, y = 1e-6 * u, 1e6 * y
    elif case == "huge-x-tiny-y":
        x, y = 1e6 * u + 1e6, 1e-6 * y
    elif case == "dim-1":
        x = u[:, :1]
        y = x**3 + 0.1 * rng.normal(size=(n, 1))
    np.savez(path, x=x, y=y)


@pytest.mark.parametrize(
    ("case", "kind", "objective", "batch"),
    [
        ("constant-columns", "cinn", "nll", 32),
        ("constant-columns", "inn", "nll", 32),
        ("tiny-x-huge-y", "cinn", "nll", 32),
        ("huge-x-tiny-y", "inn", "fdiv", 32),
        ("dim-1", "cinn", "nll", 1),
        ("dim-1", "inn", "fdiv", 1),
    ],
)
def test_edge_cases_train_finite(
    tmp_path: Path, case: str, kind: str, objective: str, batch: int
) -> None:  # noqa: E501
    from vinaflow.config import resolve_config
    from vinaflow.experiments.pipeline import run

    bank = tmp_path / "bank.npz"
    _edge_bank(bank, case)
    cfg = resolve_config(
        {
            "problem": {"bank": str(bank)},
            "model": {"kind": kind, "blocks": 2, "hidden": 16},
            "objective": {"name": objective},
            "training": {"steps": 30, "max_seconds": None, "batch_size": batch, "val_every": 10},
            "evaluation": {"num_observations": 3, "num_samples": 100, "num_calibration": 0,
                           "c2st": False, "plots": False, "certificate": False},
        }
    )  # fmt: skip
    result = run(cfg, progress=False)
    assert all(math.isfinite(v) for v in result.train.history["loss"])
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    y = load_bank(bank).y[:2]
    samples = result.posterior.sample(y, 50)
    assert torch.isfinite(samples).all()
    x = load_bank(bank).x
    # Samples live in the parameters' units, whatever their scale.
    # (A constant column is standardised with std 1, so its samples spread by ~1.)
    span = x.max(0).values - x.min(0).values
    span = torch.where(span > 0, span, x.mean(0).abs().clamp_min(1.0))
    assert ((samples - x.mean(0)).abs() / span).max() < 100
