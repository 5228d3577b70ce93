"""Classes and functions by dotted name, both ways (records, YAML and inference folders name them).

Usage::

    brain_class = import_object("ssl_ctc.downsampling.DownsampledBrain")
"""

import importlib

# The recipe's installable package (pyproject.toml): what an inference folder needs.
PACKAGE_NAME = "ssl-faster-inference-recipe"


def importable_class_name(cls):
    """Dotted name of ``cls``, or of its nearest base that can be imported by name.

    A Brain subclassed inside a function (``<locals>``) or in a script run as
    ``__main__`` cannot be imported back; the strategy Brain it extends can.

    Example
    -------
    >>> from collections import OrderedDict
    >>> def local():
    ...     class Local(OrderedDict):
    ...         pass
    ...     return Local
    >>> importable_class_name(local())
    'collections.OrderedDict'
    """
    for candidate in cls.__mro__:
        if "<locals>" not in candidate.__qualname__ and candidate.__module__ != "__main__":
            return f"{candidate.__module__}.{candidate.__qualname__}"
    raise ValueError(f"no importable class in the bases of {cls!r}")


def import_object(dotted_name):
    """The object a dotted name points to, e.g. ``ssl_ctc.downsampling.DownsampledBrain``.

    Example
    -------
    >>> import_object("ssl_ctc.imports.import_object").__name__
    'import_object'
    """
    module_name, _, attribute = dotted_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)
