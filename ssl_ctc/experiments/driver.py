"""The driver: a list of rows run into one folder each, resumably, then summarised.

Each row (``ssl_ctc.experiments.registry.Row``) is a plain run of its strategy script
into ``<output_root>/<row>`` with its own overrides, then the overrides shared by every
row. A finished row (its ``benchmark.json`` holds ok records of every expected test on
every test set, and every threshold for early exit) is skipped, an interrupted one
resumes (the recipe resumes from its checkpoints), a failed one is reported and the
others go on; a row whose ``hyperparams.yaml`` was written with other values of the
overrides it passes, or a missing data folder, is refused before anything runs. It
ends with ``benchmark.py summarize <output_root>`` (``--paper``: beside the paper's
table). ``reproduce_paper.py`` and ``tools/run_demo.py`` run it.

Usage::

    planned, plans = plan(rows, rows, output_root, shared_overrides)
    status = run(planned, plans, output_root, "run_demo", paper_comparison=False)
"""

import dataclasses
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from librispeech_prepare import check_layout
from ssl_ctc.benchmarking.grid import (
    CPU_TIMED_TESTS,
    GPU_TIMED_TESTS,
    GridError,
    configuration_conflicts,
    missing_results,
    parse_overrides,
    yaml_value,
)
from ssl_ctc.experiments.registry import EARLY_EXIT, RECIPE, Row
from ssl_ctc.names import EXPERIMENT_HPARAMS, MAC_TEST, RESULTS_JSON
from ssl_ctc.recipe_yaml import read_yaml_keys

REPO = Path(RECIPE)


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
    own = parse_overrides(row.arguments(output_root))
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


def run_row(item, plans, log_folder, program):
    """Run one row (unless finished, or blocked by the row it needs); set its status and time."""
    missing = item.missing()
    if not missing:
        item.status = "finished earlier (skipped)"
        return
    if item.needs and plans[item.needs].missing():
        item.status = f"blocked: needs {item.needs} finished first"
        print(f"{program}: {item.row.name}: {item.status}", flush=True)
        return
    log_path = log_folder / f"{item.row.name}.log"
    print(f"{program}: {item.row.name}: running, log {log_path}", flush=True)
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
    print(f"{program}: {item.row.name}: {item.status} ({item.seconds:.0f} s)", flush=True)


def with_teacher(teacher, rows, plans, program):
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
    program : str
        Names the messages.

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
            print(f"{program}: baseline row left out: {folder} is the teacher", flush=True)
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


def plan(grid, rows, output_root, shared_overrides, teacher=None, program="driver"):
    """The selected rows' plans, checked before anything runs.

    Arguments
    ---------
    grid : sequence of Row
        Every row the selected ones may need (``needs``, the teacher).
    rows : list of Row
        The rows to run, from ``grid``.
    output_root : Path
        Absolute; one folder per row is made there.
    shared_overrides : dict
        ``parse_overrides`` of the overrides passed to every row (``data_folder`` among them).
    teacher : str, optional
        See ``with_teacher``.
    program : str
        Names the messages.

    Returns
    -------
    tuple
        ``(planned, plans)``: the ``PlannedRow`` of each row to run, in order, and the
        plans of the whole grid by row name.

    Raises
    ------
    GridError, librispeech_prepare.DataPreparationError
        A missing data folder or split, a teacher that is no folder, or a row folder
        made with other values of its overrides.
    """
    plans = {row.name: plan_row(row, output_root, shared_overrides, cuda_available())
             for row in grid}
    if teacher:
        rows = with_teacher(teacher, rows, plans, program)
    planned = [plans[row.name] for row in rows]
    check_layout(shared_overrides["data_folder"],
                 sorted({split for item in planned for split in item.splits}))
    check_configurations(planned)
    return planned, plans


def print_commands(planned, plans):
    """Print one shell command per unfinished row (finished ones are named on stderr)."""
    for item in planned:
        if item.missing():
            print(shell_command(item, plans))
        else:
            print(f"# {item.row.name}: finished, no command", file=sys.stderr)


def run(planned, plans, output_root, program, paper_comparison=True):
    """Run the planned rows, summarise the output root, print the status; return the exit status.

    Arguments
    ---------
    planned, plans : list, dict
        From ``plan``.
    output_root : Path
    program : str
        Names the messages.
    paper_comparison : bool
        ``benchmark.py summarize --paper``: the paper's table beside the measured one.

    Returns
    -------
    int
        0 when every row finished and the summary was written, else 1.
    """
    log_folder = output_root / "logs"
    log_folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for item in planned:
        run_row(item, plans, log_folder, program)
    summary_ok = True
    if any(output_root.rglob(RESULTS_JSON)):
        summary_ok = subprocess.run(
            [sys.executable, str(REPO / "benchmark.py"), "summarize", str(output_root),
             *(["--paper"] if paper_comparison else [])]).returncode == 0
    print(status_table(planned))
    done = sum(item.status.startswith("finished") for item in planned)
    print(f"{program}: {done} of {len(planned)} rows finished in {time.time() - start:.0f} s"
          + ("" if summary_ok else "; the summary failed") + f"; results in {output_root}")
    return 0 if done == len(planned) and summary_ok else 1


def cuda_available():
    """Whether this machine would run the GPU tests (then they are expected of a finished row)."""
    import torch

    return torch.cuda.is_available()
