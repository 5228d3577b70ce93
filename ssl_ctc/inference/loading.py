"""Reading an inference folder, and rebuilding a finished experiment's Brain from its folder.

An inference folder holds ``inference.json`` (format version, interface, the files it
needs), ``hyperparams.yaml`` (what ``EncoderASR`` builds: ``ssl_ctc.inference.runtime``),
one weights file per module, the label encoder and the SSL encoder's configuration.
This module reads it as ``EncoderASR`` does, naming what is wrong; it imports nothing
of the benchmark (but its records, for an experiment saved before the ``brain_class`` key).

Usage::

    encoder, hparams, manifest = load_inference_encoder("results/demo/SD2")
    brain = load_experiment_brain("results/demo/SD2")   # best checkpoint loaded
"""

import json
import re
from pathlib import Path

from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.fetching import LocalStrategy

from ssl_ctc.ctc import make_tokenizer
from ssl_ctc.imports import import_object
from ssl_ctc.names import EXPERIMENT_HPARAMS
from ssl_ctc.recipe_yaml import read_yaml_keys

# Bumped whenever a folder written by this code could not be read by older code, or the
# reverse (2: the runtime modules moved to ssl_ctc.inference.runtime).
INFERENCE_FORMAT_VERSION = 2
# The folder's layout: <output_folder>/inference/ and the files in it.
INFERENCE_FOLDER = "inference"
MANIFEST = "inference.json"
HPARAMS_FILE = "hyperparams.yaml"
TOKENIZER_FILE = "tokenizer.ckpt"
SSL_CONFIG_FOLDER = "ssl_encoder"
CUSTOM_INTERFACE_FILE = "custom_interface.py"  # a strategy's interface, for foreign_class
# The key of the experiment's own YAML (``EXPERIMENT_HPARAMS``) naming the Brain class.
BRAIN_CLASS_KEY = "brain_class"


class InferenceFolderError(Exception):
    """An inference folder that cannot be loaded; the message names the file."""


def find_inference_folder(folder):
    """The inference folder of an experiment folder, or the folder itself.

    Raises ``InferenceFolderError`` naming what is missing.

    Example
    -------
    >>> find_inference_folder("/nonexistent/experiment")
    Traceback (most recent call last):
    ...
    ssl_ctc.inference.loading.InferenceFolderError: model folder '/nonexistent/experiment' ...
    """
    folder = Path(folder)
    if not folder.exists():
        raise InferenceFolderError(f"model folder '{folder}' does not exist")
    for candidate in (folder, folder / INFERENCE_FOLDER):
        if (candidate / MANIFEST).is_file():
            return candidate
    if (folder / "save").is_dir() or (folder / EXPERIMENT_HPARAMS).is_file():
        raise InferenceFolderError(
            f"experiment '{folder}' has no inference folder ({folder / INFERENCE_FOLDER / MANIFEST}"
            f" not found); write it with: python -m ssl_ctc.inference {folder}"
        )
    raise InferenceFolderError(
        f"'{folder}' is neither an inference folder nor an experiment folder "
        f"({folder / MANIFEST} not found)"
    )


def read_manifest(folder):
    """``inference.json`` of an inference folder, its format version checked."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        version = int(manifest["format_version"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InferenceFolderError(f"cannot read '{path}': {error}") from error
    if version > INFERENCE_FORMAT_VERSION:
        raise InferenceFolderError(
            f"'{path}' has format_version {version}, written by a newer version of this recipe; "
            f"this code reads format_version {INFERENCE_FORMAT_VERSION} and older: update the "
            "recipe's code"
        )
    if version < INFERENCE_FORMAT_VERSION:
        raise InferenceFolderError(
            f"'{path}' has format_version {version}, written by an older version of this "
            f"recipe (this code reads {INFERENCE_FORMAT_VERSION}): write it again with: "
            "python -m ssl_ctc.inference <experiment folder>"
        )
    missing = [name for name in manifest.get("files", []) if not (Path(folder) / name).is_file()]
    if missing:
        raise InferenceFolderError(
            f"inference folder '{folder}' lacks {', '.join(missing)} (listed in '{path}'): "
            f"no weights to load; write it again with: python -m ssl_ctc.inference "
            f"<experiment folder>"
        )
    return manifest


def load_inference_encoder(folder, device="cpu", overrides=None):
    """Build a folder's ``RecipeCTCEncoder`` and tokenizer, as ``EncoderASR`` would.

    Arguments
    ---------
    folder : str or Path
        An inference folder, or an experiment folder holding one.
    device : str
        Where the modules go.
    overrides : dict, optional
        Keys of ``hyperparams.yaml`` to change (``exit_threshold``...).

    Returns
    -------
    tuple
        ``(encoder, hparams, manifest)``: the module in eval mode, the loaded YAML
        (``tokenizer`` and the LM keys in it) and ``inference.json``.
    """
    folder = find_inference_folder(folder)
    manifest = read_manifest(folder)
    with open(folder / HPARAMS_FILE, encoding="utf-8") as hparams_file:
        hparams = load_hyperpyyaml(hparams_file, overrides or {})
    pretrainer = hparams["pretrainer"]
    pretrainer.set_collect_in(None)
    pretrainer.collect_files(default_source=str(folder), local_strategy=LocalStrategy.NO_LINK)
    pretrainer.load_collected()
    hparams["tokenizer"].expect_len(hparams["output_neurons"])
    encoder = hparams["encoder"].to(device).eval()
    return encoder, hparams, manifest


def experiment_brain_class(experiment_folder):
    """The Brain class of an experiment: the ``brain_class`` key of its saved hyperparams.yaml.

    Nothing in the YAML is built (no encoder, no hub). An experiment saved before
    the key existed is read from the ``brain_class`` field of its benchmark records.

    Arguments
    ---------
    experiment_folder : str or Path
        A run's output folder.

    Returns
    -------
    type
        For example ``ssl_ctc.downsampling.DownsampledBrain``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "hyperparams.yaml").write_text(
    ...         "brain_class: !name:ssl_ctc.layer_removal.LayerRemovalBrain\\n"
    ...         "seed: 1986\\n__set_seed: !apply:torch.manual_seed [!ref <seed>]\\n")
    ...     experiment_brain_class(folder).__name__
    'LayerRemovalBrain'
    """
    path = Path(experiment_folder) / EXPERIMENT_HPARAMS
    try:
        saved = read_yaml_keys(path)
    except OSError as error:
        raise InferenceFolderError(f"'{path}' not found: not an experiment folder") from error
    name = saved.get(BRAIN_CLASS_KEY) if isinstance(saved, dict) else None
    if name is None:  # saved before the key existed: the benchmark records name the class
        from ssl_ctc.benchmarking.records import recorded_brain_class

        return recorded_brain_class(experiment_folder)
    return import_object(name.removeprefix("!name:"))


def relocated_hparams(text, experiment_folder):
    r"""An experiment's saved hyperparams with its paths moved to where the experiment is now.

    SpeechBrain saves the YAML with its references resolved, so the save folder, the
    manifests and the encoder's cache are absolute paths below the ``output_folder``
    the run had; a copied or moved experiment reads its own files instead.

    Example
    -------
    >>> saved = "output_folder: /old/SD2\nsave_folder: /old/SD2/save\ndata_folder: /data\n"
    >>> print(relocated_hparams(saved, "/new/SD2"), end="")
    output_folder: /new/SD2
    save_folder: /new/SD2/save
    data_folder: /data
    """
    original = re.search(r"^output_folder:\s*(\S.*?)\s*$", text, flags=re.MULTILINE)
    if original is None or original.group(1) == str(experiment_folder):
        return text
    pattern = re.escape(original.group(1)) + r"(?=[/\s'\"]|$)"
    return re.sub(pattern, lambda _: str(experiment_folder), text, flags=re.MULTILINE)


def load_experiment_brain(experiment_folder, device="cpu"):
    """Rebuild a finished experiment's Brain from its folder, best checkpoint loaded.

    Arguments
    ---------
    experiment_folder : str or Path
        A run's output folder: ``hyperparams.yaml`` (its ``brain_class`` key names
        the Brain) and ``save/CKPT+*``.
    device : str

    Returns
    -------
    ssl_ctc.brain.SSLCTCBrain
    """
    experiment_folder = Path(experiment_folder).resolve()
    brain_class = experiment_brain_class(experiment_folder)
    text = relocated_hparams(
        (experiment_folder / EXPERIMENT_HPARAMS).read_text(encoding="utf-8"), experiment_folder)
    hparams = load_hyperpyyaml(text, {"output_folder": str(experiment_folder)})
    brain = brain_class(modules=hparams["modules"], hparams=hparams,
                        run_opts={"device": device}, checkpointer=hparams["checkpointer"])
    brain.tokenizer = make_tokenizer()
    if brain.checkpointer.recover_if_possible(min_key="WER") is None:
        raise InferenceFolderError(f"no checkpoint in '{experiment_folder / 'save'}'")
    brain.modules.eval()
    return brain
