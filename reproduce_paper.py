#!/usr/bin/env python3
"""Reproduce the paper's grid in one resumable command, with the paper's numbers beside ours.

Every row of Zaiem et al. 2023 (no downsampling; SD, AV and CL at factors 2, 3, 4;
layer removal from 24 to 12 layers by 2; early exit, trained once, then tested with
the entropy and the similarity criteria over the paper's thresholds) is a plain run
of a strategy script into its own folder ``<output_root>/<row>``, with the authors'
epochs where they are known (the table ``GRID``). Overrides after the options go to
every row. The driver

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
import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from librispeech_prepare import DataPreparationError, check_layout
from ssl_ctc.benchmarking.grid import (
    CPU_TIMED_TESTS,
    EARLY_EXIT,
    EMBEDDED_GRID,
    GPU_TIMED_TESTS,
    GRID,
    GridError,
    Row,
    configuration_conflicts,
    missing_results,
    parse_overrides,
    select_rows,
    yaml_value,
)
from ssl_ctc.names import EXPERIMENT_HPARAMS, MAC_TEST, RESULTS_JSON
from ssl_ctc.recipe_yaml import read_yaml_keys
from tools.run_demo import EMBEDDED_OVERRIDES

REPO = Path(__file__).resolve().parent


# The embedded default at tiny scale: the demo's overrides (tools/run_demo.py) with fewer
# epochs: the 16 rows took 380 s on 2 quiet CPU cores (65 min with other work on the cores,
# docs/RESULTS.md); CPU tests only.
EMBEDDED_EPOCHS = 3
EMBEDDED_EXTRA = ["--number_of_epochs", str(EMBEDDED_EPOCHS), "--benchmark_devices=[cpu]"]


@dataclasses.dataclass
class PlannedRow:
    """A row of this invocation: its command, its folder and what it must produce."""

    row: Row
    overrides: dict
    folder: Path
    splits: list
    test_sets: list
    tests: list
    configurations: list
    needs: str | None = None  # the row whose results this one waits for
    status: str = ""
    seconds: float | None = None

    def command(self):
        """The command line of the row (a list for ``subprocess``)."""
        script, hparams = self.row.recipe
        command = [sys.executable, str(REPO / script), str(REPO / hparams)]
        for key, value in self.overrides.items():
            command += [f"--{key}"] if value is None else [f"--{key}", value]
        return command

    def missing(self):
        """What the row's ``benchmark.json`` still lacks (everything when there is none)."""
        path = self.folder / RESULTS_JSON
        records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
        return missing_results(records, self.test_sets, self.tests, self.configurations)


def plan_row(row, output_root, shared_overrides, cuda_available):
    """A row's merged overrides (its own, then the shared ones) and its expected results."""
    folder = output_root / row.name
    own = parse_overrides(shlex.split(row.overrides.replace("{output_root}", str(output_root))))
    overrides = {**own, **shared_overrides, "output_folder": str(folder)}
    defaults = read_yaml_keys(REPO / row.recipe[1])

    def setting(key):
        return yaml_value(overrides[key]) if overrides.get(key) is not None else defaults[key]

    devices = setting("benchmark_devices")
    lm = setting("lm_path") is not None
    tests = [test for device, device_tests in (("cpu", CPU_TIMED_TESTS), ("cuda", GPU_TIMED_TESTS))
             if device in devices and (device == "cpu" or cuda_available)
             for test in device_tests[: 2 if lm else 1]] + [MAC_TEST]
    splits = [split for key in ("train_splits", "dev_splits", "test_splits")
              for split in setting(key)]
    configurations = [(None, None)]
    if row.recipe == EARLY_EXIT:
        criterion = setting("exit_criterion")
        thresholds = [setting("exit_threshold"), *setting("exit_threshold_sweep")]
        configurations = ([(criterion, None)] if criterion == "fixed" else
                          [(criterion, float(t)) for t in dict.fromkeys(thresholds)])
    return PlannedRow(row, overrides, folder, splits, setting("test_splits"), tests,
                      configurations, row.needs)


def check_configurations(planned):
    """Raise GridError naming every row and key whose folder was made with other values."""
    conflicts = []
    for item in planned:
        saved = item.folder / EXPERIMENT_HPARAMS
        if saved.is_file():
            conflicts += [
                f"row {item.row.name}: --{key} {text} here, but {saved} has {key}: {value!r}"
                for key, text, value in configuration_conflicts(read_yaml_keys(saved),
                                                                item.overrides)
            ]
    if conflicts:
        raise GridError(
            "refusing to mix configurations (nothing was run or deleted):\n  "
            + "\n  ".join(conflicts)
            + "\nPass the earlier values, or another --output_root for the new configuration."
        )


def shell_command(item, plans):
    """One shell line for the row; a row that tests another's model waits for its results."""
    command = shlex.join(item.command())
    if item.needs:
        needed = plans[item.needs].folder / RESULTS_JSON
        command = f"test -f {shlex.quote(str(needed))} && {command}"
    return command


def run_row(item, plans, log_folder):
    """Run one row (unless finished, or blocked by the row it needs); set its status and time."""
    missing = item.missing()
    if not missing:
        item.status = "finished earlier (skipped)"
        return
    if item.needs and plans[item.needs].missing():
        item.status = f"blocked: needs {item.needs} finished first"
        print(f"reproduce_paper: {item.row.name}: {item.status}", flush=True)
        return
    log_path = log_folder / f"{item.row.name}.log"
    print(f"reproduce_paper: {item.row.name}: running, log {log_path}", flush=True)
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')}: "
                  f"{shlex.join(item.command())}\n")
        log.flush()
        result = subprocess.run(item.command(), stdout=log, stderr=subprocess.STDOUT)
    item.seconds = time.time() - start
    missing = item.missing()
    if result.returncode != 0:
        item.status = f"failed (exit {result.returncode}), see {log_path}"
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        print("\n".join(f"    {line}" for line in tail), flush=True)
    elif missing:
        item.status = f"incomplete: no ok {', '.join(missing[:3])}"
    else:
        item.status = "finished"
    print(f"reproduce_paper: {item.row.name}: {item.status} ({item.seconds:.0f} s)", flush=True)


def with_teacher(teacher, rows, plans):
    """The rows to run when every row learns from ``teacher`` (``--teacher``), their plans set.

    ``"baseline"``: the grid's own baseline row runs first, plain, and teaches every
    other row (each waits for it). A folder: that finished experiment teaches every row,
    and the baseline row is left out (the teacher stands for it).

    Arguments
    ---------
    teacher : str
        ``"baseline"`` or a finished experiment of this recipe (or its inference folder).
    rows : list of Row
        The selected rows.
    plans : dict
        Row name -> ``PlannedRow`` of the whole grid (changed in place).

    Returns
    -------
    list of Row
    """
    if teacher == "baseline":
        folder = plans["baseline"].folder
        rows = [plans["baseline"].row] + [row for row in rows if row.name != "baseline"]
    else:
        folder = Path(teacher).absolute()
        if not folder.is_dir():
            raise GridError(f"--teacher {teacher}: no such folder (a finished experiment of this "
                            "recipe, or 'baseline' to train the grid's baseline first)")
        if any(row.name == "baseline" for row in rows):
            print(f"reproduce_paper: baseline row left out: {folder} is the teacher", flush=True)
        rows = [row for row in rows if row.name != "baseline"]
    for name, item in plans.items():
        if name != "baseline":
            item.overrides["teacher"] = str(folder)
            if teacher == "baseline" and item.needs is None:
                item.needs = "baseline"
    return rows


def status_table(planned):
    """The final status of every selected row, in markdown."""
    lines = ["| row | status | seconds | folder |", "|---|---|---|---|"]
    for item in planned:
        seconds = "-" if item.seconds is None else f"{item.seconds:.0f}"
        lines.append(f"| {item.row.name} | {item.status} | {seconds} | {item.folder} |")
    return "\n".join(lines)


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
        shared = parse_overrides(EMBEDDED_OVERRIDES + EMBEDDED_EXTRA) if arguments.embedded else {}
        data_folder = arguments.data_folder or shared["data_folder"]
        shared.update({"data_folder": os.path.abspath(data_folder), **user_overrides})
        default_root = ("paper_demo" if arguments.embedded else "paper") + (
            "_kd" if arguments.teacher else "")
        output_root = Path(arguments.output_root
                           or os.path.join("results", default_root)).absolute()
        cuda_available = _cuda_available()
        plans = {row.name: plan_row(row, output_root, shared, cuda_available) for row in grid}
        if arguments.teacher:
            rows = with_teacher(arguments.teacher, rows, plans)
        planned = [plans[row.name] for row in rows]
        check_layout(shared["data_folder"],
                     sorted({split for item in planned for split in item.splits}))
        check_configurations(planned)
    except (GridError, DataPreparationError) as error:
        parser.error(str(error))
    if arguments.print_commands:
        for item in planned:
            if item.missing():
                print(shell_command(item, plans))
            else:
                print(f"# {item.row.name}: finished, no command", file=sys.stderr)
        return 0
    log_folder = output_root / "logs"
    log_folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for item in planned:
        run_row(item, plans, log_folder)
    summary_ok = True
    if any(output_root.rglob(RESULTS_JSON)):
        summary_ok = subprocess.run([sys.executable, str(REPO / "benchmark.py"), "summarize",
                                     str(output_root), "--paper"]).returncode == 0
    print(status_table(planned))
    done = sum(item.status.startswith("finished") for item in planned)
    print(f"reproduce_paper: {done} of {len(planned)} rows finished in {time.time() - start:.0f} s"
          + ("" if summary_ok else "; the summary failed") + f"; results in {output_root}")
    return 0 if done == len(planned) and summary_ok else 1


def _cuda_available():
    """Whether this machine would run the GPU tests (then they are expected of a finished row)."""
    import torch

    return torch.cuda.is_available()



if __name__ == "__main__":
    sys.exit(main())
