"""The study registry: the VINA paper's experiments (arXiv 2602.20480) as one command each.

The paper's studies are defined in :mod:`vinaflow.studies.kinematics` (the robot arm)
and :mod:`vinaflow.studies.ocean` (geoacoustic inversion), the unconditional-flow
studies in :mod:`vinaflow.studies.flows`; each registers its studies on import.
A :class:`Study` is a base config, grid axes, a seed range, a ``quick`` variant (for
CI and a first look; every quick study finishes in under 10 minutes on 2 cores) and
the report figures. ``vinaflow study NAME --out DIR`` runs it as a resumable sweep
(:mod:`vinaflow.studies.sweep`) and then ``vinaflow report DIR``. A study of
``kind: "flow"`` has ``vinaflow flow`` configs as its runs (an unconditional flow is a
conditional INN with no observation); the sweep, its results file and the report are
the same.

Adding studies from another module
----------------------------------
1. In your module, build ``Study`` objects and call :func:`register_study` at import
   time::

       from vinaflow.studies.base import Study, register_study
       from vinaflow.studies.grid import Axis

       register_study(Study(
           name="nf-support",
           description="Support mismatch: Sinkhorn vs KL for a uniform target",
           base={"problem": {...}, "model": {...}, "objective": {...}, ...},
           axes=[Axis.of("objective.blur", [0.01, 1.0])],
           seeds="40..60",
           quick={"seeds": "40..41", "overrides": {"training.steps": 300},
                  "axes": {"objective.blur": ["0.01"]}},
           figures=["my_package.my_module:plot_support"],
       ))

2. Add ``"nf-support": "my_package.my_module"`` to :data:`STUDY_MODULES` so that the
   module is imported lazily the first time the study is asked for (importing this
   module stays cheap and never loads e.g. the acoustics code).

Interface details:

* ``base``: a raw config mapping (sections as in a YAML file); each run merges its
  axis patches and ``training.seed`` and resolves it with the defaults.
* ``axes``: :class:`~vinaflow.studies.grid.Axis` objects; an axis value is a
  patch ``{dotted.key: value}`` or ``{section: {...}}`` (replaces the section).
* ``quick``: ``overrides`` (dotted key -> value, applied to ``base``), ``axes``
  (axis name -> the labels to keep) and ``seeds``.
* ``figures``: callables or ``"module:function"`` strings; each is called as
  ``fn(data, plots_dir)`` with a :class:`~vinaflow.studies.report.StudyData`
  and returns a list of ``(png_path, caption)``; the report embeds them in order.
* ``exclude(params)``: drop grid points (``params`` maps axis name -> label).
* ``demo_observations``: observations at which every run saves posterior samples
  (``DIR/samples/ID.npz``) for figures such as the arm plots.
* ``metrics``: the record metrics of the report table.
* ``kind``: ``"run"`` (``base`` is a ``vinaflow run`` config) or ``"flow"`` (a
  ``vinaflow flow`` config); flow runs of the first seed save ``demo_samples`` model
  and held-out samples for the figures.
* ``metrics_note``: the report's sentence on what the metrics mean.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vinaflow.errors import ConfigError
from vinaflow.studies.grid import Axis, Sweep, apply_patch, parse_seeds

__all__ = [
    "FLOW_METRICS",
    "FLOW_METRICS_NOTE",
    "POSTERIOR_METRICS_NOTE",
    "STUDIES",
    "STUDY_MODULES",
    "Study",
    "get_study",
    "list_studies",
    "register_study",
]

#: Registered studies by name (filled by :func:`register_study`).
STUDIES: dict[str, Study] = {}

#: Study name -> module that registers it when imported (lazy loading).
STUDY_MODULES: dict[str, str] = {
    "prior-regularization": "vinaflow.studies.kinematics",
    "divergences": "vinaflow.studies.kinematics",
    "latent-dim": "vinaflow.studies.kinematics",
    "sinkhorn-blur": "vinaflow.studies.kinematics",
    "ocean-acoustics": "vinaflow.studies.ocean",
    "support-mismatch": "vinaflow.studies.flows",
    "heavy-tails": "vinaflow.studies.flows",
    "precision-recall": "vinaflow.studies.flows",
    "precision-recall-rings": "vinaflow.studies.flows",
}

DEFAULT_METRICS = ("resim_error", "c2st", "w1", "train_seconds")

#: The report table's metrics of a flow sweep that is no registered study.
FLOW_METRICS = ("w1", "mmd", "precision", "recall", "train_seconds")

#: What flow metrics mean (the report's sentence under the run counts).
FLOW_METRICS_NOTE = (
    "Metrics are means ± standard deviations over seeds, against held-out target samples: "
    "W1 (exact optimal transport; `w1_slog` on the scale sign(x) log(1 + |x|)), MMD, k-NN "
    "precision and recall, the ratio of the model's to the data's 99% quantile "
    "(`q99_ratio`, 1 = tail reached), training wall time."
)

#: What the default metrics mean (the report's sentence under the run counts).
POSTERIOR_METRICS_NOTE = (
    "Metrics are means ± standard deviations over seeds: re-simulation error "
    "`mean ||f(x_hat) - y*||`, C2ST accuracy and W1 distance to the ground-truth "
    "posterior (0.5 and 0 are perfect), training wall time."
)


@dataclass
class Study:
    """A named grid of runs with its report figures (see the module docstring)."""

    name: str
    description: str
    base: Mapping[str, Any]
    axes: Sequence[Axis]
    seeds: str = "40..60"
    quick: Mapping[str, Any] = field(default_factory=dict)
    figures: Sequence[str | Callable[..., Any]] = ()
    exclude: Callable[[Mapping[str, str]], bool] | None = None
    demo_observations: Sequence[Sequence[float]] = ()
    demo_samples: int = 200
    metrics: Sequence[str] = DEFAULT_METRICS
    kind: str = "run"
    metrics_note: str = POSTERIOR_METRICS_NOTE

    def sweep(self, quick: bool = False, seeds: str | None = None) -> Sweep:
        """The study's sweep; ``quick`` applies the quick variant, ``seeds`` overrides."""
        base = copy.deepcopy(dict(self.base))
        axes = [Axis(a.name, list(a.values)) for a in self.axes]
        seed_text = self.seeds
        if quick:
            apply_patch(base, self.quick.get("overrides", {}))
            keep = self.quick.get("axes", {})
            for a in axes:
                if a.name in keep:
                    a.values = [(lab, p) for lab, p in a.values if lab in keep[a.name]]
            seed_text = self.quick.get("seeds", seed_text)
        return Sweep(
            base=base,
            axes=axes,
            seeds=parse_seeds(seeds if seeds is not None else seed_text),
            exclude=self.exclude,
            demo_observations=[list(map(float, o)) for o in self.demo_observations],
            demo_samples=self.demo_samples,
            kind=self.kind,
        )

    def figure_functions(self) -> list[Callable[..., Any]]:
        out = []
        for f in self.figures:
            if isinstance(f, str):
                module, _, name = f.partition(":")
                f = getattr(importlib.import_module(module), name)
            out.append(f)
        return out


def register_study(study: Study, replace: bool = False) -> Study:
    """Add ``study`` to :data:`STUDIES`; a second study of the same name is an error."""
    if study.name in STUDIES and not replace and STUDIES[study.name] is not study:
        raise ConfigError(f"a study named {study.name!r} is already registered")
    STUDIES[study.name] = study
    return study


def get_study(name: str) -> Study:
    """The study ``name``, importing its module from :data:`STUDY_MODULES` if needed."""
    if name not in STUDIES and name in STUDY_MODULES:
        importlib.import_module(STUDY_MODULES[name])
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; available: {', '.join(list_studies())}")
    return STUDIES[name]


def list_studies() -> list[str]:
    """Names of all studies (imports every module in :data:`STUDY_MODULES`)."""
    for module in sorted(set(STUDY_MODULES.values())):
        try:
            importlib.import_module(module)
        except ImportError:
            continue  # an optional module whose dependencies are missing
    return sorted(set(STUDIES) | set(STUDY_MODULES))
