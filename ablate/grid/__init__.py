"""The grid: an experiment's runs, trained once each, resumably, on any executor.

Modules, each with one job (imports point down the list):

* :mod:`ablate.grid.keys` — run identity: which fields define a result, the run key,
  :class:`~ablate.grid.keys.RunSpec` and the expansion of an experiment into specs.
* :mod:`ablate.grid.store` — the SQLite index of runs (claims, commits, the plan) and
  the readers the report uses (``load_frame``, ``load_experiment_meta``).
* :mod:`ablate.grid.worker` — ``run_one``: claim, train and score, commit.
* :mod:`ablate.grid.executors` — where ``run_one`` runs: inline, a local process pool,
  Ray, SLURM.
* :mod:`ablate.grid.pinning` — the experiment's classifier pin: checked before runs
  train, written where it is missing and true of the finished runs.
* :mod:`ablate.grid.driver` — ``prepare`` and ``run_grid``: plan, sweep, schedule.
* :mod:`ablate.grid.status` — what ``ablate grid --dry-run`` and ``ablate status`` print.

Nothing is imported here, so ``import ablate.grid.store`` stays light for readers.
"""
