#!/usr/bin/env python3
"""Reproduce the paper's grid in one resumable command, with the paper's numbers beside ours.

Every row of Zaiem et al. 2023 (no downsampling; SD, AV and CL at factors 2, 3, 4;
layer removal from 24 to 12 layers by 2; early exit, trained once, then tested with
the entropy and the similarity criteria over the paper's thresholds) is a plain run
of a strategy script into its own folder ``<output_root>/<row>``, with the authors'
epochs where they are known (``GRID`` in ``ssl_ctc/experiments/registry.py``).
Overrides after the options go to every row. The driver (``ssl_ctc.experiments.driver``)

- skips a finished row (its ``benchmark.json`` holds ok records of every expected
  test on every test set, and every threshold for early exit);
- resumes an interrupted row (the same command: the recipe resumes from its checkpoints);
- reports a failed row and goes on with the others; exits non-zero unless every
  selected row finished, after a status table;
- refuses, before running anything, a row whose ``hyperparams.yaml`` was written with
  other values of the overrides it passes (``--seed``, ``--data_folder``, ...), and a
  missing data folder;
- ends with ``benchmark.py summarize <output_root> --paper``: ``summary.md``,
  ``paper_comparison.md`` (the paper's table beside the measured one) and Pareto plots.

``--embedded`` runs every row at tiny scale on the embedded default (the synthetic
corpus and the 4-layer seed encoder of ``embedded/``, short training, CPU tests only):
``make paper-demo``. See ``docs/PAPER_GRID.md`` for a Slurm array of the real grid.

Usage::

    python reproduce_paper.py --data_folder /path/to/LibriSpeech
    python reproduce_paper.py --data_folder /path/to/LibriSpeech --only SD,layer_removal
    python reproduce_paper.py --data_folder /path/to/LibriSpeech --print-commands > grid.txt
    python reproduce_paper.py --data_folder /path/to/LibriSpeech --precision bf16  # every row
    python reproduce_paper.py --embedded                         # make paper-demo
    python reproduce_paper.py --data_folder /path/to/LibriSpeech --teacher baseline  # distilled

Authors
 * Recipe team 2026
"""

import argparse
import os
import sys
from pathlib import Path

from librispeech_prepare import DataPreparationError
from ssl_ctc.benchmarking.grid import GridError, parse_overrides, select_rows
from ssl_ctc.experiments import driver
from ssl_ctc.experiments.registry import (
    EMBEDDED_GRID,
    EMBEDDED_GRID_EXTRA,
    EMBEDDED_OVERRIDES,
    GRID,
)


def parse_arguments(argv):
    """The driver's options, and the overrides passed to every row."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Any other --key value is passed to every row (e.g. --seed 1987, --precision "
               "bf16, --test_splits=[test-clean]).")
    parser.add_argument("--data_folder", help="LibriSpeech root (train-clean-100, dev-clean, "
                                              "test-clean, ...); default with --embedded: the "
                                              "embedded corpus")
    parser.add_argument("--output_root", help="one folder per row is made here (default "
                                              "results/paper, with --embedded results/paper_demo; "
                                              "_kd appended with --teacher)")
    parser.add_argument("--only", help="comma-separated rows or groups (e.g. SD,layer_removal,18L)")
    parser.add_argument("--print-commands", "--print_commands", dest="print_commands",
                        action="store_true",
                        help="print one shell command per unfinished row and run nothing")
    parser.add_argument("--embedded", action="store_true",
                        help="every row at tiny scale on the embedded default (make paper-demo)")
    parser.add_argument("--teacher",
                        help="distil every row from a teacher: 'baseline' trains the grid's "
                             "baseline row first and teaches the others with it; a finished "
                             "experiment's folder teaches every row (the baseline row is then "
                             "left out); with --distillation_weight/--distillation_temperature "
                             "as overrides. Default output root: results/paper_kd "
                             "(results/paper_demo_kd with --embedded)")
    arguments, passed = parser.parse_known_args(argv)
    if not arguments.data_folder and not arguments.embedded:
        parser.error("--data_folder is required (or --embedded for the embedded default)")
    return parser, arguments, passed


def main(argv=None, grid=None):
    """Plan, check and run the selected rows, then summarise; returns the exit status.

    Arguments
    ---------
    argv : list of str, optional
        Command line (default ``sys.argv[1:]``).
    grid : sequence of Row, optional
        The rows (default ``GRID``, or ``EMBEDDED_GRID`` with ``--embedded``).
    """
    parser, arguments, passed = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        user_overrides = parse_overrides(passed)
        if "output_folder" in user_overrides:
            raise GridError("the driver sets --output_folder per row: use --output_root")
        grid = grid or (EMBEDDED_GRID if arguments.embedded else GRID)
        rows = select_rows(grid, arguments.only)
        shared = (parse_overrides(EMBEDDED_OVERRIDES + EMBEDDED_GRID_EXTRA)
                  if arguments.embedded else {})
        data_folder = arguments.data_folder or shared["data_folder"]
        shared.update({"data_folder": os.path.abspath(data_folder), **user_overrides})
        default_root = ("paper_demo" if arguments.embedded else "paper") + (
            "_kd" if arguments.teacher else "")
        output_root = Path(arguments.output_root
                           or os.path.join("results", default_root)).absolute()
        planned, plans = driver.plan(grid, rows, output_root, shared, arguments.teacher,
                                     "reproduce_paper")
    except (GridError, DataPreparationError) as error:
        parser.error(str(error))
    if arguments.print_commands:
        driver.print_commands(planned, plans)
        return 0
    return driver.run(planned, plans, output_root, "reproduce_paper")


if __name__ == "__main__":
    sys.exit(main())
