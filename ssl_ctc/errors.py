"""Errors the recipe raises for bad configuration (the strategy scripts print them as one line).

Usage::

    from ssl_ctc.errors import ConfigurationError
"""


class ConfigurationError(ValueError):
    """Raised for a YAML key or command-line override with an impossible value."""


class MissingFileError(ConfigurationError, FileNotFoundError):
    """Raised when a file that a YAML key or override names does not exist (e.g. ``lm_path``)."""
