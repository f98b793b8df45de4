"""The package version, in the bottom layer so that any module can name it (`advlab.__version__`
re-exports it). Keep it equal to `version` in pyproject.toml."""

__version__ = "0.1.0"
