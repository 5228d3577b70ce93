"""Applying a CPU decision: kernels, WavLM attention and CNN front end swapped in, undone.

A path is what runs: ``CpuInferencePath`` (the recipe's kernels, attention and front end)
or ``HuggingFacePath`` (Hugging Face's own layers). Modules keep their parameters, so
state-dict keys and training are untouched: the classes of their ``nn.Linear`` and WavLM
attention instances are swapped on entry and restored on exit. Which path runs is decided
in ``ssl_ctc.cpu.decision``; ``choose_path`` measures the two whole-model paths for it.

Usage::

    with CpuInferencePath(brain.modules, "onednn").applied():
        output = brain.infer_batch(wavs, wav_lens)
"""

import contextlib

import torch
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from ssl_ctc.cpu.attention import FastWavLMAttention
from ssl_ctc.cpu.check import check_modules, fp32_forward
from ssl_ctc.cpu.front_end import (
    FRONT_ENDS,
    channels_first_front_ends,
    front_end_kernels,
    front_end_mode,
    matmul_front_ends,
)
from ssl_ctc.cpu.kernels import (
    KERNEL_PRECISIONS,
    KERNELS,
    REDUCED_PRECISION_KERNELS,
    KernelLinear,
    conv_as_linear,
    median_seconds,
    plain_linears,
)


class HuggingFacePath:
    """The modules as Hugging Face runs them (``F.linear``, its attention, its convolutions),
    chosen in fp32 where the whole model measured faster so than on the recipe's path.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    >>> with HuggingFacePath(model).applied():
    ...     type(model[0]).__name__
    'Linear'
    """

    backend = "hugging_face"

    def __init__(self, modules):
        self.modules = modules

    @contextlib.contextmanager
    def applied(self):
        """Hugging Face's convolutions for the CNN front end; nothing else to swap in."""
        with channels_first_front_ends(self.modules):
            yield self


# The whole-model paths compared in fp32 (``choose_path``).
PATHS = ("recipe", "hugging_face")


def choose_path(modules, recipe_path, probe, repeats=2):
    """The faster fp32 path of the whole model on a probe: the recipe's or Hugging Face's own.

    Each layer's choice (kernel, front end) is measured on its own, on probe shapes; on some
    processors (AVX2 without AVX-512, seen here) the model as a whole still runs faster on
    Hugging Face's layers, so the whole forward is timed on both, alternately, twice.

    Arguments
    ---------
    modules : torch.nn.Module
        The modules ``probe`` runs.
    recipe_path : CpuInferencePath
        The recipe's fp32 path of ``modules``.
    probe : callable
        One representative forward (a test batch).
    repeats : int
        Timed calls per path and round (median kept; best of two rounds).

    Returns
    -------
    tuple
        ``(path, {path: seconds})``, ``path`` one of ``PATHS``.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    >>> inputs = torch.randn(32, 64)
    >>> path, seconds = choose_path(model, CpuInferencePath(model, "aten"), lambda: model(inputs))
    >>> path in PATHS, sorted(seconds) == sorted(PATHS)
    (True, True)
    """
    candidates = {"recipe": recipe_path, "hugging_face": HuggingFacePath(modules)}
    seconds = {}
    with torch.inference_mode():
        for _ in range(2):  # alternated, so that a load change does not favour one
            for name, path in candidates.items():
                with path.applied():
                    median = median_seconds(probe, repeats)
                seconds[name] = min(seconds.get(name, median), median)
    return min(seconds, key=seconds.get), seconds


class CpuInferencePath:
    """The fast CPU path of some modules, applied and undone on demand (cheap after the first).

    Arguments
    ---------
    modules : torch.nn.Module
        Searched recursively (e.g. a Brain's ``modules``).
    backend : str
        "aten", "onednn", "bf16", "onednn_bf16" or "int8" (see ``KERNELS``).
    kernel_cache : dict, optional
        ``(linear, backend) -> kernel``, shared by paths over the same layers (the
        speed script's variants share one encoder), so that weights are packed once.
    front_end : str, optional
        CNN front end of the ``MatmulFeatureEncoder`` instances (one of ``FRONT_ENDS``;
        None where there is none to switch).
    fp32_layers : iterable of str
        Names of layers (in ``modules``) that run in fp32 whatever the precision:
        autocast off, and the "aten" kernel instead of int8 (see ``check_modules``).
    conv_backend : str, optional
        Kernel of the matmul front end's convolutions (its weights packed once); None:
        ``F.linear`` (bf16 autocast runs it).

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    >>> path = CpuInferencePath(model, "onednn")
    >>> with path.applied():
    ...     type(model[0]).__name__
    'KernelLinear'
    >>> type(model[0]).__name__, list(model.state_dict())
    ('Linear', ['0.weight', '0.bias'])
    """

    def __init__(self, modules, backend, kernel_cache=None, front_end="matmul", fp32_layers=(),
                 conv_backend=None):
        if front_end not in (*FRONT_ENDS, None):
            raise ValueError(f"unknown front end {front_end!r} (expected one of {FRONT_ENDS})")
        self.modules = modules
        self.front_end = front_end
        named = dict(modules.named_modules())
        self.fp32_layers = [named[name] for name in fp32_layers]
        self.linears = plain_linears(modules)
        self.attentions = [module for module in modules.modules()
                           if type(module) is WavLMAttention]
        self.backend = backend
        self.conv_backend = conv_backend
        self.matmul_front_ends = matmul_front_ends(modules) if front_end == "matmul" else []
        self.kernel_cache = {} if kernel_cache is None else kernel_cache
        self.kernels = None

    def _backend_of(self, linear, backend=None):
        """The kernel a linear layer runs: ``backend`` (this path's by default), or "aten"
        for a layer whose reduced-precision kernel is off here."""
        backend = self.backend if backend is None else backend
        if backend in REDUCED_PRECISION_KERNELS and any(
                linear is layer for layer in self.fp32_layers):
            return "aten"
        return backend

    def _kernel(self, linear, backend=None):
        backend = self._backend_of(linear, backend)
        key = (linear, backend)
        if key not in self.kernel_cache:
            self.kernel_cache[key] = KERNELS[backend](linear)
        return self.kernel_cache[key]

    def _conv_kernel(self, conv):
        key = (conv, self.conv_backend)
        if key not in self.kernel_cache:
            self.kernel_cache[key] = KERNELS[self.conv_backend](conv_as_linear(conv))
        return self.kernel_cache[key]

    def check(self, precision):
        """``check_modules`` for ``precision`` with this path's (cached) kernels."""
        return check_modules(self.modules, precision,
                             kernel_of=lambda linear: self._kernel(linear, self.backend))

    @contextlib.contextmanager
    def applied(self):
        """Swap the classes in (packing the weights the first time); restore them on exit."""
        if self.kernels is None:
            self.kernels = [self._kernel(linear) for linear in self.linears]
        for linear, kernel in zip(self.linears, self.kernels, strict=True):
            linear.cpu_kernel = kernel
            linear.cpu_kernel_precision = KERNEL_PRECISIONS[self._backend_of(linear)]
            linear.__class__ = KernelLinear
        for attention in self.attentions:
            attention.__class__ = FastWavLMAttention
        for layer in self.fp32_layers:
            layer.forward = fp32_forward(layer)
        kernels = contextlib.nullcontext()
        if self.conv_backend is not None:
            kernels = front_end_kernels(self.matmul_front_ends, self._conv_kernel)
        try:
            with front_end_mode(self.modules, self.front_end), kernels:
                yield self
        finally:
            for layer in self.fp32_layers:
                del layer.forward
            for linear in self.linears:
                linear.__class__ = torch.nn.Linear
                del linear.cpu_kernel, linear.cpu_kernel_precision
            for attention in self.attentions:
                attention.__class__ = WavLMAttention
