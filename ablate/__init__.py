"""ablate: which GAN training hacks actually matter, by how much, and how sure.

Public API for writing a hack plugin (see ``ablate.hack`` for the hooks and their order)::

    from ablate import Bounds, DContext, GContext, Hack, Recipe, StepContext, register_hack
"""

from ablate.errors import ConfigError
from ablate.hack import DContext, GContext, Hack, StepContext, WrapInfo
from ablate.interactions import recipe_changes
from ablate.params import Bounds
from ablate.recipe import Activation, Init, Optimizer, Recipe
from ablate.registry import build_recipe, describe, get_hack, list_hacks, register_hack
from ablate.version import __version__

__all__ = ["Activation", "Bounds", "ConfigError", "DContext", "GContext", "Hack", "Init",
           "Optimizer", "Recipe", "StepContext", "build_recipe", "describe", "get_hack",
           "WrapInfo", "list_hacks", "recipe_changes", "register_hack", "__version__"]
