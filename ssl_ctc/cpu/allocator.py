"""The C allocator under CPU inference: the program's choice, described for the records.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a block above
its mmap threshold (32 MiB at most) with fresh pages from the kernel and gives them back
when it is freed, so every forward pays page faults again for its large activations
(the CNN front end's first layers: 150 MB on a batch of 4 x 6 s). ``keep_freed_memory``
makes glibc serve every block from its heap and keep what is freed (``mallopt``), as
ONNX Runtime's and OpenVINO's memory arenas do: the process keeps its peak memory, the
numbers are the same. With another C library nothing changes.

It changes the whole process's ``malloc``, so the library never calls it by itself:
a program opts in (``use_allocator``: the strategy scripts with the YAML key
``cpu_allocator``, the speed script and ``transcribe.py`` with ``--cpu_allocator``).
The ecosystem's other way is a different allocator preloaded for the whole process
(``LD_PRELOAD=libjemalloc.so.2``, or tcmalloc, as PyTorch's and Intel's CPU performance
guides recommend); ``allocator_in_use`` names what runs, for the records.
``release_freed_memory`` gives the kept memory back before a peak-memory measurement.

Usage::

    use_allocator("keep_freed")  # once, at a program's start; "system" leaves malloc alone
    allocator_in_use()           # "glibc 2.36: large blocks from the heap, ..." (records)
    release_freed_memory()       # before measuring the resident size's peak
"""

import ctypes
import functools
from pathlib import Path

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Freed memory kept at the top of the heap before glibc gives it back to the kernel.
KEPT_BYTES = 1 << 30

# The settings of ``use_allocator`` (YAML ``cpu_allocator``, ``--cpu_allocator``).
CPU_ALLOCATORS = ("keep_freed", "system")

# Allocators that replace malloc when preloaded (LD_PRELOAD): library name -> allocator.
PRELOADED_ALLOCATORS = {"libjemalloc": "jemalloc", "libtcmalloc": "tcmalloc",
                        "libmimalloc": "mimalloc"}

_PROC_MAPS = Path("/proc/self/maps")


def _glibc():
    """The process's C library if it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)  # the C library the process runs on
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
    except (AttributeError, OSError, TypeError):  # not glibc; no C library by name (Windows)
        return None
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return libc


def preloaded_allocator():
    """The malloc replacement mapped into this process (jemalloc, tcmalloc...), or None.

    Example
    -------
    >>> preloaded_allocator() in (None, *PRELOADED_ALLOCATORS.values())
    True
    """
    try:
        maps = _PROC_MAPS.read_text()
    except OSError:  # no /proc
        return None
    return next((name for library, name in PRELOADED_ALLOCATORS.items() if library in maps),
                None)


@functools.cache
def keep_freed_memory():
    """Make glibc serve large blocks from its heap and keep freed memory; once per process.

    Only a program's entry point calls it (through ``use_allocator``): it changes the
    ``malloc`` of the whole process.

    Returns
    -------
    str
        The allocator in effect, for the records.
    """
    libc = _glibc()
    if libc is None:
        return "the C library's own (not glibc): unchanged"
    glibc = f"glibc {libc.gnu_get_libc_version().decode()}"
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEPT_BYTES)):
        return f"{glibc}: unchanged (mallopt refused)"
    return f"{glibc}: large blocks from the heap, freed memory kept (up to {KEPT_BYTES >> 20} MiB)"


def use_allocator(setting):
    """Apply a program's allocator setting (one of ``CPU_ALLOCATORS``); returns what runs.

    Arguments
    ---------
    setting : str
        "keep_freed": ``keep_freed_memory`` (glibc only; a preloaded allocator is kept
        as it is); "system": ``malloc`` as the process started with it.

    Returns
    -------
    str
        ``allocator_in_use()`` afterwards.

    Example
    -------
    >>> use_allocator("system") == allocator_in_use()
    True
    >>> use_allocator("arena")
    Traceback (most recent call last):
    ...
    ValueError: cpu_allocator: unknown setting 'arena' (expected one of ('keep_freed', 'system'))
    """
    if setting not in CPU_ALLOCATORS:
        raise ValueError(f"cpu_allocator: unknown setting {setting!r} "
                         f"(expected one of {CPU_ALLOCATORS})")
    if setting == "keep_freed" and preloaded_allocator() is None:
        keep_freed_memory()
    return allocator_in_use()


def allocator_in_use():
    """What serves this process's ``malloc`` now, for the records.

    Example
    -------
    >>> allocator_in_use().startswith(("glibc", "jemalloc", "tcmalloc", "mimalloc", "the C"))
    True
    """
    preloaded = preloaded_allocator()
    if preloaded is not None:
        return f"{preloaded} (preloaded)"
    if keep_freed_memory.cache_info().currsize:
        return keep_freed_memory()
    libc = _glibc()
    if libc is None:
        return "the C library's own (not glibc)"
    return f"glibc {libc.gnu_get_libc_version().decode()}: its defaults"


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
