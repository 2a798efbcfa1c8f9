"""The package version, on the ground floor so that any layer can record it (an export's config.json)."""

__version__ = "0.1.0"  # the same as pyproject.toml's (tests/test_cli.py checks)
