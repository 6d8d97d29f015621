"""Benchmarks against peer tools on sbibm's reference posteriors (Lueckmann et al. 2021).

Modules:

- :mod:`benchmarks.peers.sbibm_reference` reads sbibm's reference posterior samples and
  observations straight from the sbibm wheel file (sbibm itself is not installed).
- :mod:`benchmarks.peers.tasks` implements ``two_moons``, ``gaussian_linear`` and
  ``gaussian_mixture`` from sbibm's published definitions as vinaflow problems.
- :mod:`benchmarks.peers.run` is the side-by-side benchmark
  (``python -m benchmarks.peers.run [--quick]``).
"""

from __future__ import annotations

__all__: list[str] = []
