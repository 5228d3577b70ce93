"""Errors the recipe raises for bad configuration.

Usage::

    from ssl_ctc.errors import ConfigurationError
"""


class ConfigurationError(ValueError):
    """Raised for a YAML key or command-line override with an impossible value."""
