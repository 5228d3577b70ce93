"""Summary of many experiments: the paper's table and WER-versus-cost plots.

Usage::

    python benchmark.py summarize results/
"""

import collections
import json
from pathlib import Path

from ssl_ctc.benchmarking.records import csv_text, latest_records
from ssl_ctc.files import write_atomically
from ssl_ctc.names import MAC_TEST, RESULTS_JSON

SUMMARY_MARKDOWN = "summary.md"


SUMMARY_CSV = "summary.csv"


SUMMARY_COLUMNS = (
    ("name", "Name"),
    ("test_set", "Test set"),
    ("setting", "Factor / layers"),
    ("wer", "WER"),
    ("gpu_time_s", "GPU s"),
    ("cpu_time_s", "CPU s"),
    ("wer_lm", "WER-LM"),
    ("gpu_lm_time_s", "GPU-LM s"),
    ("cpu_lm_time_s", "CPU-LM s"),
    ("gmacs_per_batch", "MACs (G)"),
    ("cpu_real_time_factor", "CPU RTF"),
    ("gmacs_per_audio_second", "GMACs/s"),
    ("batch_size", "Batch"),
    ("cpu_precision", "CPU precision"),
    ("cpu_check", "CPU precision check"),
    ("threads", "Threads"),
)


# Columns left out of the markdown table when no row has a value in them.
OPTIONAL_COLUMNS = ("cpu_check",)


# Summary column -> (tests it is read from, first that ran wins; record field).
SUMMARY_SOURCES = {
    "wer": (("cpu_greedy", "gpu_greedy"), "wer"),
    "gpu_time_s": (("gpu_greedy",), "total_time_s"),
    "cpu_time_s": (("cpu_greedy",), "total_time_s"),
    "wer_lm": (("cpu_lm", "gpu_lm"), "wer"),
    "gpu_lm_time_s": (("gpu_lm",), "total_time_s"),
    "cpu_lm_time_s": (("cpu_lm",), "total_time_s"),
    "gmacs_per_batch": ((MAC_TEST,), "gmacs_per_batch"),
    "cpu_real_time_factor": (("cpu_greedy",), "real_time_factor"),
    "gmacs_per_audio_second": ((MAC_TEST,), "gmacs_per_audio_second"),
    "gmacs_per_batch_module_hooks": ((MAC_TEST,), "gmacs_per_batch_module_hooks"),
}


# (file stem, x column, y column, x axis label, y axis label)
SUMMARY_PLOTS = (
    ("wer_vs_gpu_time", "gpu_time_s", "wer", "GPU time for the split (s)", "WER (%)"),
    ("wer_vs_cpu_time", "cpu_time_s", "wer", "CPU time for the split (s)", "WER (%)"),
    ("wer_vs_gmacs", "gmacs_per_batch", "wer", "GMACs per test batch", "WER (%)"),
    ("wer_lm_vs_gpu_lm_time", "gpu_lm_time_s", "wer_lm", "GPU time with LM (s)", "WER with LM (%)"),
    ("wer_lm_vs_cpu_lm_time", "cpu_lm_time_s", "wer_lm", "CPU time with LM (s)", "WER with LM (%)"),
    ("wer_lm_vs_gmacs", "gmacs_per_batch", "wer_lm", "GMACs per test batch", "WER with LM (%)"),
)


SKIPPED = "skipped"


MISSING = "–"


def _is_baseline(tags, deepest):
    """The "baseline" tag if present, else whether factor is 1 at full depth."""
    if tags.get("baseline") is not None:
        return bool(tags["baseline"])
    return (tags.get("factor") or 1) == 1 and tags.get("layers", deepest) == deepest


def _setting_label(tags, baseline):
    """Short label of an experiment: its "label" tag, else x<factor> or
    <layers> L."""
    if tags.get("label") is not None:
        return str(tags["label"])
    if baseline:
        return "baseline"
    if (tags.get("factor") or 1) != 1:
        return f"x{tags['factor']}"
    if tags.get("layers") is not None:
        return f"{tags['layers']} L"
    return str(tags.get("name") or "")


CPU_TEST_NAMES = ("cpu_greedy", "cpu_lm")


def _by_cpu_setting(records):
    """(CPU precision, threads) -> the records of a row: its measured CPU tests, and the others.

    Runs in different CPU precisions (``benchmark_cpu_precision``) or thread counts
    give one row each, so that their times and WERs are never mixed in one column.

    Example
    -------
    >>> records = [{"test": "cpu_greedy", "precision": "int8", "threads": 2}, {"test": "macs"},
    ...            {"test": "cpu_greedy", "precision": "fp32", "threads": 2}]
    >>> {key: len(subset) for key, subset in _by_cpu_setting(records).items()}
    {('fp32', 2): 2, ('int8', 2): 2}
    """
    def setting(record):
        return record.get("precision") or "fp32", record.get("threads")

    def measured_on_cpu(record):
        return record["test"] in CPU_TEST_NAMES and record.get("status", "ok") == "ok"

    settings = sorted({setting(record) for record in records if measured_on_cpu(record)},
                      key=lambda key: (key[0], key[1] or 0)) or [(None, None)]
    return {key: [record for record in records
                  if not measured_on_cpu(record) or setting(record) == key]
            for key in settings}


def precision_check_text(record):
    """What the reduced-precision check of a CPU test found, in a few words (None in fp32).

    Example
    -------
    >>> record = {"precision": "bf16", "requested_precision": "auto", "cpu_fp32_fallbacks":
    ...           {"pos_conv": "bf16 kernel off"}, "cpu_precision_check": {
    ...           "largest_layer_error": 1.06, "output_error": 0.012, "layer_precisions":
    ...           {"Conv1d": {"bf16": 7, "fp32": 1}, "Linear": {"bf16": 169}}}}
    >>> precision_check_text(record)
    'bf16, output off by 1.2 %; in fp32: 1 of 8 Conv1d'
    >>> precision_check_text({"precision": "fp32", "requested_precision": "int8",
    ...     "cpu_fp32_fallbacks": {"model": "int8 output off by 31.0 % (tolerance 10 %)"},
    ...     "cpu_precision_check": {"largest_layer_error": 0.02}})
    'int8 refused: int8 output off by 31.0 % (tolerance 10 %)'
    """
    check = record.get("cpu_precision_check") or {}
    if not check:
        return None
    fallbacks = record.get("cpu_fp32_fallbacks") or {}
    if "model" in fallbacks:
        return f"{record.get('requested_precision')} refused: {fallbacks['model']}"
    text = record.get("precision") or ""
    if check.get("output_error") is not None:
        text += f", output off by {100 * check['output_error']:.1f} %"
    else:
        text += f", layers off by at most {100 * check['largest_layer_error']:.1f} %"
    in_fp32 = [f"{counts['fp32']} of {sum(counts.values())} {kind}"
               for kind, counts in check.get("layer_precisions", {}).items() if counts.get("fp32")]
    if in_fp32:
        text += "; in fp32: " + ", ".join(in_fp32)
    elif fallbacks:
        text += f"; in fp32: {len(fallbacks)} layers"
    return text


def _summary_row(experiment, test_set, records, deepest, cpu_setting):
    """The summary row of an experiment's records on a test set in one CPU setting."""
    cpu_precision, threads = cpu_setting
    latest = latest_records(records)
    tags = records[-1]  # the experiment's tags are fields of its records
    baseline = _is_baseline(tags, deepest)
    setting = _setting_label(tags, baseline)
    row = {
        "experiment": experiment,
        "name": tags.get("name") or experiment,
        "test_set": test_set,
        "strategy": tags.get("strategy") or "",
        "setting": setting if cpu_precision in (None, "fp32") else f"{setting} {cpu_precision}",
        "batch_size": tags.get("batch_size"),
        "cpu_precision": cpu_precision,
        "threads": threads,
        "baseline": baseline,
    }
    for column, (tests, field) in SUMMARY_SOURCES.items():
        ran = [latest[(test_set, t)] for t in tests if (test_set, t) in latest]
        measured = [record for record in ran if record["status"] == "ok"]
        if measured:
            row[column] = measured[0][field]
        else:
            row[column] = SKIPPED if ran else None
    cpu_greedy = latest.get((test_set, "cpu_greedy"))
    row["cpu_check"] = precision_check_text(cpu_greedy) if cpu_greedy else None
    greedy = cpu_greedy or latest.get((test_set, "gpu_greedy"))
    for name, stats in (greedy or {}).get("extras", {}).items():
        row[f"{name}_mean"] = stats["mean"]
    return row


def summary_rows(results_root):
    """One summary row per experiment folder, test set, name, batch size and CPU setting.

    An early-exit threshold sweep gives one name per threshold in one folder; a
    re-evaluation at another ``benchmark_batch_size``, CPU precision or thread count
    gives rows of its own, never a mixed one.
    """
    grouped = collections.defaultdict(list)
    for json_path in sorted(Path(results_root).rglob(RESULTS_JSON)):
        experiment = json_path.parent.relative_to(results_root).as_posix()
        for record in json.loads(json_path.read_text()):
            key = (experiment, record["test_set"], record.get("name"), record.get("batch_size"))
            grouped[key].append(record)
    deepest = max(
        (r["layers"] for rs in grouped.values() for r in rs if r.get("layers") is not None),
        default=None,
    )
    rows = [
        _summary_row(experiment, test_set, records, deepest, cpu_setting)
        for (experiment, test_set, _, _), all_records in grouped.items()
        for cpu_setting, records in _by_cpu_setting(all_records).items()
    ]
    return sorted(rows, key=lambda r: (r["test_set"], not r["baseline"], r["strategy"], r["name"],
                                       r["batch_size"] or 0, r["cpu_precision"] or "",
                                       r["threads"] or 0))


def comparability_notes(rows):
    """Warnings for columns whose rows were measured differently (batch size, threads).

    Example
    -------
    >>> notes = comparability_notes([{"batch_size": 4, "threads": 2}, {"batch_size": 8}])
    >>> notes[0].split(":")[0]
    'rows were measured at batch sizes 4, 8'

    """
    notes = []
    batch_sizes = sorted({row["batch_size"] for row in rows if row.get("batch_size")})
    if len(batch_sizes) > 1:
        notes.append(f"rows were measured at batch sizes {', '.join(map(str, batch_sizes))}: "
                     "times and MACs per batch compare only within a batch size; GMACs/s "
                     "(per second of audio) compares across them")
    threads = sorted({row["threads"] for row in rows if row.get("threads")})
    if len(threads) > 1:
        notes.append(f"CPU times were measured on {', '.join(map(str, threads))} threads: "
                     "compare them only within a thread count")
    return notes


def _format_cell(value):
    """Markdown text of a summary value."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def _markdown_table(rows):
    """The paper's table (plus strategy extras) in markdown."""
    extra_columns = list(dict.fromkeys(k for r in rows for k in r if k.endswith("_mean")))
    columns = [(key, title) for key, title in SUMMARY_COLUMNS
               if key not in OPTIONAL_COLUMNS or any(row.get(key) is not None for row in rows)]
    columns += [(name, name.replace("_", " ")) for name in extra_columns]
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format_cell(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def _plot_summary(rows, results_root):
    """Draws WER-versus-cost plots per test set; returns the written paths and
    the reasons for the plots left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written, skipped = [], []
    for test_set in sorted({row["test_set"] for row in rows}):
        set_rows = [row for row in rows if row["test_set"] == test_set]
        for stem, x_key, y_key, x_label, y_label in SUMMARY_PLOTS:
            points = [
                row
                for row in set_rows
                if isinstance(row[x_key], (int, float)) and isinstance(row[y_key], (int, float))
            ]
            if not points:
                skipped.append(f"{stem} ({test_set}): no {x_key} and {y_key} recorded")
                continue
            figure, axes = plt.subplots(figsize=(6.4, 4.8))
            strategies = sorted({row["strategy"] for row in points if not row["baseline"]})
            for strategy in strategies:
                series = sorted(
                    (row for row in points if row["strategy"] == strategy and not row["baseline"]),
                    key=lambda row: row[x_key],
                )
                axes.plot(
                    [row[x_key] for row in series],
                    [row[y_key] for row in series],
                    marker="o",
                    label=strategy or "untagged",
                )
            baselines = [row for row in points if row["baseline"]]
            if baselines:
                axes.scatter(
                    [row[x_key] for row in baselines],
                    [row[y_key] for row in baselines],
                    marker="*",
                    s=250,
                    color="black",
                    zorder=3,
                    label="baseline",
                )
            for row in points:
                axes.annotate(
                    row["setting"],
                    (row[x_key], row[y_key]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
            axes.set_xlabel(x_label)
            axes.set_ylabel(y_label)
            axes.set_title(f"{y_label} vs cost, {test_set}")
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8)
            figure.tight_layout()
            path = Path(results_root) / f"{stem}_{test_set}.png"
            figure.savefig(path, dpi=120)
            plt.close(figure)
            written.append(path)
    return written, skipped


def summarize(results_root):
    """Tabulates and plots every benchmark.json under a folder.

    Writes ``summary.md`` and ``summary.csv`` (one row per experiment folder
    and test set; the latest measured record of each test) and
    ``wer*_vs_*_<test set>.png`` plots into ``results_root``, and prints the
    table and the plots left out for lack of data.

    Arguments
    ---------
    results_root : str or Path

    Returns
    -------
    list of dict
        The rows; a test that was skipped reads "skipped", one never run None.
    """
    results_root = Path(results_root)
    rows = summary_rows(results_root)
    if not rows:
        raise FileNotFoundError(f"no {RESULTS_JSON} under {results_root}")
    table = _markdown_table(rows)
    notes = comparability_notes(rows)
    table += "".join(f"\nNote: {note}.\n" for note in notes)
    write_atomically(results_root / SUMMARY_MARKDOWN, table)
    write_atomically(results_root / SUMMARY_CSV, csv_text(rows))
    print(table)
    written, skipped = _plot_summary(rows, results_root)
    for path in written:
        print(f"Plot: {path}")
    for reason in skipped:
        print(f"No plot {reason}")
    return rows
