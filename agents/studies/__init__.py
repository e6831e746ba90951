"""What ``routing-env demo`` and the study scripts in ``experiments/`` share: fit every router family on a training
split and score it on a held-out split over a λ grid.

- :mod:`agents.studies.compare`: the studies (:func:`~agents.studies.compare.compare_routers`,
  :func:`~agents.studies.compare.run_frontier_study`, their cascade twins), and every public name below;
- :mod:`agents.studies.config`: the settings (:class:`~agents.studies.config.CompareConfig`), the router families
  and the train/test split with features;
- :mod:`agents.studies.runs`: fitting and scoring one family;
- :mod:`agents.studies.summary`: the tables and report (:class:`~agents.studies.summary.Comparison`);
- :mod:`agents.studies.plot`: the cost–quality plot.
"""
