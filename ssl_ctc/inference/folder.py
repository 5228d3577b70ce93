"""The inference folder of an experiment: what SpeechBrain's ``EncoderASR`` loads, offline.

At the end of every run (``run_recipe``) the trained experiment is written to
``<output_folder>/inference/``: ``hyperparams.yaml`` (the recipe's own modules,
rebuilt from the SSL encoder's configuration, no hub access), one weights file per
module of the best checkpoint, the label encoder (``tokenizer.ckpt``), the SSL
encoder's ``config.json`` and ``preprocessor_config.json``, ``inference.json``
(format version, interface) and a ``README.md`` model card with the benchmark's
numbers. Early-exit experiments also get ``custom_interface.py``
(``early_exiting/inference.py``) for SpeechBrain's ``foreign_class``.

Usage::

    python -m ssl_ctc.inference results/demo/SD2    # (re)write it for an existing experiment

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="results/demo/SD2/inference", savedir="/tmp/sd2")
    asr.transcribe_file("speech.flac")
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.fetching import LocalStrategy

from ssl_ctc.benchmarking.records import RESULTS_JSON, latest_records
from ssl_ctc.ctc import greedy_decode
from ssl_ctc.encoder import SSLEncoder
from ssl_ctc.files import write_atomically
from ssl_ctc.imports import import_object, importable_class_name
from ssl_ctc.lm_decoding import LM_DEFAULTS

logger = logging.getLogger(__name__)

# Bumped whenever a folder written by this code could not be read by older code.
INFERENCE_FORMAT_VERSION = 1
INFERENCE_FOLDER = "inference"
MANIFEST = "inference.json"
HPARAMS_FILE = "hyperparams.yaml"
TOKENIZER_FILE = "tokenizer.ckpt"
SSL_CONFIG_FOLDER = "ssl_encoder"
CUSTOM_INTERFACE_FILE = "custom_interface.py"
CUSTOM_INTERFACE_CLASS = "EarlyExitASR"
CUSTOM_INTERFACE_SOURCE = Path(__file__).resolve().parents[2] / "early_exiting" / "inference.py"
# Keys of the recipe's hparams that a strategy's Brain may read at inference.
DOWNSAMPLING_KEYS = ("sample_rate", "blank_index", "output_neurons", "considered_layers",
                     "downsampling_technique", "downsampling_factor", "ctc_upsampling_factor")
EARLY_EXIT_KEYS = ("sample_rate", "blank_index", "output_neurons", "considered_layers",
                   "exit_layers", "exit_criterion", "exit_threshold", "exit_layer",
                   "exit_decision")


class InferenceFolderError(Exception):
    """An inference folder that cannot be loaded; the message names the file."""


# ------------------------------------------------------------------ modules the YAML builds


class ConfigOnlySSLEncoder(SSLEncoder):
    """The recipe's ``SSLEncoder`` built from its configuration; weights come from the folder.

    The Hugging Face configuration and feature-extractor settings are given as
    dicts (``hyperparams.yaml`` holds them, so the folder needs no hub and no path
    of its own); the model is built with ``from_config`` and its fine-tuned weights
    are loaded afterwards by the Pretrainer. Forward, padding handling and depth are
    ``SSLEncoder``'s.

    Arguments
    ---------
    model_config : dict
        The encoder's ``config.json`` (already cut to the kept layers).
    preprocessor_config : dict
        Its ``preprocessor_config.json`` (``do_normalize`` decides waveform normalisation).
    **encoder_options
        Passed to ``SSLEncoder`` (``output_norm``, ``matmul_front_end``...).

    Example
    -------
    >>> import transformers
    >>> config = transformers.WavLMConfig(hidden_size=16, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
    ...     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2).to_dict()
    >>> encoder = ConfigOnlySSLEncoder(config, {"do_normalize": True}, output_norm=True)
    >>> encoder.eval()(torch.randn(1, 4000)).shape
    torch.Size([1, 12, 16])
    """

    def __init__(self, model_config, preprocessor_config, **encoder_options):
        with tempfile.TemporaryDirectory(prefix="ssl_config_") as folder:
            write_json(Path(folder) / "config.json", model_config)
            write_json(Path(folder) / "preprocessor_config.json", preprocessor_config)
            super().__init__(folder, folder, **encoder_options)

    def _from_pretrained(self, source, save_path, cache_dir, device=None, **kwargs):
        """Build the model from its configuration (random weights, replaced when loaded)."""
        self.model = self.auto_class.from_config(self.config)


class RecipeCTCEncoder(torch.nn.Module):
    """A trained Brain's inference path as a module: ``EncoderASR``'s ``encoder``.

    It runs the strategy Brain's own ``infer_batch`` (downsampler, SSL encoder,
    head, CTC upsampling, log-softmax, or early exit) on the modules the YAML
    built, so inference is the benchmark's code path. ``forward`` returns the
    log-probs with the frames past each utterance's exact length set to a certain
    blank (log-prob 0 for blank, -inf elsewhere): greedy decoding of all frames
    then equals decoding each utterance's valid frames, and ``valid_frame_lengths``
    recovers the lengths.

    Arguments
    ---------
    brain_class : str
        Dotted name of the Brain, e.g. ``ssl_ctc.downsampling.DownsampledBrain``.
    modules : dict
        The Brain's ``modules`` (names as in the recipe's YAML).
    hparams : dict
        What its ``infer_batch`` reads from ``self.hparams``.
    blank_index : int
        CTC blank label.
    """

    def __init__(self, brain_class, modules, hparams, blank_index=0):
        super().__init__()
        self.brain_class = brain_class
        self.recipe_modules = torch.nn.ModuleDict(modules)
        self.blank_index = blank_index
        brain_type = import_object(brain_class)
        # A Brain without its training machinery: only its inference methods run,
        # on these modules and hparams.
        brain = brain_type.__new__(brain_type)
        brain.modules = self.recipe_modules
        brain.hparams = types.SimpleNamespace(**hparams)
        brain.device = "cpu"
        object.__setattr__(self, "brain", brain)  # not a submodule: no second copy of weights

    def infer_batch(self, wavs, wav_lens=None):
        """The Brain's ``infer_batch``: ``{"log_probs", "lengths", ...}`` (exact lengths)."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        self.brain.device = str(wavs.device)
        return self.brain.infer_batch(wavs, wav_lens)

    def forward(self, wavs, wav_lens=None):
        """CTC log-probs ``[B, T, V]``, padding frames set to a certain blank."""
        output = self.infer_batch(wavs, wav_lens)
        return blank_padding(output["log_probs"].float(), output["lengths"], self.blank_index)


def blank_padding(log_probs, lengths, blank_index):
    """Set the frames past each utterance's length to log-prob 0 for blank, -inf elsewhere.

    Example
    -------
    >>> padded = blank_padding(torch.zeros(1, 3, 2).log_softmax(-1), torch.tensor([2]), 0)
    >>> padded[0, 2].tolist(), valid_frame_lengths(padded).tolist()
    ([0.0, -inf], [2])
    """
    padding = torch.arange(log_probs.shape[1], device=log_probs.device) >= lengths[:, None]
    blank = torch.full_like(log_probs[0, 0], float("-inf"))
    blank[blank_index] = 0.0
    return torch.where(padding[..., None], blank, log_probs)


def valid_frame_lengths(log_probs):
    """Frames of each utterance that are not padding (see ``blank_padding``)."""
    return (~torch.isneginf(log_probs).any(dim=-1)).sum(dim=1)


def in_process_lm_decoder(tokenizer, lm_path, lm_unigrams_path, lm_alpha, lm_beta,
                          lm_beam_width):
    """An in-process ``LMDecoder`` (its LM is loaded once per process by ``lm_decoding``)."""
    from ssl_ctc.benchmarking.settings import BenchmarkSettings
    from ssl_ctc.lm_decoding import LMDecoder

    settings = BenchmarkSettings(lm_path=str(lm_path), lm_unigrams_path=lm_unigrams_path,
                                 lm_alpha=lm_alpha, lm_beta=lm_beta,
                                 lm_beam_width=lm_beam_width, lm_decode_workers=1)
    return LMDecoder(tokenizer, settings)


def decode_words(log_probs, lengths, tokenizer, lm_path=None, lm_unigrams_path=None,
                 lm_alpha=LM_DEFAULTS["lm_alpha"], lm_beta=LM_DEFAULTS["lm_beta"],
                 lm_beam_width=LM_DEFAULTS["lm_beam_width"]):
    """Greedy CTC decoding, or the benchmark's KenLM beam search when ``lm_path`` is set.

    Arguments
    ---------
    log_probs : torch.Tensor
        ``[B, T, V]`` CTC log-probs.
    lengths : torch.Tensor
        ``[B]`` valid frames.
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
    lm_path, lm_unigrams_path, lm_alpha, lm_beta, lm_beam_width
        As the recipe's YAML keys of the same names.

    Returns
    -------
    list of list of str
    """
    if lm_path is None:
        return greedy_decode(log_probs, lengths, tokenizer)
    decoder = in_process_lm_decoder(tokenizer, str(lm_path), lm_unigrams_path,
                                    float(lm_alpha), float(lm_beta), int(lm_beam_width))
    return decoder.decode(log_probs, lengths)


def decode_tokens(log_probs, wav_lens, tokenizer, **decoding_options):
    """``EncoderASR``'s ``decoding_function``: the token ids of ``decode_words``'s transcript.

    ``EncoderASR`` joins the labels of the ids it gets back, so each transcript
    comes back as its words' labels joined by single spaces: its text is the
    benchmark's ``" ".join(words)``, spelt with the tokenizer's characters (greedy
    or with the LM, as ``decode_words``).

    Arguments
    ---------
    log_probs : torch.Tensor
        ``RecipeCTCEncoder`` output (padding set to blank).
    wav_lens : torch.Tensor
        Relative input lengths (unused: the padding is in ``log_probs``).
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
    **decoding_options
        ``lm_path`` and the LM settings of ``decode_words``.

    Returns
    -------
    list of list of int

    Example
    -------
    >>> from ssl_ctc.ctc import make_tokenizer
    >>> tokenizer = make_tokenizer()
    >>> labels = [" ", "H", "<eos>", "I", " ", " ", "Y", " "]
    >>> frames = [tokenizer.lab2ind[label] for label in labels]
    >>> logits = 10 * torch.nn.functional.one_hot(torch.tensor([frames]), len(tokenizer))
    >>> ids = decode_tokens(logits.float().log_softmax(-1), torch.ones(1), tokenizer)
    >>> "".join(tokenizer.decode_ndim(ids[0]))
    'HI Y'
    """
    words = decode_words(log_probs, valid_frame_lengths(log_probs), tokenizer, **decoding_options)
    return [[tokenizer.lab2ind[character] for character in " ".join(utterance)]
            for utterance in words]


def load_weights_strictly(module, path):
    """Pretrainer hook: load a state dict, every key required, naming the file if it fails."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except Exception as error:
        raise InferenceFolderError(
            f"weights file '{path}' does not fit the model ({type(error).__name__}: "
            f"{str(error).splitlines()[0]})"
        ) from error


# ------------------------------------------------------------------ loading a folder


def find_inference_folder(folder):
    """The inference folder of an experiment folder, or the folder itself.

    Raises ``InferenceFolderError`` naming what is missing.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InferenceFolderError(f"model folder '{folder}' does not exist")
    for candidate in (folder, folder / INFERENCE_FOLDER):
        if (candidate / MANIFEST).is_file():
            return candidate
    if (folder / "save").is_dir() or (folder / "hyperparams.yaml").is_file():
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


# ------------------------------------------------------------------ writing a folder


def write_json(path, value):
    """Write ``value`` as indented JSON, atomically."""
    write_atomically(Path(path), json.dumps(value, indent=2, sort_keys=True) + "\n")


def dotted_name(obj):
    """``module.QualifiedName`` of a class or function."""
    return f"{obj.__module__}.{obj.__qualname__}"


def yaml_value(value):
    """A plain value in YAML flow style (one line).

    Example
    -------
    >>> yaml_value([1, None]), yaml_value(True), yaml_value("x")
    ('[1, null]', 'true', 'x')
    """
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix(
        "\n..."
    )


def yaml_block(mapping, indent):
    """A mapping in YAML block style, every line indented."""
    text = yaml.safe_dump(mapping, default_flow_style=False, sort_keys=True, width=10**6)
    return "".join(" " * indent + line + "\n" for line in text.splitlines())


def partial_yaml(partial, indent):
    """``!name:`` node of a ``functools.partial`` of the recipe's YAML (a downsampler class)."""
    lines = [f"!name:{dotted_name(partial.func)}"]
    lines += [f"{' ' * indent}{key}: {yaml_value(value)}"
              for key, value in partial.keywords.items()]
    return "\n".join(lines)


def head_yaml(brain):
    """YAML of the downsampler, DNN block, CTC layer and log-softmax of a downsampling Brain."""
    hparams = brain.hparams
    technique = hparams.downsampling_technique
    technique_class = hparams.downsampling_techniques[technique]
    enc = brain.modules.enc
    activation = next(module for module in enc.modules()
                      if type(module).__module__.startswith("torch.nn.modules.activation"))
    linear_layers = [module for module in enc.modules() if isinstance(module, torch.nn.Linear)]
    ctc_linear = next(module for module in brain.modules.ctc_lin.modules()
                      if isinstance(module, torch.nn.Linear))
    return f"""downsampler: !apply:ssl_ctc.downsampling.build_downsampler
    techniques:
        {technique}: {partial_yaml(technique_class, 12)}
    technique: !ref <downsampling_technique>
    factor: !ref <downsampling_factor>
enc: !new:speechbrain.lobes.models.VanillaNN.VanillaNN
    input_shape: [null, null, {linear_layers[0].in_features}]
    activation: !name:{dotted_name(type(activation))}
    dnn_blocks: {len(linear_layers)}
    dnn_neurons: {linear_layers[-1].out_features}
ctc_lin: !new:speechbrain.nnet.linear.Linear
    input_size: {ctc_linear.in_features}
    n_neurons: {ctc_linear.out_features}
log_softmax: !new:speechbrain.nnet.activations.Softmax
    apply_log: True
"""


def early_exit_yaml(brain):
    """YAML of the exit heads, the criterion and the early-exit encoder."""
    heads = brain.modules.early_exit.exit_heads
    first_head = heads.heads[str(heads.exit_layers[0])]
    return f"""exit_heads: !new:early_exiting.ExitHeads
    exit_layers: !ref <exit_layers>
    input_size: {heads.input_size}
    output_size: {heads.output_size}
    dnn_neurons: {first_head[0].out_features}
criterion: !apply:early_exiting.build_exit_criterion
    name: !ref <exit_criterion>
    threshold: !ref <exit_threshold>
    layer: !ref <exit_layer>
early_exit: !new:early_exiting.EarlyExitEncoder
    encoder: !ref <ssl>
    exit_heads: !ref <exit_heads>
    criterion: !ref <criterion>
    decision: !ref <exit_decision>
"""


def ssl_configs(ssl):
    """The encoder's configuration and feature-extractor settings, as plain dicts."""
    model_config = json.loads(ssl.model.config.to_json_string(use_diff=False))
    for key in ("_name_or_path", "transformers_version"):
        model_config.pop(key, None)
    preprocessor_config = ssl.feature_extractor.to_dict()
    return model_config, preprocessor_config


def inference_hparams_yaml(brain, early_exit, module_names, lm_settings):
    """The text of ``hyperparams.yaml`` for ``EncoderASR`` (and ``EarlyExitASR``)."""
    hparams = brain.hparams
    ssl = hparams.ssl
    model_config, preprocessor_config = ssl_configs(ssl)
    keys = EARLY_EXIT_KEYS if early_exit else DOWNSAMPLING_KEYS
    values = {key: getattr(hparams, key) for key in keys if hasattr(hparams, key)}
    value_lines = "".join(f"{key}: {yaml_value(value)}\n" for key, value in values.items())
    lm_lines = "".join(f"{key}: {yaml_value(value)}\n" for key, value in lm_settings.items())
    brain_hparams = ["ssl", *module_names, *(["log_softmax"] if not early_exit else []),
                     *(["criterion", "exit_heads"] if early_exit else []), *values]
    brain_hparams = list(dict.fromkeys(brain_hparams))
    modules_yaml = "".join(f"        {name}: !ref <{name}>\n" for name in module_names)
    hparams_yaml = "".join(f"        {name}: !ref <{name}>\n" for name in brain_hparams)
    loadables = "".join(f"        {name}: !ref <{name}>\n" for name in module_names)
    hooks = "".join(f"        {name}: !name:ssl_ctc.inference.folder.load_weights_strictly\n"
                    for name in module_names)
    return f"""# Inference hyperparameters of a fine-tuned SSL + CTC experiment, for SpeechBrain's
# EncoderASR (written by ssl_ctc/inference/folder.py; format version {INFERENCE_FORMAT_VERSION}).
#   from speechbrain.inference.ASR import EncoderASR
#   asr = EncoderASR.from_hparams(source="<this folder>", savedir="<a cache folder>")
#   asr.transcribe_file("speech.flac")
# The modules are this recipe's own (ssl_ctc, early_exiting): its code must be importable.
# LM beam search (the benchmark's pyctcdecode + KenLM): overrides={{"lm_path": "4-gram.arpa"}}.

inference_format_version: {INFERENCE_FORMAT_VERSION}
brain_class: {importable_class_name(type(brain))}
{value_lines}
# ------------------------------------------------------------------ decoding
lm_path: null  # a KenLM model (.arpa, .arpa.gz, .bin) turns on the beam search
{lm_lines}
# ------------------------------------------------------------------ model
ssl: !new:ssl_ctc.inference.folder.ConfigOnlySSLEncoder
    model_config: !ref <ssl_model_config>
    preprocessor_config: !ref <ssl_preprocessor_config>
    output_norm: {yaml_value(bool(ssl.output_norm))}
    matmul_front_end: {yaml_value(bool(getattr(hparams, "matmul_front_end", True)))}
{early_exit_yaml(brain) if early_exit else head_yaml(brain)}
encoder: !new:ssl_ctc.inference.folder.RecipeCTCEncoder
    brain_class: !ref <brain_class>
    blank_index: !ref <blank_index>
    modules:
{modules_yaml}    hparams:
{hparams_yaml}
tokenizer: !new:speechbrain.dataio.encoder.CTCTextEncoder
decoding_function: !name:ssl_ctc.inference.folder.decode_tokens
    tokenizer: !ref <tokenizer>
    lm_path: !ref <lm_path>
    lm_unigrams_path: !ref <lm_unigrams_path>
    lm_alpha: !ref <lm_alpha>
    lm_beta: !ref <lm_beta>
    lm_beam_width: !ref <lm_beam_width>

modules:
    encoder: !ref <encoder>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
{loadables}        tokenizer: !ref <tokenizer>
    custom_hooks:
{hooks}
# ------------------------------------------------------------------ the SSL encoder
# What it is built from: its config.json and preprocessor_config.json (in {SSL_CONFIG_FOLDER}/)
ssl_model_config:
{yaml_block(model_config, 4)}ssl_preprocessor_config:
{yaml_block(preprocessor_config, 4)}"""


def format_number(value, digits=3):
    """A number for the model card, ``-`` when missing."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_card(brain, tags, records, checkpoint, early_exit, folder_name):
    """The README.md of an inference folder: what was trained, its numbers, how to use it."""
    hparams = brain.hparams
    config = hparams.ssl.model.config
    latest = {key: record for key, record in latest_records(
        [record for record in records if record.get("name") == tags["name"]]).items()
        if record["status"] == "ok"}
    rows = []
    for test_set in sorted({test_set for test_set, _ in latest}):
        def field(test, key, digits=3, test_set=test_set):
            record = latest.get((test_set, test))
            return format_number(record.get(key) if record else None, digits)

        cells = [test_set, field("cpu_greedy", "wer", 2), field("cpu_greedy", "cer", 2),
                 field("cpu_lm", "wer", 2), field("gpu_greedy", "total_time_s"),
                 field("cpu_greedy", "total_time_s"), field("cpu_lm", "total_time_s"),
                 field("macs", "gmacs_per_batch"), field("cpu_greedy", "real_time_factor")]
        rows.append("| " + " | ".join(cells) + " |")
    table = "\n".join(rows) or "| (no benchmark records) | | | | | | | | |"
    savedir = "pretrained/" + tags["name"].replace(" ", "_")
    trained = [
        f"- strategy `{tags['strategy']}` (`{importable_class_name(type(brain))}`), "
        f"label `{tags['label']}`",
        f"- downsampling factor {tags['factor']} (`{tags.get('technique')}`), "
        f"CTC upsampling factor {tags['ctc_upsampling_factor']}",
        f"- encoder: {config.model_type}, {config.num_hidden_layers} transformer layers kept, "
        f"hidden size {config.hidden_size}; SSL source `{hparams.ssl_hub}`",
    ]
    if early_exit:
        trained.append(
            f"- exits after layers {hparams.exit_layers}; criterion `{hparams.exit_criterion}`, "
            f"threshold {hparams.exit_threshold}, exit layer {hparams.exit_layer}, decision "
            f"`{hparams.exit_decision}` (keys `exit_criterion`, `exit_threshold`, `exit_layer` "
            "of hyperparams.yaml)"
        )
    trained += [
        f"- data: `{hparams.data_folder}`, train {hparams.train_splits}, "
        f"valid {hparams.dev_splits}",
        f"- weights: checkpoint `{checkpoint}` (best validation WER), after epoch "
        f"{getattr(hparams.epoch_counter, 'current', None)} of {hparams.number_of_epochs}",
    ]
    early_exit_usage = ""
    if early_exit:
        early_exit_usage = f"""
Early exit, with each utterance's exit layer (SpeechBrain's `foreign_class`; the interface is
`{CUSTOM_INTERFACE_FILE}` in this folder), at another threshold without retraining:

```python
from speechbrain.inference.interfaces import foreign_class
asr = foreign_class(source="{folder_name}", savedir="{savedir}",
                    pymodule_file="{CUSTOM_INTERFACE_FILE}", classname="{CUSTOM_INTERFACE_CLASS}",
                    overrides={{"exit_threshold": {hparams.exit_threshold}}})
text, exit_layer = asr.transcribe_file_with_exit("speech.flac")
```
"""
    trained_lines = "\n".join(trained)
    batch_size = getattr(hparams, "benchmark_batch_size", 4)
    return f"""# {tags['name']}: {config.model_type} + CTC, fine-tuned with this recipe

Character CTC recogniser (LibriSpeech's 28 characters) from a fine-tuned {config.model_type}
encoder, written by `ssl_ctc/inference/folder.py` (inference format {INFERENCE_FORMAT_VERSION}).

## What was trained

{trained_lines}

## Benchmark (from the experiment's benchmark.json)

| test set | WER | CER | WER-LM | GPU s | CPU s | CPU-LM s | GMACs per batch | CPU RTF |
|---|---|---|---|---|---|---|---|---|
{table}

Whole-split wall times of the five tests (batches of {batch_size}); `-`: a test that was
skipped (no GPU, no LM).

## Use it

The modules are the recipe's own (`ssl_ctc`, `early_exiting`): run from a checkout of the recipe
(or with it on `PYTHONPATH`). Nothing is downloaded: the encoder is built from the configuration
in `hyperparams.yaml` (the same as `{SSL_CONFIG_FOLDER}/config.json` and
`{SSL_CONFIG_FOLDER}/preprocessor_config.json`) and loads the weights in this folder.

```bash
python transcribe.py {folder_name} audio.flac more.wav   # "<file>\\t<TRANSCRIPT>" per input
python transcribe.py {folder_name} audio_folder/ --lm 4-gram.arpa --batch_size 8
```

```python
from speechbrain.inference.ASR import EncoderASR
asr = EncoderASR.from_hparams(source="{folder_name}", savedir="{savedir}")
asr.transcribe_file("speech.flac")
# the benchmark's LM beam search: overrides={{"lm_path": "/path/to/4-gram.arpa"}}
```
{early_exit_usage}
Push to the Hugging Face hub (not run here):

```bash
huggingface-cli upload <user>/<model-name> {folder_name} .
```

## Files

- `hyperparams.yaml`: the modules and decoding for `EncoderASR`; `inference.json`: format
  version, interface, the files it needs
- `*.ckpt`: weights of each module (`{TOKENIZER_FILE}`: the label encoder, text)
- `{SSL_CONFIG_FOLDER}/`: the SSL encoder's Hugging Face `config.json`, `preprocessor_config.json`
"""


def display_path(folder):
    """The folder relative to the working directory when below it, else absolute."""
    relative = os.path.relpath(Path(folder).resolve())
    return str(Path(folder).resolve()) if relative.startswith("..") else relative


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
    early_exit = "early_exit" in brain.modules
    module_names = list(brain.modules.keys())
    tags = brain.experiment_tags()
    records_path = output_folder / RESULTS_JSON
    records = json.loads(records_path.read_text()) if records_path.is_file() else []
    lm_settings = {"lm_unigrams_path": getattr(brain.hparams, "lm_unigrams_path", None)}
    lm_settings.update({key: getattr(brain.hparams, key, default)
                        for key, default in LM_DEFAULTS.items()})
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
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
            inference_hparams_yaml(brain, early_exit, module_names, lm_settings), encoding="utf-8"
        )
        manifest = {
            "format_version": INFERENCE_FORMAT_VERSION,
            "interface": "speechbrain.inference.ASR.EncoderASR",
            "brain_class": importable_class_name(type(brain)),
            "name": tags["name"],
            "files": [HPARAMS_FILE, TOKENIZER_FILE, *weight_files],
        }
        if early_exit:
            shutil.copyfile(CUSTOM_INTERFACE_SOURCE, staging / CUSTOM_INTERFACE_FILE)
            manifest["custom_interface"] = {"pymodule_file": CUSTOM_INTERFACE_FILE,
                                            "classname": CUSTOM_INTERFACE_CLASS}
        write_json(staging / MANIFEST, manifest)
        (staging / "README.md").write_text(
            model_card(brain, tags, records, best_checkpoint_name(brain), early_exit,
                       display_path(folder)),
            encoding="utf-8",
        )
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


def load_experiment_brain(experiment_folder, device="cpu"):
    """Rebuild a finished experiment's Brain from its folder, best checkpoint loaded.

    Arguments
    ---------
    experiment_folder : str or Path
        A run's output folder: ``hyperparams.yaml``, ``save/CKPT+*``, ``benchmark.json``.
    device : str

    Returns
    -------
    ssl_ctc.brain.SSLCTCBrain
    """
    from ssl_ctc.benchmarking.records import experiment_brain_class
    from ssl_ctc.ctc import make_tokenizer

    experiment_folder = Path(experiment_folder).resolve()
    hparams_path = experiment_folder / "hyperparams.yaml"
    if not hparams_path.is_file():
        raise InferenceFolderError(f"'{hparams_path}' not found: not an experiment folder")
    brain_class = experiment_brain_class(experiment_folder)
    with open(hparams_path, encoding="utf-8") as hparams_file:
        hparams = load_hyperpyyaml(hparams_file, {"output_folder": str(experiment_folder)})
    brain = brain_class(modules=hparams["modules"], hparams=hparams,
                        run_opts={"device": device}, checkpointer=hparams["checkpointer"])
    brain.tokenizer = make_tokenizer()
    if brain.checkpointer.recover_if_possible(min_key="WER") is None:
        raise InferenceFolderError(f"no checkpoint in '{experiment_folder / 'save'}'")
    brain.modules.eval()
    return brain


def main(argv=None):
    """``python -m ssl_ctc.inference EXPERIMENT...``: (re)write their inference folders."""
    parser = argparse.ArgumentParser(
        description="Write <experiment>/inference/ (EncoderASR folder) for finished experiments."
    )
    parser.add_argument("experiments", nargs="+", help="experiment (output) folders")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for experiment in arguments.experiments:
        folder = write_inference_folder(load_experiment_brain(experiment))
        print(folder)


if __name__ == "__main__":
    sys.exit(main())
