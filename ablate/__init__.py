"""ablate: which GAN training hacks actually matter, by how much, and how sure.

Public API for writing a hack plugin (see ``ablate.hacks.hack`` for the hooks and their order)::

    from ablate import Bounds, DContext, GContext, Hack, Recipe, StepContext, register_hack
"""

from ablate import _moved
from ablate.errors import ConfigError
from ablate.hacks.hack import DContext, GContext, Hack, StepContext, WrapInfo
from ablate.hacks.interactions import recipe_changes
from ablate.hacks.params import Bounds
from ablate.hacks.recipe import Activation, Init, Optimizer, Recipe
from ablate.hacks.registry import build_recipe, describe, get_hack, list_hacks, register_hack
from ablate.version import __version__

__all__ = ["Activation", "Bounds", "ConfigError", "DContext", "GContext", "Hack", "Init",
           "Optimizer", "Recipe", "StepContext", "build_recipe", "describe", "get_hack",
           "WrapInfo", "list_hacks", "recipe_changes", "register_hack", "__version__"]

_moved.install()  # old module paths (ablate.hack, ablate.train, ...) keep importing
