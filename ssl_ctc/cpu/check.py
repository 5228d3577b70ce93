"""No silent wrong numbers: reduced-precision kernels checked against fp32 on this machine.

Before a reduced precision (bf16, int8) is used, each of its kernels is checked
against fp32 on random inputs, layer by layer (``check_modules``: every
``nn.Linear`` and, for bf16, every ``nn.Conv1d``); a layer whose error exceeds
``MODULE_TOLERANCE`` runs in fp32 (``fp32_forward``; oneDNN's bf16 grouped
convolution is wrong on some processors for WavLM's positional convolution with
few channels per group). ``cpu_inference`` then compares a probe's whole output
(``probe_output``) with fp32 and refuses a precision off by more than ``OUTPUT_TOLERANCE``.

Usage::

    errors, failures = check_modules(brain.modules, "bf16")  # failures: layers to run in fp32
"""

import torch

from ssl_ctc.cpu.kernels import KERNELS, KernelLinear
from ssl_ctc.precision import autocast

# Relative L2 error of one layer's reduced-precision output against fp32 on the check's random
# inputs above which its kernel counts as wrong on this CPU and the layer runs in fp32 (rounding
# alone gives about 0.3 % in bf16 and 1-2 % in int8; the faulty kernels seen give 50-100 %).
MODULE_TOLERANCE = {"bf16": 0.02, "int8": 0.05}


# Relative L2 error of the probe's whole output against fp32 above which a reduced precision is
# refused and fp32 runs (WavLM Large: about 1.5 % in bf16, 4 % in int8).
OUTPUT_TOLERANCE = {"bf16": 0.05, "int8": 0.1}


CHECK_ROWS = 64  # rows (frames) of the random input of each checked layer


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

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Conv1d(4, 4, 3))
    >>> [name for name, _ in checked_layers(model, "int8")], len(checked_layers(model, "bf16"))
    (['0'], 2)
    """
    kinds = (torch.nn.Linear, torch.nn.Conv1d) if precision == "bf16" else (torch.nn.Linear,)
    return [(name, module) for name, module in modules.named_modules()
            if isinstance(module, kinds) and not isinstance(module, KernelLinear)]


def _check_input(layer, generator):
    """A random input of ``CHECK_ROWS`` frames for a linear layer or a 1-D convolution."""
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
        "bf16" (under autocast) or "int8".
    kernel_of : callable, optional
        ``linear -> kernel`` of the linear layers (default ``KERNELS[precision]``;
        ``CpuInferencePath`` passes its cached kernels); convolutions run under autocast.

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
    kernel_of = KERNELS[precision] if kernel_of is None else kernel_of
    tolerance = MODULE_TOLERANCE[precision]
    generator = torch.Generator().manual_seed(0)
    errors, failures = {}, {}
    with torch.inference_mode():
        for name, layer in checked_layers(modules, precision):
            inputs = _check_input(layer, generator)
            reference = layer(inputs)
            run = kernel_of(layer) if isinstance(layer, torch.nn.Linear) else layer
            with autocast("cpu", precision):
                output = run(inputs)
            errors[name] = relative_error(output, reference)
            if not errors[name] <= tolerance:  # NaN fails too
                failures[name] = (f"{precision} kernel off by {errors[name]:.1%} "
                                  f"(tolerance {tolerance:.0%}) on this CPU")
    return errors, failures


def fp32_forward(module):
    """A forward for ``module`` that runs it in fp32 (autocast off, inputs cast to float).

    Example
    -------
    >>> layer = torch.nn.Linear(4, 2)
    >>> with autocast("cpu", "bf16"):
    ...     fp32_forward(layer)(torch.randn(3, 4)).dtype
    torch.float32
    """

    def forward(*args, **kwargs):
        args = [arg.float() if torch.is_tensor(arg) and arg.is_floating_point() else arg
                for arg in args]
        with torch.autocast("cpu", enabled=False):
            return type(module).forward(module, *args, **kwargs)

    return forward


def probe_output(output):
    """What the output check compares: a Brain's posteriors (``infer_batch``), or the output.

    Posteriors rather than log-probs, whose large negative values of unlikely
    labels would hide an error in the likely ones. None when there is no tensor.

    Example
    -------
    >>> probe_output({"log_probs": torch.zeros(1, 2)})
    tensor([[1., 1.]])
    >>> probe_output((torch.ones(2), "extra")), probe_output("text")
    (tensor([1., 1.]), None)
    """
    if isinstance(output, dict) and "log_probs" in output:
        return output["log_probs"].float().exp()
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.float() if torch.is_tensor(output) else None
