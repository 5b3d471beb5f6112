"""The experiment layer: an experiment file, its design, how it executes, one run's pipeline.

:mod:`~ablate.experiment.spec` reads and checks an experiment file,
:mod:`~ablate.experiment.design` expands its design into variants,
:mod:`~ablate.experiment.execution` checks workers, threads and executors, and
:mod:`~ablate.experiment.pipeline` trains and scores one run. The names below are
re-exported so that ``from ablate.experiment import load_experiment`` keeps working.
"""

from ablate.experiment.spec import DesignSpec, Experiment, load_experiment, parse_experiment

__all__ = ["DesignSpec", "Experiment", "load_experiment", "parse_experiment"]
