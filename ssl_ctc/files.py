"""Files that readers never see half-written.

Usage::

    write_atomically(Path("results/x/benchmark.json"), text)
"""

import json
import os
import tempfile
from pathlib import Path


def write_atomically(path, text):
    """Writes a file through a temporary file and os.replace: readers see the
    old or the new content, never a partial one."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as temporary:
        temporary.write(text)
        temporary.flush()
        os.fsync(temporary.fileno())
    os.replace(temporary.name, path)


def write_json(path, value):
    """Write ``value`` as indented JSON, atomically."""
    write_atomically(Path(path), json.dumps(value, indent=2, sort_keys=True) + "\n")
