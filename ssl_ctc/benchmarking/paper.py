"""The paper beside the run: Zaiem et al. 2023's published table next to the measured one.

The paper published one table (the downsampling rows on test-clean, WavLM Large
fine-tuned on train-clean-100); ``paper_results.json`` (package data, beside this module)
holds it with its source. This module sets every measured row of a results folder beside the paper's
row of the same name, in the paper's layout (Name, Factor, WER, GPU s, CPU s,
WER-LM, GPU-LM s, CPU-LM s, MACs), with the difference, and again as ratios to
each side's own baseline (time ratio, MAC ratio, WER change), since absolute times
depend on the hardware. Rows the paper did not publish (layer removal, early exit)
say so. MACs are compared on the paper's counting (the module-hook count, which
misses WavLM's attention), with the complete count beside it. Two Pareto plots
(WER versus CPU time, WER versus MACs) show the paper's points and the measured
ones, one marker per strategy.

Usage::

    python benchmark.py summarize results/paper --paper
"""

import json
from pathlib import Path

from ssl_ctc.benchmarking.summary import MISSING, SUMMARY_COLUMNS, summary_rows
from ssl_ctc.experiments.registry import technique_of
from ssl_ctc.files import write_atomically
from ssl_ctc.names import DISTILLED_NAME_SUFFIX

PAPER_RESULTS = Path(__file__).resolve().parent / "paper_results.json"
PAPER_COMPARISON_MARKDOWN = "paper_comparison.md"
NOT_PUBLISHED = "not published"
NOT_RUN = "not run"

# The paper's columns: (summary column, title as in the summary); the measured MACs are read
# from MEASURED_MACS.
PAPER_COLUMNS = ("wer", "gpu_time_s", "cpu_time_s", "wer_lm", "gpu_lm_time_s", "cpu_lm_time_s",
                 "gmacs_per_batch")
COMPARED_COLUMNS = tuple((column, title) for column, title in SUMMARY_COLUMNS
                         if column in PAPER_COLUMNS)
WER_COLUMNS = ("wer", "wer_lm")
# The paper's MACs are a module-hook count (thop): the measured count on the same footing.
MEASURED_MACS = "gmacs_per_batch_module_hooks"
COMPLETE_MACS = "gmacs_per_batch"

# Strategy -> plot marker (and colour, by position); anything else (e.g. downsampling with
# layer removal) gets "X".
MARKERS = {
    "baseline": "*",
    "signal_downsampling": "o",
    "averaging": "s",
    "convolutional": "^",
    "layer_removal": "D",
    "early_exit_entropy": "v",
    "early_exit_similarity": "P",
    "early_exit_fixed": "h",
}
# (file stem, x column, x axis label); both sides' MACs are on the paper's counting.
PARETO_PLOTS = (
    ("paper_pareto_wer_vs_cpu_time", "cpu_time_s", "CPU time for the split (s)"),
    ("paper_pareto_wer_vs_macs", COMPLETE_MACS,
     "GMACs per test batch (module-hook count, the paper's)"),
)


def load_paper_results(path=PAPER_RESULTS):
    """The paper's table: its source, test set, baseline name and one dict per row.

    Arguments
    ---------
    path : str or Path
        A JSON file with ``source``, ``test_set``, ``baseline``, ``columns`` and
        ``rows`` (lists in the order of ``columns``).

    Returns
    -------
    dict
        The file's fields, ``rows`` as dicts keyed by column.

    Example
    -------
    >>> paper = load_paper_results()
    >>> paper["test_set"], paper["rows"][0]["name"], paper["rows"][0]["cpu_lm_time_s"]
    ('test-clean', 'No downsampling', 1128)
    """
    paper = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = [dict(zip(paper["columns"], row, strict=True)) for row in paper["rows"]]
    return {**paper, "rows": rows}


def _number(value):
    """The value if it is a number, else None (a test that was skipped or never ran)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _to_baseline(value, baseline, column):
    """A WER's change from the baseline (points) or a cost's ratio to it; None if unknown.

    Example
    -------
    >>> _to_baseline(5.47, 4.09, "wer"), _to_baseline(564, 1128, "cpu_lm_time_s")
    (1.38, 0.5)
    """
    value, baseline = _number(value), _number(baseline)
    if value is None or baseline is None:
        return None
    if column in WER_COLUMNS:
        return round(value - baseline, 10)
    return value / baseline if baseline else None


def _measured_values(row):
    """A summary row's values under the compared columns (MACs on the paper's counting)."""
    if row is None:
        return {}
    return {column: row.get(MEASURED_MACS if column == COMPLETE_MACS else column)
            for column, _ in COMPARED_COLUMNS}


def compare_with_paper(rows, paper):
    """Pairs each measured row with the paper's row of the same name.

    Arguments
    ---------
    rows : list of dict
        Summary rows (``ssl_ctc.benchmarking.summary.summary_rows``); those of the
        paper's test set in fp32 on CPU are compared.
    paper : dict
        From ``load_paper_results``.

    Returns
    -------
    list of dict
        The paper's rows in its order, then the measured rows it did not publish.
        Each has ``name``, ``factor``, ``paper`` and ``measured`` (column -> value;
        ``paper`` None where not published, ``measured`` None where not run),
        ``complete_gmacs`` (the measured complete MAC count) and ``strategy``,
        ``difference`` (measured - paper) and ``paper_ratio`` / ``measured_ratio``
        (each side against its own baseline: WER change in points, cost ratios).

    Example
    -------
    >>> paper = {"test_set": "test-clean", "baseline": "No downsampling", "rows": [
    ...     {"name": "No downsampling", "factor": 1, "wer": 4.0, "cpu_time_s": 100},
    ...     {"name": "SD2", "factor": 2, "wer": 5.0, "cpu_time_s": 50}]}
    >>> rows = [{"name": "No downsampling", "test_set": "test-clean", "baseline": True,
    ...          "strategy": "baseline", "setting": "baseline", "wer": 10.0, "cpu_time_s": 2.0},
    ...         {"name": "2L", "test_set": "test-clean", "baseline": False,
    ...          "strategy": "layer_removal", "setting": "2 L", "wer": 20.0, "cpu_time_s": 1.5}]
    >>> baseline, sd2, layers = compare_with_paper(rows, paper)
    >>> baseline["difference"]["wer"], sd2["measured"], layers["paper"], layers["factor"]
    (6.0, None, None, '2 L')
    >>> layers["measured_ratio"]["cpu_time_s"], layers["measured_ratio"]["wer"]
    (0.75, 10.0)
    """
    measured = [row for row in rows if row["test_set"] == paper["test_set"]
                and row.get("cpu_precision") in (None, "fp32")]
    named = {}  # a distilled row ("SD2 +KD") stands beside the paper's row of its plain name
    for row in measured:
        named.setdefault(row["name"].removesuffix(DISTILLED_NAME_SUFFIX), []).append(row)
    measured_baseline = (named.get(paper["baseline"]) or [
        row for row in measured if row["baseline"]] or [None])[0]
    paper_baseline = next(row for row in paper["rows"] if row["name"] == paper["baseline"])
    published = {row["name"] for row in paper["rows"]}
    pairs = [(paper_row, row) for paper_row in paper["rows"]
             for row in named.get(paper_row["name"], [None])]
    unpublished = [row for row in measured
                   if row["name"].removesuffix(DISTILLED_NAME_SUFFIX) not in published]
    order = list(MARKERS)  # layer removal before early exit, as in the paper
    pairs += [(None, row) for row in sorted(unpublished, key=lambda row: order.index(
        row["strategy"]) if row["strategy"] in order else len(order))]
    comparison = []
    for paper_row, row in pairs:
        values = _measured_values(row)
        name = (row or paper_row)["name"]
        key = name.removesuffix(DISTILLED_NAME_SUFFIX)
        entry = {
            # the same name measured several times (folders, batch sizes): each says which
            "name": f"{name} ({row['experiment']}, batch {row.get('batch_size')})"
            if len(named.get(key, [])) > 1 else name,
            "factor": paper_row["factor"] if paper_row else row.get("setting"),
            "strategy": _strategy(paper_row, row),
            "paper": {column: paper_row.get(column) for column, _ in COMPARED_COLUMNS}
            if paper_row else None,
            "measured": values if row else None,
            "complete_gmacs": row.get(COMPLETE_MACS) if row else None,
            "difference": {},
            "paper_ratio": {},
            "measured_ratio": {},
        }
        baseline_values = _measured_values(measured_baseline)
        for column, _ in COMPARED_COLUMNS:
            paper_value = paper_row.get(column) if paper_row else None
            measured_value = values.get(column)
            if _number(paper_value) is not None and _number(measured_value) is not None:
                entry["difference"][column] = round(measured_value - paper_value, 10)
            entry["paper_ratio"][column] = _to_baseline(
                paper_value, paper_baseline.get(column), column)
            entry["measured_ratio"][column] = _to_baseline(
                measured_value, baseline_values.get(column), column)
        comparison.append(entry)
    return comparison


def _strategy(paper_row, row):
    """The strategy of a comparison row (the measured tag, else from the paper's name)."""
    if row is not None:
        return "baseline" if row["baseline"] else row.get("strategy") or ""
    if paper_row["factor"] == 1:
        return "baseline"
    return technique_of(paper_row["name"]) or ""


def _format_number(value):
    """Text of a value for the tables: integers as they are, 3 decimals below 1, else 2.

    Example
    -------
    >>> _format_number(4.0912), _format_number(0.2714), _format_number(134), _format_number(None)
    ('4.09', '0.271', '134', '–')
    """
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def _side_by_side(entry, column):
    """The cell ``paper / measured (difference)`` of one column."""
    paper = NOT_PUBLISHED if entry["paper"] is None else _format_number(entry["paper"][column])
    measured = NOT_RUN if entry["measured"] is None else _format_number(
        entry["measured"][column])
    cell = f"{paper} / {measured}"
    if column in entry["difference"]:
        cell += f" ({entry['difference'][column]:+.2f})"
    if column == COMPLETE_MACS and entry["measured"] is not None:
        cell += f"; complete {_format_number(entry['complete_gmacs'])}"
    return cell


def _ratio_cell(entry, column):
    """The cell ``paper / measured`` of one column against each side's baseline."""
    def text(ratio, absent):
        if absent:
            return absent
        if ratio is None:
            return MISSING
        return f"{ratio:+.2f}" if column in WER_COLUMNS else f"{ratio:.2f}x"

    paper = text(entry["paper_ratio"][column], entry["paper"] is None and NOT_PUBLISHED)
    measured = text(entry["measured_ratio"][column], entry["measured"] is None and NOT_RUN)
    return f"{paper} / {measured}"


def comparison_markdown(comparison, paper):
    """The two comparison tables in markdown, with the paper's source.

    Arguments
    ---------
    comparison : list of dict
        From ``compare_with_paper``.
    paper : dict
        From ``load_paper_results``.

    Returns
    -------
    str
    """
    titles = [title for _, title in COMPARED_COLUMNS]
    lines = [
        f"# The paper beside the run ({paper['test_set']})",
        "",
        f"Paper: {paper['source']}. Each cell: paper / measured (measured - paper). MACs on the "
        "paper's counting (module hooks, without WavLM's attention), then the complete count. "
        "Absolute times depend on the hardware: compare the ratios below.",
        "",
        "| Name | Factor | " + " | ".join(titles) + " |",
        "|" + "---|" * (2 + len(titles)),
    ]
    for entry in comparison:
        cells = [_side_by_side(entry, column) for column, _ in COMPARED_COLUMNS]
        lines.append(f"| {entry['name']} | {entry['factor']} | " + " | ".join(cells) + " |")
    ratio_columns = [(column, title) for column, title in COMPARED_COLUMNS
                     if column not in WER_COLUMNS] + [("wer", "WER"), ("wer_lm", "WER-LM")]
    lines += [
        "",
        "Against each side's own baseline (No downsampling): paper / measured. Times and MACs "
        "as ratios, WER as the change in points.",
        "",
        "| Name | Factor | " + " | ".join(
            f"{title} {'change' if column in WER_COLUMNS else 'ratio'}"
            for column, title in ratio_columns) + " |",
        "|" + "---|" * (2 + len(ratio_columns)),
    ]
    for entry in comparison:
        cells = [_ratio_cell(entry, column) for column, _ in ratio_columns]
        lines.append(f"| {entry['name']} | {entry['factor']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pareto_front(points):
    """The points that no other point beats on both axes (lower is better), by x.

    Arguments
    ---------
    points : list of (float, float)

    Returns
    -------
    list of (float, float)

    Example
    -------
    >>> pareto_front([(3, 4), (1, 5), (2, 3), (4, 1), (2, 6)])
    [(1, 5), (2, 3), (4, 1)]
    """
    front = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def plot_pareto(comparison, folder):
    """WER-versus-CPU-time and WER-versus-MACs plots, the paper's panel beside the measured one.

    One point per row, one marker per strategy, the Pareto front dashed.

    Arguments
    ---------
    comparison : list of dict
        From ``compare_with_paper``.
    folder : str or Path
        Where the PNG files are written.

    Returns
    -------
    list of Path
        The plots written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for stem, x_column, x_label in PARETO_PLOTS:
        figure, panels = plt.subplots(1, 2, figsize=(12, 4.8))
        sides = (("paper", "Paper (WavLM Large)"), ("measured", "Measured"))
        for axes, (side, title) in zip(panels, sides, strict=True):
            points = [
                (entry[side][x_column], entry[side]["wer"], entry)
                for entry in comparison
                if entry[side] is not None and _number(entry[side][x_column]) is not None
                and _number(entry[side]["wer"]) is not None
            ]
            for strategy in dict.fromkeys(entry["strategy"] for _, _, entry in points):
                series = [(x, y) for x, y, entry in points if entry["strategy"] == strategy]
                known = strategy in MARKERS  # the same marker and colour in both panels
                axes.scatter(*zip(*series, strict=True), marker=MARKERS.get(strategy, "X"),
                             color=f"C{list(MARKERS).index(strategy) if known else 9}",
                             s=160 if strategy == "baseline" else 50, label=strategy, zorder=3)
            for x, y, entry in points:
                axes.annotate(entry["name"], (x, y), textcoords="offset points", xytext=(4, 4),
                              fontsize=7)
            front = pareto_front([(x, y) for x, y, _ in points])
            if len(front) > 1:
                axes.step(*zip(*front, strict=True), where="post", linestyle="--", color="grey",
                          label="Pareto front")
            if not points:
                axes.text(0.5, 0.5, "no data", ha="center", transform=axes.transAxes)
            axes.set_title(title)
            axes.set_xlabel(x_label)
            axes.set_ylabel("WER (%), greedy")
            axes.grid(alpha=0.3)
            if points:
                axes.legend(fontsize=7)
        figure.tight_layout()
        path = Path(folder) / f"{stem}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def write_paper_comparison(results_root, paper_path=PAPER_RESULTS):
    """Writes ``paper_comparison.md`` and the Pareto plots beside ``summary.md``; prints them.

    Arguments
    ---------
    results_root : str or Path
        Folder searched recursively for ``benchmark.json`` files.
    paper_path : str or Path
        The paper's table (default: the package's ``paper_results.json``).

    Returns
    -------
    list of dict
        The comparison (``compare_with_paper``).
    """
    results_root = Path(results_root)
    paper = load_paper_results(paper_path)
    comparison = compare_with_paper(summary_rows(results_root), paper)
    text = comparison_markdown(comparison, paper)
    write_atomically(results_root / PAPER_COMPARISON_MARKDOWN, text)
    print(text)
    for path in plot_pareto(comparison, results_root):
        print(f"Plot: {path}")
    return comparison
