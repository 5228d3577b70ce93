"""Writing an experiment's inference folder: staged, checked against the Brain, swapped in.

At the end of every run (``run_recipe``) the trained experiment is written to
``<output_folder>/inference/``: ``hyperparams.yaml`` (the recipe's own modules,
rebuilt from the SSL encoder's configuration, no hub access:
``ssl_ctc.inference.hparams_yaml``), one weights file per module of the best
checkpoint, the label encoder (``tokenizer.ckpt``), the SSL encoder's ``config.json``
and ``preprocessor_config.json``, ``inference.json`` (format version, interface) and
a ``README.md`` model card with the benchmark's numbers
(``ssl_ctc.inference.model_card``). A strategy with its own interface for
SpeechBrain's ``foreign_class`` (``Brain.inference_interface``: early exit) also
gets it as ``custom_interface.py``.

Usage::

    python -m ssl_ctc.inference results/demo/SD2    # (re)write it for an existing experiment
    python -m ssl_ctc.inference export results/demo/SD2 --format onnx --int8   # add ONNX graphs

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="results/demo/SD2/inference", savedir="/tmp/sd2")
    asr.transcribe_file("speech.flac")
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ssl_ctc.files import display_path, write_json
from ssl_ctc.imports import importable_class_name
from ssl_ctc.inference.hparams_yaml import inference_hparams_yaml, ssl_configs
from ssl_ctc.inference.loading import (
    CUSTOM_INTERFACE_FILE,
    HPARAMS_FILE,
    INFERENCE_FOLDER,
    INFERENCE_FORMAT_VERSION,
    MANIFEST,
    SSL_CONFIG_FOLDER,
    TOKENIZER_FILE,
    load_inference_encoder,
)
from ssl_ctc.inference.model_card import model_card
from ssl_ctc.lm_decoding import LM_DEFAULTS
from ssl_ctc.names import RESULTS_JSON

logger = logging.getLogger(__name__)


def best_checkpoint_name(brain):
    """Name of the checkpoint the modules hold (best validation WER), or None."""
    checkpointer = getattr(brain, "checkpointer", None)
    if checkpointer is None:
        return None
    checkpoint = checkpointer.find_checkpoint(min_key="WER")
    return checkpoint.path.name if checkpoint else None


def check_written_folder(brain, folder):
    """Load the written folder and compare its log-probs with the Brain's on a padded batch."""
    device = str(brain.device)
    encoder, _, _ = load_inference_encoder(folder, device=device)
    generator = torch.Generator().manual_seed(0)
    wavs = (torch.randn(2, 24000, generator=generator) * 0.1).to(device)
    wav_lens = torch.tensor([1.0, 0.7], device=device)
    training = {module: module.training for module in brain.modules.modules()}
    brain.modules.eval()
    try:
        with torch.no_grad():
            expected = brain.infer_batch(wavs, wav_lens)
            loaded = encoder.infer_batch(wavs, wav_lens)
    finally:
        for module, mode in training.items():
            module.training = mode
    same_lengths = torch.equal(expected["lengths"].cpu(), loaded["lengths"].cpu())
    difference = (expected["log_probs"].float() - loaded["log_probs"].float()).abs().max().item()
    if not same_lengths or difference > 1e-3:
        raise RuntimeError(
            f"the inference folder '{folder}' does not reproduce the trained model "
            f"(lengths equal: {same_lengths}, largest log-prob difference {difference:.2e})"
        )


def write_folder_files(brain, staging, folder):
    """Write every file of the inference folder into ``staging`` (``folder``: where it goes)."""
    output_folder = Path(brain.hparams.output_folder)
    module_names = list(brain.modules.keys())
    tags = brain.experiment_tags()
    records_path = output_folder / RESULTS_JSON
    records = json.loads(records_path.read_text()) if records_path.is_file() else []
    lm_settings = {"lm_unigrams_path": getattr(brain.hparams, "lm_unigrams_path", None)}
    lm_settings.update({key: getattr(brain.hparams, key, default)
                        for key, default in LM_DEFAULTS.items()})
    weight_files = []
    for name in module_names:
        state = {key: value.detach().cpu() for key, value in
                 brain.modules[name].state_dict().items()}
        torch.save(state, staging / f"{name}.ckpt")
        weight_files.append(f"{name}.ckpt")
    brain.tokenizer.save(staging / TOKENIZER_FILE)
    (staging / SSL_CONFIG_FOLDER).mkdir()
    model_config, preprocessor_config = ssl_configs(brain.hparams.ssl)
    write_json(staging / SSL_CONFIG_FOLDER / "config.json", model_config)
    write_json(staging / SSL_CONFIG_FOLDER / "preprocessor_config.json", preprocessor_config)
    (staging / HPARAMS_FILE).write_text(
        inference_hparams_yaml(brain, module_names, lm_settings), encoding="utf-8"
    )
    manifest = {
        "format_version": INFERENCE_FORMAT_VERSION,
        "interface": "speechbrain.inference.ASR.EncoderASR",
        "brain_class": importable_class_name(type(brain)),
        "name": tags["name"],
        "files": [HPARAMS_FILE, TOKENIZER_FILE, *weight_files],
    }
    interface = brain.inference_interface()
    if interface is not None:
        shutil.copyfile(interface["source"], staging / CUSTOM_INTERFACE_FILE)
        manifest["custom_interface"] = {"pymodule_file": CUSTOM_INTERFACE_FILE,
                                        "classname": interface["classname"]}
    write_json(staging / MANIFEST, manifest)
    (staging / "README.md").write_text(
        model_card(brain, tags, records, best_checkpoint_name(brain), display_path(folder)),
        encoding="utf-8",
    )


def write_inference_folder(brain, folder=None, check=True):
    """Write ``<output_folder>/inference/`` for a trained Brain (its modules as they are now).

    Arguments
    ---------
    brain : ssl_ctc.brain.SSLCTCBrain
        With the best checkpoint loaded (as after ``evaluate(min_key="WER")``) and
        ``tokenizer`` set; its modules unwrapped (no DDP).
    folder : str or Path, optional
        Default ``<output_folder>/inference``.
    check : bool
        Load the written folder and check that it gives the Brain's log-probs.

    Returns
    -------
    Path
        The folder. It is written next to the old one, then swapped in.
    """
    output_folder = Path(brain.hparams.output_folder)
    folder = Path(folder) if folder is not None else output_folder / INFERENCE_FOLDER
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_folder_files(brain, staging, folder)
        if check:
            check_written_folder(brain, staging)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / folder.name)
        staging.chmod(0o755)
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(f"inference folder written: {folder}")
    return folder
