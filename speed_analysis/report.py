"""The speed script's targets, its ``speed.json`` and its printed report.

Usage::

    save_results(results, output_folder, complete=True)  # with the targets checked
    print_report(results)
"""

import json
import os
from pathlib import Path

from ssl_ctc.benchmarking.settings import PAPER_TEST_BATCH_SIZE as BATCH_SIZE
from ssl_ctc.files import write_atomically

RESULTS_JSON = "speed.json"


TARGETS = {
    "time_ratio_vs_gmacs_ratio": 0.10,  # |time ratio / GMACs ratio - 1|, every variant
    "fraction_of_matmul": 0.60,  # baseline GMAC/s over matmul GMAC/s, at least
    "fp32_path_speedup": 1.5,  # Hugging Face's path time over the CPU path's, at least
    "fp32_path_max_abs_diff": 1e-4,  # encoder outputs, CPU path vs Hugging Face's, at most
    "fraction_of_best_fp32_matmul": 0.60,  # against F.linear or oneDNN, the faster, at least
    "bf16_speedup": 2.0,  # fp32 CPU path time over bf16's, at least (bf16 CPUs)
    "int8_speedup": 1.8,  # fp32 CPU path time over int8's, at least
    # the five tests' greedy test's speed-up over Hugging Face's fp32 path, as a share of the
    # speed script's baseline row's (same precision, same run), at least
    "test_share_of_row_speedup": 0.85,
    "inference_path_overhead": 0.05,  # benchmark path over bare forward + argmax, at most
    "lm_overhead": 0.20,  # time with the LM over time without, minus 1, at most
}


# Fused multiply-add pipes per core assumed by the theoretical peak (Zen 2-4, Intel since Haswell).
FMA_PIPES_PER_CORE = 2


def theoretical_fp32_peak_gmacs(flags, threads, cpuinfo=Path("/proc/cpuinfo")):
    """fp32 GMAC/s peak: threads x SIMD lanes x FMA pipes x the clock /proc/cpuinfo reports.

    ``None`` where the vector width or the clock is unknown. The clock is the
    reported one (a VM's nominal clock; turbo and throttling differ).

    Example
    -------
    >>> peak = theoretical_fp32_peak_gmacs(["avx2", "fma"], 2)
    >>> peak is None or peak["gmacs_per_s"] > 0
    True
    """
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags and "fma" in flags else None
    megahertz = None
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("cpu MHz"):
                megahertz = float(line.split(":", 1)[1])
                break
    if lanes is None or megahertz is None:
        return None
    return {"gmacs_per_s": threads * lanes * FMA_PIPES_PER_CORE * megahertz / 1e3,
            "lanes": lanes, "fma_pipes_per_core": FMA_PIPES_PER_CORE, "mhz": megahertz,
            "threads": threads}


def cpu_path_targets(cpu_paths):
    """The CPU-path targets: fp32 speed-up and exactness, fraction of the best GEMM, bf16, int8.

    Example
    -------
    >>> rows = {"baseline": {"median_time_s": 1.0}, "baseline, HF path": {"median_time_s": 1.6},
    ...         "baseline int8": {"median_time_s": 0.5}}
    >>> cpu_paths = {"rows": rows, "main_precision": "fp32", "bf16_instructions": False,
    ...              "baseline_fraction_of_best_exact_fp32_matmul": 0.7,
    ...              "encoder_differences": {"fp32": {"max_abs_diff": 1e-5}}}
    >>> [(row["target"], row["met"]) for row in cpu_path_targets(cpu_paths)]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('fp32_path_speedup', True), ('fp32_path_max_abs_diff', True),
     ('fraction_of_best_fp32_matmul', True), ('bf16_speedup', None), ('int8_speedup', True)]
    """
    rows = cpu_paths["rows"]
    main = cpu_paths["main_precision"]

    def fp32_time():
        label = "baseline" if main == "fp32" else next(
            (label for label in rows if label.startswith("baseline fp32")), None)
        return None if label is None else rows[label]["median_time_s"]

    def speedup(label):
        reference = fp32_time()
        if reference is None or label not in rows:
            return None
        return reference / rows[label]["median_time_s"]

    precision_label = {name: "baseline" if main == name else f"baseline {name}"
                       for name in ("bf16", "int8")}
    fp32_reference = fp32_time()
    values = {
        "fp32_path_speedup": (None if fp32_reference is None
                              else rows["baseline, HF path"]["median_time_s"] / fp32_reference),
        "fp32_path_max_abs_diff": cpu_paths["encoder_differences"]["fp32"]["max_abs_diff"],
        "fraction_of_best_fp32_matmul": (
            cpu_paths["baseline_fraction_of_best_exact_fp32_matmul"] if main == "fp32" else None),
        "bf16_speedup": speedup(precision_label["bf16"]),
        "int8_speedup": speedup(precision_label["int8"]),
    }
    targets = []
    for key, value in values.items():
        at_most = key == "fp32_path_max_abs_diff"
        met = None if value is None else (value <= TARGETS[key] if at_most
                                          else value >= TARGETS[key])
        subject = "baseline"
        if key == "bf16_speedup" and not cpu_paths["bf16_instructions"]:
            subject = "no bf16 instructions"
        targets.append({"target": key, "subject": subject, "value": value, "cpu_value": None,
                        "limit": TARGETS[key], "met": met, "kind": "absolute"})
    return targets


def test_and_row_speedups(results):
    """The five tests' greedy test's speed-up over Hugging Face's fp32 path, the speed
    script's row's of the precision the test ran (the CPU path's kernels alone), and that
    row's label; None without both.

    A reduced precision that the tests' check refused (``ran_precision`` fp32) is compared
    with the fp32 row: the script's own rows time kernels without that check.

    Example
    -------
    >>> rows = {"baseline": {"median_time_s": 1.0}, "baseline, HF path": {"median_time_s": 2.0},
    ...         "baseline fp32": {"median_time_s": 1.6}}
    >>> path = {"speedup_vs_hugging_face_fp32": 1.8, "precision": "int8"}
    >>> test_and_row_speedups({"inference_path": path, "cpu_paths": {"rows": rows}})
    (1.8, 2.0, 'baseline')
    >>> path["ran_precision"] = "fp32"
    >>> test_and_row_speedups({"inference_path": path, "cpu_paths": {"rows": rows}})
    (1.8, 1.25, 'baseline fp32')
    """
    path, rows = results.get("inference_path"), (results.get("cpu_paths") or {}).get("rows")
    if not path or not rows or "speedup_vs_hugging_face_fp32" not in path:
        return None
    ran = path.get("ran_precision", path["precision"])
    label = "baseline" if ran == path["precision"] else f"baseline {ran}"
    if label not in rows:
        return None
    row = rows["baseline, HF path"]["median_time_s"] / rows[label]["median_time_s"]
    return path["speedup_vs_hugging_face_fp32"], row, label


def ratio_gap(time_ratio, gmacs_ratio):
    """Relative gap between a time ratio and a GMACs ratio (0 when time follows compute).

    Example
    -------
    >>> round(ratio_gap(0.55, 0.5), 3)
    0.1
    """
    return time_ratio / gmacs_ratio - 1


def check_targets(results):
    """Compare the measures with the issue's targets.

    Arguments
    ---------
    results : dict
        The ``speed.json`` content so far (``variants``, ``inference_path``, ``lm``).

    Returns
    -------
    list of dict
        ``target``, ``subject``, ``value`` (wall time), ``cpu_value`` (the same
        from process CPU time, where it applies), ``limit``, ``met`` (on wall
        time; None when not measured).

    Example
    -------
    >>> variants = [{"name": "baseline", "fraction_of_matmul": 0.7, "fraction_of_matmul_cpu": 0.7},
    ...             {"name": "SD2", "ratio_gap": 0.12, "cpu_ratio_gap": 0.05}]
    >>> results = {"variants": variants, "lm": None, "inference_path": {"overhead": 0.01}}
    >>> [(row["subject"], row["met"]) for row in check_targets(results)]
    [('SD2', False), ('baseline', True), ('inference path', True), ('LM', None),
     ('five tests', None)]
    """
    rows = [
        {"target": "time_ratio_vs_gmacs_ratio", "subject": variant["name"],
         "value": variant["ratio_gap"], "cpu_value": variant["cpu_ratio_gap"],
         "limit": TARGETS["time_ratio_vs_gmacs_ratio"],
         "met": abs(variant["ratio_gap"]) <= TARGETS["time_ratio_vs_gmacs_ratio"]}
        for variant in results["variants"]
        if variant["name"] != "baseline"
    ]
    baseline = results["variants"][0]
    fraction = baseline["fraction_of_matmul"]
    rows.append({"target": "fraction_of_matmul", "subject": "baseline", "value": fraction,
                 "cpu_value": baseline["fraction_of_matmul_cpu"],
                 "limit": TARGETS["fraction_of_matmul"],
                 "met": fraction >= TARGETS["fraction_of_matmul"]})
    for key, subject, section in (("inference_path_overhead", "inference path", "inference_path"),
                                  ("lm_overhead", "LM", "lm")):
        value = (results[section] or {}).get("overhead")
        path = results["inference_path"] or {}
        if section == "inference_path" and path.get("ran_precision", path.get("precision")) != \
                path.get("precision"):
            # the tests ran fp32 (check refused the precision), the bare forward did not
            value, subject = None, f"tests ran {path['ran_precision']}"
        rows.append({"target": key, "subject": subject, "value": value, "cpu_value": None,
                     "limit": TARGETS[key],
                     "met": None if value is None else value <= TARGETS[key]})
    if results.get("cpu_paths") and "rows" in results["cpu_paths"]:
        rows += cpu_path_targets(results["cpu_paths"])
    speedups = test_and_row_speedups(results)
    share = None if speedups is None else speedups[0] / speedups[1]
    rows.append({"target": "test_share_of_row_speedup",
                 "subject": "five tests" if speedups is None else f"five tests vs {speedups[2]}",
                 "value": share, "cpu_value": None, "limit": TARGETS["test_share_of_row_speedup"],
                 "met": None if share is None else share >= TARGETS["test_share_of_row_speedup"],
                 "kind": "absolute"})
    return rows


def save_results(results, output_folder, complete):
    """Add the load average and the targets; write ``speed.json`` atomically.

    Called after each phase (``complete`` False), so that an interrupted run
    keeps what it measured.

    Arguments
    ---------
    results : dict
        Updated in place.
    output_folder : Path
        Where ``speed.json`` goes (created if needed).
    complete : bool
        Whether every phase ran.

    Returns
    -------
    dict
        ``results``.
    """
    results["complete"] = complete
    results["load_average_after"] = os.getloadavg()
    results["targets"] = check_targets(results)
    output_folder.mkdir(parents=True, exist_ok=True)
    write_atomically(output_folder / RESULTS_JSON,
                     json.dumps(results, indent=2, default=str) + "\n")
    return results


def print_report(results):
    """Print the tables of a ``speed.json`` (the CPU's flags first)."""
    settings = results["settings"]
    cpu_paths = results.get("cpu_paths")
    if cpu_paths:
        flags = cpu_paths["flags"]
        print(f"\nCPU flags: {' '.join(flags['flags']) or 'none of the listed'}; torch "
              f"capability {flags['capability']}, quantized engine {flags['quantized_engine']}, "
              f"{flags['cores']} cores; bf16 instructions: "
              f"{'yes' if cpu_paths['bf16_instructions'] else 'no'}; C allocator: "
              f"{cpu_paths.get('allocator', 'not recorded')}")
    print(f"\n{settings['architecture']} ({results['encoder_parameters'] / 1e6:.1f} M parameters"
          f"{', tiny shapes' if settings['quick'] else ''}) on {results['device_name']}, "
          f"{settings['device']}, {settings['threads'][0]} threads, {settings['precision']}"
          f"{', compiled' if settings['compile'] else ''}; {settings['num_utterances']} "
          f"utterances, {results['audio_seconds']:.1f} s of audio in "
          f"{len(results['batches'])} sorted batches of {BATCH_SIZE} (padding "
          f"{100 * results['padding_fraction']:.1f} %); median of {settings['repeats']}; "
          f"load average {results['load_average_before'][0]:.1f} -> "
          f"{results['load_average_after'][0]:.1f}")
    header = (f"{'variant':<9}{'median s':>10}{'time ratio':>11}{'GMACs':>9}{'GMACs ratio':>12}"
              f"{'gap':>8}{'GMAC/s':>8}{'of matmul':>10}{'downsampler':>12}"
              f"{'CPU s':>9}{'CPU ratio':>10}{'CPU gap':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for row in results["variants"]:
        downsampler = row.get("downsampler_share")
        print(f"{row['name']:<9}{row['median_time_s']:>10.3f}{row['time_ratio']:>11.3f}"
              f"{row['gmacs']:>9.1f}{row['gmacs_ratio']:>12.3f}{100 * row['ratio_gap']:>+7.1f}%"
              f"{row['gmacs_per_s']:>8.1f}{100 * row['fraction_of_matmul']:>9.1f}%"
              + (f"{100 * downsampler:>11.1f}%" if downsampler is not None else f"{'-':>12}")
              + f"{row['median_cpu_time_s']:>9.2f}{row['cpu_time_ratio']:>10.3f}"
              f"{100 * row['cpu_ratio_gap']:>+8.1f}%")
    for row in results["extra_rows"]:
        print(f"{row['label']:<34} median {row['median_time_s']:.3f} s, "
              f"{row['gmacs_per_s']:.1f} GMAC/s; {row['comparison']}")
    matmul = results["matmul"]
    print(f"\nmatmul limit (F.linear, one layer's shapes at the baseline's frame counts, "
          f"{settings['precision']}): {matmul['gmacs_per_s']:.1f} GMAC/s; the baseline reaches "
          f"{100 * results['baseline_fraction_of_matmul']:.1f} % of it (on CPU time: "
          f"{100 * results['variants'][0]['fraction_of_matmul_cpu']:.1f} %)")
    front_end = results["front_end"]
    print(f"CNN front end of the baseline: {100 * front_end['share_of_baseline_time']:.1f} % of "
          f"its time for {100 * front_end['share_of_baseline_gmacs']:.1f} % of its MACs "
          f"({front_end['gmacs_per_s']:.1f} GMAC/s; Hugging Face's convolutions: "
          f"{front_end['hf_conv_gmacs_per_s']:.1f} GMAC/s, "
          f"x{front_end['hf_conv_median_time_s'] / front_end['median_time_s']:.2f} the time)")
    path = results["inference_path"]
    if path:
        print(f"inference path (five tests' greedy test) {path['path_median_s']:.3f} s "
              f"(forward {path['path_forward_median_s']:.3f}, data {path['path_data_median_s']:.3f}"
              f", decode {path['path_decode_median_s']:.3f}) vs bare forward + argmax "
              f"{path['bare_forward_median_s']:.3f} s: {100 * path['overhead']:+.1f} % "
              f"(forward alone {100 * path['forward_overhead']:+.1f} %); the model's own padding "
              f"mask alone: {100 * path['mask_overhead']:+.1f} % "
              f"({path['masked_forward_median_s']:.3f} s); the path vs the masked forward: "
              f"{100 * path['overhead_vs_masked']:+.1f} % (overheads: medians of ratios within a "
              f"repeat)")
        ran = path.get("ran_precision", path["precision"])
        if ran != path["precision"]:
            reasons = "; ".join(f"{where}: {why}" for where, why in
                                path.get("fp32_fallbacks", {}).items())
            print(f"five tests' greedy test: {path['precision']} asked, {ran} ran (the "
                  f"precision check refused it: {reasons})")
        speedups = test_and_row_speedups(results)
        if speedups is not None:
            test, row, label = speedups
            print(f"five tests' greedy test in {ran}: x{test:.2f} Hugging Face's fp32 path on "
                  f"the same batches; the speed script's '{label}' row: x{row:.2f} (the test "
                  f"keeps {test / row:.0%} of it; target >= "
                  f"{TARGETS['test_share_of_row_speedup']:.0%})")
    lm = results["lm"]
    if lm:
        print(f"LM (beam {lm['beam_width']}, alpha {lm['alpha']}, beta {lm['beta']}, "
              f"{lm['decode_workers']} workers): {lm['lm_median_s']:.3f} s vs greedy "
              f"{lm['greedy_median_s']:.3f} s: {100 * lm['overhead']:+.1f} % (beam search "
              f"{lm['beam_search_cpu_median_s']:.3f} s of CPU, waited {lm['lm_wait_median_s']:.3f}"
              f" s at the end)")
    if cpu_paths and "rows" in cpu_paths:
        _print_cpu_paths(cpu_paths)
    wer_change = results.get("wer_change") or {}
    for test_set, measures in wer_change.get("test_sets", {}).items():
        for precision, change in measures["changes"].items():
            print(f"{precision} (ran {measures[precision]['precision']}, "
                  f"{measures[precision]['cpu_backend']}) on {test_set}: WER "
                  f"{measures['fp32']['wer']:.2f} -> {measures[precision]['wer']:.2f} "
                  f"({change['wer_change']:+.2f}), CPU test time speed-up x{change['speedup']:.2f}")
    print("\ntargets (on wall time; CPU time in brackets):")
    for row in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        if row.get("kind") == "absolute":
            value = "-" if row["value"] is None else f"{row['value']:.3g}"
            print(f"  {row['target']:<28} {row['subject']:<20} {value:>9}  "
                  f"limit {row['limit']:g}  {verdict}")
            continue
        value = "-" if row["value"] is None else f"{100 * row['value']:+.1f} %"
        cpu_value = "" if row["cpu_value"] is None else f"({100 * row['cpu_value']:+.1f} %)"
        print(f"  {row['target']:<28} {row['subject']:<20} {value:>9} {cpu_value:>10}  "
              f"limit {100 * row['limit']:.0f} %  {verdict}")


def _print_cpu_paths(cpu_paths):
    """The CPU paths, engines and GEMM limits, side by side."""
    backends = []
    for precision in ("fp32", "bf16"):
        if f"{precision}_backend" not in cpu_paths:
            continue
        rates = cpu_paths.get(f"{precision}_backend_gmacs_per_s")
        measured = ("" if not rates else " (measured at start: " + ", ".join(
            f"{name} {rate:.1f}" for name, rate in rates.items()) + " GMAC/s)")
        backends.append(f"{precision} backend {cpu_paths[f'{precision}_backend']}{measured}")
    print(f"\nCPU paths (same batches, same round-robin); {'; '.join(backends)}; 'baseline' is "
          f"the five tests' path in {cpu_paths['main_precision']}:")
    if cpu_paths.get("path_seconds"):
        seconds = cpu_paths["path_seconds"]
        print(f"  fp32 path: {cpu_paths['fp32_path']} (whole model on the median batch: "
              + ", ".join(f"{name} {1000 * value:.0f} ms" for name, value in seconds.items())
              + ")")
    for precision, seconds in cpu_paths.get("front_end_seconds", {}).items():
        if seconds:
            print(f"  CNN front end in {precision}: {cpu_paths['front_ends'][precision]} (2 s "
                  "probe: " + ", ".join(f"{name} {value * 1000:.0f} ms"
                                        for name, value in seconds.items()) + ")")
    for label, row in cpu_paths["rows"].items():
        print(f"  {label:<28} median {row['median_time_s']:8.3f} s  {row['gmacs_per_s']:7.1f} "
              f"GMAC/s  x{row['speedup_vs_baseline']:.2f} the baseline's speed")
    for precision, difference in cpu_paths["encoder_differences"].items():
        print(f"  encoder output, {precision} path vs Hugging Face's: max abs diff "
              f"{difference['max_abs_diff']:.2e}, relative error "
              f"{difference['relative_error']:.2e}")
    onnx = cpu_paths.get("onnx")
    if onnx is not None:
        if "error" in onnx:
            print(f"  ONNX: {onnx['error']}")
        for name in ("fp32", "int8"):
            if name in onnx:
                print(f"  ONNX Runtime {name}: " + (onnx[name].get("error") or (
                    f"max abs log-prob diff from PyTorch fp32 "
                    f"{onnx[name]['max_abs_log_prob_diff']:.2e}")))
        for name in ("openvino fp32", "openvino default"):
            if name in onnx:
                print(f"  OpenVINO {name.split()[1]}: " + (onnx[name].get("error") or (
                    f"posteriors' relative error from PyTorch fp32 "
                    f"{onnx[name]['relative_error']:.2e}")))
    peak = cpu_paths.get("theoretical_fp32_peak")
    best = cpu_paths["best_exact_fp32_matmul_gmacs_per_s"]
    print(f"  best exact fp32 GEMM (F.linear or oneDNN packed) {best:.1f} GMAC/s; the baseline "
          f"reaches {100 * cpu_paths['baseline_fraction_of_best_exact_fp32_matmul']:.1f} % of it"
          + ("" if peak is None else
             f"; theoretical fp32 peak {peak['gmacs_per_s']:.0f} GMAC/s ({peak['threads']} "
             f"threads x {peak['lanes']} lanes x {peak['fma_pipes_per_core']} FMA pipes x "
             f"{peak['mhz']:.0f} MHz, assumed)"))
