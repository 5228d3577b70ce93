"""Files that readers never see half-written, with the permissions the user's umask gives;
their paths as a user reads them.

Usage::

    write_atomically(Path("results/x/benchmark.json"), text)
    print(f"written: {display_path(folder)}")
"""

import json
import os
import tempfile
from pathlib import Path


def current_umask():
    """The process's file-creation mask (read by setting it and restoring it).

    Example
    -------
    >>> 0 <= current_umask() <= 0o777
    True
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path, text):
    """Write a file through a temporary file and ``os.replace``.

    Readers see the old or the new content, never a partial one; the file gets
    the mode a plain ``open(path, "w")`` would give (0666 less the umask), not the
    temporary file's 0600.

    Example
    -------
    >>> import stat
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "a.txt"
    ...     write_atomically(path, "text")
    ...     stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current_umask()
    True
    """
    path = Path(path)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as temporary:
        temporary.write(text)
        temporary.flush()
        os.fchmod(temporary.fileno(), 0o666 & ~current_umask())
        os.fsync(temporary.fileno())
    os.replace(temporary.name, path)


def write_json(path, value):
    """Write ``value`` as indented JSON, atomically."""
    write_atomically(Path(path), json.dumps(value, indent=2, sort_keys=True) + "\n")


def display_path(folder):
    """The folder relative to the working directory when below it, else absolute.

    Example
    -------
    >>> display_path("results/SD2/inference"), display_path("/")
    ('results/SD2/inference', '/')
    """
    relative = os.path.relpath(Path(folder).resolve())
    return str(Path(folder).resolve()) if relative.startswith("..") else relative
