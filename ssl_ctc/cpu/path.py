"""The CPU path of some modules: kernels, WavLM attention and CNN front end swapped in, undone.

Modules keep their parameters, so state-dict keys and training are untouched:
the classes of their ``nn.Linear`` and WavLM attention instances are swapped on
entry and restored on exit. ``CpuPaths`` is the policy of the five tests (one
kernel per precision, the front end measured once per precision), shared with
the speed script so that both time the same path.

Usage::

    paths = CpuPaths.choose(brain.modules, ["fp32", "int8"])
    with paths.of(brain.modules, "int8").applied():
        output = brain.infer_batch(wavs, wav_lens)
"""

import contextlib

import torch
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from ssl_ctc.cpu.attention import FastWavLMAttention
from ssl_ctc.cpu.check import check_modules, fp32_forward
from ssl_ctc.cpu.kernels import (
    KERNEL_PRECISIONS,
    KERNELS,
    PROBE_REPEATS,
    REDUCED_PRECISION_KERNELS,
    KernelLinear,
    choose_backend,
    conv_as_linear,
    median_seconds,
    plain_linears,
)
from ssl_ctc.front_end import MatmulFeatureEncoder, channels_first_front_ends
from ssl_ctc.precision import autocast

# CNN front ends: ``MatmulFeatureEncoder``'s channels-last products, or Hugging Face's convolutions.
FRONT_ENDS = ("matmul", "hugging_face")


FRONT_END_PROBE_SAMPLES = (1, 32000)  # one 2-second utterance at 16 kHz


def matmul_front_ends(modules):
    """The ``MatmulFeatureEncoder`` instances in ``modules`` (none: no front end to choose)."""
    return [module for module in modules.modules() if isinstance(module, MatmulFeatureEncoder)]


def front_end_mode(modules, front_end):
    """Context in which ``modules``' front ends run as ``front_end`` (one of ``FRONT_ENDS``)."""
    if front_end == "hugging_face":
        return channels_first_front_ends(modules)
    return contextlib.nullcontext()


@contextlib.contextmanager
def front_end_kernels(front_ends, kernel_of):
    """Each ``MatmulFeatureEncoder``'s convolutions run ``kernel_of(conv)`` for the block.

    Example
    -------
    >>> from transformers import WavLMConfig, WavLMModel
    >>> from ssl_ctc.front_end import use_matmul_front_end
    >>> front_end = use_matmul_front_end(WavLMModel(WavLMConfig(hidden_size=32,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7)))
    >>> with front_end_kernels([front_end], lambda conv: KERNELS["onednn"](conv_as_linear(conv))):
    ...     len(front_end.conv_kernels)
    7
    >>> front_end.conv_kernels is None
    True
    """
    for front_end in front_ends:
        front_end.conv_kernels = [kernel_of(layer.conv) for layer in front_end.conv_layers]
    try:
        yield
    finally:
        for front_end in front_ends:
            front_end.conv_kernels = None


def choose_front_end(modules, precision="fp32", repeats=PROBE_REPEATS, conv_backend=None):
    """The faster CNN front end on this machine, and the seconds measured.

    Which one wins depends on the processor (oneDNN's convolutions against its
    matrix products): it is measured, alternately, on a random 2-second
    utterance through the first ``MatmulFeatureEncoder`` in ``modules``.

    Arguments
    ---------
    modules : torch.nn.Module
        Searched recursively.
    precision : str
        "fp32", "bf16" (measured under bf16 autocast) or "int8" (the front end is fp32).
    repeats : int
        Timed calls per front end and round (median kept; best of two rounds).
    conv_backend : str, optional
        Kernel (a key of ``KERNELS``) of the matmul front end's products in fp32; None:
        ``F.linear`` (as under bf16 autocast).

    Returns
    -------
    tuple
        ``(front_end, {front_end: seconds})``, ``front_end`` one of ``FRONT_ENDS``;
        ``(None, {})`` without a ``MatmulFeatureEncoder`` (nothing is measured).

    Example
    -------
    >>> from transformers import WavLMConfig, WavLMModel
    >>> from ssl_ctc.front_end import use_matmul_front_end
    >>> model = WavLMModel(WavLMConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7))
    >>> choose_front_end(model)
    (None, {})
    >>> _ = use_matmul_front_end(model)
    >>> front_end, seconds = choose_front_end(model)
    >>> front_end in FRONT_ENDS, sorted(seconds) == sorted(FRONT_ENDS)
    (True, True)
    """
    front_ends = matmul_front_ends(modules)
    if not front_ends:
        return None, {}
    front_end = front_ends[0]
    wavs = torch.randn(*FRONT_END_PROBE_SAMPLES)
    seconds = {}
    packed = {}  # conv -> kernel, packed once for both rounds

    def kernel_of(conv):
        if conv not in packed:
            packed[conv] = KERNELS[conv_backend](conv_as_linear(conv))
        return packed[conv]

    with torch.inference_mode(), autocast("cpu", precision):
        for _ in range(2):  # alternated, so that a load change does not favour one
            for name in FRONT_ENDS:
                kernels = contextlib.nullcontext()
                if name == "matmul" and conv_backend is not None:
                    kernels = front_end_kernels([front_end], kernel_of)
                with front_end_mode(front_end, name), kernels:
                    median = median_seconds(lambda: front_end(wavs), repeats)
                seconds[name] = min(seconds.get(name, median), median)
    return min(seconds, key=seconds.get), seconds


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


class CpuPaths:
    """The five tests' CPU path of any modules in any precision: choices made once, one cache.

    Arguments
    ---------
    fp32_backend : str
        Kernel of the fp32 linear layers (see ``FP32_BACKENDS``).
    front_ends : dict, optional
        Precision -> CNN front end (see ``CpuInferencePath``); "matmul" where absent.
    measurements : dict, optional
        What the choices measured (``choose``).
    bf16_backend : str
        Kernel of the bf16 linear layers (see ``BF16_BACKENDS``).
    fp32_path : str
        "recipe", or "hugging_face" where the model measured faster on its own layers in
        fp32 (``choose_path``): fp32 then runs ``HuggingFacePath``.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    >>> paths = CpuPaths("onednn")
    >>> paths.of(model, "fp32").backend, paths.of(model, "int8").backend, paths.kernel("bf16")
    ('onednn', 'int8', 'bf16')
    """

    def __init__(self, fp32_backend, front_ends=None, measurements=None, bf16_backend="bf16",
                 fp32_path="recipe"):
        self.fp32_backend = fp32_backend
        self.bf16_backend = bf16_backend
        self.fp32_path = fp32_path
        self.front_ends = {} if front_ends is None else front_ends
        self.measurements = {} if measurements is None else measurements
        self.kernel_cache = {}  # paths over the same layers pack their weights once

    @classmethod
    def choose(cls, modules, precisions, backend="auto", probe=None):
        """Measure on ``modules`` the fp32 and bf16 kernels and, per precision, the front end.

        Arguments
        ---------
        modules : torch.nn.Module
            Representative modules (the speed script's baseline).
        precisions : list of str
            "fp32", "bf16", "int8": the precisions whose front end is chosen (fp32's always,
            for a refused reduced precision).
        backend : str
            "auto" (measured: ``choose_backend``, ``choose_front_end``), or one of
            ``FP32_BACKENDS`` (nothing measured, the matmul front end, ``F.linear`` in bf16).
        probe : callable, optional
            One representative forward of ``modules``: with it, "auto" also measures the
            whole fp32 model against Hugging Face's own layers (``choose_path``).

        Returns
        -------
        CpuPaths
            With ``measurements``: ``fp32_backend_gmacs_per_s``, ``front_end_seconds`` and,
            with bf16, ``bf16_backend_gmacs_per_s``.

        Example
        -------
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
        >>> paths = CpuPaths.choose(model, ["int8"])
        >>> paths.front_ends, sorted(paths.measurements)
        ({'fp32': None, 'int8': None}, ['fp32_backend_gmacs_per_s', 'front_end_seconds'])
        """
        if backend != "auto":
            return cls(backend)
        linears = plain_linears(modules)
        fp32_backend, bf16_backend, measurements = "aten", "bf16", {}
        if linears:
            fp32_backend, measurements["fp32_backend_gmacs_per_s"] = choose_backend(linears)
            if "bf16" in precisions:
                bf16_backend, measurements["bf16_backend_gmacs_per_s"] = choose_backend(
                    linears, "bf16")
        # The front end runs in fp32 under int8: its fp32 measurement serves both.
        measured = {}
        for precision in ("fp32", *precisions):
            measured_as = "fp32" if precision == "int8" else precision
            if measured_as not in measured:
                conv_backend = None if measured_as == "bf16" else fp32_backend
                measured[measured_as] = choose_front_end(modules, measured_as,
                                                         conv_backend=conv_backend)
        choices = {name: measured["fp32" if name == "int8" else name]
                   for name in dict.fromkeys(("fp32", *precisions))}
        measurements["front_end_seconds"] = {name: seconds
                                             for name, (_, seconds) in choices.items()}
        paths = cls(fp32_backend, {name: front_end for name, (front_end, _) in choices.items()},
                    measurements, bf16_backend)
        if probe is not None and "fp32" in precisions:
            paths.fp32_path, measurements["path_seconds"] = choose_path(
                modules, paths.of(modules, "fp32"), probe)
        return paths

    def kernel(self, precision):
        """Kernel of the linear layers in ``precision`` (a key of ``KERNELS``, or
        "hugging_face" for ``HuggingFacePath``)."""
        if precision == "fp32" and self.fp32_path == "hugging_face":
            return "hugging_face"
        return {"fp32": self.fp32_backend, "bf16": self.bf16_backend, "int8": "int8"}[precision]

    def conv_kernel(self, precision):
        """Kernel of the matmul front end's products in ``precision``: the fp32 backend, or None
        under bf16 (autocast runs them); int8 keeps the front end in fp32."""
        return None if precision == "bf16" else self.fp32_backend

    def of(self, modules, precision, fp32_layers=()):
        """``CpuInferencePath`` of ``modules`` in ``precision`` (``fp32_layers``: see there), or
        ``HuggingFacePath`` in fp32 where that was chosen."""
        if precision == "fp32" and self.fp32_path == "hugging_face":
            return HuggingFacePath(modules)
        return CpuInferencePath(modules, self.kernel(precision), self.kernel_cache,
                                self.front_end(precision), fp32_layers,
                                self.conv_kernel(precision))

    def front_end(self, precision):
        """CNN front end in ``precision`` (one of ``FRONT_ENDS``; None: the modules have none)."""
        if precision == "fp32" and self.fp32_path == "hugging_face":
            return "hugging_face"
        return self.front_ends.get(precision, "matmul")
