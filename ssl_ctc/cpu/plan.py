"""CPU inference at the machine's limit: packed fp32, bf16 or int8 linear layers, same weights.

``cpu_inference`` runs every ``nn.Linear`` of the given modules (encoder
projections, feed-forward, feature projection, the head) through a kernel chosen
for this machine (``ssl_ctc.cpu.kernels``), WavLM's attention through
``FastWavLMAttention`` (``ssl_ctc.cpu.attention``) and the CNN front end the
faster way (``ssl_ctc.cpu.path.choose_front_end``). On other devices, with
gradients enabled (outside ``torch.no_grad`` / ``torch.inference_mode``) or
under autocast the original ``F.linear`` runs. Precisions:

- ``"fp32"``: the fastest exact backend (``"auto"`` measures ``aten`` against
  ``onednn`` at the model's widest linear layer; outputs within 1e-4);
  ``"auto"`` also measures the CNN front end as channels-last products
  (``ssl_ctc.front_end``) against Hugging Face's convolutions and runs the faster;
  with a ``probe``, the whole model on that path is then timed against Hugging Face's
  own layers (``choose_path``: on an AVX2 EPYC without AVX-512 these won) and the
  faster runs (``backend`` "hugging_face");
- ``"bf16"``: bf16 autocast for the block (fast only with avx512_bf16 / AMX), the
  linear layers on bf16 weights cast once (``"auto"`` measures ``F.linear`` against
  oneDNN's product with the weights packed once, ``onednn_bf16``);
- ``"int8"``: dynamic int8 (fbgemm / x86 engine) of every linear layer,
  per-output-channel weight scales;
- ``"auto"``: bf16 where the processor has bf16 instructions, the check passes
  and a short measurement (``probe``) shows it faster than fp32, fp32 elsewhere.

A reduced precision is checked first (``ssl_ctc.cpu.check``): layers whose
kernel is wrong on this CPU run in fp32, and with a ``probe`` a precision whose
whole output is off is refused (fp32 runs). The plan records the fallbacks and why.

Deciding (``plan_cpu_inference``: kernel choice, packing, check) takes seconds; a
``CpuPlans`` made by the caller keeps each model's plan for the process, so that
the five tests decide once per model, precision and backend (a plan is made again
when the model's weights change). Without one, every ``cpu_inference`` decides anew.

Usage::

    plans = CpuPlans()  # the caller's: the five tests keep one per experiment
    with cpu_inference(brain.modules, "auto", probe=probe, plans=plans) as plan:
        output = brain.infer_batch(wavs, wav_lens)
    plan.record()  # {"cpu_backend": "onednn", "requested_precision": "auto", ...}
"""

import collections
import contextlib
import dataclasses
import time
import weakref

import torch

from ssl_ctc.cpu.allocator import allocator_in_use
from ssl_ctc.cpu.check import MODULE_TOLERANCE, OUTPUT_TOLERANCE, probe_output, relative_error
from ssl_ctc.cpu.kernels import (
    FP32_BACKENDS,
    PROBE_REPEATS,
    int8_implementation,
    median_seconds,
    usable_backends,
)
from ssl_ctc.cpu.machine import BF16_INSTRUCTIONS, cpu_flags, has_bf16_instructions
from ssl_ctc.cpu.path import CpuPaths, matmul_front_ends
from ssl_ctc.precision import CPU_PRECISIONS, autocast


@dataclasses.dataclass
class CpuInferencePlan:
    """What ``cpu_inference`` runs, and why (for the records).

    Arguments
    ---------
    precision : str
        "fp32", "bf16" or "int8" (``"auto"`` resolved).
    backend : str
        Kernel of the linear layers ("aten", "onednn", "bf16", "onednn_bf16", "int8"), or
        "hugging_face": in fp32 the model measured faster on Hugging Face's own layers.
    requested_precision, requested_backend : str
        As asked.
    measurements : dict
        What the choices measured (GMAC/s by backend, probe seconds by precision,
        front-end seconds).
    front_end : str or None
        CNN front end that runs (one of ``FRONT_ENDS``); None when the modules have
        no ``MatmulFeatureEncoder`` (their own front end runs, if any).
    fallbacks : dict
        Layer name -> why it runs in fp32 (``check_modules``), or the whole model
        -> why the requested precision was refused.
    check : dict
        The check's figures: largest layer error, tolerances, the probe output's error.
    paths : CpuPaths, optional
        The kernels chosen (their packed weights); not part of the record.
    fp32_layers : tuple of str
        Layers that run in fp32 in ``precision`` (the check's fallbacks).
    setup_time_s : float
        Seconds the decision took (measuring, packing, checking).
    reused : bool
        Whether this use took a plan made earlier in the process (``CpuPlans``).
    """

    precision: str
    backend: str
    requested_precision: str
    requested_backend: str
    measurements: dict
    front_end: str | None = None
    fallbacks: dict = dataclasses.field(default_factory=dict)
    check: dict = dataclasses.field(default_factory=dict)
    paths: object = dataclasses.field(default=None, repr=False)
    fp32_layers: tuple = ()
    setup_time_s: float = 0.0
    reused: bool = False

    def record(self):
        """Fields for a benchmark record (the processor's flags included).

        The precision that ran is the record's own ``precision`` field, not repeated here.

        Example
        -------
        >>> plan = CpuInferencePlan("fp32", "onednn", "auto", "auto", {})
        >>> record = plan.record()
        >>> record["requested_precision"], record["cpu_front_end"], "cpu_precision" in record
        ('auto', None, False)
        """
        int8 = {"cpu_int8_implementation": int8_implementation()} if self.backend == "int8" else {}
        return {**int8, "cpu_backend": self.backend, "cpu_allocator": allocator_in_use(),
                "cpu_plan_setup_time_s": self.setup_time_s, "cpu_plan_reused": self.reused,
                "requested_precision": self.requested_precision,
                "cpu_requested_backend": self.requested_backend,
                "cpu_front_end": self.front_end,
                "cpu_fp32_fallbacks": self.fallbacks, "cpu_precision_check": self.check,
                "cpu_choice_measurements": self.measurements, "cpu_flags": cpu_flags()}


def _probe_seconds(probe, path, precision, repeats=PROBE_REPEATS):
    """Median seconds of ``probe()`` on a path, in a precision (one untimed call first)."""
    with path.applied(), torch.inference_mode(), autocast("cpu", precision):
        return median_seconds(probe, repeats)


def weights_fingerprint(modules):
    """What a plan depends on in ``modules``: each parameter, its shape, dtype and version
    (an in-place update, such as an optimizer step or ``load_state_dict``, bumps it).

    Example
    -------
    >>> layer = torch.nn.Linear(2, 2)
    >>> before = weights_fingerprint(layer)
    >>> with torch.no_grad():
    ...     _ = layer.weight.mul_(2)
    >>> before == weights_fingerprint(layer)
    False
    """
    return tuple((id(parameter), parameter._version, parameter.dtype, tuple(parameter.shape))
                 for parameter in modules.parameters())


class CpuPlans:
    """The CPU plans of a program, one per model, precision and backend, made once.

    The kernel choice and the reduced-precision check run the first time a model is
    asked for in a precision; later uses take that plan (``reused`` in its record)
    while the model's weights are unchanged (``weights_fingerprint``). The caller owns
    it: nothing is kept between programs or callers that do not share one.

    Example
    -------
    >>> plans = CpuPlans()
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    >>> first = plans.plan(model, "fp32", "aten")
    >>> second = plans.plan(model, "fp32", "aten")
    >>> first.reused, second.reused, second.paths is first.paths
    (False, True, True)
    """

    def __init__(self):
        self._plans = {}

    def plan(self, modules, precision, backend="auto", probe=None):
        """The plan of ``modules`` (see ``plan_cpu_inference``), made or taken from earlier."""
        key = (id(modules), precision, backend)
        fingerprint = weights_fingerprint(modules)
        kept = self._plans.get(key)
        if kept is not None and kept[0]() is modules and kept[1] == fingerprint:
            return dataclasses.replace(kept[2], reused=True)
        plan = plan_cpu_inference(modules, precision, backend, probe)
        self._plans[key] = (weakref.ref(modules), fingerprint, plan)
        return plan


@contextlib.contextmanager
def cpu_inference(modules, precision="fp32", backend="auto", probe=None, plans=None):
    """Run CPU inference of ``modules`` through the fastest path for ``precision``.

    Arguments
    ---------
    modules : torch.nn.Module
        The modules that inference runs (their ``nn.Linear`` and WavLM
        attention instances are switched for the block, then restored).
    precision : str
        One of ``CPU_PRECISIONS``; "bf16" enters bf16 autocast for the block.
    backend : str
        fp32 kernel: "auto" (measured, the bf16 kernel and the CNN front end too:
        ``choose_backend``, ``choose_front_end``), "aten" or "onednn" (with the matmul
        front end; bf16 then runs ``F.linear`` on bf16 weights); int8 ignores it.
    probe : callable, optional
        ``probe()`` runs one representative forward; needed by ``"auto"``
        precision on processors with bf16 instructions.
    plans : CpuPlans, optional
        Where the plan is kept for later blocks over the same modules; None decides anew.

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
    plan = (plan_cpu_inference(modules, precision, backend, probe) if plans is None
            else plans.plan(modules, precision, backend, probe))
    with plan.paths.of(modules, plan.precision, plan.fp32_layers).applied(), \
            autocast("cpu", plan.precision):
        yield plan


def plan_cpu_inference(modules, precision="fp32", backend="auto", probe=None):
    """Decide the CPU path of ``modules`` for ``precision`` (see ``cpu_inference``'s arguments).

    Returns
    -------
    CpuInferencePlan
        With the kernels (``paths``, weights packed on first use), the layers left in
        fp32 and the seconds the decision took.
    """
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"unknown CPU precision {precision!r} "
                         f"(expected one of {CPU_PRECISIONS})")
    if backend not in ("auto", *FP32_BACKENDS):
        raise ValueError(f"unknown CPU backend {backend!r} (expected auto or {FP32_BACKENDS})")
    if backend != "auto" and backend not in usable_backends("fp32"):
        raise ValueError(f"CPU backend {backend!r} does not work in torch {torch.__version__} "
                         "(its operators are missing or disagree with F.linear): use aten or auto")
    start = time.perf_counter()
    chosen, fallbacks, check, auto = precision, {}, {}, None
    if precision == "auto":
        chosen = "fp32"
        if not has_bf16_instructions():
            auto = f"fp32: no {' / '.join(BF16_INSTRUCTIONS)} on this CPU"
        elif probe is None:
            auto = "fp32: no probe to measure and check bf16 with"
        else:
            chosen = "bf16"
    candidates = ["fp32", "bf16"] if precision == "auto" and chosen == "bf16" else [chosen]
    paths = CpuPaths.choose(modules, candidates, backend, probe)
    measurements = dict(paths.measurements)
    if auto is not None:
        measurements["auto"] = auto
    if chosen != "fp32":
        fallbacks, check = _check_precision(modules, chosen, paths, probe)
        if "model" in fallbacks:
            chosen = "fp32"
    if precision == "auto" and chosen == "bf16":
        seconds = {"fp32": _probe_seconds(probe, paths.of(modules, "fp32"), "fp32"),
                   "bf16": _probe_seconds(probe, paths.of(modules, "bf16", fallbacks), "bf16")}
        measurements["probe_seconds"] = seconds
        chosen = min(seconds, key=seconds.get)
    front_end = paths.front_end(chosen) if matmul_front_ends(modules) else None
    front_end_seconds = measurements.pop("front_end_seconds", {}).get(chosen)
    if front_end_seconds:  # the chosen precision's (none without a front end to choose)
        measurements["front_end_seconds"] = front_end_seconds
    fp32_layers = () if chosen == "fp32" else tuple(fallbacks)
    return CpuInferencePlan(chosen, paths.kernel(chosen), precision, backend, measurements,
                            front_end, fallbacks, check, paths, fp32_layers,
                            setup_time_s=time.perf_counter() - start)


def _check_precision(modules, precision, paths, probe):
    """Layer check, then (with a probe) the output check of ``precision``: fallbacks, figures.

    Fallbacks name layers that run in fp32, or ``"model"`` when the whole output
    is off beyond ``OUTPUT_TOLERANCE`` (the precision is then refused).
    """
    errors, fallbacks = paths.of(modules, precision).check(precision)
    check = {"layers_checked": len(errors),
             "largest_layer_error": max(errors.values(), default=0.0),
             "layer_tolerance": MODULE_TOLERANCE[precision],
             "layer_precisions": layer_precisions(modules, errors, fallbacks, precision)}
    if probe is None:
        return fallbacks, check
    with torch.inference_mode():
        with paths.of(modules, "fp32").applied():
            reference = probe_output(probe())
        with paths.of(modules, precision, fallbacks).applied(), autocast("cpu", precision):
            output = probe_output(probe())
    if reference is None or output is None:
        return fallbacks, check
    error = relative_error(output, reference)
    check.update(output_error=error, output_tolerance=OUTPUT_TOLERANCE[precision])
    if not error <= OUTPUT_TOLERANCE[precision]:
        fallbacks["model"] = (f"{precision} output off by {error:.1%} (tolerance "
                              f"{OUTPUT_TOLERANCE[precision]:.0%}) on the probe: fp32 runs")
    return fallbacks, check


def layer_precisions(modules, checked, fallbacks, precision):
    """Checked layers per class and the precision each runs in: ``{class: {precision: count}}``.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Conv1d(4, 4, 3),
    ...                             torch.nn.Conv1d(4, 4, 3))
    >>> layer_precisions(model, ["0", "1", "2"], {"2": "off"}, "bf16")
    {'Conv1d': {'bf16': 1, 'fp32': 1}, 'Linear': {'bf16': 1}}
    """
    named = dict(modules.named_modules())
    counts = collections.defaultdict(collections.Counter)
    for name in checked:
        kind = type(named[name]).__name__.removeprefix("Parametrized")  # weight norm's class
        counts[kind]["fp32" if name in fallbacks else precision] += 1
    return {kind: dict(sorted(counts[kind].items())) for kind in sorted(counts)}
