"""``benchmarks.peers.run`` over several seeds: summary intervals and ``--resume``.

A tiny setting (two_moons, 300 simulations, 2 seeds, 2 observations, ``vinaflow-default``
capped at a few steps, C2ST on 200 samples) against a fake sbibm wheel: no network, no sbi.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# ``benchmarks`` is a top-level package of the repository, not of the installed distribution.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import run  # noqa: E402

from sbibm_wheel import write_wheel  # noqa: E402

__all__: list[str] = []


#: A stand-in for ``sbibm/metrics/c2st.py`` whose score tells which samples and seed it
#: got: 0.5 + seed / 100 + the mean of the second set's first coordinate / 1000.
FAKE_SBIBM_C2ST = """
import torch
def c2st(X, Y, seed=1, n_folds=5):
    return torch.tensor([0.5 + seed / 100 + float(Y[:, 0].mean()) / 1000])
"""


def _two_moons_wheel(tmp_path: Path, n_obs: int = 2) -> Path:
    """A zip laid out like sbibm's wheel with two_moons observations; the "reference"
    samples are rough (uniform on the prior box): the test checks bookkeeping, not scores."""
    rng = np.random.default_rng(0)
    observations = []
    for _ in range(n_obs):
        theta = rng.uniform(-1.0, 1.0, (1, 2))
        y = theta + rng.normal(0.0, 0.1, (1, 2))
        observations.append((y, theta, rng.uniform(-1.0, 1.0, (500, 2))))
    return write_wheel(
        tmp_path / "sbibm-0.0.0-py3-none-any.whl",
        "two_moons",
        observations,
        extra={"sbibm/metrics/c2st.py": FAKE_SBIBM_C2ST},
    )


def _tiny_argv(wheel: Path, out: Path) -> list[str]:
    """The tiny setting: two_moons, 300 simulations, seeds 0 1, 20 steps, 200 C2ST samples."""
    return [
        "--sbibm-wheel", str(wheel), "--tasks", "two_moons", "--budgets", "300",
        "--seeds", "0", "1", "--methods", "vinaflow-default", "--steps", "20",
        "--observations", "2", "--c2st-samples", "200", "--out", str(out),
    ]  # fmt: skip


def test_seeds_summary_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    wheel = _two_moons_wheel(tmp_path)
    out = tmp_path / "peers_seeds.json"
    calls: list[tuple[str, int]] = []
    real = run.run_vinaflow

    def counted(method: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((method, args[-1]))
        return real(method, *args, **kwargs)

    monkeypatch.setattr(run, "run_vinaflow", counted)
    argv = _tiny_argv(wheel, out)
    assert run.main(argv) == 0
    assert sorted(calls) == [("vinaflow-default", 0), ("vinaflow-default", 1)]
    first = json.loads(out.read_text())
    rows = first["rows"]
    assert [(r["seed"], r["method"]) for r in rows] == [
        (0, "vinaflow-default"),
        (1, "vinaflow-default"),
    ]
    for r in rows:
        assert "error" not in r, r
        assert len(r["c2st_per_observation"]) == 2 and r["train_seconds"] > 0
        assert r["train_steps"] <= 20
    (entry,) = first["summary"]
    key = (entry["task"], entry["budget"], entry["method"])
    assert key == ("two_moons", 300, "vinaflow-default")
    assert entry["seeds"] == [0, 1] and entry["c2st"]["n"] == 2
    c = entry["c2st"]
    assert c["low"] is not None and c["low"] <= c["mean"] <= c["high"]
    assert c["mean"] == pytest.approx(np.mean([r["c2st"] for r in rows]))
    assert "stopping" in first["notes"]

    # The same cells again with --resume: nothing is trained, the rows are kept as they were.
    calls.clear()
    assert run.main([*argv, "--resume"]) == 0
    assert calls == []
    again = json.loads(out.read_text())
    assert again["rows"] == rows and again["summary"] == first["summary"]

    # One more seed: only that cell runs.
    i = argv.index("--seeds")
    argv3 = [*argv[: i + 1], "0", "1", "2", *argv[i + 3 :], "--resume"]
    assert run.main(argv3) == 0
    assert calls == [("vinaflow-default", 2)]
    third = json.loads(out.read_text())
    assert third["rows"][:2] == rows and third["summary"][0]["c2st"]["n"] == 3

    # --resume refuses a file written with other scoring settings.
    with pytest.raises(SystemExit, match="c2st_max_samples"):
        run.main([*argv[:-4], "--c2st-samples", "300", "--out", str(out), "--resume"])


def test_defaults_dev_tasks_are_held_out_and_diffs_are_paired_by_seed() -> None:
    from benchmarks.peers.defaults_dev import DEV_TASKS, summarise
    from benchmarks.peers.sbibm_reference import TASKS

    assert DEV_TASKS and not set(DEV_TASKS) & set(TASKS)
    rows = [
        {"task": task, "seed": k, "variant": v, "c2st": c, "train_seconds": 1.0}
        for task, variants in {
            "slcp": {"a": [0.90, 0.80, 0.85], "b": [0.88, 0.79]},
            "other": {"b": [0.70, 0.60], "c": [0.65, 0.62]},
        }.items()
        for v, cs in variants.items()
        for k, c in enumerate(cs)
    ]
    out = {(s["task"], s["variant"]): s for s in summarise(rows, ["a", "b", "c"])}
    assert set(out) == {("slcp", "a"), ("slcp", "b"), ("other", "b"), ("other", "c")}
    slcp_b = out["slcp", "b"]
    assert slcp_b["seeds"] == [0, 1] and out["slcp", "a"]["c2st"]["n"] == 3
    assert slcp_b["baseline"] == "a" and slcp_b["minus_baseline"]["n"] == 2  # seeds both have
    assert slcp_b["minus_baseline"]["mean"] == pytest.approx(-0.015)
    assert out["slcp", "a"]["minus_baseline"]["mean"] == 0.0
    # a task without the first variant is paired against its own first one
    assert out["other", "c"]["baseline"] == "b"
    assert out["other", "c"]["minus_baseline"]["mean"] == pytest.approx(-0.015)


def test_dev_default_variant_is_fits_default_and_peers_are_compared_with_it() -> None:
    from benchmarks.peers.defaults_dev import DEFAULT_VARIANT, PEERS, VARIANTS, summarise

    from vinaflow.config import SPLINE_NLL_CINN_DEFAULTS

    pinned = VARIANTS[DEFAULT_VARIANT]
    for section in SPLINE_NLL_CINN_DEFAULTS.values():
        assert all(pinned[k] == v for k, v in section.items())
    assert pinned["arch"] == "spline" and "sbi-nsf" in PEERS
    rows = [
        {"task": "slcp", "seed": k, "variant": v, "c2st": c, "train_seconds": 1.0}
        for v, cs in {
            "constant": [0.9, 0.9],
            DEFAULT_VARIANT: [0.8, 0.85],
            "sbi-nsf": [0.82, 0.9],
        }.items()
        for k, c in enumerate(cs)
    ]
    out = {s["variant"]: s for s in summarise(rows, ["constant", DEFAULT_VARIANT, "sbi-nsf"])}
    # the default minus the peer, paired by seed: (0.8 - 0.82 + 0.85 - 0.9) / 2
    assert out["sbi-nsf"]["default_minus"]["mean"] == pytest.approx(-0.035)
    assert out["constant"]["default_minus"]["mean"] == pytest.approx(-0.075)
    assert "default_minus" not in out[DEFAULT_VARIANT]


def test_fresh_dev_instances_are_not_the_reported_ones() -> None:
    """``task@fresh`` scores against new observations with exact-posterior samples."""
    from benchmarks.peers.defaults_dev import references
    from benchmarks.peers.tasks import make_task

    refs = references("gaussian_linear@fresh", 3, Path("unused"))
    task = make_task("gaussian_linear")
    for r in refs:
        mean, var = task.posterior_moments(torch.as_tensor(r.observation))
        assert r.samples.shape == (10_000, 10)
        np.testing.assert_allclose(r.samples.mean(0), mean.numpy(), atol=0.02)
        np.testing.assert_allclose(r.samples.var(0), var, rtol=0.06)
    # FRESH_SEED fixes the instances: every call (and every variant) gets the same ones
    again = references("gaussian_linear@fresh", 3, Path("unused"))
    for a, b in zip(refs, again, strict=True):
        assert np.array_equal(a.observation, b.observation)


def test_sbibm_classifier_scores_the_same_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--sbibm-classifier`` hands every sample set, with its seed, to the wheel's own
    ``c2st`` too; the summary pairs the two classifiers by seed; ``--resume`` refuses to mix
    rows scored with and without it, and takes a file written before the option existed."""
    torch.set_num_threads(1)
    wheel = _two_moons_wheel(tmp_path)
    out = tmp_path / "peers_seeds.json"
    seen: list[np.ndarray] = []
    real_score = run._score

    def recording(samples, refs, max_samples, seed):  # type: ignore[no-untyped-def]
        seen.extend(samples)
        return real_score(samples, refs, max_samples, seed)

    monkeypatch.setattr(run, "_score", recording)
    argv = _tiny_argv(wheel, out)
    assert run.main([*argv, "--sbibm-classifier"]) == 0
    data = json.loads(out.read_text())
    assert data["settings"]["sbibm_classifier"] is True
    rows = data["rows"]
    for k, r in enumerate(rows):
        expected = [
            0.5 + (r["seed"] + i) / 100 + float(s[:200, 0].astype(np.float32).mean()) / 1000
            for i, s in enumerate(seen[2 * k : 2 * k + 2])
        ]
        np.testing.assert_allclose(r["c2st_sbibm_per_observation"], expected, rtol=1e-5)
        assert r["c2st_sbibm"] == pytest.approx(np.mean(expected), rel=1e-5)
    (entry,) = data["summary"]
    diffs = [r["c2st_sbibm"] - r["c2st"] for r in rows]
    assert entry["c2st_sbibm"]["mean"] == pytest.approx(np.mean([r["c2st_sbibm"] for r in rows]))
    assert entry["c2st_sbibm_minus_c2st"]["mean"] == pytest.approx(np.mean(diffs))
    assert entry["c2st_sbibm_minus_c2st"]["n"] == 2

    with pytest.raises(SystemExit, match="sbibm_classifier"):
        run.main([*argv, "--resume"])
    # a file from before the option: read as scored without sbibm's classifier
    del data["settings"]["sbibm_classifier"]
    out.write_text(json.dumps(data))
    assert run.main([*argv, "--resume"]) == 0
