#!/usr/bin/env python3
"""Inference benchmark of the fine-tuned SSL + CTC models: the paper's five tests.

Every strategy script runs the five tests at the end of an experiment
(``ssl_ctc.benchmarking.five_tests``: ``benchmark_experiment``); this command line
gathers the ``benchmark.json`` files they append to into one table and its plots
(``ssl_ctc.benchmarking.summary``), and with ``--paper`` the paper's published table
beside it (``ssl_ctc.benchmarking.paper``).

Usage
-----
To tabulate and plot every benchmark.json under a folder::

    python benchmark.py summarize results/
    python benchmark.py summarize results/paper --paper
"""

import argparse

from ssl_ctc.benchmarking.summary import summarize


def _summarize_command(arguments):
    """``summarize`` subcommand (``--paper``: the paper's table beside it)."""
    summarize(arguments.results_root)
    if arguments.paper:
        from ssl_ctc.benchmarking.paper import write_paper_comparison

        write_paper_comparison(arguments.results_root)


def main(argv=None):
    """Command-line entry point with one subcommand per tool."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    subcommands = parser.add_subparsers(dest="command", required=True)
    summarize_parser = subcommands.add_parser(
        "summarize", help="tabulate and plot every benchmark.json under a folder"
    )
    summarize_parser.add_argument("results_root", help="folder searched recursively")
    summarize_parser.add_argument(
        "--paper", action="store_true",
        help="also write paper_comparison.md and Pareto plots: the paper's published table "
             "beside the measured one (ssl_ctc.benchmarking.paper)",
    )
    summarize_parser.set_defaults(handler=_summarize_command)
    arguments = parser.parse_args(argv)
    arguments.handler(arguments)


if __name__ == "__main__":
    main()
