"""``vinaflow simulate``: banks for every problem, chunked, resumable, self-describing."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vinaflow.cli import main
from vinaflow.cli.simulate import problem_spec_from_args
from vinaflow.config import resolve_config
from vinaflow.errors import ConfigError, DataError
from vinaflow.experiments.pipeline import run
from vinaflow.problems import BankProblem, load_bank, make_problem
from vinaflow.problems.simulate import simulate_bank

GL = {"name": "gaussian-linear", "noise": 0.2}


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_bank_contents_and_reload(tmp_path: Path) -> None:
    out = tmp_path / "bank.npz"
    info = simulate_bank(GL, 2500, out, chunk_size=1000, seed=3, progress=False)
    assert (info["n"], info["dim_x"], info["dim_y"]) == (2500, 4, 2)
    a = _arrays(out)
    assert a["x"].shape == (2500, 4) and a["y"].shape == (2500, 2)
    problem = json.loads(str(a["problem"]))
    settings = json.loads(str(a["simulate"]))
    assert problem["name"] == "gaussian-linear" and problem["noise"] == 0.2
    assert "dim_x" in problem  # defaults are stored too
    assert (settings["seed"], settings["chunk_size"], settings["n"]) == (3, 1000, 2500)
    assert not (tmp_path / "bank.npz.parts").exists()
    # Training reads it back with the generating problem (simulator, reference posterior).
    bank_problem = make_problem({"bank": str(out)})
    assert isinstance(bank_problem, BankProblem) and bank_problem.has_reference_posterior
    assert len(load_bank(out)) == 2500


def test_bank_is_deterministic_and_independent_of_interruptions(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    simulate_bank(GL, 2500, a, chunk_size=1000, seed=0, progress=False)
    simulate_bank(GL, 2500, c, chunk_size=1000, seed=1, progress=False)
    # Fake an interruption after the second chunk: sidecar with chunks 0-1 and a stray temp.
    simulate_bank(GL, 2500, b, chunk_size=1000, seed=0, progress=False)
    parts = tmp_path / "b.npz.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "problem": json.loads(str(_arrays(b)["problem"])),
                **{k: v for k, v in json.loads(str(_arrays(b)["simulate"])).items()},
            }
        )
    )
    b.unlink()
    simulate_bank(GL, 1000, tmp_path / "one.npz", chunk_size=1000, seed=0, progress=False)
    (tmp_path / "one.npz").rename(parts / "chunk_000000.npz")
    (parts / ".chunk_000001.npz.abc.npz").write_bytes(b"half-written")
    info = simulate_bank(GL, 2500, b, chunk_size=1000, seed=0, progress=False)
    assert info["resumed_chunks"] == 1
    assert not parts.exists()
    ra, rb, rc = _arrays(a), _arrays(b), _arrays(c)
    assert np.array_equal(ra["x"], rb["x"]) and np.array_equal(ra["y"], rb["y"])
    assert not np.array_equal(ra["x"], rc["x"])


def test_mismatched_parameters_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "bank.npz"
    simulate_bank(GL, 300, out, chunk_size=100, progress=False)
    # Same command: nothing to do.
    assert simulate_bank(GL, 300, out, chunk_size=100, progress=False)["already_complete"]
    with pytest.raises(ConfigError, match=r"problem\.noise: existing 0.2 vs now 0.3"):
        simulate_bank({**GL, "noise": 0.3}, 300, out, chunk_size=100, progress=False)
    with pytest.raises(ConfigError, match="chunk_size"):
        simulate_bank(GL, 300, out, chunk_size=50, progress=False)
    info = simulate_bank(GL, 200, out, chunk_size=100, progress=False, overwrite=True)
    assert info["n"] == 200 and _arrays(out)["x"].shape == (200, 4)
    # A partial bank (sidecar only) is checked the same way.
    parts = tmp_path / "p.npz.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"n": 300, "seed": 0}))
    with pytest.raises(ConfigError, match="seed: existing 0 vs now 5"):
        simulate_bank(GL, 300, tmp_path / "p.npz", seed=5, progress=False)


@pytest.mark.parametrize(
    ("spec", "kwargs", "match"),
    [
        ({"name": "nope"}, {}, "unknown problem"),
        ({"name": "gaussian-linear", "bogus": 1}, {}, "unknown parameter"),
        (GL, {"n": 0}, "n must be between"),
        (GL, {"n": 2.5}, "n must be an integer"),
        (GL, {"chunk_size": -1}, "chunk_size"),
        (GL, {"seed": -1}, "seed"),
        (GL, {"out": "bank.txt"}, "must end in .npz"),
        ({"bank": "x.npz"}, {}, "bank already"),
        ("gaussian-linear", {}, "mapping"),
    ],
)
def test_bad_arguments(tmp_path: Path, spec, kwargs, match) -> None:  # noqa: ANN001
    args = {"n": 100, "out": tmp_path / "b.npz", **kwargs}
    with pytest.raises(ConfigError, match=match):
        simulate_bank(spec, args.pop("n"), args.pop("out"), progress=False, **args)


def test_existing_non_bank_file_is_not_clobbered(tmp_path: Path) -> None:
    out = tmp_path / "b.npz"
    out.write_bytes(b"precious")
    with pytest.raises(DataError, match="not a vinaflow bank"):
        simulate_bank(GL, 100, out, progress=False)
    assert out.read_bytes() == b"precious"


def test_cli(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "bank.npz"
    args = ["simulate", "gaussian-linear", "-n", "500", "--out", str(out), "--no-progress"]
    assert main([*args, "--set", "noise=0.5", "--set", "problem.dim_y=3"]) == 0
    assert "x (500, 4), y (500, 3)" in capsys.readouterr().out
    assert main([*args, "--set", "noise=0.5", "--set", "dim_y=3"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main([*args, "--set", "noise=0.4", "--set", "dim_y=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "problem.noise" in err
    assert main([*args, "--set", "noise"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_custom_simulator_bank_does_not_import_on_load(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    mod = tmp_path / "my_sim_mod.py"
    mod.write_text(
        textwrap.dedent(
            """
            import torch

            def simulate(x):
                return x.sum(-1, keepdim=True) + 0.1 * torch.randn(x.shape[0], 1)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = problem_spec_from_args(
        "my_sim_mod:simulate", ["prior={uniform: {low: [0, 0], high: [1, 1]}}"]
    )
    out = tmp_path / "bank.npz"
    simulate_bank(spec, 300, out, chunk_size=128, progress=False)
    assert json.loads(str(_arrays(out)["problem"]))["simulator"] == "my_sim_mod:simulate"
    sys.modules.pop("my_sim_mod", None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    bank = make_problem({"bank": str(out)})
    # The recorded simulator is named in the file, but a bank never imports code.
    assert bank.source is None and "my_sim_mod" not in sys.modules


def test_yaml_config_as_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("problem:\n  name: gaussian-linear\n  noise: 0.05\n  num_simulations: 10\n")
    spec = problem_spec_from_args(str(cfg), ["dim_x=2"])
    assert spec == {"name": "gaussian-linear", "noise": 0.05, "num_simulations": 10, "dim_x": 2}
    info = simulate_bank(spec, 50, tmp_path / "b.npz", progress=False)
    assert "num_simulations" not in info["problem"] and info["dim_x"] == 2


def test_ocean_acoustics_bank(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    out = tmp_path / "oa.npz"
    info = simulate_bank({"name": "ocean-acoustics"}, 40, out, chunk_size=16, progress=False)
    assert (info["dim_x"], info["dim_y"]) == (2, 70)
    problem = make_problem({"bank": str(out)})
    assert problem.source is not None and problem.source.name == "ocean-acoustics"


def test_bank_keeps_noise_free_observations_for_noise_augmentation(tmp_path: Path) -> None:
    out = tmp_path / "bank.npz"
    simulate_bank(GL, 3000, out, chunk_size=1000, seed=2, progress=False)
    a = _arrays(out)
    # y - y_clean is the problem's noise: N(0, 0.2^2) in every entry
    resid = (a["y"] - a["y_clean"]) / 0.2
    assert abs(resid.mean()) < 0.05 and abs(resid.std() - 1.0) < 0.05
    problem = make_problem(GL)
    A = problem.A.numpy()
    assert np.allclose(a["y_clean"], a["x"] @ A.T, atol=1e-5)
    bank_problem = make_problem({"bank": str(out)})
    assert np.allclose(bank_problem.observation_noise_std.numpy(), 0.2)

    cfg = resolve_config(
        {
            "problem": {"bank": str(out)},
            "model": {"kind": "cinn", "blocks": 2, "hidden": 16},
            "training": {"steps": 30, "noise_augmentation": True, "progress": False},
            "evaluation": {
                "num_observations": 2,
                "num_samples": 100,
                "num_calibration": 0,
                "plots": False,
                "certificate": False,
            },
        }
    )
    assert run(cfg, progress=False).train.steps == 30

    # A user bank without y_clean cannot be noise-augmented: say which array is missing.
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=a["x"], y=a["y"], problem=a["problem"])
    with pytest.raises(ConfigError, match="y_clean"):
        run({**cfg, "problem": {"bank": str(plain)}}, progress=False)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=a["x"], y=a["y"], y_clean=a["y_clean"][:, :1])
    with pytest.raises(DataError, match="y_clean"):
        load_bank(bad)


def test_noise_augmentation_needs_an_additive_noise_model(tmp_path: Path) -> None:
    cfg = resolve_config(
        {
            "problem": {"name": "kinematics", "num_simulations": 500},
            "model": {"kind": "cinn", "blocks": 1, "hidden": 8},
            "training": {"steps": 5, "noise_augmentation": True, "progress": False},
            "evaluation": {"num_observations": 1, "num_samples": 10, "plots": False},
        }
    )
    with pytest.raises(ConfigError, match="noise_augmentation.*not additive Gaussian"):
        run(cfg, progress=False)
