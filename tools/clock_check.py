"""Do the CPU tests' times depend on the order of the tests or on what the process did before?

For each trained experiment folder, ``--rounds`` rounds of two fresh processes of its
strategy (the Brain named by the YAML's ``brain_class``), back to back: a ``--test_only``
process, and a process that first trains one more epoch on a copy of the checkpoints (as
every experiment trains before its tests). Each runs the five tests twice, greedy tests
first (as every experiment does) and LM tests first, in an order that alternates by round.
Ratios are taken within a round (the same process for the orders, adjacent processes for
the history), so that the machine's drifting load cancels, and their medians compared
with the tolerance; the medians of the times are printed too, with each experiment's
against the first folder's (the strategies' speed-ups). Nothing is written in the
experiment folders.

Usage::

    python tools/clock_check.py results/demo/baseline results/demo/SD2 results/demo/CL3
    python tools/clock_check.py results/demo/SD2 --rounds 5 --json clock.json

Authors
 * Recipe team 2026
"""

import argparse
import json
import pydoc
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ssl_ctc.names import CPU_TESTS  # noqa: E402

ORDERS = ("greedy_first", "lm_first")
PROCESSES = ("test_only", "trained_first")
CPU_TEST_NAMES = tuple(name for name, _ in CPU_TESTS)
# Largest relative difference of two medians called the same figure.
TOLERANCE = 0.10
EPOCH_LIMIT = re.compile(r"^epoch_counter:.*\n\s+limit: (\d+)", re.MULTILINE)


def brain_class_of(hparams_file):
    """The Brain class named by a saved YAML's ``brain_class`` key."""
    from ssl_ctc.recipe_yaml import read_yaml_keys

    values = read_yaml_keys(hparams_file)
    if "brain_class" not in values:
        raise SystemExit(f"{hparams_file}: no brain_class key (made before it existed?)")
    located = pydoc.locate(values["brain_class"].removeprefix("!name:"))
    if located is None:
        raise SystemExit(f"{hparams_file}: brain_class {values['brain_class']} not found")
    return located


def process_arguments(folder, process, work_folder):
    """The strategy script's arguments of a test_only or a trained_first process.

    A trained_first process trains one epoch more than the experiment did, from a copy
    of its checkpoints in ``work_folder`` (the experiment's own stay untouched).
    """
    hparams_file = folder / "hyperparams.yaml"
    arguments = [str(hparams_file), "--output_folder", str(work_folder),
                 "--benchmark_devices=[cpu]"]
    if process == "test_only":
        return [*arguments, "--test_only"]
    limit = EPOCH_LIMIT.search(hparams_file.read_text(encoding="utf-8"))
    if limit is None:
        raise SystemExit(f"{hparams_file}: no epoch_counter limit to train one epoch more")
    shutil.copytree(folder / "save", work_folder / "save", dirs_exist_ok=True)
    return [*arguments, "--save_folder", str(work_folder / "save"),
            f"--epoch_counter=!new:speechbrain.utils.epoch_loop.EpochCounter "
            f"{{limit: {int(limit.group(1)) + 1}}}"]


def measure(folder, process, first_order, work_folder):
    """In this process: the experiment's run as ``process``, then the five tests in both
    orders, ``first_order`` first; returns ``{order: {test: seconds}}``."""
    from ssl_ctc.benchmarking import five_tests
    from ssl_ctc.cpu.decision import CpuDecisions
    from ssl_ctc.recipe import run_recipe

    times = {}

    def five_tests_both_ways(brain, test_datasets, settings):
        tags, configured = next(iter(brain.benchmark_configurations()))
        cpu_decisions = CpuDecisions()
        orders = ORDERS if first_order == ORDERS[0] else ORDERS[::-1]
        with configured:
            for order in orders:
                records = five_tests.run_five_tests(
                    brain, test_datasets, settings, {**tags, "clock_order": order},
                    work_folder, cpu_decisions, lm_first=order == "lm_first")
                times[order] = {record["test"]: record["total_time_s"] for record in records
                                if record["test"] in CPU_TEST_NAMES
                                and record["status"] == "ok"}
        return []

    run_recipe(brain_class_of(folder / "hyperparams.yaml"),
               process_arguments(folder, process, work_folder),
               benchmark=five_tests_both_ways)
    return times


def relative_difference(ratio):
    """How far a ratio of two times is from 1, relative to the smaller time."""
    return max(ratio, 1 / ratio) - 1


def median_time(rounds, process, order, test):
    """The median over rounds of one test's seconds in one process and order."""
    return statistics.median(round_times[process][order][test] for round_times in rounds)


def report(results):
    """The tables and the verdicts, as text.

    ``results``: experiment -> list of rounds, each ``{process: {order: {test: seconds}}}``.
    """
    lines = ["| experiment | test | test_only, greedy first (s) | test_only, LM first (s) | "
             "trained first, greedy first (s) | LM first / greedy first | "
             "trained first / test_only |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, rounds in results.items():
        for test in CPU_TEST_NAMES:
            if not all(test in order_times for round_times in rounds
                       for process_times in round_times.values()
                       for order_times in process_times.values()):
                continue

            order_ratio = statistics.median(
                round_times[process]["lm_first"][test] / round_times[process]["greedy_first"][test]
                for round_times in rounds for process in PROCESSES)
            history_ratio = statistics.median(
                round_times["trained_first"][order][test] / round_times["test_only"][order][test]
                for round_times in rounds for order in ORDERS)
            lines.append(
                f"| {name} | {test} | {median_time(rounds, 'test_only', 'greedy_first', test):.3f}"
                f" | {median_time(rounds, 'test_only', 'lm_first', test):.3f} | "
                f"{median_time(rounds, 'trained_first', 'greedy_first', test):.3f} | "
                f"{order_ratio:.2f} | "
                f"{history_ratio:.2f} |")
            verdicts += [(f"{name} {test}: LM tests first / greedy tests first", order_ratio),
                         (f"{name} {test}: trained first / test_only", history_ratio)]
    names = list(results)
    if len(names) > 1:
        lines += ["", f"| experiment | test | time / {names[0]}'s (test_only, greedy first; "
                  "median of the rounds' ratios) |", "|---|---|---|"]
        reference = results[names[0]]
        for name in names[1:]:
            for test in CPU_TEST_NAMES:
                ratios = [own["test_only"]["greedy_first"].get(test, 0)
                          / base["test_only"]["greedy_first"][test]
                          for own, base in zip(results[name], reference, strict=False)
                          if test in base["test_only"]["greedy_first"]]
                if ratios and all(ratios):
                    lines.append(f"| {name} | {test} | {statistics.median(ratios):.2f} |")
    lines.append("")
    for label, ratio in verdicts:
        difference = relative_difference(ratio)
        verdict = "same" if difference <= TOLERANCE else "DIFFERENT"
        lines.append(f"{verdict}: {label} = {ratio:.2f} ({difference:.1%} apart, median of the "
                     f"rounds' ratios; tolerance {TOLERANCE:.0%})")
    return "\n".join(lines)


def main(argv=None):
    """Run the rounds, each process on its own, then print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="trained experiment folders")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the two processes per experiment (default: 3)")
    parser.add_argument("--json", type=Path, help="also write every round's times here")
    parser.add_argument("--process", choices=PROCESSES, help=argparse.SUPPRESS)
    parser.add_argument("--first_order", choices=ORDERS, help=argparse.SUPPRESS)
    parser.add_argument("--work_folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--times", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    if arguments.process:  # a child: one process of one round
        times = measure(arguments.folders[0].resolve(), arguments.process,
                        arguments.first_order, arguments.work_folder)
        arguments.times.write_text(json.dumps(times), encoding="utf-8")
        return
    for folder in arguments.folders:
        if not (folder / "hyperparams.yaml").is_file() or not (folder / "save").is_dir():
            parser.error(f"{folder}: not a trained experiment folder (hyperparams.yaml, save/)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="clock_check_") as work:
        for index, folder in enumerate(arguments.folders):
            results[folder.name] = []
            for round_index in range(arguments.rounds):
                round_times = {}
                for process in PROCESSES if round_index % 2 == 0 else PROCESSES[::-1]:
                    print(f"+ {folder}: round {round_index + 1}, {process}", flush=True)
                    work_folder = Path(work) / f"{index}_{round_index}_{process}"
                    times_file = work_folder.with_suffix(".json")
                    child = subprocess.run(
                        [sys.executable, __file__, str(folder.resolve()), "--process", process,
                         "--first_order", ORDERS[round_index % 2], "--work_folder",
                         str(work_folder), "--times", str(times_file)],
                        cwd=REPO, capture_output=True, text=True)
                    if child.returncode != 0:
                        sys.exit(f"{folder}: the {process} process failed:\n"
                                 f"{child.stderr[-3000:]}")
                    round_times[process] = json.loads(times_file.read_text(encoding="utf-8"))
                    shutil.rmtree(work_folder)
                results[folder.name].append(round_times)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(report(results))


if __name__ == "__main__":
    main()
