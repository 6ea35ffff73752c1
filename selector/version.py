"""The package version (read by pyproject.toml and written into every run manifest and cache key)."""
__version__ = "0.2.4"
