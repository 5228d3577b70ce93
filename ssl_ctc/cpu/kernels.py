"""Kernels of the CPU path's linear layers: aten or oneDNN fp32 and bf16, dynamic int8; the choice.

``torch.nn.functional.linear`` runs fp32 products through MKL, which on some
processors (AMD EPYC) takes a generic code path; oneDNN with weights packed
once for the processor is exact to float rounding and can be much faster. In
bf16, ``F.linear`` reorders the weight for oneDNN at every call; packed once it
is the same product. ``choose_backend`` measures the candidates of a precision
at the model's widest linear layer.
A ``KernelLinear`` (an ``nn.Linear`` whose class ``CpuInferencePath`` swaps in)
runs its kernel in CPU inference and ``F.linear`` everywhere else. int8 runs the
quantized engine's kernels, or torchao's where those are gone (``int8_implementation``).

Usage::

    backend, gmacs_per_s = choose_backend(plain_linears(model), "fp32")
    kernel = KERNELS[backend](linear)
"""

import functools
import time

import torch
import torch.nn.functional as F

FP32_BACKENDS = ("aten", "onednn")

# bf16 kernels: "bf16" is ``F.linear`` on bf16 weights, "onednn_bf16" oneDNN's packed product.
BF16_BACKENDS = ("bf16", "onednn_bf16")

# Kernel candidates of each precision that ``choose_backend`` measures.
PRECISION_BACKENDS = {"fp32": FP32_BACKENDS, "bf16": BF16_BACKENDS}


PROBE_ROWS = 512


PROBE_REPEATS = 3


class KernelLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose CPU inference runs ``self.cpu_kernel`` (set by ``CpuInferencePath``).

    ``self.cpu_kernel_precision`` says where: "fp32" outside autocast, "bf16" under
    bf16 autocast (``runs_cpu_kernel``); elsewhere (other devices, gradients,
    other dtypes) the original ``F.linear`` runs.
    """

    def forward(self, inputs):
        if not runs_cpu_kernel(inputs, self.cpu_kernel_precision):
            return F.linear(inputs, self.weight, self.bias)
        return self.cpu_kernel(inputs)


def runs_cpu_kernel(inputs, precision="fp32"):
    """Whether a product on ``inputs`` runs its CPU inference kernel of ``precision``: on CPU,
    no gradients, and fp32 inputs outside autocast ("fp32") or under bf16 autocast ("bf16");
    elsewhere ``F.linear`` runs, as in training.

    Example
    -------
    >>> with torch.inference_mode():
    ...     runs_cpu_kernel(torch.randn(2, 3)), runs_cpu_kernel(torch.randn(2, 3).double())
    (True, False)
    >>> with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    ...     runs_cpu_kernel(torch.randn(2, 3)), runs_cpu_kernel(torch.randn(2, 3), "bf16")
    (False, True)
    """
    if inputs.device.type != "cpu" or torch.is_grad_enabled():
        return False
    if precision == "bf16":
        return (torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16
                and inputs.dtype in (torch.float32, torch.bfloat16))
    return not torch.is_autocast_enabled("cpu") and inputs.dtype == torch.float32


def conv_as_linear(conv):
    """An ``nn.Linear`` sharing a 1-D convolution's weights, for its unfolded windows
    (``[rows, in_channels * kernel_size]``, channels outer): what kernels are made from.

    Example
    -------
    >>> conv = torch.nn.Conv1d(4, 6, 3, stride=2)
    >>> inputs = torch.randn(1, 4, 9)
    >>> windows = inputs.transpose(1, 2).unfold(1, 3, 2).reshape(4, 12)
    >>> torch.allclose(conv_as_linear(conv)(windows), conv(inputs)[0].T, atol=1e-6)
    True
    """
    linear = torch.nn.Linear(conv.in_channels * conv.kernel_size[0], conv.out_channels,
                             bias=conv.bias is not None, device="meta")
    linear.weight = torch.nn.Parameter(conv.weight.detach().reshape(conv.out_channels, -1),
                                       requires_grad=False)
    if conv.bias is not None:
        linear.bias = torch.nn.Parameter(conv.bias.detach(), requires_grad=False)
    return linear


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


def bf16_kernel(linear):
    """bf16 product with the weights cast once (autocast casts them at every call).

    Example
    -------
    >>> linear = torch.nn.Linear(64, 32)
    >>> inputs = torch.randn(10, 64)
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     expected = linear(inputs)
    >>> torch.equal(bf16_kernel(linear)(inputs), expected)
    True
    """
    weight = linear.weight.detach().to(torch.bfloat16)
    bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
    return lambda inputs: F.linear(inputs.to(torch.bfloat16), weight, bias)


def onednn_bf16_kernel(linear):
    """oneDNN bf16 product with the weight cast and packed once (``F.linear`` in bf16
    reorders it at every call); the same rounding as ``bf16_kernel`` up to summation order.

    Example
    -------
    >>> linear = torch.nn.Linear(64, 32)
    >>> inputs = torch.randn(10, 64)
    >>> expected = bf16_kernel(linear)(inputs).float()
    >>> def agrees(output):
    ...     return output.dtype == torch.bfloat16 and bool(
    ...         (output.float() - expected).norm() / expected.norm() < 0.01)
    >>> # oneDNN refuses bf16 on a CPU without AVX-512 or AVX-NE-CONVERT (``usable_backends``)
    >>> "onednn_bf16" not in usable_backends("bf16") or agrees(onednn_bf16_kernel(linear)(inputs))
    True
    """
    weight = linear.weight.detach().to(torch.bfloat16)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
    bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)

    def run(inputs):
        return torch.ops.mkldnn._linear_pointwise(inputs.to(torch.bfloat16), packed, bias,
                                                  "none", [], "")

    return run


def int8_kernel(linear):
    """Dynamic int8 (weights per output channel, activations per call) through the first of
    ``INT8_IMPLEMENTATIONS`` that works in this torch (``int8_implementation``).

    Example
    -------
    >>> linear = torch.nn.Linear(64, 32)
    >>> inputs = torch.randn(10, 64)
    >>> error = (int8_kernel(linear)(inputs) - linear(inputs)).norm() / linear(inputs).norm()
    >>> bool(error < 0.05)
    True
    """
    return INT8_IMPLEMENTATIONS[int8_implementation()](linear)


def quantized_engine_int8_kernel(linear):
    """Dynamic int8 through torch's quantized engine (``torch.ops.quantized``, fbgemm/oneDNN):
    weights packed once, activations quantised per tensor in the same fused call."""
    weight = linear.weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
    zero_points = torch.zeros(len(scales), dtype=torch.long)
    quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().float()
    packed = torch.ops.quantized.linear_prepack(quantized, bias)
    return lambda inputs: torch.ops.quantized.linear_dynamic(inputs, packed, True)


def torchao_int8_kernel(linear):
    """Dynamic int8 through torchao (``Int8DynamicActivationInt8WeightConfig``: activations
    per row), the maintained successor of ``torch.ao.quantization``; in eager mode its
    scaling runs as separate element-wise passes, about 4x slower than the quantized engine
    on WavLM Large's shapes here, so it is the fallback."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantized = torch.nn.Sequential(torch.nn.Linear(
        linear.in_features, linear.out_features, bias=linear.bias is not None))
    with torch.no_grad():
        quantized[0].weight.copy_(linear.weight)
        if linear.bias is not None:
            quantized[0].bias.copy_(linear.bias)
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return quantized[0]


# int8 implementations, fastest first (``int8_implementation`` takes the first that works).
INT8_IMPLEMENTATIONS = {"quantized_engine": quantized_engine_int8_kernel,
                        "torchao": torchao_int8_kernel}


def _probe_layer():
    """A small linear layer and a fixed input on which a kernel is probed before it is used."""
    inputs = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    return torch.nn.Linear(64, 32), inputs


@functools.cache
def int8_implementation():
    """The first of ``INT8_IMPLEMENTATIONS`` that runs here and stays within 5 % of ``F.linear``.

    The quantized engine's operators belong to the API that torch asks users to
    migrate from (to torchao); where a release removes or breaks them, torchao runs.

    Example
    -------
    >>> int8_implementation() in INT8_IMPLEMENTATIONS
    True
    """
    linear, inputs = _probe_layer()
    failures = []
    with torch.inference_mode():
        expected = F.linear(inputs, linear.weight, linear.bias)
        for name, factory in INT8_IMPLEMENTATIONS.items():
            try:
                output = factory(linear)(inputs)
            except (AttributeError, ImportError, NotImplementedError, RuntimeError,
                    TypeError) as error:
                failures.append(f"{name}: {type(error).__name__}: {error}")
                continue
            error = float((output - expected).norm() / expected.norm())
            if error <= 0.05:
                return name
            failures.append(f"{name}: off by {error:.1%}")
    raise RuntimeError(f"no int8 kernel works in torch {torch.__version__} "
                       f"({'; '.join(failures)}): use fp32 or bf16")


# Backend name -> ``kernel_factory(linear)`` -> ``kernel(inputs)``.
KERNELS = {"aten": aten_kernel, "onednn": onednn_kernel, "bf16": bf16_kernel,
           "onednn_bf16": onednn_bf16_kernel, "int8": int8_kernel}

# Precision in which each kernel runs (``KernelLinear.cpu_kernel_precision``).
KERNEL_PRECISIONS = {"aten": "fp32", "onednn": "fp32", "bf16": "bf16", "onednn_bf16": "bf16",
                     "int8": "fp32"}

# Kernels in a reduced precision: a layer whose reduced-precision kernel is off here runs "aten".
REDUCED_PRECISION_KERNELS = tuple(name for name in KERNELS if name not in FP32_BACKENDS)


def plain_linears(modules):
    """The ``nn.Linear`` instances of ``modules`` (that class exactly), which kernels replace.

    Example
    -------
    >>> plain_linears(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()))
    [Linear(in_features=2, out_features=3, bias=True)]
    """
    return [module for module in modules.modules() if type(module) is torch.nn.Linear]


def median_seconds(call, repeats=PROBE_REPEATS):
    """Median seconds of ``call()`` over ``repeats`` timed calls, after one untimed call.

    Example
    -------
    >>> median_seconds(lambda: sum(range(100))) >= 0
    True
    """
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)[repeats // 2]


def linear_gmacs_per_s(kernel_factory, linear, rows=PROBE_ROWS, repeats=PROBE_REPEATS):
    """GMAC/s of one kernel on ``rows x in_features`` inputs (median of ``repeats``).

    Example
    -------
    >>> linear_gmacs_per_s(KERNELS["aten"], torch.nn.Linear(32, 32), rows=8) > 0
    True
    """
    inputs = torch.randn(rows, linear.in_features)
    kernel = kernel_factory(linear)
    with torch.inference_mode():
        median = median_seconds(lambda: kernel(inputs), repeats)
    return rows * linear.in_features * linear.out_features / median / 1e9


# Relative error of a candidate kernel against ``F.linear`` in its precision on the probe of
# ``usable_backends`` above which it counts as broken (fp32: float rounding; bf16: rounding of
# the two products' different summation orders).
USABLE_TOLERANCE = {"fp32": 1e-5, "bf16": 0.02}


@functools.cache
def usable_backends(precision="fp32"):
    """The kernels of ``precision`` (``PRECISION_BACKENDS``) that work in this torch on this
    CPU: each gives ``F.linear``'s result in that precision on a probe (probed once per process).

    ``onednn`` and ``onednn_bf16`` call private operators
    (``torch.ops.mkldnn._reorder_linear_weight``, ``_linear_pointwise``) that a torch
    release may change or drop, and that refuse bf16 on a CPU without AVX-512: where they
    are missing, fail or disagree with ``F.linear``, only ``F.linear`` is used.

    Example
    -------
    >>> "aten" in usable_backends("fp32"), "bf16" in usable_backends("bf16")
    (True, True)
    """
    linear, inputs = _probe_layer()
    reference = {"fp32": aten_kernel, "bf16": bf16_kernel}[precision]
    usable = []
    with torch.inference_mode():
        expected = reference(linear)(inputs).float()
        for backend in PRECISION_BACKENDS[precision]:
            try:
                output = KERNELS[backend](linear)(inputs).float()
            except (AttributeError, RuntimeError, TypeError):  # an operator missing or changed
                continue
            if float((output - expected).norm() / expected.norm()) <= USABLE_TOLERANCE[precision]:
                usable.append(backend)
    return tuple(usable)


def choose_backend(linears, precision="fp32"):
    """The fastest usable kernel of ``precision`` at the widest linear layer, and what was measured.

    Arguments
    ---------
    linears : list of torch.nn.Linear
        The layers that will run it.
    precision : str
        "fp32" or "bf16": its candidates are ``PRECISION_BACKENDS[precision]``; those not
        usable here (``usable_backends``) are left out.

    Returns
    -------
    tuple
        ``(backend, {backend: GMAC/s})``.

    Example
    -------
    >>> backend, rates = choose_backend([torch.nn.Linear(32, 64)])
    >>> backend in FP32_BACKENDS, sorted(rates) == sorted(usable_backends("fp32"))
    (True, True)
    """
    backends = usable_backends(precision)
    widest = max(linears, key=lambda linear: linear.weight.numel())
    rates = {}
    for _ in range(2):  # alternated, so that a load change does not favour one
        for backend in backends:
            rate = linear_gmacs_per_s(KERNELS[backend], widest)
            rates[backend] = max(rates.get(backend, 0.0), rate)
    return max(rates, key=rates.get), rates
