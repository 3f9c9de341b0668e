"""mgrhooks' version, in a module of its own: modules that need it import it from here,
never from the package's ``__init__`` (pyproject.toml reads it from here too)."""

__version__ = "0.1.0"
