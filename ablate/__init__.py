"""ablate: which GAN training hacks actually matter, by how much, and how sure.

Public API for writing a hack plugin::

    from ablate import Hack, Recipe, register_hack
"""

from ablate.errors import ConfigError
from ablate.hack import Hack
from ablate.recipe import Activation, Init, Optimizer, Recipe
from ablate.registry import build_recipe, get_hack, list_hacks, register_hack

__version__ = "0.1.0"

__all__ = ["Activation", "ConfigError", "Hack", "Init", "Optimizer", "Recipe", "build_recipe",
           "get_hack", "list_hacks", "register_hack", "__version__"]
