"""Checkpoints that survive a killed run: broken ones are set aside, never deleted.

Usage (YAML)::

    checkpointer: !new:ssl_ctc.checkpoints.FallbackCheckpointer
        checkpoints_dir: !ref <save_folder>
"""

import logging
import os
import tempfile
import zipfile

import yaml
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, PARAMFILE_EXT, Checkpointer
from speechbrain.utils.distributed import run_on_main

from ssl_ctc.errors import ConfigurationError

logger = logging.getLogger(__name__)


# Subfolder of save_folder where checkpoints that cannot be loaded are moved.
BROKEN_CHECKPOINTS_FOLDER = "broken_checkpoints"


# First bytes of a torch.save archive (a zip file whose directory is written last).
ZIP_SIGNATURE = b"PK\x03\x04"


class FallbackCheckpointer(Checkpointer):
    """SpeechBrain's Checkpointer that recovers from the newest checkpoint that loads.

    A run killed while saving leaves a checkpoint folder with an unreadable
    ``CKPT.yaml`` or a missing, empty or truncated parameter file. SpeechBrain
    would pick that folder (it is the newest) and fail; here every recovery first
    moves such folders to ``<save_folder>/broken_checkpoints/`` (never deleting
    them) with a warning, so the previous good checkpoint is used. The save
    folder is also checked to be writable when the YAML is loaded.

    Arguments
    ---------
    checkpoints_dir : str
        The YAML's ``save_folder``.
    recoverables : dict, optional
        Name -> object to save and recover.
    **options
        Passed to ``speechbrain.utils.checkpoints.Checkpointer``.
    """

    def __init__(self, checkpoints_dir, recoverables=None, **options):
        check_writable_folder(checkpoints_dir, "save_folder")
        super().__init__(checkpoints_dir, recoverables, **options)

    def recover_if_possible(self, *args, **kwargs):
        """Set broken checkpoints aside (on the main process), then recover as SpeechBrain does."""
        run_on_main(set_aside_broken_checkpoints, args=[self])
        return super().recover_if_possible(*args, **kwargs)


def set_aside_broken_checkpoints(checkpointer):
    """Move the checkpoint folders that cannot be loaded out of the checkpointer's sight.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        Its registered recoverables say which files a checkpoint must hold.

    Returns
    -------
    list of pathlib.Path
        The new places of the folders that were moved.
    """
    required = [
        name
        for name in checkpointer.recoverables
        if not (checkpointer.allow_partial_load or checkpointer.optional_recoverables.get(name)
                or "dataloader" in name)  # SpeechBrain loads these without their file
    ]
    broken_folder = checkpointer.checkpoints_dir / BROKEN_CHECKPOINTS_FOLDER
    moved = []
    for folder in sorted(checkpointer.checkpoints_dir.glob(f"{CKPT_PREFIX}*")):
        if not (folder / METAFNAME).is_file():
            continue  # SpeechBrain ignores a folder without CKPT.yaml
        problem = checkpoint_problem(folder, checkpointer.recoverables, required)
        if problem is None:
            continue
        broken_folder.mkdir(exist_ok=True)
        target = broken_folder / folder.name
        while target.exists():
            target = target.with_name(target.name + "+again")
        folder.rename(target)
        logger.warning(
            f"checkpoint '{folder}' cannot be loaded ({problem}): moved to '{target}'; "
            "recovering from the previous good checkpoint instead"
        )
        moved.append(target)
    return moved


def checkpoint_problem(folder, recoverable_names, required_names):
    """Why a checkpoint folder cannot be loaded, or None when it looks intact.

    Checks what a process killed while saving leaves behind: ``CKPT.yaml``
    unreadable or without its fields, a required file missing, a file empty,
    or a ``torch.save`` archive truncated (its zip directory is written last).

    Arguments
    ---------
    folder : pathlib.Path
        A ``CKPT+...`` folder.
    recoverable_names : iterable of str
        Names whose ``<name>.ckpt`` file is checked when present.
    required_names : iterable of str
        Names whose file must be present.

    Returns
    -------
    str or None
        The problem, naming the file.
    """
    try:
        meta = yaml.safe_load((folder / METAFNAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return f"{METAFNAME} cannot be read: {error}"
    if not isinstance(meta, dict) or "end-of-epoch" not in meta:
        return f"{METAFNAME} is incomplete"
    for name in recoverable_names:
        path = folder / f"{name}{PARAMFILE_EXT}"
        if not path.is_file():
            if name in required_names:
                return f"{path.name} is missing"
            continue
        if path.stat().st_size == 0:
            return f"{path.name} is empty"
        with open(path, "rb") as parameter_file:
            is_archive = parameter_file.read(len(ZIP_SIGNATURE)) == ZIP_SIGNATURE
        if is_archive:
            try:
                with zipfile.ZipFile(path):
                    pass
            except zipfile.BadZipFile as error:
                return f"{path.name} is truncated or corrupt: {error}"
    return None


def check_writable_folder(folder, key):
    """Create ``folder`` if needed and make sure a file can be written in it.

    Arguments
    ---------
    folder : str
        Folder the run writes to.
    key : str
        YAML key that sets it, for the message.

    Example
    -------
    >>> check_writable_folder("/dev/null/results", "output_folder")
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: output_folder '/dev/null/results' cannot be written ...
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigurationError(
            f"{key} '{folder}' cannot be written ({error.strerror}: '{error.filename}'); "
            "give --output_folder a folder you can write to"
        ) from error
