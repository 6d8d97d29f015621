"""Property-based fuzzing: malformed configs, observations, banks and model files.

Every input either works or raises a :class:`VinaflowError` subclass (the CLI's
one-line user error); any other exception, or a hang, is a bug. The default suite
runs a few hundred examples per target; ``-m slow`` runs the >= 10,000-input campaign.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import signal
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vinaflow.config import (
    EVALUATION_KEYS,
    MODEL_KEYS,
    OBJECTIVE_KEYS,
    SECTIONS,
    apply_overrides,
    load_config,
    resolve_config,
)
from vinaflow.errors import VinaflowError
from vinaflow.models import ConditionalINN, Posterior
from vinaflow.models.serialization import load_model, save_model
from vinaflow.problems import load_bank, make_problem

#: Examples per target: quick by default (the whole file in ~20 s on 2 cores), and
#: derandomized so that the default suite is reproducible.
QUICK = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
    derandomize=True,
)
#: The slow campaign: 6 targets x 2,000 = 12,000 generated inputs, fresh each time.
CAMPAIGN = settings(QUICK, max_examples=2000, derandomize=False)


@contextlib.contextmanager
def no_hang(seconds: float = 20.0) -> Iterator[None]:
    """Fail (instead of blocking the suite) if one example runs longer than ``seconds``."""

    def _alarm(signum: int, frame: Any) -> None:  # noqa: ARG001
        raise TimeoutError(f"input took more than {seconds} s: treated as a hang")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def user_error_or_ok(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a VinaflowError is fine, anything else propagates (a bug)."""
    with no_hang():
        try:
            return fn()
        except VinaflowError as err:
            assert str(err), "user errors must say what is wrong"
            return err


# -- strategies -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400), 0, -1, 1, 2**31, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["nan", "inf", "1e5", "kl", "backward", "cinn", "coupling", ""]),
)
junk = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=10,
)
SECTION_KEYS = {
    "problem": ["name", "num_simulations", "num_validation", "bank", "simulator", "prior",
                "dim_x", "dim_y", "noise", "matrix", "prior_cov", "seed"],
    "model": list(MODEL_KEYS),
    "objective": list(OBJECTIVE_KEYS),
    "training": ["steps", "max_seconds", "batch_size", "lr", "seed", "grad_clip",
                 "lr_schedule", "checkpoint_every", "val_every", "patience", "threads"],
    "evaluation": list(EVALUATION_KEYS),
}  # fmt: skip


@st.composite
def configs(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(junk)  # not even a mapping
    out: dict[Any, Any] = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "extra"]), max_size=5, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            out[section] = draw(junk)
            continue
        known = SECTION_KEYS.get(section, ["x"])
        keys = draw(st.lists(st.sampled_from(known) | st.text(max_size=5), max_size=4))
        out[section] = {k: draw(junk) for k in keys}
    return out


def _problem_specs() -> st.SearchStrategy[Any]:
    gl_params = st.dictionaries(
        st.sampled_from(["dim_x", "dim_y", "noise", "matrix", "prior_mean", "prior_cov", "seed"]),
        junk,
        max_size=3,
    )
    prior = st.one_of(
        junk,
        st.fixed_dictionaries(
            {},
            optional={
                "normal": st.dictionaries(st.sampled_from(["loc", "scale"]), junk, max_size=2),
                "uniform": st.dictionaries(st.sampled_from(["low", "high"]), junk, max_size=2),
            },
        ),
    )
    return st.one_of(
        gl_params.map(lambda p: {"name": "gaussian-linear", **p}),
        prior.map(lambda p: {"simulator": "math:fsum", "prior": p}),
        st.dictionaries(st.sampled_from(["name", "bank", "simulator", "prior"]), junk, max_size=3),
    )


def _small_gl(spec: Any) -> bool:
    """Keep generated problems small enough to build (huge sizes are checked elsewhere)."""
    if not isinstance(spec, dict):
        return True
    for k in ("dim_x", "dim_y"):
        v = spec.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > 64:
            return False
    return True


dtypes = st.sampled_from(
    [np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8, np.bool_, np.complex64]
)
arrays = hnp.arrays(
    dtype=dtypes,
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    elements=None,
)


@st.composite
def observations(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(junk)
    if kind == 1:  # object arrays and ragged lists
        return np.array([draw(junk), "a", None], dtype=object)
    if kind == 2:
        return draw(arrays)
    shape = draw(st.sampled_from([(2,), (1, 2), (3, 2), (0, 2), (2, 1), (2, 0), (4,), ()]))
    values = draw(
        hnp.arrays(
            np.float64,
            shape,
            elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
        )
    )
    if kind == 3:
        return values
    if kind == 4:
        return torch.as_tensor(values)
    return values.tolist()


@pytest.fixture(scope="module")
def posterior() -> Posterior:
    torch.manual_seed(0)
    return Posterior(ConditionalINN(dim_x=3, dim_y=2, blocks=1, hidden=8))


# -- banks ------------------------------------------------------------------------------------

bank_arrays = st.one_of(
    hnp.arrays(
        st.sampled_from([np.float64, np.float32, np.int32, np.bool_, np.complex128]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=14),
        elements=None,
    ),
    st.builds(lambda n: np.array(["a"] * n), st.integers(0, 12)),
    st.builds(lambda n, d: np.full((n, d), np.nan), st.integers(10, 14), st.integers(1, 3)),
    st.builds(lambda n, d: np.ones((n, d)), st.integers(8, 14), st.integers(1, 3)),
)
meta_values = st.one_of(
    st.none(),
    junk.map(lambda j: json.dumps(j, default=str)),
    st.text(max_size=20),
    st.sampled_from(
        [
            '{"name": "gaussian-linear", "dim_x": 2, "dim_y": 1}',
            '{"name": "gaussian-linear", "dim_x": "two"}',
            '{"name": "ocean-acoustics", "snr_db": "loud"}',
            '{"name": "kinematics"}',
            '{"simulator": "os:system", "prior": {}}',
            '{"bank": "self.npz"}',
            "[1, 2]",
            "null",
        ]
    ),
)


@st.composite
def bank_bytes(draw: st.DrawFn) -> bytes:
    content: dict[str, np.ndarray] = {}
    for name in draw(st.lists(st.sampled_from(["x", "y", "z"]), max_size=3, unique=True)):
        content[name] = draw(bank_arrays)
    meta = draw(meta_values)
    if meta is not None:
        content["problem"] = np.array(meta)
    buf = io.BytesIO()
    np.savez(buf, **content)
    data = buf.getvalue()
    how = draw(st.integers(0, 4))
    if how == 0 and data:  # truncated
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == 1 and data:  # a flipped byte
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    if how == 2:
        return draw(st.binary(max_size=200))
    return data


def _load_bank_problem(path: Path) -> Any:
    bank = load_bank(path)
    assert bank.x.dtype == torch.float32 and torch.isfinite(bank.x).all()
    assert bank.x.ndim == 2 and bank.x.shape[0] == bank.y.shape[0] >= 10
    return make_problem({"bank": str(path)})


# -- model files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:  # noqa: ANN001
    d = tmp_path_factory.mktemp("model")
    save_model(ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8), d)
    return d


@st.composite
def model_corruption(draw: st.DrawFn) -> tuple[str, bytes | None, Any]:
    target = draw(st.sampled_from(["weights", "meta"]))
    how = draw(st.integers(0, 3))
    return target, draw(st.binary(max_size=64)) if how == 0 else None, (how, draw(junk))


def _corrupt_and_load(src: Path, work: Path, case: tuple[str, bytes | None, Any]) -> Any:
    target, blob, (how, value) = case
    for name in ("model.safetensors", "model.json"):
        (work / name).write_bytes((src / name).read_bytes())
    path = work / ("model.safetensors" if target == "weights" else "model.json")
    data = path.read_bytes()
    if blob is not None:
        path.write_bytes(blob)
    elif how == 1:
        path.write_bytes(data[: len(data) // 2])
    elif how == 2 and target == "meta":
        meta = json.loads(data)
        key = ["format_version", "model", "tensors"][hash(json.dumps(value, default=str)) % 3]
        meta[key] = value
        path.write_text(json.dumps(meta, default=str))
    elif how == 2:
        i = len(data) // 3
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x55]) + data[i + 1 :])
    else:  # model config entries replaced by junk
        if target == "meta":
            meta = json.loads(data)
            if isinstance(value, dict):
                meta["model"] = {**meta["model"], **value}
            else:
                meta["model"]["hidden"] = value
            path.write_text(json.dumps(meta, default=str))
    return load_model(work)


# -- the properties (run by the quick and the slow suite) -------------------------------------


def check_config(cfg: Any) -> None:
    result = user_error_or_ok(lambda: resolve_config(cfg))
    if isinstance(result, dict):
        assert set(result) == set(SECTIONS)


def check_yaml_and_overrides(text: str, overrides: list[str], path: Path) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    user_error_or_ok(lambda: load_config(path, overrides))
    user_error_or_ok(lambda: apply_overrides({}, overrides))


def check_problem(spec: Any) -> None:
    problem = user_error_or_ok(lambda: make_problem(spec))
    if not isinstance(problem, VinaflowError):
        g = torch.Generator().manual_seed(0)
        x = problem.sample_prior(4, g)
        user_error_or_ok(lambda: problem.simulate_checked(x, g))


def check_observation(posterior: Posterior, y: Any, n: Any) -> None:
    out = user_error_or_ok(lambda: posterior.sample(y, n))
    if isinstance(out, torch.Tensor):
        assert out.shape[1:] == (int(n), 3) and torch.isfinite(out).all()


def check_bank(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    user_error_or_ok(lambda: _load_bank_problem(path))


# Junk problem/model specs can be large; these strategies keep them buildable quickly.
problem_specs = _problem_specs().filter(_small_gl)
yaml_texts = st.one_of(
    st.text(max_size=80),
    junk.map(lambda j: json.dumps(j, default=str)),
    configs().map(lambda c: json.dumps(c, default=str)),
)
override_lists = st.lists(
    st.one_of(
        st.text(max_size=20),
        st.builds(
            lambda s, k, v: f"{s}.{k}={v}",
            st.sampled_from([*SECTIONS, "x", ""]),
            st.sampled_from([k for ks in SECTION_KEYS.values() for k in ks] + ["a.b", ""]),
            st.one_of(st.text(max_size=8), scalars.map(str)),
        ),
    ),
    max_size=3,
)
sample_counts = st.one_of(
    st.integers(-3, 5), st.sampled_from([0, 1.5, "3", None, math.nan]), st.just(2)
)


@QUICK
@given(configs())
@example({"objective": {"weight": 10**400}})  # found by the campaign: float() overflow
@example(True)
def test_configs(cfg: Any) -> None:
    check_config(cfg)


@QUICK
@given(yaml_texts, override_lists)
def test_yaml_files_and_overrides(tmp_path: Path, text: str, overrides: list[str]) -> None:
    check_yaml_and_overrides(text, overrides, tmp_path / "c.yaml")


@QUICK
@given(problem_specs)
def test_problem_specs(spec: Any) -> None:
    check_problem(spec)


@QUICK
@given(observations(), sample_counts)
def test_observations(posterior: Posterior, y: Any, n: Any) -> None:
    check_observation(posterior, y, n)


@QUICK
@given(bank_bytes())
def test_banks(tmp_path: Path, data: bytes) -> None:
    check_bank(data, tmp_path / "bank.npz")


@QUICK
@given(model_corruption())
def test_model_files(model_dir: Path, tmp_path: Path, case: Any) -> None:
    work = tmp_path / "m"
    work.mkdir(exist_ok=True)
    user_error_or_ok(lambda: _corrupt_and_load(model_dir, work, case))


def test_truncated_bank_prefixes_are_user_errors(tmp_path: Path) -> None:
    """Every prefix of a valid bank (a file cut by a crash or a copy) is a clean error."""
    buf = io.BytesIO()
    np.savez(buf, x=np.ones((12, 2)), y=np.zeros((12, 1)))
    data = buf.getvalue()
    path = tmp_path / "b.npz"
    for cut in range(0, len(data), max(1, len(data) // 150)):
        check_bank(data[:cut], path)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["x.npy", "y.npy"]
    # Found by the campaign: a damaged compression method makes zipfile raise
    # NotImplementedError (bytes 8-9 of the first local header).
    check_bank(data[:8] + b"\x63\x00" + data[10:], path)


# -- the slow campaign: >= 10,000 generated inputs --------------------------------------------


@pytest.mark.slow
@CAMPAIGN
@given(configs())
def test_campaign_configs(cfg: Any) -> None:
    check_config(cfg)


@pytest.mark.slow
@CAMPAIGN
@given(yaml_texts, override_lists)
def test_campaign_yaml_files_and_overrides(tmp_path: Path, text: str, overrides: list[str]) -> None:
    check_yaml_and_overrides(text, overrides, tmp_path / "c.yaml")


@pytest.mark.slow
@CAMPAIGN
@given(problem_specs)
def test_campaign_problem_specs(spec: Any) -> None:
    check_problem(spec)


@pytest.mark.slow
@CAMPAIGN
@given(observations(), sample_counts)
def test_campaign_observations(posterior: Posterior, y: Any, n: Any) -> None:
    check_observation(posterior, y, n)


@pytest.mark.slow
@CAMPAIGN
@given(bank_bytes())
def test_campaign_banks(tmp_path: Path, data: bytes) -> None:
    check_bank(data, tmp_path / "bank.npz")


@pytest.mark.slow
@CAMPAIGN
@given(model_corruption())
def test_campaign_model_files(model_dir: Path, tmp_path: Path, case: Any) -> None:
    work = tmp_path / "m"
    work.mkdir(exist_ok=True)
    user_error_or_ok(lambda: _corrupt_and_load(model_dir, work, case))
