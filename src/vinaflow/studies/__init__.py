"""The paper's studies: named grids of runs, the sweeps that run them, and their reports.

* :mod:`~vinaflow.studies.base` - the :class:`~vinaflow.studies.base.Study` registry
  (``vinaflow study NAME``);
* :mod:`~vinaflow.studies.kinematics`, :mod:`~vinaflow.studies.ocean` - the paper's
  inverse-kinematics and ocean-acoustic studies with their figures;
  :mod:`~vinaflow.studies.kinematics_plots` draws arm posteriors;
* :mod:`~vinaflow.studies.flows` - the unconditional-flow studies;
* :mod:`~vinaflow.studies.sweep` - the resumable sweep driver (``vinaflow sweep``), over
  :mod:`~vinaflow.studies.grid` (axes, seeds, tasks), :mod:`~vinaflow.studies.runners`
  (one run, local process pool, Ray) and :mod:`~vinaflow.studies.results`
  (``results.jsonl``);
* :mod:`~vinaflow.studies.report` - ``vinaflow report DIR``: tables and figures.

Nothing is imported here, so that importing one of these modules loads only what it
needs.
"""
