"""Sharded banks: written by ``vinaflow simulate`` (locally or on Ray), validated on
opening, and streamed by training in windows (same batches after a resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vinaflow.cli import main
from vinaflow.config import resolve_config
from vinaflow.errors import DataError
from vinaflow.experiments.pipeline import run
from vinaflow.problems import load_bank
from vinaflow.problems.shards import ShardedBank, shard_path
from vinaflow.problems.simulate import simulate_bank
from vinaflow.training.streaming import ShardStream
from vinaflow.training.trainer import Trainer

GL = {"name": "gaussian-linear", "noise": 0.2}


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards") / "bank"
    simulate_bank(GL, 2500, folder, chunk_size=300, seed=4, progress=False)
    return folder


def test_shard_folder_holds_the_npz_rows_bit_for_bit(bank: Path, tmp_path: Path) -> None:
    simulate_bank(GL, 2500, tmp_path / "b.npz", chunk_size=300, seed=4, progress=False)
    ref = _npz(tmp_path / "b.npz")
    sharded = load_bank(bank)
    assert isinstance(sharded, ShardedBank)
    assert (len(sharded), sharded.dim_x, sharded.dim_y) == (2500, 4, 2)
    assert sharded.rows == [300] * 8 + [100] and sharded.has_clean
    for name in ("x", "y", "y_clean"):
        assert np.array_equal(sharded.read(name, 0, 2500), ref[name])
        # Ranges that straddle shard boundaries read the same rows.
        assert np.array_equal(sharded.read(name, 290, 1210), ref[name][290:1210])
    index = json.loads((bank / "bank.json").read_text())
    assert index["simulate"]["seed"] == 4 and index["problem"]["name"] == "gaussian-linear"
    assert not (bank / "manifest.json").exists()
    # Rerunning with the same arguments finds it complete; other arguments are refused.
    assert simulate_bank(GL, 2500, bank, chunk_size=300, seed=4, progress=False)["already_complete"]
    with pytest.raises(Exception, match="seed"):
        simulate_bank(GL, 2500, bank, chunk_size=300, seed=5, progress=False)


def _broken_copy(bank: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    copy.mkdir()
    for f in bank.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    return copy


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: shard_path(b, "y", 3).unlink(), "bank shard missing"),
        (
            lambda b: shard_path(b, "x", 2).write_bytes(shard_path(b, "x", 2).read_bytes()[:500]),
            "truncated",
        ),
        (
            lambda b: np.save(shard_path(b, "y", 5), np.zeros((300, 3), np.float32)),
            "disagree in shape",
        ),
        (lambda b: (b / "bank.json").unlink(), "no bank.json"),
        (
            lambda b: ((b / "bank.json").unlink(), (b / "manifest.json").write_text("{}")),
            "incomplete",
        ),
    ],
)
def test_damaged_banks_are_refused_with_the_file_named(
    bank: Path, tmp_path: Path, damage, match: str, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    broken = _broken_copy(bank, tmp_path)
    damage(broken)
    with pytest.raises(DataError, match=match):
        load_bank(broken)
    # The command line reports it as a user error (exit 2, one line), before training.
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"problem: {{bank: {broken}}}\ntraining: {{steps: 5, progress: false}}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert match.split()[0] in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_stream_visits_every_row_once_per_epoch_and_mixes_shards(bank: Path) -> None:
    sharded = ShardedBank(bank)
    stream = ShardStream(sharded, 100, 2500, batch_size=64, seed=1, window_rows=700)
    assert stream.per_epoch == 2400 // 64
    x_all = torch.from_numpy(sharded.read("x", 0, 2500))
    row_of = {tuple(r.tolist()): i for i, r in enumerate(x_all)}
    for epoch in range(2):
        seen = [
            row_of[tuple(r.tolist())] for _ in range(stream.per_epoch) for r in stream.next()[0]
        ]
        assert len(set(seen)) == len(seen) == stream.per_epoch * 64  # no row twice
        assert min(seen) >= 100  # the validation rows never train
        first = seen[:64]
        assert len({i // 300 for i in first}) >= 2  # a minibatch mixes shards
        if epoch == 0:
            order0 = seen
    assert seen != order0  # each epoch has its own order
    # The position is the whole state: a fresh stream set to it draws the same batches.
    again = ShardStream(sharded, 100, 2500, batch_size=64, seed=1, window_rows=700)
    again.position = stream.position = 53
    for _ in range(5):
        a, b = stream.next(), again.next()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # x and y stay paired through the shuffles.
    xb, yb = stream.next()
    y_all = torch.from_numpy(sharded.read("y", 0, 2500))
    assert torch.equal(yb, y_all[[row_of[tuple(r.tolist())] for r in xb]])


def _config(bank: Path, **training: object) -> dict:
    return resolve_config(
        {
            "problem": {"bank": str(bank)},
            "model": {"blocks": 2, "hidden": 32},
            "training": {
                "steps": 120,
                "batch_size": 64,
                "shuffle_window": 500,
                "checkpoint_every": 60,
                "val_every": 60,
                "progress": False,
                **training,
            },
            "evaluation": {"num_observations": 2, "plots": False, "certificate": False},
        }
    )


def test_streaming_training_resumes_to_the_same_parameters(
    bank: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(bank, noise_augmentation=True)
    whole = run(cfg, tmp_path / "whole", progress=False)
    original = Trainer._update
    calls = {"n": 0}

    def crashing(self: Trainer) -> dict | None:
        calls["n"] += 1
        if calls["n"] > 100:  # killed after step 100; the last checkpoint is at 60
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_update", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "part", progress=False)
    monkeypatch.setattr(Trainer, "_update", original)
    resumed = run(cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed.train.steps == whole.train.steps == 120
    after = resumed.model.state_dict()
    for name, a in whole.model.state_dict().items():
        assert torch.equal(a, after[name]), name


def test_streaming_learns_and_supports_noise_augmentation(bank: Path, tmp_path: Path) -> None:
    untrained = run(_config(bank, steps=1), tmp_path / "u", progress=False)
    trained = run(_config(bank, steps=400, noise_augmentation=True), tmp_path / "t", progress=False)
    assert trained.metrics["c2st"] < untrained.metrics["c2st"] - 0.05
    hist = trained.train.history["loss"]
    assert np.mean(hist[-50:]) < np.mean(hist[:50])


@pytest.mark.xdist_group("ray")
def test_ray_backend_writes_the_local_bank(bank: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray_bank"
    info = simulate_bank(
        GL, 2500, out, chunk_size=300, seed=4, progress=False, backend="ray", workers=2
    )
    assert info["backend"] == "ray"
    local, remote = ShardedBank(bank), ShardedBank(out)
    for name in ("x", "y", "y_clean"):
        assert np.array_equal(local.read(name, 0, 2500), remote.read(name, 0, 2500))


def test_ray_address_that_does_not_answer_is_a_user_error(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    res = subprocess.run(
        [sys.executable, "-m", "vinaflow", "simulate", "gaussian-linear", "-n", "100",
         "--out", str(tmp_path / "b"), "--backend", "ray", "--address", "127.0.0.1:1",
         "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and "--address" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "b").exists()


def test_killed_simulation_resumes_to_the_same_bank(tmp_path: Path) -> None:
    # A simulator slow enough to kill mid-run (its module on PYTHONPATH, as a user's is).
    (tmp_path / "slow_sim.py").write_text(
        textwrap.dedent(
            """
            import time

            import torch

            def simulate(x):
                time.sleep(0.3)
                return x[:, :2] + 0.2 * torch.randn(x.shape[0], 2)
            """
        )
    )
    out = tmp_path / "slow"
    prior = "prior={uniform: {low: [0, 0, 0, 0], high: [1, 1, 1, 1]}}"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = (
        "import sys; from vinaflow.problems.simulate import simulate_bank; "
        "from vinaflow.cli.simulate import problem_spec_from_args; "
        "spec = problem_spec_from_args('slow_sim:simulate', [sys.argv[1]]); "
        "simulate_bank(spec, 3000, sys.argv[2], chunk_size=200, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, prior, str(out)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("x-*.npy"))) < 3:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "bank.json").exists() and (out / "manifest.json").exists()
    with pytest.raises(DataError, match="incomplete"):
        load_bank(out)
    done = len(list(out.glob("x-*.npy")))
    subprocess.run([sys.executable, "-c", code, prior, str(out)], env=env, check=True, timeout=120)
    full = tmp_path / "full"
    subprocess.run([sys.executable, "-c", code, prior, str(full)], env=env, check=True, timeout=120)
    a, b = ShardedBank(out), ShardedBank(full)
    assert 3 <= done < 15
    for name in ("x", "y"):
        assert np.array_equal(a.read(name, 0, 3000), b.read(name, 0, 3000))
