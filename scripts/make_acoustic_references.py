"""Regenerate the independent reference values for ``tests/test_physics.py``.

The Pekeris waveguide of ``vinaflow.physics`` is checked against two codes that share
nothing with it:

* ``pykrak`` 3.0.1 (F. H. Akins' Python translation of M. Porter's KRAKEN normal-mode code:
  finite differences with Richardson extrapolation) for the lossless problem: trapped-mode
  horizontal wavenumbers and the trapped-mode pressure at the array;
* ``easypyram`` 2.1.1 (a Python RAM, M. D. Collins' split-step Padé parabolic equation) for
  the lossy problem: transmission loss at the default geometry, which includes the leaky
  part of the field (the bottom is a thick attenuating layer over RAM's absorbing sponge).

pykrak needs ``numpy < 2.4``, so this runs in its own environment, not the project's::

    python -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install "numpy<2.4" pykrak==3.0.1 easypyram==2.1.1
    /tmp/refvenv/bin/python scripts/make_acoustic_references.py [all|pykrak|ram]

It writes ``tests/data/pekeris_pykrak.json`` and ``tests/data/pekeris_ram.json``. It does
not import vinaflow. Conventions: pykrak uses ``exp(+i omega t)``, so its pressure is
conjugated here to the ``exp(-i omega t)`` of vinaflow (JKPS eq. 5.14, no ``4 pi``); RAM
reports transmission loss in dB re 1 m.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

__all__ = ["pykrak_case", "ram_case", "main"]

OUT = Path(__file__).resolve().parents[1] / "tests" / "data"

C_W, RHO_W, RHO_B = 1500.0, 1.0, 1.76
SOURCE_DEPTH, RANGE = 54.0, 3000.0
RECEIVERS = [94.125, 116.625, 139.125, 161.625, 184.125]
FREQS = [49.0, 79.0, 112.0, 148.0, 201.0, 283.0, 388.0]
# corners and centre of the prior box (water depth m, sediment speed m/s)
CASES = [(200.5, 1532.0), (218.5, 1562.0), (236.5, 1592.0)]


def pykrak_case(depth: float, c_b: float, freq: float) -> dict:
    """Lossless trapped modes and pressure from pykrak."""
    # pykrak is optional: needed only to regenerate the reference data.
    from pykrak.field import get_pressure
    from pykrak.pykrak_env import Env

    env = Env(
        [np.array([0.0, depth])],
        [np.array([C_W, C_W])],
        [np.zeros(2)],
        [np.array([RHO_W, RHO_W])],
        [np.zeros(2)],
        [np.zeros(2)],
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,  # pressure-release surface
        c_b,
        0.0,
        RHO_B,
        0.0,
        0.0,  # lossless fluid half-space
        "dbplam",
        np.zeros(2),
    )
    # A fine first mesh (lambda / 60); pykrak refines it and extrapolates (Richardson).
    n_mesh = [int(depth / (C_W / freq / 60.0))]
    krs, z, phi, _ = env.get_modes(freq, n_mesh, rmax=RANGE, c_low=0.0, c_high=c_b)
    krs = np.real(np.asarray(krs))
    p = get_pressure(
        np.asarray(krs, dtype=np.complex128),
        z,
        phi,
        SOURCE_DEPTH,
        np.array(RECEIVERS),
        np.array([RANGE]),
        0.0,
        freq,
    )
    p = np.conj(np.asarray(p)[0, :, 0])  # exp(+i w t) -> exp(-i w t)
    return {
        "depth": depth,
        "c_b": c_b,
        "freq": freq,
        "kr": krs.tolist(),
        "pressure_re": p.real.tolist(),
        "pressure_im": p.imag.tolist(),
    }


def ram_case(depth: float, c_b: float, freq: float, attenuation: float) -> dict:
    """Transmission loss (dB re 1 m) at the receivers from easypyram."""
    from easypyram import PyRAM  # optional: needed only to regenerate the reference data

    lam = C_W / freq
    # Receivers are multiples of 0.375 m: choose dz <= lambda / 80 that puts them on the grid.
    # (Twice finer than RAM's usual lambda / 40 and lambda / 4: at deep interference nulls
    # the coarser grid is off by ~1 dB, the finer one converges towards the exact field.)
    dz = 0.375 / np.ceil(0.375 / (lam / 80.0))
    n_steps = int(6 * np.ceil(RANGE / (lam / 8.0) / 6))  # dr <= lambda / 8, lands on RANGE
    dr = RANGE / n_steps
    # The half-space is a 400 m sediment layer over RAM's 20-wavelength absorbing sponge:
    # at 0.2 dB/wavelength, energy that comes back from it is below -60 dB.
    thick = 400.0
    ram = PyRAM(
        freq,
        SOURCE_DEPTH,
        RECEIVERS[0],
        np.array([0.0, depth]),
        np.array([0.0]),
        np.array([[C_W], [C_W]]),
        np.array([0.0, thick]),
        np.array([0.0]),
        np.array([[c_b], [c_b]]),
        np.array([[RHO_B], [RHO_B]]),
        np.array([[attenuation], [attenuation]]),
        np.array([[0.0, depth]]),
        # a hair beyond RANGE so that floor(rmax / (dr ndr)) keeps the last output
        rmax=RANGE + 0.1 * dr,
        dr=dr,
        dz=dz,
        ndr=n_steps // 6,
        ndz=1,
        np=8,
        c0=C_W,
        ns=1,
        lyrw=20.0,
    )
    res = ram.run()
    i = int(np.argmin(np.abs(res.ranges - RANGE)))
    if abs(res.ranges[i] - RANGE) > 1e-6 * RANGE:
        raise RuntimeError(f"RAM output ranges {res.ranges} miss {RANGE} m")
    rows = [int(round(z / dz)) - 1 for z in RECEIVERS]  # depths vz = (1..nvz) dz
    if not np.allclose(res.depths[rows], RECEIVERS):
        raise RuntimeError(f"RAM depth grid {res.depths[rows]} misses {RECEIVERS}")
    tl = res.loss_grid[rows, i]
    print(f"  RAM D={depth} c_b={c_b} f={freq}: TL {np.round(tl, 2).tolist()}", flush=True)
    return {
        "depth": depth,
        "c_b": c_b,
        "freq": freq,
        "attenuation": attenuation,
        "dr": float(dr),
        "dz": float(dz),
        "tl": [float(v) for v in tl],
    }


def main(which: str = "all") -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "geometry": {
            "c_w": C_W,
            "rho_w": RHO_W,
            "rho_b": RHO_B,
            "source_depth": SOURCE_DEPTH,
            "range": RANGE,
            "receiver_depths": RECEIVERS,
        },
    }
    if which in ("all", "pykrak"):
        t = time.time()
        meta_k = dict(meta, code=f"pykrak {version('pykrak')}", attenuation=0.0)
        krak = [pykrak_case(d, c, f) for d, c in CASES for f in FREQS]
        text = json.dumps({"meta": meta_k, "cases": krak}, indent=1)
        (OUT / "pekeris_pykrak.json").write_text(text)
        print(f"pykrak: {len(krak)} cases in {time.time() - t:.1f} s")
    if which not in ("all", "ram"):
        return
    t = time.time()
    meta_r = dict(
        meta,
        code=f"easypyram {version('easypyram')}",
        attenuation=0.2,
        settings="np=8 Pade terms, dr=lambda/8, dz=lambda/80, c0=1500, "
        "400 m sediment layer + 20-wavelength sponge",
    )
    ram = [ram_case(d, c, f, 0.2) for d, c in CASES for f in FREQS]
    (OUT / "pekeris_ram.json").write_text(json.dumps({"meta": meta_r, "cases": ram}, indent=1))
    print(f"easypyram: {len(ram)} cases in {time.time() - t:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
