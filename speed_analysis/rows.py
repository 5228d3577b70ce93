"""The rows the speed script times and what it computes from their times.

The round-robin's rows (``timed_entries``): every variant on the five tests'
path, the downsamplers alone, the CNN front end, a transformer layer's matmuls,
extra precision and thread settings, and the CPU paths compared. From their
median times: one record per variant (``variant_rows``), per extra setting
(``extra_rows``) and per compared CPU row (``compared_rows``).

Usage::

    run_of = path_runner(decide_cpu_inference(baseline.modules, ["fp32"]))
    entries = timed_entries(brains, run_of, front_end, hf_front_end, matmuls, "fp32", 2, [], [])
"""

import statistics
from pathlib import Path

import torch

from speed_analysis.brains import VARIANTS, variant_overrides
from speed_analysis.reference_workloads import downsample_only
from speed_analysis.report import ratio_gap
from ssl_ctc.benchmarking.measurement import TimedEntry
from ssl_ctc.precision import autocast


def path_runner(decisions):
    """``run_of(brain, precision)``: the brain's batch function on the five tests' path.

    ``run_of(brain, precision, batch_function)`` runs another function of the brain's
    modules on that path (the front end alone, with the kernels it runs in the forward).

    On CPU, ``brain.infer_batch`` on the path of the precision's decision
    (``decisions``: ``ssl_ctc.cpu.decision.decide_cpu_inference``'s), as ``cpu_inference``
    runs it (applied and undone around each batch: a class swap, the weights packed once;
    the decision's autocast); without ``decisions`` (GPU), ``brain.infer_batch``.
    """

    def run_of(brain, precision, batch_function=None):
        batch_function = batch_function or brain.infer_batch
        if decisions is None:
            return batch_function
        decision = decisions[precision]
        path = decision.path(brain.modules)

        def run_batch(wavs, wav_lens):
            with path.applied(), autocast("cpu", decision.precision):
                return batch_function(wavs, wav_lens)

        return run_batch

    return run_of


def timed_entries(brains, run_of, front_end, hf_front_end, matmul_batch, precision, threads,
                  extra, cpu_rows):
    """The round-robin's rows: variants, downsamplers alone, front end, matmul, extra settings.

    Arguments
    ---------
    brains : dict
        Name -> brain.
    run_of : callable
        ``run_of(brain, precision)`` -> batch function (``path_runner``).
    front_end : callable
        The baseline's CNN front end as a batch function.
    hf_front_end : callable
        The same with Hugging Face's convolution layers.
    matmul_batch : callable
        See ``layer_matmuls`` (``F.linear``).
    precision : str
        Precision of the main rows.
    threads : int
        Threads of the main rows.
    extra : list of tuple
        ``(precision, threads)`` of the additional baseline and matmul rows.
    cpu_rows : list of tuple
        ``(label, batch function, precision)``: CPU paths, engines and GEMMs compared.

    Returns
    -------
    list of TimedEntry
    """
    entries = [TimedEntry(name, run_of(brain, precision), precision, threads)
               for name, brain in brains.items()]
    entries += [TimedEntry(f"{name} downsampler", downsample_only(brain), precision, threads)
                for name, brain in brains.items()
                if "downsampler" in brain.modules
                and not isinstance(brain.modules.downsampler, torch.nn.Identity)]
    entries += [TimedEntry("front end", front_end, precision, threads),
                TimedEntry("front end, HF conv", hf_front_end, precision, threads),
                TimedEntry("matmul", matmul_batch, precision, threads)]
    for extra_precision, extra_threads in extra:
        suffix = f"{extra_precision} {extra_threads} threads"
        entries += [
            TimedEntry(f"baseline {suffix}", run_of(brains["baseline"], extra_precision),
                       extra_precision, extra_threads),
            TimedEntry(f"matmul {suffix}", matmul_batch, extra_precision, extra_threads),
        ]
    entries += [TimedEntry(label, run_batch, row_precision, threads)
                for label, run_batch, row_precision in cpu_rows]
    return entries


def encoder_differences(brain, decisions, batches):
    """Each decision's encoder output against Hugging Face's path on every batch (fp32 reference).

    Arguments
    ---------
    brain : ssl_ctc.SSLCTCBrain
        The baseline.
    decisions : dict
        Precision -> ``CpuDecision`` (``ssl_ctc.cpu.decision``).
    batches : list of tuple
        CPU batches.

    Returns
    -------
    dict
        Precision -> ``max_abs_diff`` and ``relative_error`` (Frobenius) of ``brain.encode``.
    """
    differences = {}
    with torch.inference_mode():
        references = [brain.encode(wavs, wav_lens) for wavs, wav_lens in batches]
        for precision, decision in decisions.items():
            with decision.path(brain.modules).applied(), autocast("cpu", decision.precision):
                outputs = [brain.encode(wavs, wav_lens).float() for wavs, wav_lens in batches]
            pairs = list(zip(outputs, references, strict=True))
            differences[precision] = {
                "max_abs_diff": max(float((output - reference).abs().max())
                                    for output, reference in pairs),
                "relative_error": max(float((output - reference).norm() / reference.norm())
                                      for output, reference in pairs),
            }
    return differences


def compared_rows(cpu_rows, medians, baseline_macs, matmul_macs, precision):
    """The compared CPU rows against the baseline on the five tests' path (``medians["baseline"]``).

    Returns
    -------
    dict
        ``rows``: label -> median seconds, GMAC/s and speed-up over the main
        baseline row (> 1: faster); ``best_exact_fp32_matmul_gmacs_per_s`` (F.linear
        or oneDNN, whichever is faster) and the baseline's fraction of it.

    Example
    -------
    >>> medians = {"baseline": 2.0, "matmul": 1.0, "baseline int8": 1.0}
    >>> compared = compared_rows([("baseline int8", None, "int8")], medians, 4e9, 2e9, "fp32")
    >>> compared["rows"]["baseline int8"]["speedup_vs_baseline"]
    2.0
    >>> compared["baseline_fraction_of_best_exact_fp32_matmul"]
    1.0
    """
    rows = {}
    for label, _, _ in [("baseline", None, precision), *cpu_rows]:
        macs = matmul_macs if label.startswith("matmul") else baseline_macs
        rows[label] = {"median_time_s": medians[label],
                       "gmacs_per_s": macs / medians[label] / 1e9,
                       "speedup_vs_baseline": medians["baseline"] / medians[label]}
    exact = [medians[label] for label in ("matmul", "matmul onednn") if label in medians]
    best = matmul_macs / min(exact) / 1e9
    return {"rows": rows, "main_precision": precision,
            "best_exact_fp32_matmul_gmacs_per_s": best,
            "baseline_fraction_of_best_exact_fp32_matmul": rows["baseline"]["gmacs_per_s"] / best}


def variant_rows(brains, macs, times, cpu_times):
    """One record per variant: times, ratios to the baseline, GMACs, GMAC/s.

    Arguments
    ---------
    brains : dict
        Name -> brain.
    macs : dict
        Name -> MACs over the batches.
    times : dict
        Row label -> wall seconds per repeat (``round_robin``); includes "matmul".
    cpu_times : dict
        Row label -> process CPU seconds per repeat.

    Returns
    -------
    list of dict
    """
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    cpu_medians = {label: statistics.median(seconds) for label, seconds in cpu_times.items()}
    matmul_macs = macs["matmul"]
    rows = []
    for name, brain in brains.items():
        tags = brain.experiment_tags()
        gmacs, seconds = macs[name] / 1e9, medians[name]
        downsampler = f"{name} downsampler"
        row = {
            "name": name,
            "recipe_name": tags["name"],
            "hparams_file": str(Path(VARIANTS[name].recipe[1]).relative_to("hparams")),
            "overrides": variant_overrides(VARIANTS[name]),
            "layers": tags["layers"],
            "factor": tags["factor"],
            "times_s": times[name],
            "median_time_s": seconds,
            "time_ratio": seconds / medians["baseline"],
            "cpu_times_s": cpu_times[name],
            "median_cpu_time_s": cpu_medians[name],
            "cpu_time_ratio": cpu_medians[name] / cpu_medians["baseline"],
            "gmacs": gmacs,
            "gmacs_ratio": macs[name] / macs["baseline"],
            "gmacs_per_s": gmacs / seconds,
            "fraction_of_matmul": macs[name] / seconds / (matmul_macs / medians["matmul"]),
            "fraction_of_matmul_cpu": (macs[name] / cpu_medians[name]
                                       / (matmul_macs / cpu_medians["matmul"])),
            "downsampler_times_s": times.get(downsampler),
            "downsampler_share": (medians[downsampler] / seconds if downsampler in medians
                                  else None),
        }
        row["ratio_gap"] = ratio_gap(row["time_ratio"], row["gmacs_ratio"])
        row["cpu_ratio_gap"] = ratio_gap(row["cpu_time_ratio"], row["gmacs_ratio"])
        rows.append(row)
    return rows


def extra_rows(extra, times, cpu_times, baseline_macs, matmul_macs, precision, threads):
    """One record per extra ``(precision, threads)`` setting: its baseline and matmul times.

    Arguments
    ---------
    extra : list of tuple
        ``(precision, threads)`` of the additional rows (``timed_entries``).
    times, cpu_times : dict
        Row label -> wall and process CPU seconds per repeat.
    baseline_macs, matmul_macs : int
        MACs of the baseline and of the matmul row over the batches.
    precision : str
        Precision of the main rows.
    threads : int
        Threads of the main rows.

    Returns
    -------
    list of dict
        Times, GMAC/s and the ratios to the main setting's baseline and matmul rows.

    Example
    -------
    >>> times = {"baseline": [2.0], "matmul": [1.0], "baseline fp32 1 threads": [3.0],
    ...          "matmul fp32 1 threads": [2.0]}
    >>> rows = extra_rows([("fp32", 1)], times, times, 6e9, 2e9, "int8", 2)
    >>> rows[0]["time_vs_main"], rows[0]["comparison"]
    (1.5, 'int8 2 threads is x1.50 as fast (matmul x2.00)')
    """
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    rows = []
    for extra_precision, extra_threads in extra:
        suffix = f"{extra_precision} {extra_threads} threads"
        model_ratio = medians[f"baseline {suffix}"] / medians["baseline"]
        matmul_ratio = medians[f"matmul {suffix}"] / medians["matmul"]
        rows.append({
            "label": f"baseline {suffix}", "precision": extra_precision,
            "threads": extra_threads, "times_s": times[f"baseline {suffix}"],
            "cpu_times_s": cpu_times[f"baseline {suffix}"],
            "median_time_s": medians[f"baseline {suffix}"],
            "gmacs_per_s": baseline_macs / medians[f"baseline {suffix}"] / 1e9,
            "matmul_times_s": times[f"matmul {suffix}"],
            "matmul_gmacs_per_s": matmul_macs / medians[f"matmul {suffix}"] / 1e9,
            "time_vs_main": model_ratio, "matmul_time_vs_main": matmul_ratio,
            "comparison": (f"{precision} {threads} threads is x{model_ratio:.2f} as fast "
                           f"(matmul x{matmul_ratio:.2f})"),
        })
    return rows
