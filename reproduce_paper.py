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

Authors
 * Recipe team 2026
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import ruamel.yaml

from librispeech_prepare import DataPreparationError, check_layout
from tools.run_demo import EMBEDDED_OVERRIDES

REPO = Path(__file__).resolve().parent

# (strategy script, YAML), relative to the recipe folder
DOWNSAMPLING = ("downsampled_train.py", "hparams/downsampling.yaml")  # = sig_down8000.yaml
LAYER_REMOVAL = ("layer_removal.py", "hparams/layer_removal.yaml")
EARLY_EXIT = ("early_exiting.py", "hparams/early_exiting/early_exits.yaml")


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the grid: a strategy script run into ``<output_root>/<name>``.

    ``overrides`` is a shell-quoted string; ``{output_root}`` in it is replaced by the
    output root. ``needs`` names the row whose trained model this one tests.
    """

    name: str
    group: str
    recipe: tuple
    overrides: str
    needs: str | None = None


# The paper's grid. Epochs: the authors' where docs/paper.md lists them (SD2 15, AV2 10,
# SD3 10, CL2 12, CL4 25, AV4 25, layer removal 10, early exit 20), else the YAML's 15.
# Early exit trains once (EE-entropy); EE-similarity tests its checkpoints (--test_only,
# same save folder) with the other criterion. Thresholds: the paper's sweeps (entropy
# 0.01-0.10 nats, the authors' 0.10; cosine similarity 0.90-0.99, the authors' 0.95).
EE_TRAINED = "--save_folder {output_root}/EE-entropy/save"
GRID = (
    Row("baseline", "baseline", DOWNSAMPLING, "--downsampling_factor 1"),
    Row("CL2", "CL", DOWNSAMPLING,
        "--downsampling_technique convolutional --downsampling_factor 2 --number_of_epochs 12"),
    Row("CL3", "CL", DOWNSAMPLING,
        "--downsampling_technique convolutional --downsampling_factor 3"),
    Row("CL4", "CL", DOWNSAMPLING,
        "--downsampling_technique convolutional --downsampling_factor 4 --number_of_epochs 25"),
    Row("AV2", "AV", DOWNSAMPLING,
        "--downsampling_technique averaging --downsampling_factor 2 --number_of_epochs 10"),
    Row("AV3", "AV", DOWNSAMPLING, "--downsampling_technique averaging --downsampling_factor 3"),
    Row("AV4", "AV", DOWNSAMPLING,
        "--downsampling_technique averaging --downsampling_factor 4 --number_of_epochs 25"),
    Row("SD2", "SD", DOWNSAMPLING,
        "--downsampling_technique signal_downsampling --downsampling_factor 2 "
        "--number_of_epochs 15"),
    Row("SD3", "SD", DOWNSAMPLING,
        "--downsampling_technique signal_downsampling --downsampling_factor 3 "
        "--number_of_epochs 10"),
    Row("SD4", "SD", DOWNSAMPLING,
        "--downsampling_technique signal_downsampling --downsampling_factor 4"),
    *(Row(f"{layers}L", "layer_removal", LAYER_REMOVAL,
          f"--considered_layers {layers} --number_of_epochs 10") for layers in range(24, 11, -2)),
    Row("EE-entropy", "early_exit", EARLY_EXIT,
        "--exit_criterion entropy --exit_threshold 0.1 "
        "'--exit_threshold_sweep=[0.01, 0.02, 0.05, 0.1]' --number_of_epochs 20"),
    Row("EE-similarity", "early_exit", EARLY_EXIT,
        "--test_only --exit_criterion similarity --exit_threshold 0.95 "
        f"'--exit_threshold_sweep=[0.9, 0.93, 0.95, 0.97, 0.99]' {EE_TRAINED}",
        needs="EE-entropy"),
)

# The embedded grid: the same downsampling rows; the 4-layer seed encoder's depths; exits
# on its 4 layers, with thresholds that reach its early layers (its entropies are higher
# than WavLM Large's after a short training).
EMBEDDED_GRID = tuple(row for row in GRID if row.group not in ("layer_removal", "early_exit")) + (
    *(Row(f"{layers}L", "layer_removal", LAYER_REMOVAL, f"--considered_layers {layers}")
      for layers in range(4, 0, -1)),
    Row("EE-entropy", "early_exit", EARLY_EXIT,
        "'--exit_layers=[1, 2, 3, 4]' --exit_criterion entropy --exit_threshold 0.2 "
        "'--exit_threshold_sweep=[0.05, 0.1, 0.4, 0.8]'"),
    Row("EE-similarity", "early_exit", EARLY_EXIT,
        "--test_only '--exit_layers=[1, 2, 3, 4]' --exit_criterion similarity "
        f"--exit_threshold 0.95 '--exit_threshold_sweep=[0.9, 0.99]' {EE_TRAINED}",
        needs="EE-entropy"),
)
# Groups that gather other groups.
GROUP_ALIASES = {"downsampling": ("baseline", "CL", "AV", "SD")}

# The embedded default at tiny scale: the demo's overrides (tools/run_demo.py) with fewer
# epochs, meant to fit the 16 rows in about 20 minutes on 2 quiet CPU cores (a row of SD2 took
# 29 s alone; the whole grid 65 min with other work on the cores, docs/RESULTS.md); CPU tests only.
EMBEDDED_EPOCHS = 3
EMBEDDED_EXTRA = ["--number_of_epochs", str(EMBEDDED_EPOCHS), "--benchmark_devices=[cpu]"]

# Keys whose value differs between runs of the same row without changing its configuration.
NOT_COMPARED = ("output_folder",)
CPU_TIMED_TESTS = ("cpu_greedy", "cpu_lm")
GPU_TIMED_TESTS = ("gpu_greedy", "gpu_lm")
MAC_TEST = "macs"
BENCHMARK_JSON = "benchmark.json"
SAVED_HYPERPARAMS = "hyperparams.yaml"


class GridError(Exception):
    """A grid that must not run: unknown row, missing data, mixed configurations."""


def select_rows(grid, only=None):
    """The rows named by ``--only`` (rows or groups, comma-separated, any case), in grid order.

    Arguments
    ---------
    grid : sequence of Row
    only : str, optional
        E.g. ``"SD,18L"``; None selects every row.

    Returns
    -------
    list of Row

    Example
    -------
    >>> [row.name for row in select_rows(GRID, "sd,18L")]
    ['SD2', 'SD3', 'SD4', '18L']
    >>> select_rows(GRID, "SD5")
    Traceback (most recent call last):
    ...
    reproduce_paper.GridError: unknown row or group 'SD5'; valid groups: ...
    """
    if not only:
        return list(grid)
    groups = {}
    for row in grid:
        groups.setdefault(row.group, []).append(row.name)
    for alias, members in GROUP_ALIASES.items():
        groups[alias] = [name for member in members for name in groups.get(member, [])]
    names = {**groups, **{row.name: [row.name] for row in grid}}
    by_lower = {name.lower(): rows for name, rows in names.items()}
    chosen = set()
    for requested in filter(None, (part.strip() for part in only.split(","))):
        if requested.lower() not in by_lower:
            raise GridError(
                f"unknown row or group {requested!r}; valid groups: {', '.join(groups)}; "
                f"valid rows: {', '.join(row.name for row in grid)}"
            )
        chosen.update(by_lower[requested.lower()])
    return [row for row in grid if row.name in chosen]


def parse_overrides(tokens):
    """Command-line overrides as a dict: key -> value text, or None for a flag.

    Arguments
    ---------
    tokens : list of str
        ``--key value``, ``--key=value`` or ``--flag``; a later key wins.

    Returns
    -------
    dict

    Example
    -------
    >>> parse_overrides(["--seed", "7", "--test_splits=[test-clean]", "--debug", "--lr", "-1"])
    {'seed': '7', 'test_splits': '[test-clean]', 'debug': None, 'lr': '-1'}
    """
    overrides, key = {}, None
    for token in tokens:
        if token.startswith("--"):
            key, has_value, value = token[2:].partition("=")
            overrides[key] = value if has_value else None
            key = None if has_value else key
        elif key is not None and overrides[key] is None:
            overrides[key], key = token, None
        else:
            raise GridError(f"override value {token!r} follows no --key")
    return overrides


def yaml_value(text):
    """An override's value as the recipe reads it (YAML 1.2), tags kept.

    Example
    -------
    >>> yaml_value("[test-clean]"), yaml_value("0.00005"), yaml_value("null")
    (['test-clean'], 5e-05, None)
    >>> yaml_value("!name:torch.optim.Adam")
    '!name:torch.optim.Adam'
    """
    return plain(ruamel.yaml.YAML().load(f"value: {text}")["value"])


def plain(value):
    """A ruamel value as plain Python; a tagged value as its tag (and value).

    Example
    -------
    >>> plain(ruamel.yaml.YAML().load("a: !apply:torch.manual_seed [1986]\\nb: 2"))
    {'a': ('!apply:torch.manual_seed', [1986]), 'b': 2}
    """
    tag = getattr(getattr(value, "tag", None), "value", None)
    if isinstance(value, ruamel.yaml.comments.TaggedScalar):
        return f"{tag} {value.value}".strip()
    if isinstance(value, dict):
        value = {key: plain(item) for key, item in value.items()}
    elif isinstance(value, list):
        value = [plain(item) for item in value]
    elif isinstance(value, float):
        value = float(value)
    return (tag, value) if tag else value


def load_yaml_keys(path):
    """The top-level keys of a (hyperpyyaml) YAML file as plain values, tags kept."""
    with open(path, encoding="utf-8") as yaml_file:
        return plain(ruamel.yaml.YAML().load(yaml_file))


def same_value(ours, theirs):
    """Whether an override's value equals a saved one (close floats, the same path).

    Example
    -------
    >>> same_value(5e-05, 0.00005), same_value([1, 2], [1, 2.0]), same_value("a", "b")
    (True, True, False)
    """
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)):
        return math.isclose(ours, theirs, rel_tol=1e-9)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(map(same_value, ours, theirs))
    if isinstance(ours, str) and isinstance(theirs, str) and ours != theirs:
        return os.path.exists(ours) and os.path.exists(theirs) and os.path.samefile(ours, theirs)
    return ours == theirs


def configuration_conflicts(saved_hyperparams, overrides):
    """The overrides whose value differs from an earlier run's ``hyperparams.yaml``.

    Arguments
    ---------
    saved_hyperparams : dict
        ``load_yaml_keys`` of the saved file.
    overrides : dict
        ``parse_overrides`` of the row's command; flags and keys the file lacks
        (run options such as ``--device``) are not compared, nor ``output_folder``.

    Returns
    -------
    list of (str, str, object)
        (key, value on this command line, saved value).

    Example
    -------
    >>> configuration_conflicts({"seed": 1986, "lr": 0.9}, {"seed": "7", "lr": "0.9",
    ...                                                     "debug": None, "device": "cpu"})
    [('seed', '7', 1986)]
    """
    return [
        (key, text, saved_hyperparams[key])
        for key, text in overrides.items()
        if text is not None and key in saved_hyperparams and key not in NOT_COMPARED
        and not same_value(yaml_value(text), saved_hyperparams[key])
    ]


def missing_results(records, test_sets, tests, configurations):
    """What a row's ``benchmark.json`` still lacks: expected results without an ok latest record.

    Arguments
    ---------
    records : list of dict
        The records of ``benchmark.json``, oldest first.
    test_sets, tests : sequence of str
    configurations : sequence of (str or None, float or None)
        (exit criterion, threshold) per early-exit configuration; ``[(None, None)]``
        for a model without early exit.

    Returns
    -------
    list of str
        One description per missing result; empty when the row is finished.

    Example
    -------
    >>> records = [{"test_set": "test-clean", "test": "macs", "status": "ok"},
    ...            {"test_set": "test-clean", "test": "cpu_greedy", "status": "ok"},
    ...            {"test_set": "test-clean", "test": "cpu_greedy", "status": "failed"}]
    >>> missing_results(records, ["test-clean"], ["cpu_greedy", "macs"], [(None, None)])
    ['cpu_greedy on test-clean']
    >>> ee = [{"test_set": "t", "test": "macs", "status": "ok", "exit_criterion": "entropy",
    ...        "exit_threshold": 0.1}]
    >>> missing_results(ee, ["t"], ["macs"], [("entropy", 0.10), ("entropy", 0.05)])
    ['macs on t (entropy 0.05)']
    """
    def key(test_set, test, criterion, threshold):
        return test_set, test, criterion, None if threshold is None else round(threshold, 9)

    latest = {}
    for record in records:
        latest[key(record.get("test_set"), record.get("test"), record.get("exit_criterion"),
                   record.get("exit_threshold"))] = record
    missing = []
    for criterion, threshold in configurations:
        for test_set in test_sets:
            for test in tests:
                record = latest.get(key(test_set, test, criterion, threshold))
                if record is None or record.get("status") != "ok":
                    configuration = f" ({criterion} {threshold:g})" if criterion else ""
                    missing.append(f"{test} on {test_set}{configuration}")
    return missing


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
        path = self.folder / BENCHMARK_JSON
        records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
        return missing_results(records, self.test_sets, self.tests, self.configurations)


def plan_row(row, output_root, shared_overrides, cuda_available):
    """A row's merged overrides (its own, then the shared ones) and its expected results."""
    folder = output_root / row.name
    own = parse_overrides(shlex.split(row.overrides.replace("{output_root}", str(output_root))))
    overrides = {**own, **shared_overrides, "output_folder": str(folder)}
    defaults = load_yaml_keys(REPO / row.recipe[1])

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
                      configurations)


def check_configurations(planned):
    """Raise GridError naming every row and key whose folder was made with other values."""
    conflicts = []
    for item in planned:
        saved = item.folder / SAVED_HYPERPARAMS
        if saved.is_file():
            conflicts += [
                f"row {item.row.name}: --{key} {text} here, but {saved} has {key}: {value!r}"
                for key, text, value in configuration_conflicts(load_yaml_keys(saved),
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
    if item.row.needs:
        needed = plans[item.row.needs].folder / BENCHMARK_JSON
        command = f"test -f {shlex.quote(str(needed))} && {command}"
    return command


def run_row(item, plans, log_folder):
    """Run one row (unless finished, or blocked by the row it needs); set its status and time."""
    missing = item.missing()
    if not missing:
        item.status = "finished earlier (skipped)"
        return
    if item.row.needs and plans[item.row.needs].missing():
        item.status = f"blocked: needs {item.row.needs} finished first"
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
                                              "results/paper, with --embedded results/paper_demo)")
    parser.add_argument("--only", help="comma-separated rows or groups (e.g. SD,layer_removal,18L)")
    parser.add_argument("--print-commands", "--print_commands", dest="print_commands",
                        action="store_true",
                        help="print one shell command per unfinished row and run nothing")
    parser.add_argument("--embedded", action="store_true",
                        help="every row at tiny scale on the embedded default (make paper-demo)")
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
        output_root = Path(arguments.output_root or os.path.join(
            "results", "paper_demo" if arguments.embedded else "paper")).absolute()
        cuda_available = _cuda_available()
        plans = {row.name: plan_row(row, output_root, shared, cuda_available) for row in grid}
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
    if any(output_root.rglob(BENCHMARK_JSON)):
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
