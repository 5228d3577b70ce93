"""The speed script's targets and printed report.

Usage::

    results["targets"] = check_targets(results)
    print_report(results)
"""

from ssl_ctc.benchmark_settings import PAPER_TEST_BATCH_SIZE as BATCH_SIZE

TARGETS = {
    "time_ratio_vs_gmacs_ratio": 0.10,  # |time ratio / GMACs ratio - 1|, every variant
    "fraction_of_matmul": 0.60,  # baseline GMAC/s over matmul GMAC/s, at least
    "inference_path_overhead": 0.05,  # benchmark path over bare forward + argmax, at most
    "lm_overhead": 0.20,  # time with the LM over time without, minus 1, at most
}


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
    [('SD2', False), ('baseline', True), ('inference path', True), ('LM', None)]
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
        rows.append({"target": key, "subject": subject, "value": value, "cpu_value": None,
                     "limit": TARGETS[key],
                     "met": None if value is None else value <= TARGETS[key]})
    return rows


def print_report(results):
    """Print the tables of a ``speed.json``."""
    settings = results["settings"]
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
    lm = results["lm"]
    if lm:
        print(f"LM (beam {lm['beam_width']}, alpha {lm['alpha']}, beta {lm['beta']}, "
              f"{lm['decode_workers']} workers): {lm['lm_median_s']:.3f} s vs greedy "
              f"{lm['greedy_median_s']:.3f} s: {100 * lm['overhead']:+.1f} % (beam search "
              f"{lm['beam_search_cpu_median_s']:.3f} s of CPU, waited {lm['lm_wait_median_s']:.3f}"
              f" s at the end)")
    for test_set, change in (results.get("wer_change") or {}).get("test_sets", {}).items():
        precision = results["wer_change"]["precision"]
        print(f"{precision} on {test_set}: WER {change['fp32']['wer']:.2f} -> "
              f"{change[precision]['wer']:.2f} ({change['wer_change']:+.2f}), CPU time x"
              f"{1 / change['speedup']:.2f} (speed-up {change['speedup']:.2f})")
    print("\ntargets (on wall time; CPU time in brackets):")
    for row in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        value = "-" if row["value"] is None else f"{100 * row['value']:+.1f} %"
        cpu_value = "" if row["cpu_value"] is None else f"({100 * row['cpu_value']:+.1f} %)"
        print(f"  {row['target']:<27} {row['subject']:<15} {value:>9} {cpu_value:>10}  "
              f"limit {100 * row['limit']:.0f} %  {verdict}")
