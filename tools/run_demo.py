"""Run the recipe on the embedded default: fine-tune, benchmark and summarise on 2 CPU cores.

The embedded default is the synthetic corpus, the seed encoder and the ARPA LM
under ``embedded/`` (see ``embedded/README.md``). Each part is rows of the embedded
grid (``DEMO_PARTS`` in ``ssl_ctc/experiments/registry.py``) run with the demo's
overrides (``EMBEDDED_OVERRIDES``) by the driver of ``reproduce_paper.py --embedded``
(``ssl_ctc.experiments.driver``): a plain run of a strategy script per row, into its
own folder under the output root (its log in ``<output_root>/logs/<row>.log``), a
finished row kept; ``benchmark.py summarize`` then gathers the table and plots, and
the demo prints its overview.

Usage::

    python tools/run_demo.py                          # baseline, SD2, CL3 (make demo)
    python tools/run_demo.py --part layer_removal     # the encoder cut to 4 and 2 layers
    python tools/run_demo.py --part early_exit        # early exits + a threshold sweep

Authors
 * Recipe team 2026
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from librispeech_prepare import DataPreparationError  # noqa: E402
from ssl_ctc.benchmarking.grid import GridError, parse_overrides  # noqa: E402
from ssl_ctc.experiments import driver  # noqa: E402
from ssl_ctc.experiments.registry import (  # noqa: E402
    DEMO_PARTS,
    EMBEDDED_GRID,
    EMBEDDED_OVERRIDES,
    rows_named,
)


def print_overview(output_root):
    """Print variant, factor, layers, WER, CER, WER with LM and CPU test time per experiment."""
    header = "| variant | factor | layers | WER | CER | WER-LM | CPU test time (s) |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for folder, _, files in sorted(os.walk(output_root)):
        if "benchmark.json" not in files:
            continue
        with open(os.path.join(folder, "benchmark.json"), encoding="utf-8") as records_file:
            records = json.load(records_file)
        measured = [record for record in records if record.get("status") == "ok"]
        # an early-exit folder's row is its configured criterion, not the last swept threshold
        greedy = [record for record in measured if record["test"] == "cpu_greedy"
                  and record.get("configured", True)]
        with_lm = [record for record in measured if record["test"] == "cpu_lm"
                   and record.get("configured", True)]
        if not greedy:
            continue
        latest = greedy[-1]
        wer_lm = f"{with_lm[-1]['wer']:.2f}" if with_lm else "-"
        lines.append(
            f"| {os.path.relpath(folder, output_root)} | {latest.get('factor')} | "
            f"{latest.get('layers')} | {latest['wer']:.2f} | {latest['cer']:.2f} | {wer_lm} | "
            f"{latest['total_time_s']:.2f} |"
        )
    print("\n".join(lines))


def main():
    """Parse arguments, run the chosen parts, print the summary and the overview."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(DEMO_PARTS), action="append",
                        help=f"what to run (repeatable; default: {next(iter(DEMO_PARTS))})")
    parser.add_argument("--output_root", default=os.path.join(REPO, "results", "demo"))
    arguments = parser.parse_args()
    start = time.time()
    names = [name for part in arguments.part or [next(iter(DEMO_PARTS))]
             for name in DEMO_PARTS[part]]
    rows = rows_named(EMBEDDED_GRID, dict.fromkeys(names))
    output_root = Path(arguments.output_root).absolute()
    try:
        planned, plans = driver.plan(rows, rows, output_root, parse_overrides(EMBEDDED_OVERRIDES),
                                     program="run_demo")
    except (GridError, DataPreparationError) as error:
        parser.error(str(error))
    status = driver.run(planned, plans, output_root, "run_demo", paper_comparison=False)
    print_overview(output_root)
    print(f"demo finished in {time.time() - start:.0f} s; results in {output_root}")
    return status


if __name__ == "__main__":
    sys.exit(main())
