"""The paper's grid as data: its rows, their selection, and what a finished row's folder holds.

Each row of Zaiem et al. 2023 is a strategy script run with some overrides into
``<output_root>/<row>``; ``reproduce_paper.py`` runs them. Here: the rows (``GRID``, and
``EMBEDDED_GRID`` for the embedded default), ``--only`` selection, the recipe's override
syntax, the check that a folder was made with the same configuration, and the results a
finished row must hold. The scripts are named by path only (nothing is imported from them).

Usage::

    rows = select_rows(GRID, "SD,18L")
    missing = missing_results(records, ["test-clean"], ["cpu_greedy", "macs"], [(None, None)])
"""

import dataclasses
import math
import os

from ssl_ctc.names import CPU_TESTS, GPU_TESTS
from ssl_ctc.recipe_yaml import parse_recipe_yaml, plain

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
# The paper's downsampling techniques by the prefix of their rows' names (SD2, AV3, CL4).
TECHNIQUES = {"CL": "convolutional", "AV": "averaging", "SD": "signal_downsampling"}


def downsampling_overrides(name):
    """The recipe overrides of a downsampling row of the paper named like ``SD2`` or ``CL3``.

    Example
    -------
    >>> downsampling_overrides("CL3")
    {'downsampling_technique': 'convolutional', 'downsampling_factor': 3}
    """
    return {"downsampling_technique": TECHNIQUES[name[:2]], "downsampling_factor": int(name[2:])}


def _downsampling_row(name, epochs=None):
    """A row of the grid for ``downsampling_overrides(name)``, with the authors' epochs."""
    overrides = " ".join(f"--{key} {value}" for key, value in downsampling_overrides(name).items())
    epochs = "" if epochs is None else f" --number_of_epochs {epochs}"
    return Row(name, name[:2], DOWNSAMPLING, overrides + epochs)


GRID = (
    Row("baseline", "baseline", DOWNSAMPLING, "--downsampling_factor 1"),
    *(_downsampling_row(name, epochs) for name, epochs in (
        ("CL2", 12), ("CL3", None), ("CL4", 25), ("AV2", 10), ("AV3", None), ("AV4", 25),
        ("SD2", 15), ("SD3", 10), ("SD4", None))),
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

# Keys whose value differs between runs of the same row without changing its configuration.
NOT_COMPARED = ("output_folder",)
CPU_TIMED_TESTS = tuple(name for name, _ in CPU_TESTS)
GPU_TIMED_TESTS = tuple(name for name, _ in GPU_TESTS)


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
    ssl_ctc.benchmarking.grid.GridError: unknown row or group 'SD5'; valid groups: ...
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
    return plain(parse_recipe_yaml(f"value: {text}")["value"])


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
        ``ssl_ctc.recipe_yaml.read_yaml_keys`` of the saved file.
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
