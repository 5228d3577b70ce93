"""Do the CPU tests' times depend on the order of the tests or on what the process did before?

For each trained experiment folder, a fresh ``--test_only`` process of its strategy (the
Brain named by the YAML's ``brain_class``) runs the five tests ``--rounds`` times in each
order, alternating: greedy tests first (as every experiment does) and LM tests first.
The medians of the CPU tests' times are printed beside each other and beside the figures
the training process recorded in the folder's ``benchmark.json`` (a process that trained
first), with their ratios, and each experiment's times against the first folder's (the
strategies' speed-ups). Nothing is written in the experiment folders.

Usage::

    python tools/clock_check.py results/demo/baseline results/demo/SD2 results/demo/CL3
    python tools/clock_check.py results/demo/SD2 --rounds 5 --json clock.json

Authors
 * Recipe team 2026
"""

import argparse
import json
import os
import pydoc
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ssl_ctc.names import CPU_TESTS  # noqa: E402

ORDERS = ("greedy_first", "lm_first")
CPU_TEST_NAMES = tuple(name for name, _ in CPU_TESTS)
# Largest relative difference of two medians called the same figure.
TOLERANCE = 0.10


def brain_class_of(hparams_file):
    """The Brain class named by a saved YAML's ``brain_class`` key."""
    from ssl_ctc.recipe import yaml_keys

    values = {key: value for key, value, _ in yaml_keys(hparams_file)}
    if "brain_class" not in values:
        raise SystemExit(f"{hparams_file}: no brain_class key (made before it existed?)")
    located = pydoc.locate(values["brain_class"].removeprefix("!name:"))
    if located is None:
        raise SystemExit(f"{hparams_file}: brain_class {values['brain_class']} not found")
    return located


def measure(folder, rounds, work_folder):
    """In this process: the experiment's ``--test_only`` run, the five tests ``rounds``
    times in each order; returns ``{order: {test: [seconds, ...]}}``."""
    import benchmark
    from ssl_ctc.cpu.plan import CpuPlans
    from ssl_ctc.recipe import run_recipe

    hparams_file = folder / "hyperparams.yaml"
    times = {order: {test: [] for test in CPU_TEST_NAMES} for order in ORDERS}

    def five_tests_both_ways(brain, test_datasets, settings):
        tags, configured = next(iter(brain.benchmark_configurations()))
        cpu_plans = CpuPlans()
        with configured:
            for round_index in range(rounds):
                orders = ORDERS if round_index % 2 == 0 else ORDERS[::-1]
                for order in orders:
                    records = benchmark.run_five_tests(
                        brain, test_datasets, settings, {**tags, "clock_order": order},
                        work_folder, cpu_plans, lm_first=order == "lm_first")
                    for record in records:
                        if record["test"] in CPU_TEST_NAMES and record["status"] == "ok":
                            times[order][record["test"]].append(record["total_time_s"])
        return []

    run_recipe(brain_class_of(hparams_file),
               [str(hparams_file), "--output_folder", str(work_folder), "--test_only",
                "--benchmark_devices=[cpu]"],
               benchmark=five_tests_both_ways)
    return times


def trained_process_times(folder):
    """The CPU tests' times the latest training process recorded (not a --test_only run)."""
    records_path = folder / "benchmark.json"
    if not records_path.is_file():
        return {}
    records = json.loads(records_path.read_text(encoding="utf-8"))
    trained = [record for record in records if "--test_only" not in record.get("command", "")
               and record.get("configured", True) and record.get("status") == "ok"]
    return {record["test"]: record["total_time_s"] for record in trained
            if record["test"] in CPU_TEST_NAMES}


def relative_difference(first, second):
    """``|first - second|`` relative to the smaller of the two."""
    return abs(first - second) / min(first, second)


def report(results):
    """The tables and the verdicts, as text."""
    lines = ["| experiment | test | trained process (s) | greedy first (s) | LM first (s) | "
             "LM first / greedy first | trained / test_only |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, result in results.items():
        for test in CPU_TEST_NAMES:
            medians = {order: statistics.median(result["times"][order][test])
                       for order in ORDERS if result["times"][order][test]}
            if len(medians) < len(ORDERS):
                continue
            trained = result["trained"].get(test)
            order_ratio = medians["lm_first"] / medians["greedy_first"]
            history_ratio = None if trained is None else trained / medians["greedy_first"]
            lines.append(
                f"| {name} | {test} | {'-' if trained is None else f'{trained:.3f}'} | "
                f"{medians['greedy_first']:.3f} | {medians['lm_first']:.3f} | "
                f"{order_ratio:.2f} | {'-' if history_ratio is None else f'{history_ratio:.2f}'} |")
            verdicts.append((f"{name} {test} order", relative_difference(
                medians["lm_first"], medians["greedy_first"])))
            if trained is not None:
                verdicts.append((f"{name} {test} trained process", relative_difference(
                    trained, medians["greedy_first"])))
    names = list(results)
    if len(names) > 1:
        lines += ["", f"| experiment | test | time / {names[0]}'s (greedy first) |",
                  "|---|---|---|"]
        reference = results[names[0]]["times"]["greedy_first"]
        for name in names[1:]:
            for test in CPU_TEST_NAMES:
                own = results[name]["times"]["greedy_first"][test]
                if own and reference[test]:
                    ratio = statistics.median(own) / statistics.median(reference[test])
                    lines.append(f"| {name} | {test} | {ratio:.2f} |")
    lines.append("")
    for label, difference in verdicts:
        verdict = "same" if difference <= TOLERANCE else "DIFFERENT"
        lines.append(f"{verdict}: {label} ({difference:.1%} apart, tolerance {TOLERANCE:.0%})")
    return "\n".join(lines)


def main(argv=None):
    """Run each experiment in its own process, then print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="trained experiment folders")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each order (median)")
    parser.add_argument("--json", type=Path, help="also write the times here")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work_folder", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    if arguments.measure:  # the child process: one experiment
        times = measure(arguments.folders[0].resolve(), arguments.rounds, arguments.work_folder)
        arguments.json.write_text(json.dumps(times), encoding="utf-8")
        return
    for folder in arguments.folders:
        if not (folder / "hyperparams.yaml").is_file():
            parser.error(f"{folder}: not an experiment folder (no hyperparams.yaml)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="clock_check_") as work:
        for index, folder in enumerate(arguments.folders):
            times_file = Path(work) / f"{index}.json"
            print(f"+ {folder}: {arguments.rounds} rounds of each order", flush=True)
            subprocess.run([sys.executable, __file__, str(folder), "--measure",
                            "--rounds", str(arguments.rounds), "--json", str(times_file),
                            "--work_folder", os.path.join(work, str(index))],
                           cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            results[folder.name] = {"times": json.loads(times_file.read_text(encoding="utf-8")),
                                    "trained": trained_process_times(folder)}
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(report(results))


if __name__ == "__main__":
    main()
