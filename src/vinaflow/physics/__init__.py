"""Physical forward models: the Pekeris waveguide solved by normal modes (JKPS ch. 2 and 5)."""

from __future__ import annotations

from vinaflow.physics.pekeris import ETA, Modes, PekerisWaveguide, transmission_loss
from vinaflow.physics.wavenumber_integral import green_function, wavenumber_integral

__all__ = [
    "ETA",
    "Modes",
    "PekerisWaveguide",
    "green_function",
    "transmission_loss",
    "wavenumber_integral",
]
