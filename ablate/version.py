"""ablate's version (the built-in hacks' version in hack records; equal to pyproject.toml's)."""

__version__ = "0.1.0"
