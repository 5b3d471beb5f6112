"""Built-in hacks. Importing this package registers them, in DESIGN.md §1 order."""

from ablate.hacks import dcgan, ganhacks  # noqa: F401  (registration side effect)
