"""What ``routing-env demo`` and the study scripts in ``experiments/`` share: fit every router family on a training
split and score it on a held-out split over a λ grid (:mod:`agents.studies.compare`)."""
