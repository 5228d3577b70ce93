"""Deciding CPU inference: the one decision that the five tests, transcription and the speed
script run, per precision (kernels, front end, the reduced-precision check and its fallbacks).

``decide_cpu_inference`` decides for ``modules`` in one or several precisions (the speed
script compares several; the five tests and transcription take one); ``cpu_inference``
decides for one precision and applies that decision (``ssl_ctc.cpu.path``) for a block.
Every ``nn.Linear`` of the modules (encoder projections, feed-forward, feature projection,
the head) runs through a kernel chosen for this machine (``ssl_ctc.cpu.kernels``), WavLM's
attention through ``FastWavLMAttention`` (``ssl_ctc.cpu.attention``) and the CNN front end
the faster way (``ssl_ctc.cpu.front_end.choose_front_end``). On other devices, with
gradients enabled (outside ``torch.no_grad`` / ``torch.inference_mode``) or under autocast
the original ``F.linear`` runs. Precisions:

- ``"fp32"``: the fastest exact backend (``"auto"`` measures ``aten`` against
  ``onednn`` at the model's widest linear layer; outputs within 1e-4);
  ``"auto"`` also measures the CNN front end as channels-last products
  (``ssl_ctc.cpu.front_end``) against Hugging Face's convolutions and runs the faster;
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
whole output is off is refused (fp32 runs). The decision records the fallbacks and why.

Deciding (kernel choice, packing, check) takes seconds; a ``CpuDecisions`` made by the
caller keeps each model's decisions for the process, so that the five tests decide once per
model, precision and backend (anew when the model's weights change). Without one, every
call decides anew.

Usage::

    decisions = CpuDecisions()  # the caller's: the five tests keep one per experiment
    with cpu_inference(brain.modules, "auto", probe=probe, decisions=decisions) as decision:
        output = brain.infer_batch(wavs, wav_lens)
    decision.record()  # {"cpu_backend": "onednn", "requested_precision": "auto", ...}
    by_precision = decide_cpu_inference(brain.modules, ["fp32", "int8"], probe=probe)
"""

import collections
import contextlib
import dataclasses
import time
import weakref

import torch

from ssl_ctc.cpu.allocator import allocator_in_use
from ssl_ctc.cpu.check import MODULE_TOLERANCE, OUTPUT_TOLERANCE, probe_output, relative_error
from ssl_ctc.cpu.front_end import choose_front_end, front_end_precision, matmul_front_ends
from ssl_ctc.cpu.kernels import (
    FP32_BACKENDS,
    PROBE_REPEATS,
    choose_backend,
    int8_implementation,
    median_seconds,
    plain_linears,
    usable_backends,
)
from ssl_ctc.cpu.machine import BF16_INSTRUCTIONS, cpu_flags, has_bf16_instructions
from ssl_ctc.cpu.path import CpuInferencePath, HuggingFacePath, choose_path
from ssl_ctc.precision import CPU_PRECISIONS, autocast


class CpuChoices:
    """What the measurements chose, per precision, for the decisions of one call; their paths.

    The kernel and front end of each precision and the fp32 path; the paths it gives
    (``path``) share one cache of packed weights.

    Arguments
    ---------
    fp32_backend : str
        Kernel of the fp32 linear layers (see ``FP32_BACKENDS``).
    front_ends : dict, optional
        Precision -> CNN front end (see ``CpuInferencePath``); "matmul" where absent.
    measurements : dict, optional
        What the choices measured (``measured``).
    bf16_backend : str
        Kernel of the bf16 linear layers (see ``BF16_BACKENDS``).
    fp32_path : str
        "recipe", or "hugging_face" where the model measured faster on its own layers in
        fp32 (``choose_path``): fp32 then runs ``HuggingFacePath``.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    >>> choices = CpuChoices("onednn")
    >>> choices.path(model, "fp32").backend, choices.path(model, "int8").backend
    ('onednn', 'int8')
    >>> choices.kernel("bf16")
    'bf16'
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
    def measured(cls, modules, precisions, backend="auto", probe=None):
        """Measure on ``modules`` the fp32 and bf16 kernels and, per precision, the front end.

        Arguments
        ---------
        modules : torch.nn.Module
            The modules decided for (the speed script's: its baseline).
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
        CpuChoices
            With ``measurements``: ``fp32_backend_gmacs_per_s``, ``front_end_seconds`` and,
            with bf16, ``bf16_backend_gmacs_per_s``.

        Example
        -------
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
        >>> choices = CpuChoices.measured(model, ["int8"])
        >>> choices.front_ends, sorted(choices.measurements)
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
        chosen = cls(fp32_backend, {}, measurements, bf16_backend)
        measured = {}  # once per precision the front end runs in (int8's is fp32's)
        for precision in ("fp32", *precisions):
            runs_as = front_end_precision(precision)
            if runs_as not in measured:
                measured[runs_as] = choose_front_end(modules, runs_as,
                                                     conv_backend=chosen.conv_kernel(runs_as))
        names = dict.fromkeys(("fp32", *precisions))
        chosen.front_ends = {name: measured[front_end_precision(name)][0] for name in names}
        measurements["front_end_seconds"] = {name: measured[front_end_precision(name)][1]
                                             for name in names}
        if probe is not None and "fp32" in precisions:
            chosen.fp32_path, measurements["path_seconds"] = choose_path(
                modules, chosen.path(modules, "fp32"), probe)
        return chosen

    def kernel(self, precision):
        """Kernel of the linear layers in ``precision`` (a key of ``KERNELS``, or
        "hugging_face" for ``HuggingFacePath``)."""
        if precision == "fp32" and self.fp32_path == "hugging_face":
            return "hugging_face"
        return {"fp32": self.fp32_backend, "bf16": self.bf16_backend, "int8": "int8"}[precision]

    def conv_kernel(self, precision):
        """Kernel of the matmul front end's products in ``precision``: the fp32 backend, or None
        where the front end runs in bf16 (autocast runs them; see ``front_end_precision``)."""
        return None if front_end_precision(precision) == "bf16" else self.fp32_backend

    def path(self, modules, precision, fp32_layers=()):
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


@dataclasses.dataclass
class CpuDecision:
    """What runs on CPU in one precision, and why (for the records): ``decide_cpu_inference``'s.

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
    choices : CpuChoices, optional
        The kernels and front ends chosen (their packed weights); not part of the record.
    fp32_layers : tuple of str
        Layers that run in fp32 in ``precision`` (the check's fallbacks).
    setup_time_s : float
        Seconds the decision took (measuring, packing, checking).
    reused : bool
        Whether this use took a decision made earlier in the process (``CpuDecisions``).
    """

    precision: str
    backend: str
    requested_precision: str
    requested_backend: str
    measurements: dict
    front_end: str | None = None
    fallbacks: dict = dataclasses.field(default_factory=dict)
    check: dict = dataclasses.field(default_factory=dict)
    choices: object = dataclasses.field(default=None, repr=False)
    fp32_layers: tuple = ()
    setup_time_s: float = 0.0
    reused: bool = False

    def record(self):
        """Fields for a benchmark record (the processor's flags included).

        The precision that ran is the record's own ``precision`` field, not repeated here.

        Example
        -------
        >>> decision = CpuDecision("fp32", "onednn", "auto", "auto", {})
        >>> record = decision.record()
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

    def path(self, modules):
        """The path that runs this decision on ``modules`` (those decided for, or others with
        the same layers, such as the speed script's variants: fp32 layers they lack are left
        out), its weights packed once per ``choices``."""
        names = dict(modules.named_modules())
        return self.choices.path(modules, self.precision,
                                 [name for name in self.fp32_layers if name in names])


def _probe_seconds(probe, path, precision, repeats=PROBE_REPEATS):
    """Median seconds of ``probe()`` on a path, in a precision (one untimed call first)."""
    with path.applied(), torch.inference_mode(), autocast("cpu", precision):
        return median_seconds(probe, repeats)


def weights_fingerprint(modules):
    """What a decision depends on in ``modules``: each parameter, its shape, dtype and version
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


class CpuDecisions:
    """The CPU decisions of a program, one per model, precision and backend, made once.

    The kernel choice and the reduced-precision check run the first time a model is
    asked for in a precision; later uses take that decision (``reused`` in its record)
    while the model's weights are unchanged (``weights_fingerprint``). The caller owns
    it: nothing is kept between programs or callers that do not share one.

    Example
    -------
    >>> decisions = CpuDecisions()
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    >>> first = decide_cpu_inference(model, ["fp32"], "aten", decisions=decisions)["fp32"]
    >>> second = decide_cpu_inference(model, ["fp32"], "aten", decisions=decisions)["fp32"]
    >>> first.reused, second.reused, second.choices is first.choices
    (False, True, True)
    """

    def __init__(self):
        self._decisions = {}

    def kept(self, modules, precision, backend):
        """The decision made earlier for ``modules`` (weights unchanged), marked reused; or None."""
        kept = self._decisions.get((id(modules), precision, backend))
        if kept is not None and kept[0]() is modules and kept[1] == weights_fingerprint(modules):
            return dataclasses.replace(kept[2], reused=True)
        return None

    def keep(self, modules, precision, backend, decision):
        """Keep ``decision`` of ``modules`` in ``precision`` (as asked) for later uses."""
        self._decisions[(id(modules), precision, backend)] = (
            weakref.ref(modules), weights_fingerprint(modules), decision)


@contextlib.contextmanager
def cpu_inference(modules, precision="fp32", backend="auto", probe=None, decisions=None):
    """Run CPU inference of ``modules`` in ``precision`` as ``decide_cpu_inference`` decides.

    Arguments
    ---------
    modules : torch.nn.Module
        The modules that inference runs (their ``nn.Linear`` and WavLM
        attention instances are switched for the block, then restored).
    precision : str
        One of ``CPU_PRECISIONS``; "bf16" enters bf16 autocast for the block.
    backend, probe, decisions
        See ``decide_cpu_inference``.

    Yields
    ------
    CpuDecision

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> inputs = torch.randn(4, 8)
    >>> with torch.inference_mode(), cpu_inference(model, "fp32") as decision:
    ...     fast = model(inputs)
    >>> torch.allclose(fast, model(inputs), atol=1e-5), decision.backend in FP32_BACKENDS
    (True, True)
    """
    decision = decide_cpu_inference(modules, [precision], backend, probe, decisions)[precision]
    with decision.path(modules).applied(), autocast("cpu", decision.precision):
        yield decision


def decide_cpu_inference(modules, precisions, backend="auto", probe=None, decisions=None):
    """Decide the CPU inference of ``modules`` in each of ``precisions``: the one CPU decision.

    The precisions decided together share the measurements (one kernel choice per
    precision, one front-end choice per precision) and one cache of packed weights.

    Arguments
    ---------
    modules : torch.nn.Module
        The modules that inference runs.
    precisions : list of str
        Each one of ``CPU_PRECISIONS``.
    backend : str
        fp32 kernel: "auto" (measured, the bf16 kernel and the CNN front end too:
        ``choose_backend``, ``choose_front_end``), "aten" or "onednn" (with the matmul
        front end; bf16 then runs ``F.linear`` on bf16 weights); int8 ignores it.
    probe : callable, optional
        ``probe()`` runs one representative forward; needed by ``"auto"``
        precision on processors with bf16 instructions.
    decisions : CpuDecisions, optional
        Where decisions are kept for later calls over the same modules; None decides anew.

    Returns
    -------
    dict
        Precision (as asked) -> ``CpuDecision``: the kernels (``choices``, weights packed on
        first use), the layers left in fp32 and the seconds the decision took.

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    >>> decided = decide_cpu_inference(model, ["fp32", "int8"])
    >>> decided["fp32"].backend in FP32_BACKENDS, decided["int8"].backend
    (True, 'int8')
    >>> decided["fp32"].choices is decided["int8"].choices
    True
    """
    precisions = list(dict.fromkeys(precisions))
    for precision in precisions:
        if precision not in CPU_PRECISIONS:
            raise ValueError(f"unknown CPU precision {precision!r} "
                             f"(expected one of {CPU_PRECISIONS})")
    if backend not in ("auto", *FP32_BACKENDS):
        raise ValueError(f"unknown CPU backend {backend!r} (expected auto or {FP32_BACKENDS})")
    if backend != "auto" and backend not in usable_backends("fp32"):
        raise ValueError(f"CPU backend {backend!r} does not work in torch {torch.__version__} "
                         "(its operators are missing or disagree with F.linear): use aten or auto")
    kept = {} if decisions is None else {
        precision: decisions.kept(modules, precision, backend) for precision in precisions}
    missing = [precision for precision in precisions if kept.get(precision) is None]
    made = _decide(modules, missing, backend, probe) if missing else {}
    for precision, decision in made.items():
        if decisions is not None:
            decisions.keep(modules, precision, backend, decision)
    return {precision: made.get(precision) or kept[precision] for precision in precisions}


def _auto_candidates(probe):
    """The precisions ``"auto"`` measures, and why only fp32 where that is all (or None)."""
    if not has_bf16_instructions():
        return ["fp32"], f"fp32: no {' / '.join(BF16_INSTRUCTIONS)} on this CPU"
    if probe is None:
        return ["fp32"], "fp32: no probe to measure and check bf16 with"
    return ["fp32", "bf16"], None


def _decide(modules, precisions, backend, probe):
    """``decide_cpu_inference`` without the kept decisions: measure, check, decide."""
    start = time.perf_counter()
    auto_candidates, auto = _auto_candidates(probe) if "auto" in precisions else ([], None)
    candidates = [name for precision in precisions
                  for name in (auto_candidates if precision == "auto" else [precision])]
    choices = CpuChoices.measured(modules, list(dict.fromkeys(candidates)), backend, probe)
    checked = {}  # reduced precision -> (fallbacks, check figures), checked once
    made = {precision: _decide_precision(modules, precision, backend, probe, choices, checked,
                                         auto_candidates, auto)
            for precision in precisions}
    seconds = time.perf_counter() - start
    return {precision: dataclasses.replace(decision, setup_time_s=seconds)
            for precision, decision in made.items()}


def _decide_precision(modules, precision, backend, probe, choices, checked, auto_candidates,
                      auto):
    """One ``CpuDecision`` on ``choices``: the reduced precision's check, ``"auto"``'s probe."""
    chosen = precision
    measurements = dict(choices.measurements)
    if precision == "auto":
        chosen = auto_candidates[-1]
        if auto is not None:
            measurements["auto"] = auto
    fallbacks, check = {}, {}
    if chosen != "fp32":
        if chosen not in checked:
            checked[chosen] = _check_precision(modules, chosen, choices, probe)
        fallbacks, check = (dict(figures) for figures in checked[chosen])
        if "model" in fallbacks:
            chosen = "fp32"
    if precision == "auto" and chosen == "bf16":
        seconds = {"fp32": _probe_seconds(probe, choices.path(modules, "fp32"), "fp32"),
                   "bf16": _probe_seconds(probe, choices.path(modules, "bf16", fallbacks),
                                          "bf16")}
        measurements["probe_seconds"] = seconds
        chosen = min(seconds, key=seconds.get)
    front_end = choices.front_end(chosen) if matmul_front_ends(modules) else None
    front_end_seconds = measurements.pop("front_end_seconds", {}).get(chosen)
    if front_end_seconds:  # the chosen precision's (none without a front end to choose)
        measurements["front_end_seconds"] = front_end_seconds
    fp32_layers = () if chosen == "fp32" else tuple(fallbacks)
    return CpuDecision(chosen, choices.kernel(chosen), precision, backend, measurements,
                       front_end, fallbacks, check, choices, fp32_layers)


def _check_precision(modules, precision, choices, probe):
    """Layer check, then (with a probe) the output check of ``precision``: fallbacks, figures.

    Fallbacks name layers that run in fp32, or ``"model"`` when the whole output
    is off beyond ``OUTPUT_TOLERANCE`` (the precision is then refused).
    """
    errors, fallbacks = choices.path(modules, precision).check(precision)
    check = {"layers_checked": len(errors),
             "largest_layer_error": max(errors.values(), default=0.0),
             "layer_tolerance": MODULE_TOLERANCE[precision],
             "layer_precisions": layer_precisions(modules, errors, fallbacks, precision)}
    if probe is None:
        return fallbacks, check
    with torch.inference_mode():
        with choices.path(modules, "fp32").applied():
            reference = probe_output(probe())
        with choices.path(modules, precision, fallbacks).applied(), autocast("cpu", precision):
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
