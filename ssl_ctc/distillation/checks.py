"""Distillation's settings, checked before anything is written: teacher, student folder, keys.

A teacher folder that is missing, unfinished, or trained with another label set,
sample rate or data; a weight outside [0, 1] or a temperature <= 0; a student folder
holding a plain run, or a run with another teacher or settings: each is a
``ConfigurationError`` naming the file and key, raised before training starts
(``ssl_ctc.recipe`` calls ``check_distillation``; ``ssl_ctc.distillation.teacher`` trains).

Usage::

    settings = check_distillation(hparams)  # None without a teacher
"""

import dataclasses
import json
import os
from pathlib import Path

import ruamel.yaml

from ssl_ctc.errors import ConfigurationError
from ssl_ctc.inference.loading import INFERENCE_FOLDER, MANIFEST
from ssl_ctc.names import EXPERIMENT_HPARAMS, RESULTS_JSON
from ssl_ctc.recipe_yaml import read_yaml_keys

# In the student's save folder: the teacher that trained it.
TEACHER_RECORD = "distillation_teacher.json"
# Keys of the teacher's saved hyperparams.yaml that must equal the student's.
SAME_LABELS_KEYS = ("output_neurons", "blank_index")
SAME_DATA_KEYS = ("sample_rate", "data_folder", "train_splits")
# The settings that, once a student has trained with them, a resumed run must keep.
RECORDED_SETTINGS = ("teacher", "distillation_weight", "distillation_temperature")


@dataclasses.dataclass(frozen=True)
class DistillationSettings:
    """The checked distillation keys of a recipe YAML (see ``check_distillation``).

    Arguments
    ---------
    teacher : pathlib.Path
        The teacher's experiment folder, resolved.
    weight : float
        ``distillation_weight``, the share of the KL term in the loss.
    temperature : float
        ``distillation_temperature``.
    cache : bool
        ``distillation_cache``: the teacher's posteriors computed once, before the first epoch.
    save_folder : pathlib.Path
        The student's save folder (its record and cache go there).
    blank_index : int
        The CTC blank label (the teacher's too).
    """

    teacher: Path
    weight: float
    temperature: float
    cache: bool
    save_folder: Path
    blank_index: int = 0



def teacher_experiment_folder(teacher):
    """The teacher's experiment folder: the folder given, or the experiment of an inference folder.

    Arguments
    ---------
    teacher : str or Path
        The ``teacher`` key.

    Returns
    -------
    pathlib.Path
        Resolved.

    Example
    -------
    >>> teacher_experiment_folder("/nonexistent/baseline")
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: teacher '/nonexistent/baseline' does not exist ...
    """
    folder = Path(teacher).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigurationError(
            f"teacher '{teacher}' does not exist (give a finished experiment folder of this "
            "recipe, e.g. results/demo/baseline)"
        )
    if (folder / MANIFEST).is_file():  # an inference folder: <experiment>/inference
        if (folder.parent / EXPERIMENT_HPARAMS).is_file() and (
                folder.parent / INFERENCE_FOLDER).resolve() == folder:
            return folder.parent
        raise ConfigurationError(
            f"teacher '{teacher}' is an inference folder outside its experiment: give the "
            "experiment folder (its hyperparams.yaml, save/ and benchmark.json are needed)"
        )
    return folder


def read_saved_hparams(path):
    """A saved recipe YAML's plain values, nothing built (``ssl_ctc.recipe_yaml``)."""
    try:
        saved = read_yaml_keys(path)
    except (OSError, ruamel.yaml.YAMLError) as error:
        raise ConfigurationError(f"teacher's '{path}' cannot be read ({error})") from error
    if not isinstance(saved, dict):
        raise ConfigurationError(f"teacher's '{path}' is not a recipe YAML")
    return saved


def compatible_value(key, teacher_value, student_value):
    """Whether the teacher's value of a key fits the student's (paths resolved, any order)."""
    if key == "data_folder":
        return teacher_value is not None and (
            os.path.realpath(str(teacher_value)) == os.path.realpath(str(student_value)))
    if key == "train_splits":
        return sorted(teacher_value or []) == sorted(student_value or [])
    return teacher_value == student_value


def check_teacher_folder(teacher, hparams):
    """Raise ``ConfigurationError`` unless ``teacher`` is a finished, compatible experiment.

    Finished: its hyperparams.yaml, a checkpoint in ``save/`` and ``benchmark.json``.
    Compatible: the student's label set (``output_neurons``, ``blank_index``), sample
    rate and training data (``data_folder``, ``train_splits``), read from its saved
    hyperparams.yaml without building anything.

    Arguments
    ---------
    teacher : str or Path
        The ``teacher`` key.
    hparams : dict
        The student's loaded YAML.

    Returns
    -------
    pathlib.Path
        The teacher's experiment folder, resolved.
    """
    folder = teacher_experiment_folder(teacher)
    saved_path = folder / EXPERIMENT_HPARAMS
    if not saved_path.is_file():
        raise ConfigurationError(
            f"teacher '{teacher}' is not an experiment folder of this recipe ({saved_path} not "
            "found)"
        )
    if not any((folder / "save").glob("CKPT+*")):
        raise ConfigurationError(
            f"teacher '{teacher}' is unfinished: no checkpoint in '{folder / 'save'}'"
        )
    if not (folder / RESULTS_JSON).is_file():
        raise ConfigurationError(
            f"teacher '{teacher}' is unfinished: no {RESULTS_JSON} (its run has not reached its "
            "test and benchmark); let it finish first"
        )
    if folder == Path(hparams["output_folder"]).resolve():
        raise ConfigurationError(f"teacher '{teacher}' is the student's own output_folder")
    saved = read_saved_hparams(saved_path)
    for key in SAME_LABELS_KEYS + SAME_DATA_KEYS:
        if not compatible_value(key, saved.get(key), hparams.get(key)):
            what = ("another label set: the teacher must share the student's tokenizer"
                    if key in SAME_LABELS_KEYS else "the teacher must be trained on the "
                    "student's training data, at its sample rate")
            raise ConfigurationError(
                f"teacher '{teacher}' has {key} {saved.get(key)!r} ({saved_path}), the student "
                f"{hparams.get(key)!r}: {what}"
            )
    return folder


def check_student_folder(teacher_folder, weight, temperature, save_folder):
    """Refuse to mix trainings: a student folder keeps the teacher and settings it started with.

    Arguments
    ---------
    teacher_folder : pathlib.Path or None
        The teacher now configured (None: no distillation).
    weight, temperature : float
        The distillation settings now configured.
    save_folder : pathlib.Path
        The student's save folder: its record (``TEACHER_RECORD``) and checkpoints.
    """
    record = read_teacher_record(save_folder)
    checkpoints = sorted(save_folder.glob("CKPT+*"))
    if record is None:
        if teacher_folder is not None and checkpoints:
            raise ConfigurationError(
                f"teacher: output_folder '{save_folder.parent}' holds checkpoints of a run without "
                f"a teacher ({checkpoints[0]}); distilling now would mix two trainings: give a "
                "new --output_folder"
            )
        return
    configured = {"teacher": None if teacher_folder is None else str(teacher_folder),
                  "distillation_weight": weight, "distillation_temperature": temperature}
    for key in RECORDED_SETTINGS:
        if configured[key] != record.get(key):
            raise ConfigurationError(
                f"{key}: output_folder '{save_folder.parent}' was trained with {key} "
                f"{record.get(key)!r} ({save_folder / TEACHER_RECORD}), this run has "
                f"{configured[key]!r}: give the same, or a new --output_folder"
            )


def check_distillation(hparams):
    """Check the distillation keys right after the YAML is loaded, before anything is written.

    Arguments
    ---------
    hparams : dict
        The loaded recipe YAML (a YAML without the keys: no distillation).

    Returns
    -------
    DistillationSettings or None
        None without a ``teacher``.

    Example
    -------
    >>> check_distillation({"teacher": None, "save_folder": "/nonexistent/save"}) is None
    True
    >>> check_distillation({"distillation_weight": 1.5})
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: distillation_weight must be a number in [0, 1], got 1.5 ...
    """
    weight = hparams.get("distillation_weight", 0.25)
    temperature = hparams.get("distillation_temperature", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ConfigurationError(
            f"distillation_weight must be a number in [0, 1], got {weight!r} (the KL term's share "
            "of the loss; 0: CTC only)"
        )
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not temperature > 0):
        raise ConfigurationError(
            f"distillation_temperature must be a number > 0, got {temperature!r}"
        )
    teacher = hparams.get("teacher")
    teacher_folder = None if teacher is None else check_teacher_folder(teacher, hparams)
    save_folder = Path(hparams["save_folder"]).resolve()
    check_student_folder(teacher_folder, float(weight), float(temperature), save_folder)
    if teacher_folder is None:
        return None
    return DistillationSettings(teacher_folder, float(weight), float(temperature),
                                bool(hparams.get("distillation_cache", True)), save_folder,
                                hparams.get("blank_index", 0))


def read_teacher_record(save_folder):
    """The student's ``TEACHER_RECORD`` (the teacher that trained it), or None."""
    path = Path(save_folder) / TEACHER_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot read '{path}' ({error})") from error
