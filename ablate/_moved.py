"""Old module paths of the modules that moved into folders, kept importable.

``import ablate.hack`` or ``from ablate.train import train`` (paths before the modules
moved into ``ablate/hacks``, ``ablate/training``, ``ablate/metrics`` and
``ablate/experiment``) import the module at its new path under the old name as well, so
plugins and scripts written against the old layout keep working. Lazy: nothing is imported
until the old name is, so ``import ablate`` still loads no torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "ablate.hack": "ablate.hacks.hack",
    "ablate.recipe": "ablate.hacks.recipe",
    "ablate.params": "ablate.hacks.params",
    "ablate.registry": "ablate.hacks.registry",
    "ablate.interactions": "ablate.hacks.interactions",
    "ablate.train": "ablate.training.loop",
    "ablate.steps": "ablate.training.steps",
    "ablate.models": "ablate.training.models",
    "ablate.resolve": "ablate.training.resolve",
    "ablate.checkpoint": "ablate.training.checkpoint",
    "ablate.doctor": "ablate.training.doctor",
    "ablate.evaluate": "ablate.metrics.evaluate",
    "ablate.design": "ablate.experiment.design",
    "ablate.execution": "ablate.experiment.execution",
    "ablate.pipeline": "ablate.experiment.pipeline",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and loads it as the very module object of its new name."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])  # one module object, two names
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its new name; the import system set __spec__ to the
        # alias's, so give the module back its own (reload and pickling look there).
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
