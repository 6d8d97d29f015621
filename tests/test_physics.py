"""Validation of the Pekeris normal-mode model (vinaflow.physics).

Independent references: pykrak (KRAKEN translation, lossless trapped modes) and easypyram
(RAM parabolic equation, lossy, full field), both through small files written by
``scripts/make_acoustic_references.py``; and a direct numerical wavenumber integration of
the depth-separated Green's function (``vinaflow.physics.wavenumber_integral``), which
shares no root finding with the modal solver.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vinaflow.errors import ConfigError, DataError
from vinaflow.physics import (
    ETA,
    PekerisWaveguide,
    green_function,
    transmission_loss,
    wavenumber_integral,
)

DATA = Path(__file__).parent / "data"
ZS = 54.0
RANGE = 3000.0
ZR = np.array([94.125, 116.625, 139.125, 161.625, 184.125])
FREQS = np.array([49.0, 79.0, 112.0, 148.0, 201.0, 283.0, 388.0])
CASES = [(200.5, 1532.0), (218.5, 1562.0), (236.5, 1592.0)]


@pytest.fixture(scope="module")
def wg() -> PekerisWaveguide:
    return PekerisWaveguide()


@pytest.fixture(scope="module")
def lossless() -> PekerisWaveguide:
    return PekerisWaveguide(attenuation=0.0, leaky_modes=False)


def _prior_batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(200.5, 236.5, n), rng.uniform(1532.0, 1592.0, n)


# ---------------------------------------------------------------------- roots


@pytest.mark.parametrize("freq", [49.0, 148.0, 388.0])
def test_dispersion_residuals_vanish_at_every_root(wg, freq):
    d, c = _prior_batch(400, seed=int(freq))
    md = wg.modes(d, c, freq)
    used = md.weight > 0
    res = np.abs(wg.dispersion(md.kr, d[:, None], c[:, None], freq, gamma=md.gamma))
    assert res[used].max() < 1e-10
    # gamma is a square root of kr^2 - kb^2 on the physical (outgoing) sheet
    _, kb = wg.wavenumbers(c[:, None], freq)
    g2 = md.gamma**2 - (md.kr**2 - kb**2)
    assert (np.abs(g2) / np.abs(kb) ** 2)[used].max() < 1e-12
    assert (md.kr.imag[used] > 0).all()  # decaying in range
    # mode m has (m - 1/2) pi < Re kz D < m pi when trapped, ~(m - 1/2) pi when leaky
    x = (md.kz * d[:, None]).real / math.pi
    m = np.arange(1, x.shape[1] + 1)
    assert (((x > m - 1) & (x < m)) | ~used).all()
    # both families are present and leaky modes are Re kr < Re kb
    assert md.leaky[used].any() and (~md.leaky[used]).any()
    assert np.array_equal(md.leaky[used], (md.kr.real < kb.real)[used])


def test_lossless_roots_are_real_and_match_a_sign_change_scan(lossless):
    # Independent root count: sign changes of the real dispersion function on (kb, kw).
    for depth, c_b in CASES:
        for freq in (49.0, 201.0, 388.0):
            md = lossless.modes(depth, c_b, freq, leaky=False)
            kr = md.kr[0][md.weight[0] > 0]
            assert np.abs(kr.imag).max() == 0.0
            kw, kb = lossless.wavenumbers(c_b, freq)
            grid = np.linspace(kb.real, kw, 400_001)[1:-1]
            f = lossless.dispersion(grid, depth, c_b, freq).real
            brackets = np.flatnonzero(np.sign(f[1:]) != np.sign(f[:-1]))
            assert brackets.size == kr.size
            roots = np.sort(kr.real)
            assert np.all((roots >= grid[brackets]) & (roots <= grid[brackets + 1]))


@pytest.mark.parametrize("depth,c_b", CASES)
def test_trapped_mode_count_formula(lossless, depth, c_b):
    for freq in FREQS:
        kw = 2 * math.pi * freq / 1500.0
        formula = math.floor(kw * depth * math.sqrt(1 - (1500.0 / c_b) ** 2) / math.pi + 0.5)
        md = lossless.modes(depth, c_b, freq, leaky=False)
        assert md.count[0] == formula == md.n_trapped[0]
        assert lossless.trapped_mode_count(depth, c_b, freq)[0] == formula


# ---------------------------------------------------------------------- modes


def _quadrature(md, i: int, depth: float, rho_w: float, rho_b: float) -> np.ndarray:
    """int psi_m psi_n / rho dz over water and bottom (Gauss-Legendre, unconjugated)."""
    x, w = np.polynomial.legendre.leggauss(64)
    edges = np.linspace(0.0, depth, 41)
    zw = (0.5 * (edges[1:] + edges[:-1])[:, None] + 0.5 * np.diff(edges)[:, None] * x).ravel()
    ww = (0.5 * np.diff(edges)[:, None] * w).ravel()
    sub = _select(md, i)
    tail = 40.0 / sub.gamma.real.min()  # e^-80 of the amplitude squared at the seabed
    edges = depth + np.linspace(0.0, tail, 401)
    zb = (0.5 * (edges[1:] + edges[:-1])[:, None] + 0.5 * np.diff(edges)[:, None] * x).ravel()
    wb = (0.5 * np.diff(edges)[:, None] * w).ravel()
    pw, pb = sub.shape(zw)[0], sub.shape(zb)[0]
    return (pw * ww) @ pw.T / rho_w + (pb * wb) @ pb.T / rho_b


def _select(md, i):
    keep = (md.weight[i] > 0) & ~md.leaky[i]
    return replace(
        md,
        depth=md.depth[i : i + 1],
        kr=md.kr[i : i + 1, keep],
        kz=md.kz[i : i + 1, keep],
        gamma=md.gamma[i : i + 1, keep],
        norm=md.norm[i : i + 1, keep],
        weight=md.weight[i : i + 1, keep],
        leaky=md.leaky[i : i + 1, keep],
        n_trapped=md.n_trapped[i : i + 1],
    )


@pytest.mark.parametrize("freq", [49.0, 201.0])
def test_trapped_modes_are_orthonormal_by_quadrature(wg, freq):
    depth, c_b = 218.5, 1562.0
    md = wg.modes(depth, c_b, freq)
    gram = _quadrature(md, 0, depth, wg.rho_w, wg.rho_b)
    assert gram.shape[0] >= 3
    assert np.abs(gram - np.eye(gram.shape[0])).max() < 1e-8


def test_mode_shapes_are_continuous_at_the_seabed(wg):
    md = wg.modes(218.5, 1562.0, 148.0)
    above, below = md.shape([218.5 - 1e-9])[0, :, 0], md.shape([218.5 + 1e-9])[0, :, 0]
    assert np.allclose(above, below, rtol=1e-6, atol=1e-12)


# ---------------------------------------------------------------------- field


def test_source_receiver_reciprocity(wg):
    depth, c_b = 218.5, 1562.0
    forward = wg.pressure(depth, c_b, FREQS, ZS, RANGE, ZR)[0]  # (F, R)
    for r, z in enumerate(ZR):
        back = wg.pressure(depth, c_b, FREQS, z, RANGE, [ZS])[0, :, 0]
        np.testing.assert_allclose(back, forward[:, r], rtol=1e-11)


def test_wavenumber_integral_is_reciprocal_and_converged():
    # The reference itself: symmetric Green's function and independent of the contour.
    kw, kb = 2 * math.pi * 112 / 1500, 2 * math.pi * 112 / 1562 * (1 + 0.2j * ETA)
    k = np.linspace(0.05, 0.6, 7) - 0.001j
    g1 = green_function(k, np.array([140.0]), 60.0, 218.5, kw, kb, 1.0, 1.76)
    g2 = green_function(k, np.array([60.0]), 140.0, 218.5, kw, kb, 1.0, 1.76)
    np.testing.assert_allclose(g1, g2, rtol=1e-12)
    a = wavenumber_integral(218.5, 1562.0, 112.0, ZS, RANGE, ZR)
    b = wavenumber_integral(
        218.5, 1562.0, 112.0, ZS, RANGE, ZR, offset=1 / RANGE, nodes_per_offset=3
    )
    np.testing.assert_allclose(a, b, rtol=1e-9)


@pytest.mark.parametrize("depth,c_b", CASES)
def test_modal_sum_matches_wavenumber_integration(wg, depth, c_b):
    p = wg.pressure(depth, c_b, FREQS, ZS, RANGE, ZR)[0]
    ref = np.stack([wavenumber_integral(depth, c_b, f, ZS, RANGE, ZR) for f in FREQS])
    rms = np.sqrt(np.mean(np.abs(ref) ** 2, axis=1, keepdims=True))
    # trapped + leaky modes leave only the branch-line remainder and the truncation
    assert np.abs(p - ref).max() / rms.min() < 5e-3
    ok = transmission_loss(ref) < transmission_loss(ref).min(axis=1, keepdims=True) + 15
    assert np.abs(transmission_loss(p) - transmission_loss(ref))[ok].max() < 0.1


def test_leaky_modes_change_the_field_by_several_db(wg):
    d, c = 218.5, 1562.0
    full = wg.pressure(d, c, FREQS, ZS, RANGE, ZR)[0]
    trapped = wg.pressure(d, c, FREQS, ZS, RANGE, ZR, leaky=False)[0]
    ref = np.stack([wavenumber_integral(d, c, f, ZS, RANGE, ZR) for f in FREQS])
    dtl = np.abs(transmission_loss(trapped) - transmission_loss(full))
    assert dtl.max() > 5.0  # several dB somewhere on the array at 3 km
    assert np.median(dtl) > 0.5
    # and they are what brings the modal sum onto the exact field
    err_full = np.abs(full - ref).max()
    err_trapped = np.abs(trapped - ref).max()
    assert err_full < 0.05 * err_trapped


def test_field_is_continuous_across_mode_cut_off(wg):
    # Depth at which mode 9 leaves the lossless trapped set at 112 Hz (JKPS eq. 5.23).
    freq, c_b = 112.0, 1562.0
    kw = 2 * math.pi * freq / 1500.0
    d_cut = 8.5 * math.pi / (kw * math.sqrt(1 - (1500.0 / c_b) ** 2))
    d = np.array([d_cut - 1e-7, d_cut + 1e-7])
    md = wg.modes(d, c_b, freq)
    assert md.n_trapped[0] == 8 and md.n_trapped[1] == 9
    p = wg.pressure(d, c_b, [freq], ZS, RANGE, ZR)[:, 0]
    assert np.abs(p[1] - p[0]).max() < 1e-6 * np.abs(p).max()


def test_batches_blocks_and_threads_do_not_change_the_result():
    # 600 waveguides: two threads of 300, blocks of 128 that differ between the two runs
    d, c = _prior_batch(600, seed=3)
    one = PekerisWaveguide(workers=1).pressure(d, c, FREQS, ZS, RANGE, ZR)
    two = PekerisWaveguide(workers=2).pressure(d, c, FREQS, ZS, RANGE, ZR)
    np.testing.assert_allclose(two, one, rtol=1e-12, atol=1e-20)
    for i in (0, 137, 599):
        single = PekerisWaveguide().pressure(d[i], c[i], FREQS, ZS, RANGE, ZR)[0]
        np.testing.assert_allclose(single, one[i], rtol=1e-12, atol=1e-20)


def test_pressure_over_ranges_and_free_field_normalisation(wg):
    ranges = np.array([2000.0, 3000.0, 4000.0])
    p = wg.pressure(218.5, 1562.0, [112.0], ZS, ranges, ZR)
    assert p.shape == (1, 1, 5, 3)
    np.testing.assert_allclose(p[..., 1], wg.pressure(218.5, 1562.0, [112.0], ZS, 3000.0, ZR))
    tl = transmission_loss(p)
    assert np.all((tl > 40) & (tl < 100))  # dB re 1 m at a few km in shallow water


# ---------------------------------------------------------------------- independent codes


def _load(name: str) -> dict:
    path = DATA / name
    if not path.exists():
        pytest.fail(f"missing {path}; run scripts/make_acoustic_references.py")
    return json.loads(path.read_text())


def test_lossless_wavenumbers_and_pressure_match_pykrak(lossless):
    ref = _load("pekeris_pykrak.json")
    assert ref["meta"]["attenuation"] == 0.0
    worst_k, worst_p = 0.0, 0.0
    for case in ref["cases"]:
        d, c, f = case["depth"], case["c_b"], case["freq"]
        md = lossless.modes(d, c, f, leaky=False)
        kr = np.sort(md.kr[0][md.weight[0] > 0].real)[::-1]
        kref = np.asarray(case["kr"])
        assert kr.size == kref.size
        worst_k = max(worst_k, float(np.abs(kr - kref).max() / kref.max()))
        p = lossless.pressure(d, c, [f], ZS, RANGE, ZR, leaky=False)[0, 0]
        pref = np.asarray(case["pressure_re"]) + 1j * np.asarray(case["pressure_im"])
        worst_p = max(worst_p, float(np.abs(p - pref).max() / np.sqrt(np.mean(np.abs(pref) ** 2))))
    assert worst_k < 1e-8  # KRAKEN's Richardson-extrapolated eigenvalues
    assert worst_p < 2e-3  # pykrak interpolates its mode shapes linearly in depth


def test_transmission_loss_matches_ram_parabolic_equation(wg):
    # 3 environments x 7 tones x 5 receivers at the default geometry (3 km).
    ref = _load("pekeris_ram.json")
    assert ref["meta"]["attenuation"] == wg.attenuation
    dtl, level, amp_err = [], [], []
    for case in ref["cases"]:
        p = wg.pressure(case["depth"], case["c_b"], [case["freq"]], ZS, RANGE, ZR)[0, 0]
        tl, tl_ram = transmission_loss(p), np.asarray(case["tl"])
        dtl.append(np.abs(tl - tl_ram))
        level.append(tl_ram - tl_ram.min())  # dB below the loudest receiver of the tone
        a, a_ram = 10 ** (-tl / 20), 10 ** (-tl_ram / 20)
        amp_err.append(np.abs(a - a_ram) / np.sqrt(np.mean(a_ram**2)))
    dtl, level, amp_err = map(np.concatenate, (dtl, level, amp_err))
    # 0.5 dB wherever the field is not in a deep interference null (> 20 dB down), where
    # a tiny absolute error is many dB; there, the amplitude error is still < 6% (0.5 dB)
    # of the array's RMS amplitude.
    loud = level < 20.0
    assert (~loud).sum() <= 3
    assert dtl[loud].max() < 0.5
    assert np.median(dtl) < 0.05
    assert amp_err.max() < 0.06


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"c_b": 1490.0}, "c_b must exceed"),
        ({"depth": -10.0}, "water depth must be > 0"),
        ({"receiver_depths": [100.0, 250.0]}, "below the seabed"),
        ({"freqs": [0.0, 50.0]}, "frequencies must be"),
        ({"ranges": -1.0}, "ranges must be"),
        ({"source_depth": 230.0}, "source depth"),
    ],
)
def test_bad_physical_inputs_raise_clear_errors(wg, kwargs, match):
    args = dict(
        depth=218.5, c_b=1562.0, freqs=[112.0], source_depth=ZS, ranges=RANGE, receiver_depths=ZR
    )
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        wg.pressure(**args)


def test_bad_configuration_and_non_finite_inputs(wg):
    with pytest.raises(ConfigError, match="leaky modes need attenuation"):
        PekerisWaveguide(attenuation=0.0)
    with pytest.raises(ConfigError, match="attenuation"):
        PekerisWaveguide(attenuation=-1.0)
    with pytest.raises(ConfigError, match="rho_b"):
        PekerisWaveguide(rho_b=0.0)
    with pytest.raises(DataError, match="non-finite"):
        wg.pressure([218.5, np.nan], 1562.0, [112.0], ZS, RANGE, ZR)
    with pytest.raises(ConfigError, match="frequency"):
        wg.modes(218.5, 1562.0, -5.0)
