"""Data-parallel training with real ``torch.distributed`` (gloo on the CPU) and devices.

Two processes that split each global minibatch must take the same steps as one process
with that minibatch: after 20 steps the parameters agree to 1e-5 (max abs difference),
with the likelihood and with a variational objective whose critic is all-reduced too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vinaflow.errors import ConfigError
from vinaflow.models import ConditionalINN, Posterior
from vinaflow.objectives.losses import CompositeObjective, FDivergenceObjective, NLLObjective
from vinaflow.problems import GaussianLinear
from vinaflow.training import Trainer, TrainingConfig
from vinaflow.training import distributed as vd

TOL = 1e-5
needs_two_cores = pytest.mark.skipif(vd.usable_cpus() < 2, reason="needs 2 CPU cores")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _job(
    objective: str,
    steps: int,
    device: str = "cpu",
    checkpoint_every: int = 1000,
    actnorm: bool = False,
    lr: float | None = None,
):
    problem = GaussianLinear(dim_x=2, dim_y=1, noise=0.3, seed=2)
    g = torch.Generator().manual_seed(0)
    x = problem.sample_prior(600, g)
    y = problem.simulate(x, g)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=2, hidden=16, seed=0, actnorm=actnorm)
    model.fit_normalization(x, y)
    terms = [(NLLObjective(), 1.0)]
    if objective == "fdiv":
        terms.append((FDivergenceObjective(model, "js", critic_hidden=16), 0.5))
    cfg = TrainingConfig(
        steps=steps,
        batch_size=64,
        progress=False,
        val_every=5,
        checkpoint_every=checkpoint_every,
        device=device,
        critic_steps=2,
        seed=3,
        lr=lr,
        # constant: a 10-step run then stands for the first half of a 20-step one
        lr_schedule="constant",
    )
    xs, ys = model.x_norm(x), model.y_norm(y)
    return model, CompositeObjective(terms), Trainer(cfg), xs, ys


def _train(
    objective: str,
    steps: int,
    out: str,
    checkpoint: str | None = None,
    resume: bool = False,
    checkpoint_every: int = 1000,
    actnorm: bool = False,
    lr: float | None = None,
) -> None:
    """Train (in every process of the group, or alone); rank 0 saves the state."""
    model, obj, trainer, x, y = _job(
        objective, steps, checkpoint_every=checkpoint_every, actnorm=actnorm, lr=lr
    )
    result = trainer.fit(model, obj, x, y, x[:100], y[:100], checkpoint=checkpoint, resume=resume)
    if vd.is_main_process():
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        critic = {k: v.detach().clone() for k, v in obj.state_dict().items()}
        torch.save(
            {
                "model": state,
                "objective": critic,
                "steps": result.steps,
                "world": result.world_size,
                "history": result.history,
            },
            out,
        )


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    diffs = [float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()]
    return max(diffs, default=0.0)


@needs_two_cores
@pytest.mark.parametrize("objective", ["nll", "fdiv"])
def test_two_processes_match_one(tmp_path: Path, objective: str) -> None:
    _train(objective, 20, str(tmp_path / "one.pt"))
    vd.launch(_train, 2, "cpu", objective, 20, str(tmp_path / "two.pt"))
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert (one["world"], two["world"]) == (1, 2)
    assert one["steps"] == two["steps"] == 20
    diff = _max_diff(one["model"], two["model"])
    assert diff < TOL, diff
    # the critic's parameters (and the model's, which the objective also holds) agree
    assert _max_diff(one["objective"], two["objective"]) < TOL
    # histories are global (averaged over ranks)
    assert abs(one["history"]["loss"][-1] - two["history"]["loss"][-1]) < 1e-4


@needs_two_cores
def test_actnorm_initialises_on_the_global_minibatch(tmp_path: Path) -> None:
    # ActNorm's data-dependent initialisation makes its gradients vanish analytically,
    # so Adam's first steps amplify rounding differences to +-lr there; a tiny lr keeps
    # the comparison about the initialisation itself.
    _train("nll", 1, str(tmp_path / "one.pt"), actnorm=True, lr=1e-9)
    vd.launch(_train, 2, "cpu", "nll", 1, str(tmp_path / "two.pt"), None, False, 1000, True, 1e-9)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert float(one["model"]["flow.blocks.0.log_scale"].abs().max()) > 0.01  # initialised
    assert _max_diff(one["model"], two["model"]) < 1e-6


@needs_two_cores
def test_checkpoint_by_rank_zero_and_resume_with_fewer_processes(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    vd.launch(_train, 2, "cpu", "fdiv", 10, str(tmp_path / "a.pt"), str(ckpt))
    # only the checkpoint itself: no per-rank files, no temporaries left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "checkpoint.pt"]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["step"] == 10
    assert all(v.device.type == "cpu" for v in state["model"].values())
    # resume 2 -> 1 process: continues from step 10 and ends where 20 steps in one go do
    _train("fdiv", 20, str(tmp_path / "resumed.pt"), str(ckpt), resume=True)
    _train("fdiv", 20, str(tmp_path / "straight.pt"))
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    assert resumed["history"]["step"][:1] == [1] and resumed["steps"] == 20
    assert _max_diff(resumed["model"], straight["model"]) < TOL


def test_device_spec_is_checked() -> None:
    assert TrainingConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match="training.device must be one of"):
        TrainingConfig(device="gpu")
    assert vd.resolve_device("cpu") == torch.device("cpu")
    assert vd.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.device_count() > 3, reason="this machine has cuda:3")
def test_unavailable_device_names_the_setting_and_what_exists() -> None:
    with pytest.raises(
        ConfigError, match=r"training.device: cuda:3 is not available.*available: cpu"
    ):
        vd.resolve_device("cuda:3")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="training.device"):
            vd.resolve_device("cuda")
    if not vd._mps_available():
        with pytest.raises(ConfigError, match="training.device: mps is not available"):
            vd.resolve_device("mps")


def test_nproc_is_checked_against_the_machine() -> None:
    with pytest.raises(ConfigError, match="--nproc 999: this process may use"):
        vd.check_nproc(999, "cpu")
    with pytest.raises(ConfigError, match="--nproc must be an integer"):
        vd.check_nproc(0, "cpu")
    vd.check_nproc(1, "cpu")


def test_posterior_samples_on_cpu_whatever_the_device() -> None:
    model, obj, trainer, x, y = _job("nll", 5)
    trainer.fit(model, obj, x, y)
    post = Posterior(model)
    assert post.device == torch.device("cpu")
    s = post.sample([0.2], 50, seed=1)
    assert s.device.type == "cpu" and s.shape == (1, 50, 2)
    assert post.to("cpu") is post


@needs_cuda
def test_train_on_cuda_save_load_on_cpu_same_samples(tmp_path: Path) -> None:
    model, obj, trainer, x, y = _job("fdiv", 10, device="cuda")
    result = trainer.fit(model, obj, x, y, checkpoint=tmp_path / "checkpoint.pt")
    assert result.device.startswith("cuda")
    post = Posterior(model)
    assert post.device.type == "cuda"
    on_gpu = post.sample([0.2], 200, seed=4)
    assert on_gpu.device.type == "cpu"
    post.save(tmp_path / "model")
    loaded = Posterior.load(tmp_path / "model")
    assert loaded.device.type == "cpu"
    assert float((loaded.sample([0.2], 200, seed=4) - on_gpu).abs().max()) < 1e-5
    # the checkpoint resumes on the CPU
    model2, obj2, trainer2, _, _ = _job("fdiv", 12, device="cpu")
    r2 = trainer2.fit(model2, obj2, x, y, checkpoint=tmp_path / "checkpoint.pt", resume=True)
    assert r2.steps == 12 and r2.device == "cpu"


# -- the command line: vinaflow run --nproc N, torchrun, a killed run ------------------
_CLI_SETTINGS = [
    "--no-progress",
    *("--set", "training.max_seconds=null"),
    *("--set", "training.lr_schedule=constant"),
    *("--set", "training.checkpoint_every=10"),
    *("--set", "evaluation.certificate=false"),
    *("--set", "evaluation.plots=false"),
    *("--set", "evaluation.num_observations=2"),
    *("--set", "problem.num_simulations=4000"),
]
_EXAMPLE = str(Path(__file__).parents[1] / "examples" / "nll_cinn.yaml")


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _cli(*argv: str) -> int:
    from vinaflow.cli import main

    return main(["run", _EXAMPLE, *_CLI_SETTINGS, *argv])


@needs_two_cores
def test_cli_killed_two_process_run_resumes_in_one(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vinaflow", "run", _EXAMPLE, *_CLI_SETTINGS]
    cmd += ["--nproc", "2", "--out", str(out), "--set", "training.steps=1000000"]
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").is_file():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-training
    proc.wait()
    assert not (out / "metrics.json").exists()
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step % 10 == 0 and step > 0
    # resumed by one process; ends exactly where one uninterrupted process ends
    total = f"training.steps={step + 20}"
    assert _cli("--out", str(out), "--resume", "--set", total) == 0
    assert _cli("--out", str(tmp_path / "straight"), "--set", total) == 0
    assert _max_diff(_weights(out), _weights(tmp_path / "straight")) < TOL
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == step + 20 and metrics["processes"] == 1
    assert not [p for p in out.iterdir() if ".tmp" in p.name or p.name.startswith(".")]


@needs_two_cores
def test_cli_nproc_two_matches_one_and_rank_zero_writes_once(tmp_path: Path) -> None:
    import json

    assert _cli("--nproc", "2", "--out", str(tmp_path / "two"), "--set", "training.steps=30") == 0
    assert _cli("--out", str(tmp_path / "one"), "--set", "training.steps=30") == 0
    assert _max_diff(_weights(tmp_path / "two"), _weights(tmp_path / "one")) < TOL
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["processes"] == 2
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
@needs_two_cores
def test_torchrun_launch_matches_one_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    steps = ("--set", "training.steps=30")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["-m", "vinaflow.cli", "run", _EXAMPLE, *_CLI_SETTINGS, *steps]
    subprocess.run([*cmd, "--out", str(tmp_path / "tr")], check=True, capture_output=True)
    assert _cli("--out", str(tmp_path / "one"), *steps) == 0
    assert _max_diff(_weights(tmp_path / "tr"), _weights(tmp_path / "one")) < TOL


def test_cli_nproc_refused_with_exit_status_2(tmp_path: Path, capsys) -> None:
    too_many = str(vd.usable_cpus() + 1)
    assert _cli("--nproc", too_many, "--out", str(tmp_path / "a")) == 2
    assert f"--nproc {too_many}" in capsys.readouterr().err
    assert _cli("--nproc", "0", "--out", str(tmp_path / "b")) == 2
    assert "--nproc must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    if not torch.cuda.is_available():
        assert _cli("--out", str(tmp_path / "c"), "--set", "training.device=cuda") == 2
        assert "training.device" in capsys.readouterr().err


@needs_two_cores
@pytest.mark.xdist_group("ray")
def test_cli_ray_train_backend_matches_one_process(tmp_path: Path, capsys) -> None:
    """``--backend ray``: Ray Train's TorchTrainer forms the process group; the same
    code path trains, so 2 Ray workers reach the parameters of 1 process."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.train.torch")
    import json

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        steps = ("--set", "training.steps=30")
        ray_run = ("--backend", "ray", "--nproc", "2")
        assert _cli(*ray_run, "--out", str(tmp_path / "ray"), *steps) == 0
        assert _cli("--out", str(tmp_path / "one"), *steps) == 0
        assert _max_diff(_weights(tmp_path / "ray"), _weights(tmp_path / "one")) < TOL
        assert json.loads((tmp_path / "ray" / "metrics.json").read_text())["processes"] == 2
        capsys.readouterr()
        assert _cli("--backend", "ray", "--nproc", "3", "--out", str(tmp_path / "x")) == 2
        assert "the Ray cluster has 2 CPU" in capsys.readouterr().err
        # A user error raised on the workers is one line and status 2.
        one_row = ("--set", "training.batch_size=1")
        assert _cli(*ray_run, "--out", str(tmp_path / "y"), *one_row) == 2
        err = capsys.readouterr().err
        assert "training.batch_size (1)" in err and "Traceback" not in err
    finally:
        ray.shutdown()
    assert _cli("--address", "127.0.0.1:1", "--out", str(tmp_path / "z")) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
