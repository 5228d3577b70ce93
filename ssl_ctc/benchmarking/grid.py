"""A grid of rows: their selection, and what a finished row's folder holds.

Each row (``ssl_ctc.experiments.registry``) is a strategy script run with some overrides
into ``<output_root>/<row>``; ``ssl_ctc.experiments.driver`` runs them. Here: ``--only``
selection, the recipe's override syntax, the check that a folder was made with the same
configuration, and the results a finished row must hold.

Usage::

    rows = select_rows(GRID, "SD,18L")
    missing = missing_results(records, ["test-clean"], ["cpu_greedy", "macs"], [(None, None)])
"""

import math
import os

from ssl_ctc.experiments.registry import GROUP_ALIASES
from ssl_ctc.names import CPU_TESTS, GPU_TESTS
from ssl_ctc.recipe_yaml import parse_recipe_yaml, plain

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
    grid : sequence of ssl_ctc.experiments.registry.Row
    only : str, optional
        E.g. ``"SD,18L"``; None selects every row.

    Returns
    -------
    list of Row

    Example
    -------
    >>> from ssl_ctc.experiments.registry import GRID
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
