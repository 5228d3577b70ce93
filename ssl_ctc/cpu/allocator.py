"""The C allocator under CPU inference: freed memory kept for the next batch (glibc).

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a block above
its mmap threshold (32 MiB at most) with fresh pages from the kernel and gives them back
when it is freed, so every forward pays page faults again for its large activations
(the CNN front end's first layers: 150 MB on a batch of 4 x 6 s). ``keep_freed_memory``
makes glibc serve every block from its heap and keep what is freed (``mallopt``), as
ONNX Runtime's and OpenVINO's memory arenas do: the process keeps its peak memory, the
numbers are the same. With another C library nothing changes. ``release_freed_memory``
gives it back before a peak-memory measurement.

Usage::

    allocator = keep_freed_memory()  # once per process; the records say which
    release_freed_memory()           # before measuring the resident size's peak
"""

import ctypes
import functools

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Freed memory kept at the top of the heap before glibc gives it back to the kernel.
KEPT_BYTES = 1 << 30


def _glibc():
    """The process's C library if it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)  # the C library the process runs on
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
    except (AttributeError, OSError, TypeError):  # not glibc; no C library by name (Windows)
        return None
    return libc


@functools.cache
def keep_freed_memory():
    """Make glibc serve large blocks from its heap and keep freed memory; once per process.

    Returns
    -------
    str
        The allocator in effect, for the records.

    Example
    -------
    >>> keep_freed_memory().startswith(("glibc", "the C library's own"))
    True
    """
    libc = _glibc()
    if libc is None:
        return "the C library's own (not glibc): unchanged"
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    glibc = f"glibc {libc.gnu_get_libc_version().decode()}"
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEPT_BYTES)):
        return f"{glibc}: unchanged (mallopt refused)"
    return f"{glibc}: large blocks from the heap, freed memory kept (up to {KEPT_BYTES >> 20} MiB)"


def release_freed_memory():
    """Give the free memory glibc keeps back to the kernel (``malloc_trim``), so that the
    resident size measures what follows (``PeakMemory``); nothing with another C library.

    Example
    -------
    >>> release_freed_memory()
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
