"""Precision names, one home: which exist per device and how each is entered.

On GPU a reduced precision is autocast; on CPU ``ssl_ctc.cpu.decision.cpu_inference``
chooses the kernels (bf16 autocast inside, int8 linear layers, fp32 fallbacks).

Usage::

    with autocast("cuda", "fp16"):
        output = brain.infer_batch(wavs, wav_lens)
"""

import contextlib

import torch

# CPU precisions of ``ssl_ctc.cpu.decision.cpu_inference`` ("auto": measured and checked).
CPU_PRECISIONS = ("fp32", "bf16", "int8", "auto")


# GPU precisions, by autocast dtype (None: no autocast).
GPU_PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# Every precision a user may name (``transcribe.py --precision``).
PRECISIONS = tuple(dict.fromkeys((*CPU_PRECISIONS, *GPU_PRECISIONS)))


def precisions_of(device):
    """The precision names of a device ("cpu", "cuda", "cuda:1").

    Example
    -------
    >>> precisions_of("cpu"), precisions_of("cuda:0")
    (('fp32', 'bf16', 'int8', 'auto'), ('fp32', 'fp16', 'bf16'))
    """
    return tuple(GPU_PRECISIONS) if str(device).startswith("cuda") else CPU_PRECISIONS


def autocast(device, precision):
    """Autocast for a precision name: a GPU's dtype, bf16 on CPU, none otherwise.

    Example
    -------
    >>> with autocast("cpu", "bf16"):
    ...     torch.is_autocast_enabled("cpu")
    True
    """
    device_type = torch.device(device).type
    dtype = GPU_PRECISIONS.get(precision) if device_type == "cuda" else (
        torch.bfloat16 if precision == "bf16" else None)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)
