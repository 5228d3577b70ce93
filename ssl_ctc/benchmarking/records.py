"""Results records: benchmark.json / benchmark.csv, atomic writes, host and package metadata.

Usage::

    append_records(records, output_folder)
"""

import collections
import csv
import datetime
import importlib
import importlib.metadata
import io
import json
import platform
from pathlib import Path

import torch

from ssl_ctc.cpu.machine import cpu_name
from ssl_ctc.files import write_atomically
from ssl_ctc.imports import import_object
from ssl_ctc.names import RESULTS_CSV, RESULTS_JSON

REPORTED_VERSIONS = (
    "torch",
    "torchaudio",
    "transformers",
    "speechbrain",
    "ptflops",
    "pyctcdecode",
    "kenlm",
    "numpy",
)


def summarize_extras(extras):
    """Aggregates per-utterance strategy outputs (e.g. exit layers).

    Arguments
    ---------
    extras : dict
        Name -> list of 1-D tensors (one per batch).

    Returns
    -------
    dict
        Name -> {"mean", "min", "max"} and, for integer values, a
        "distribution" of [value, count] pairs.

    Example
    -------
    >>> batches = [torch.tensor([13, 15]), torch.tensor([13])]
    >>> summarize_extras({"exit_layers": batches})["exit_layers"]
    {'mean': 13.666666666666666, 'min': 13, 'max': 15, 'distribution': [[13, 2], [15, 1]]}
    """
    summary = {}
    for name, batches in extras.items():
        values = torch.cat([batch.flatten().cpu() for batch in batches])
        stats = {
            "mean": values.double().mean().item(),
            "min": values.min().item(),
            "max": values.max().item(),
        }
        if not values.is_floating_point():
            counts = collections.Counter(values.tolist())
            stats["distribution"] = [[value, counts[value]] for value in sorted(counts)]
        summary[name] = stats
    return summary


def per_utterance_extras(output, batch_size):
    """The entries of an infer_batch output other than log_probs and lengths
    that hold one value per utterance."""
    return {
        name: value.detach()
        for name, value in output.items()
        if name not in ("log_probs", "lengths")
        and torch.is_tensor(value)
        and value.dim() == 1
        and len(value) == batch_size
    }


def flatten_record(record, prefix=""):
    """Flattens nested dicts into dotted keys, for CSV; lists become JSON.

    Arguments
    ---------
    record : dict
    prefix : str
        Prepended to every key.

    Returns
    -------
    dict

    Example
    -------
    >>> flatten_record({"wer": 4.1, "lm": {"alpha": 0.5}, "d": [[13, 2]]})
    {'wer': 4.1, 'lm.alpha': 0.5, 'd': '[[13, 2]]'}
    """
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten_record(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = json.dumps(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def csv_text(rows):
    """CSV text of dict rows, columns in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def append_records(records, output_folder):
    """Adds records to ``benchmark.json`` (kept, never overwritten) and
    rewrites ``benchmark.csv`` from all of them, both atomically.

    Arguments
    ---------
    records : list of dict
    output_folder : str or Path

    Returns
    -------
    list of dict
        Every record of the folder.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = append_records([{"test": "cpu_greedy"}], folder)
    ...     len(append_records([{"test": "macs"}], folder))
    2
    """
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    json_path = output_folder / RESULTS_JSON
    previous = json.loads(json_path.read_text()) if json_path.exists() else []
    all_records = previous + list(records)
    write_atomically(json_path, json.dumps(all_records, indent=2) + "\n")
    write_atomically(
        output_folder / RESULTS_CSV,
        csv_text([flatten_record(record) for record in all_records]),
    )
    return all_records


def latest_records(records):
    """The latest record per (test set, test): a measured one if any, else the latest skipped.

    A later run without a GPU does not hide an earlier GPU measurement.

    Example
    -------
    >>> records = [{"test_set": "t", "test": "gpu_greedy", "status": "ok", "timestamp": "1"},
    ...            {"test_set": "t", "test": "gpu_greedy", "status": "skipped", "timestamp": "2"}]
    >>> latest_records(records)["t", "gpu_greedy"]["status"]
    'ok'
    """
    latest = {}
    for record in records:
        key = (record["test_set"], record["test"])
        rank = (record["status"] == "ok", record["timestamp"])
        if key not in latest or rank >= latest[key][0]:
            latest[key] = (rank, record)
    return {key: record for key, (_, record) in latest.items()}


def package_versions():
    """Versions of Python and of the packages that shape the numbers."""
    versions = {"python": platform.python_version()}
    for package in REPORTED_VERSIONS:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def device_name(device):
    """Human-readable name of a device."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return cpu_name()


def utc_timestamp():
    """The current time in UTC, ISO 8601 (``datetime.timezone.utc``: Python 3.10 has no ``UTC``).

    Example
    -------
    >>> utc_timestamp().endswith("+00:00")
    True
    """
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def recorded_brain_class(experiment_folder):
    """The Brain class that made an experiment, from the ``brain_class`` field of its records.

    Arguments
    ---------
    experiment_folder : str or Path
        A finished run's output folder (with ``benchmark.json``).

    Returns
    -------
    type
        For example ``ssl_ctc.downsampling.DownsampledBrain``.

    Example
    -------
    >>> recorded_brain_class("/nonexistent/experiment")
    Traceback (most recent call last):
    ...
    FileNotFoundError: /nonexistent/experiment/benchmark.json not found: ...
    """
    path = Path(experiment_folder) / RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the experiment's benchmark records name its Brain class"
        )
    names = [record.get("brain_class") for record in json.loads(path.read_text())]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"{path}: no record has a brain_class field (written before 2026-12)")
    return import_object(names[-1])

