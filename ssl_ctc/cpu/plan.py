"""CPU inference at the machine's limit: packed fp32, bf16 or int8 linear layers, same weights.

``torch.nn.functional.linear`` runs fp32 products through MKL, which on some
processors (AMD EPYC) takes a generic code path; oneDNN with weights packed
once for the processor is exact to float rounding and can be much faster.
``cpu_inference`` runs every ``nn.Linear`` of the given modules (encoder
projections, feed-forward, feature projection, the head) through a kernel chosen
for this machine, and WavLM's attention through ``FastWavLMAttention``, the
same computation as Hugging Face's with the projections called as modules (so
they use that kernel too) and the gated relative position bias computed as a
contiguous 2-D product (under bf16 autocast Hugging Face's broadcasting 4-D
product becomes a strided copy plus ``bmm``, 7x slower than fp32).

Modules keep their parameters, so state-dict keys and training are untouched;
the classes of our own module instances are swapped on entry and restored on
exit; on other devices, with gradients enabled (outside ``torch.no_grad`` /
``torch.inference_mode``) or under autocast the original ``F.linear`` runs. Precisions:

- ``"fp32"``: the fastest exact backend (``"auto"`` measures ``aten`` against
  ``onednn`` at the model's widest linear layer; outputs within 1e-4);
  ``"auto"`` also measures the CNN front end as channels-last products
  (``ssl_ctc.front_end``) against Hugging Face's convolutions and runs the faster;
- ``"bf16"``: bf16 autocast for the block (fast only with avx512_bf16 / AMX);
- ``"int8"``: dynamic int8 (fbgemm / x86 engine) of every linear layer,
  per-output-channel weight scales;
- ``"auto"``: bf16 where the processor has bf16 instructions, the check below
  passes and a short measurement (``probe``) shows it faster than fp32, fp32 elsewhere.

No silent wrong numbers: before a reduced precision (bf16, int8) is used, each of
its kernels is checked on this machine against fp32 on random inputs, layer by
layer (``check_modules``: every ``nn.Linear`` and, for bf16, every ``nn.Conv1d``);
a layer whose error exceeds ``MODULE_TOLERANCE`` runs in fp32 (oneDNN's bf16
grouped convolution is wrong on some processors for WavLM's positional
convolution with few channels per group). With a ``probe``, the whole output is
then compared with fp32 as well, and a precision whose output is off by more than
``OUTPUT_TOLERANCE`` is refused (fp32 runs). The plan records the fallbacks and why.

Usage::

    with cpu_inference(brain.modules, "auto", probe=lambda: brain.infer_batch(wavs, lens)) as plan:
        output = brain.infer_batch(wavs, wav_lens)
    plan.record()  # {"cpu_backend": "onednn", "cpu_precision": "fp32", ...}
"""

import contextlib
import dataclasses
import time

import torch
import torch.nn.functional as F
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from ssl_ctc.cpu.machine import cpu_flags
from ssl_ctc.front_end import MatmulFeatureEncoder, channels_first_front_ends
from ssl_ctc.precision import CPU_PRECISIONS, autocast

FP32_BACKENDS = ("aten", "onednn")


BF16_INSTRUCTIONS = ("avx512_bf16", "amx_bf16")


PROBE_ROWS = 512


PROBE_REPEATS = 3


# CNN front ends: ``MatmulFeatureEncoder``'s channels-last products, or Hugging Face's convolutions.
FRONT_ENDS = ("matmul", "hugging_face")


FRONT_END_PROBE_SAMPLES = (1, 32000)  # one 2-second utterance at 16 kHz


# Relative L2 error of one layer's reduced-precision output against fp32 on the check's random
# inputs above which its kernel counts as wrong on this CPU and the layer runs in fp32 (rounding
# alone gives about 0.3 % in bf16 and 1-2 % in int8; the faulty kernels seen give 50-100 %).
MODULE_TOLERANCE = {"bf16": 0.02, "int8": 0.05}


# Relative L2 error of the probe's whole output against fp32 above which a reduced precision is
# refused and fp32 runs (WavLM Large: about 1.5 % in bf16, 4 % in int8).
OUTPUT_TOLERANCE = {"bf16": 0.05, "int8": 0.1}


CHECK_ROWS = 64  # rows (frames) of the random input of each checked layer


class KernelLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose CPU inference runs ``self.cpu_kernel`` (set by ``LinearPlan``)."""

    def forward(self, inputs):
        if (inputs.device.type != "cpu" or torch.is_grad_enabled()
                or torch.is_autocast_enabled("cpu") or inputs.dtype != torch.float32):
            return F.linear(inputs, self.weight, self.bias)
        return self.cpu_kernel(inputs)


def onednn_kernel(linear):
    """oneDNN fp32 product with the weight packed once (exact to float rounding).

    Example
    -------
    >>> linear = torch.nn.Linear(16, 8)
    >>> inputs = torch.randn(3, 5, 16)
    >>> torch.allclose(onednn_kernel(linear)(inputs), linear(inputs), atol=1e-5)
    True
    """
    packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
    bias = None if linear.bias is None else linear.bias.detach()

    def run(inputs):
        return torch.ops.mkldnn._linear_pointwise(inputs, packed, bias, "none", [], "")

    return run


def aten_kernel(linear):
    """The default ``F.linear`` (MKL or OpenBLAS, as torch was built)."""
    weight = linear.weight.detach()
    bias = None if linear.bias is None else linear.bias.detach()
    return lambda inputs: F.linear(inputs, weight, bias)


def int8_kernel(linear):
    """Dynamic int8: weights quantised per output channel, activations per call.

    Example
    -------
    >>> linear = torch.nn.Linear(64, 32)
    >>> inputs = torch.randn(10, 64)
    >>> error = (int8_kernel(linear)(inputs) - linear(inputs)).norm() / linear(inputs).norm()
    >>> bool(error < 0.05)
    True
    """
    weight = linear.weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
    zero_points = torch.zeros(len(scales), dtype=torch.long)
    quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().float()
    packed = torch.ops.quantized.linear_prepack(quantized, bias)
    return lambda inputs: torch.ops.quantized.linear_dynamic(inputs, packed, True)


KERNELS = {"aten": aten_kernel, "onednn": onednn_kernel, "int8": int8_kernel}


def _median_seconds(call, repeats=PROBE_REPEATS):
    """Median seconds of ``call()`` over ``repeats`` timed calls, after one untimed call."""
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)[repeats // 2]


def linear_gmacs_per_s(kernel_factory, linear, rows=PROBE_ROWS, repeats=PROBE_REPEATS):
    """GMAC/s of one kernel on ``rows x in_features`` inputs (median of ``repeats``)."""
    inputs = torch.randn(rows, linear.in_features)
    kernel = kernel_factory(linear)
    with torch.inference_mode():
        median = _median_seconds(lambda: kernel(inputs), repeats)
    return rows * linear.in_features * linear.out_features / median / 1e9


def choose_fp32_backend(linears, backends=FP32_BACKENDS):
    """The fastest exact fp32 backend at the widest linear layer, and what was measured.

    Arguments
    ---------
    linears : list of torch.nn.Linear
        The layers that will run it.
    backends : tuple of str
        Candidates (keys of ``KERNELS``).

    Returns
    -------
    tuple
        ``(backend, {backend: GMAC/s})``.

    Example
    -------
    >>> backend, rates = choose_fp32_backend([torch.nn.Linear(32, 64)])
    >>> backend in FP32_BACKENDS, sorted(rates) == sorted(FP32_BACKENDS)
    (True, True)
    """
    widest = max(linears, key=lambda linear: linear.weight.numel())
    rates = {}
    for _ in range(2):  # alternated, so that a load change does not favour one
        for backend in backends:
            rate = linear_gmacs_per_s(KERNELS[backend], widest)
            rates[backend] = max(rates.get(backend, 0.0), rate)
    return max(rates, key=rates.get), rates


def _front_end_mode(modules, front_end):
    """Context in which ``modules``' front ends run as ``front_end`` (one of ``FRONT_ENDS``)."""
    if front_end == "hugging_face":
        return channels_first_front_ends(modules)
    return contextlib.nullcontext()


def choose_front_end(modules, precision="fp32", repeats=PROBE_REPEATS):
    """The faster CNN front end on this machine, and the seconds measured.

    Which one wins depends on the processor (oneDNN's convolutions against its
    matrix products): it is measured, alternately, on a random 2-second
    utterance through the first ``MatmulFeatureEncoder`` in ``modules``.

    Arguments
    ---------
    modules : torch.nn.Module
        Searched recursively; without a ``MatmulFeatureEncoder`` nothing is measured.
    precision : str
        "fp32", "bf16" (measured under bf16 autocast) or "int8" (the front end is fp32).
    repeats : int
        Timed calls per front end and round (median kept; best of two rounds).

    Returns
    -------
    tuple
        ``(front_end, {front_end: seconds})``, ``front_end`` one of ``FRONT_ENDS``.

    Example
    -------
    >>> from transformers import WavLMConfig, WavLMModel
    >>> from ssl_ctc.front_end import use_matmul_front_end
    >>> model = WavLMModel(WavLMConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7))
    >>> _ = use_matmul_front_end(model)
    >>> front_end, seconds = choose_front_end(model)
    >>> front_end in FRONT_ENDS, sorted(seconds) == sorted(FRONT_ENDS)
    (True, True)
    """
    front_ends = [module for module in modules.modules()
                  if isinstance(module, MatmulFeatureEncoder)]
    if not front_ends:
        return "matmul", {}
    front_end = front_ends[0]
    wavs = torch.randn(*FRONT_END_PROBE_SAMPLES)
    seconds = {}
    with torch.inference_mode(), autocast("cpu", precision):
        for _ in range(2):  # alternated, so that a load change does not favour one
            for name in FRONT_ENDS:
                with _front_end_mode(front_end, name):
                    median = _median_seconds(lambda: front_end(wavs), repeats)
                seconds[name] = min(seconds.get(name, median), median)
    return min(seconds, key=seconds.get), seconds


def relative_error(output, reference):
    """Relative L2 error of ``output`` against ``reference`` (0 when both are zero).

    Example
    -------
    >>> relative_error(torch.tensor([1.0, 1.1]), torch.tensor([1.0, 1.0])) < 0.08
    True
    """
    output, reference = output.float(), reference.float()
    return float((output - reference).norm() / reference.norm().clamp(min=1e-12))


def checked_layers(modules, precision):
    """``(name, layer)`` whose ``precision`` kernels ``check_modules`` checks.

    int8 replaces the ``nn.Linear`` layers; bf16 autocast also runs every 1-D
    convolution (the CNN front end, the positional convolution) in bf16.
    """
    kinds = (torch.nn.Linear, torch.nn.Conv1d) if precision == "bf16" else (torch.nn.Linear,)
    return [(name, module) for name, module in modules.named_modules()
            if isinstance(module, kinds) and not isinstance(module, KernelLinear)]


def _check_input(layer, generator):
    if isinstance(layer, torch.nn.Conv1d):
        shape = (1, layer.in_channels, layer.kernel_size[0] * layer.dilation[0] + CHECK_ROWS)
    else:
        shape = (CHECK_ROWS, layer.in_features)
    return torch.randn(*shape, generator=generator)


def check_modules(modules, precision, kernel_of=None):
    """Each layer's ``precision`` output against fp32 on random inputs: errors and failures.

    Arguments
    ---------
    modules : torch.nn.Module
        Searched recursively (see ``checked_layers``).
    precision : str
        "bf16" (autocast) or "int8" (``kernel_of(linear)``, the int8 kernel by default).
    kernel_of : callable, optional
        ``linear -> kernel`` for int8 (``CpuInferencePath`` passes its cached kernels).

    Returns
    -------
    tuple
        ``({name: relative error}, {name: reason})``: the second holds the layers
        beyond ``MODULE_TOLERANCE``, which must run in fp32.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Conv1d(4, 4, 3, groups=2))
    >>> errors, failures = check_modules(model, "bf16")
    >>> sorted(errors), failures
    (['0', '1'], {})
    """
    kernel_of = KERNELS["int8"] if kernel_of is None else kernel_of
    tolerance = MODULE_TOLERANCE[precision]
    generator = torch.Generator().manual_seed(0)
    errors, failures = {}, {}
    with torch.inference_mode():
        for name, layer in checked_layers(modules, precision):
            inputs = _check_input(layer, generator)
            reference = layer(inputs)
            if precision == "bf16":
                with autocast("cpu", "bf16"):
                    output = layer(inputs)
            else:
                output = kernel_of(layer)(inputs)
            errors[name] = relative_error(output, reference)
            if not errors[name] <= tolerance:  # NaN fails too
                failures[name] = (f"{precision} kernel off by {errors[name]:.1%} "
                                  f"(tolerance {tolerance:.0%}) on this CPU")
    return errors, failures


def _fp32_forward(module):
    """A forward for ``module`` that runs it in fp32 (autocast off, inputs cast to float)."""

    def forward(*args, **kwargs):
        args = [arg.float() if torch.is_tensor(arg) and arg.is_floating_point() else arg
                for arg in args]
        with torch.autocast("cpu", enabled=False):
            return type(module).forward(module, *args, **kwargs)

    return forward


class FastWavLMAttention(WavLMAttention):
    """WavLM's attention with the projections called as modules and a contiguous position gate.

    The same computation as ``WavLMAttention.forward`` in eval mode (which
    calls ``F.multi_head_attention_forward`` with the projection weights):
    gated relative position bias, padded keys masked, scaled dot-product
    attention. In training or when attention weights are asked for, Hugging
    Face's forward runs.

    Example
    -------
    >>> attention = WavLMAttention(embed_dim=32, num_heads=4, num_buckets=16, max_distance=20)
    >>> attention = attention.eval()
    >>> hidden = torch.randn(2, 9, 32)
    >>> mask = torch.ones(2, 9, dtype=torch.long)
    >>> mask[1, 6:] = 0
    >>> expected, _, bias = attention(hidden, attention_mask=mask)
    >>> attention.__class__ = FastWavLMAttention
    >>> output, _, fast_bias = attention(hidden, attention_mask=mask)
    >>> torch.allclose(output, expected, atol=1e-5), torch.equal(bias, fast_bias)
    (True, True)
    """

    def forward(self, hidden_states, attention_mask=None, position_bias=None,
                output_attentions=False, index=0):
        if self.training or output_attentions:
            return super().forward(hidden_states, attention_mask, position_bias,
                                   output_attentions, index)
        batch, frames, _ = hidden_states.shape
        heads, head_dim = self.num_heads, self.head_dim
        if position_bias is None:
            position_bias = self.compute_bias(frames, frames)
            position_bias = position_bias.unsqueeze(0).repeat(batch, 1, 1, 1).view(
                batch * heads, frames, frames)
        per_head = hidden_states.reshape(batch * frames * heads, head_dim)
        projected = self.gru_rel_pos_linear(per_head).view(batch, frames, heads, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(projected).chunk(2, dim=-1)  # [B, T, H, 1] each
        constant = self.gru_rel_pos_const.view(1, 1, heads, 1)
        gate = (gate_a * (gate_b * constant - 1.0) + 2.0).transpose(1, 2)  # [B, H, T, 1]
        bias = gate * position_bias.view(batch, heads, frames, frames)
        if attention_mask is not None:
            padded = attention_mask.ne(1)[:, None, None, :]
            bias = bias.masked_fill(padded, float("-inf"))

        def split_heads(projection):
            return projection(hidden_states).view(batch, frames, heads, head_dim).transpose(1, 2)

        query, key, value = split_heads(self.q_proj), split_heads(self.k_proj), split_heads(
            self.v_proj)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
        output = self.out_proj(context.transpose(1, 2).reshape(batch, frames, heads * head_dim))
        return output, None, position_bias


@dataclasses.dataclass
class CpuInferencePlan:
    """What ``cpu_inference`` runs, and why (for the records).

    Arguments
    ---------
    precision : str
        "fp32", "bf16" or "int8" (``"auto"`` resolved).
    backend : str
        Kernel of the linear layers ("aten", "onednn", "int8").
    requested_precision, requested_backend : str
        As asked.
    measurements : dict
        What the choices measured (GMAC/s by backend, probe seconds by precision,
        front-end seconds).
    front_end : str
        CNN front end that runs (one of ``FRONT_ENDS``).
    fallbacks : dict
        Layer name -> why it runs in fp32 (``check_modules``), or the whole model
        -> why the requested precision was refused.
    check : dict
        The check's figures: largest layer error, tolerances, the probe output's error.
    """

    precision: str
    backend: str
    requested_precision: str
    requested_backend: str
    measurements: dict
    front_end: str = "matmul"
    fallbacks: dict = dataclasses.field(default_factory=dict)
    check: dict = dataclasses.field(default_factory=dict)

    def record(self):
        """Fields for a benchmark record (the processor's flags included)."""
        return {"cpu_precision": self.precision, "cpu_backend": self.backend,
                "cpu_requested_precision": self.requested_precision,
                "cpu_requested_backend": self.requested_backend,
                "cpu_front_end": self.front_end,
                "cpu_fp32_fallbacks": self.fallbacks, "cpu_precision_check": self.check,
                "cpu_choice_measurements": self.measurements, "cpu_flags": cpu_flags()}


class CpuInferencePath:
    """The fast CPU path of some modules, applied and undone on demand (cheap after the first).

    Arguments
    ---------
    modules : torch.nn.Module
        Searched recursively (e.g. a Brain's ``modules``).
    backend : str
        "aten", "onednn" or "int8" (see ``KERNELS``).
    kernel_cache : dict, optional
        ``(linear, backend) -> kernel``, shared by paths over the same layers (the
        speed script's variants share one encoder), so that weights are packed once.
    front_end : str
        CNN front end of the ``MatmulFeatureEncoder`` instances (one of ``FRONT_ENDS``).
    fp32_layers : iterable of str
        Names of layers (in ``modules``) that run in fp32 whatever the precision:
        autocast off, and the "aten" kernel instead of int8 (see ``check_modules``).

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

    def __init__(self, modules, backend, kernel_cache=None, front_end="matmul", fp32_layers=()):
        if front_end not in FRONT_ENDS:
            raise ValueError(f"unknown front end {front_end!r} (expected one of {FRONT_ENDS})")
        self.modules = modules
        self.front_end = front_end
        named = dict(modules.named_modules())
        self.fp32_layers = [named[name] for name in fp32_layers]
        self.linears = [module for module in modules.modules() if type(module) is torch.nn.Linear]
        self.attentions = [module for module in modules.modules()
                           if type(module) is WavLMAttention]
        self.backend = backend
        self.kernel_cache = {} if kernel_cache is None else kernel_cache
        self.kernels = None

    def _kernel(self, linear, backend=None):
        backend = self.backend if backend is None else backend
        if backend == "int8" and any(linear is layer for layer in self.fp32_layers):
            backend = "aten"
        key = (linear, backend)
        if key not in self.kernel_cache:
            self.kernel_cache[key] = KERNELS[backend](linear)
        return self.kernel_cache[key]

    def check(self, precision):
        """``check_modules`` for ``precision`` with this path's (cached) int8 kernels."""
        return check_modules(self.modules, precision,
                             kernel_of=lambda linear: self._kernel(linear, "int8"))

    @contextlib.contextmanager
    def applied(self):
        """Swap the classes in (packing the weights the first time); restore them on exit."""
        if self.kernels is None:
            self.kernels = [self._kernel(linear) for linear in self.linears]
        for linear, kernel in zip(self.linears, self.kernels, strict=True):
            linear.cpu_kernel = kernel
            linear.__class__ = KernelLinear
        for attention in self.attentions:
            attention.__class__ = FastWavLMAttention
        for layer in self.fp32_layers:
            layer.forward = _fp32_forward(layer)
        try:
            with _front_end_mode(self.modules, self.front_end):
                yield self
        finally:
            for layer in self.fp32_layers:
                del layer.forward
            for linear in self.linears:
                linear.__class__ = torch.nn.Linear
                del linear.cpu_kernel
            for attention in self.attentions:
                attention.__class__ = WavLMAttention


def has_bf16_instructions(flags=None):
    """Whether the processor computes in bf16 (avx512_bf16 or AMX), from its flags.

    Example
    -------
    >>> has_bf16_instructions({"flags": ["avx2", "avx512_bf16"]})
    True
    """
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags["flags"] for flag in BF16_INSTRUCTIONS)


def _probe_seconds(probe, path, precision, repeats=PROBE_REPEATS):
    """Median seconds of ``probe()`` on a path, in a precision (one untimed call first)."""
    with path.applied(), torch.inference_mode(), autocast("cpu", precision):
        return _median_seconds(probe, repeats)


@contextlib.contextmanager
def cpu_inference(modules, precision="fp32", backend="auto", probe=None):
    """Run CPU inference of ``modules`` through the fastest path for ``precision``.

    Arguments
    ---------
    modules : torch.nn.Module
        The modules that inference runs (their ``nn.Linear`` and WavLM
        attention instances are switched for the block, then restored).
    precision : str
        One of ``CPU_PRECISIONS``; "bf16" enters bf16 autocast for the block.
    backend : str
        fp32 kernel: "auto" (measured, and the CNN front end too: ``choose_front_end``),
        "aten" or "onednn" (with the matmul front end); the kernel is ignored for
        int8 and bf16 (autocast runs ``F.linear``).
    probe : callable, optional
        ``probe()`` runs one representative forward; needed by ``"auto"``
        precision on processors with bf16 instructions.

    Yields
    ------
    CpuInferencePlan

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> inputs = torch.randn(4, 8)
    >>> with torch.inference_mode(), cpu_inference(model, "fp32") as plan:
    ...     fast = model(inputs)
    >>> torch.allclose(fast, model(inputs), atol=1e-5), plan.backend in FP32_BACKENDS
    (True, True)
    """
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"unknown CPU precision {precision!r} "
                         f"(expected one of {CPU_PRECISIONS})")
    if backend not in ("auto", *FP32_BACKENDS):
        raise ValueError(f"unknown CPU backend {backend!r} (expected auto or {FP32_BACKENDS})")
    measurements = {}
    linears = [module for module in modules.modules() if type(module) is torch.nn.Linear]
    fp32_backend = backend
    if backend == "auto":
        fp32_backend = "aten"
        if linears and precision in ("fp32", "auto"):
            fp32_backend, measurements["fp32_backend_gmacs_per_s"] = choose_fp32_backend(linears)
    chosen, fallbacks, check, kernel_cache = precision, {}, {}, {}
    if precision == "auto":
        chosen = "fp32"
        if not has_bf16_instructions():
            measurements["auto"] = f"fp32: no {' / '.join(BF16_INSTRUCTIONS)} on this CPU"
        elif probe is None:
            measurements["auto"] = "fp32: no probe to measure and check bf16 with"
        else:
            chosen = "bf16"
    if chosen != "fp32":
        fallbacks, check = _check_precision(modules, chosen, fp32_backend, probe, kernel_cache)
        if "model" in fallbacks:
            chosen = "fp32"
    if precision == "auto" and chosen == "bf16":
        seconds = {"fp32": _probe_seconds(probe, CpuInferencePath(
                       modules, fp32_backend, kernel_cache), "fp32"),
                   "bf16": _probe_seconds(probe, CpuInferencePath(
                       modules, "aten", kernel_cache, fp32_layers=fallbacks), "bf16")}
        measurements["probe_seconds"] = seconds
        chosen = min(seconds, key=seconds.get)
    kernel = {"fp32": fp32_backend, "bf16": "aten", "int8": "int8"}[chosen]
    front_end = "matmul"
    if backend == "auto":
        front_end, seconds = choose_front_end(modules, chosen)
        if seconds:
            measurements["front_end_seconds"] = seconds
    fp32_layers = () if chosen == "fp32" else fallbacks
    plan = CpuInferencePlan(chosen, kernel, precision, backend, measurements, front_end,
                            fallbacks, check)
    with (CpuInferencePath(modules, kernel, kernel_cache, front_end, fp32_layers).applied(),
          autocast("cpu", chosen)):
        yield plan


def _probe_tensor(output):
    """What the output check compares: a Brain's posteriors (``infer_batch``), or the output.

    Posteriors rather than log-probs, whose large negative values of unlikely
    labels would hide an error in the likely ones.
    """
    if isinstance(output, dict) and "log_probs" in output:
        return output["log_probs"].float().exp()
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.float() if torch.is_tensor(output) else None


def _check_precision(modules, precision, fp32_backend, probe, kernel_cache):
    """Layer check, then (with a probe) the output check of ``precision``: fallbacks, figures.

    Fallbacks name layers that run in fp32, or ``"model"`` when the whole output
    is off beyond ``OUTPUT_TOLERANCE`` (the precision is then refused).
    """
    path = CpuInferencePath(modules, "int8" if precision == "int8" else "aten", kernel_cache)
    errors, fallbacks = path.check(precision)
    check = {"layers_checked": len(errors),
             "largest_layer_error": max(errors.values(), default=0.0),
             "layer_tolerance": MODULE_TOLERANCE[precision]}
    if probe is None:
        return fallbacks, check
    with torch.inference_mode():
        with CpuInferencePath(modules, fp32_backend, kernel_cache).applied():
            reference = _probe_tensor(probe())
        with (CpuInferencePath(modules, path.backend, path.kernel_cache, fp32_layers=fallbacks)
              .applied(), autocast("cpu", precision)):
            output = _probe_tensor(probe())
    if reference is None or output is None:
        return fallbacks, check
    error = relative_error(output, reference)
    check.update(output_error=error, output_tolerance=OUTPUT_TOLERANCE[precision])
    if not error <= OUTPUT_TOLERANCE[precision]:
        fallbacks["model"] = (f"{precision} output off by {error:.1%} (tolerance "
                              f"{OUTPUT_TOLERANCE[precision]:.0%}) on the probe: fp32 runs")
    return fallbacks, check
