"""Training one run: models, the loop and its hooked updates, resolution, checkpoints.

:mod:`~ablate.training.resolve` turns a ``TrainConfig`` into a plan (hacks looked up and
folded once), :mod:`~ablate.training.models` builds G and D from the Recipe,
:mod:`~ablate.training.loop` trains (its updates in :mod:`~ablate.training.steps`),
:mod:`~ablate.training.checkpoint` saves and resumes mid-run, and
:mod:`~ablate.training.doctor` measures which precision pays on this machine.
The loop gets hacks resolved: it never looks one up by name (an import-linter contract).
"""
