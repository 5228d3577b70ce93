"""The ``hyperparams.yaml`` of an inference folder: what ``EncoderASR`` builds, as YAML text.

The file knows no strategy: the Brain supplies the hparams keys its ``infer_batch``
reads (``inference_keys``), the YAML of its own modules (``inference_modules_yaml``)
and the names its inference path takes from ``hparams`` (``inference_brain_hparams``);
this module writes the SSL encoder (from its configuration), the decoding and the
Pretrainer around them, and the helpers the Brains use for their YAML.

Usage::

    text = inference_hparams_yaml(brain, list(brain.modules.keys()), lm_settings)
"""

import json

import yaml

from ssl_ctc.imports import PACKAGE_NAME, importable_class_name
from ssl_ctc.inference.loading import INFERENCE_FORMAT_VERSION, SSL_CONFIG_FOLDER
from ssl_ctc.inference.runtime import (
    ConfigOnlySSLEncoder,
    RecipeCTCEncoder,
    decode_tokens,
    load_weights_strictly,
)


def dotted_name(obj):
    """``module.QualifiedName`` of a class or function.

    Example
    -------
    >>> dotted_name(json.dumps)
    'json.dumps'
    """
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
    """A mapping in YAML block style, every line indented.

    Example
    -------
    >>> print(yaml_block({"b": 1, "a": [2]}, 4), end="")
        a:
        - 2
        b: 1
    """
    text = yaml.safe_dump(mapping, default_flow_style=False, sort_keys=True, width=10**6)
    return "".join(" " * indent + line + "\n" for line in text.splitlines())


def partial_yaml(partial, indent):
    """``!name:`` node of a ``functools.partial`` of the recipe's YAML (a downsampler class).

    Example
    -------
    >>> from functools import partial
    >>> print(partial_yaml(partial(json.dumps, indent=2), 4))
    !name:json.dumps
        indent: 2
    """
    lines = [f"!name:{dotted_name(partial.func)}"]
    lines += [f"{' ' * indent}{key}: {yaml_value(value)}"
              for key, value in partial.keywords.items()]
    return "\n".join(lines)


def ssl_configs(ssl):
    """The encoder's configuration and feature-extractor settings, as plain dicts."""
    model_config = json.loads(ssl.model.config.to_json_string(use_diff=False))
    for key in ("_name_or_path", "transformers_version"):
        model_config.pop(key, None)
    preprocessor_config = ssl.feature_extractor.to_dict()
    return model_config, preprocessor_config


def references(names, indent=8):
    """``name: !ref <name>`` lines, one per name.

    Example
    -------
    >>> print(references(["ssl", "enc"], 4), end="")
        ssl: !ref <ssl>
        enc: !ref <enc>
    """
    return "".join(f"{' ' * indent}{name}: !ref <{name}>\n" for name in names)


def inference_hparams_yaml(brain, module_names, lm_settings):
    """The text of ``hyperparams.yaml`` for ``EncoderASR`` (and a strategy's own interface).

    Arguments
    ---------
    brain : ssl_ctc.brain.SSLCTCBrain
        The trained Brain; its ``inference_*`` hooks give what is its strategy's.
    module_names : list of str
        Its ``modules``: each gets a weights file ``<name>.ckpt``.
    lm_settings : dict
        ``lm_unigrams_path`` and the ``LM_DEFAULTS`` keys, with the experiment's values.

    Returns
    -------
    str
    """
    hparams = brain.hparams
    ssl = hparams.ssl
    model_config, preprocessor_config = ssl_configs(ssl)
    values = {key: getattr(hparams, key) for key in brain.inference_keys()
              if hasattr(hparams, key)}
    value_lines = "".join(f"{key}: {yaml_value(value)}\n" for key, value in values.items())
    lm_lines = "".join(f"{key}: {yaml_value(value)}\n" for key, value in lm_settings.items())
    brain_hparams = list(dict.fromkeys(
        ["ssl", *module_names, *brain.inference_brain_hparams(), *values]))
    hooks = "".join(f"        {name}: !name:{dotted_name(load_weights_strictly)}\n"
                    for name in module_names)
    return f"""# Inference hyperparameters of a fine-tuned SSL + CTC experiment, for SpeechBrain's
# EncoderASR (written by ssl_ctc.inference.hparams_yaml; format version {INFERENCE_FORMAT_VERSION}).
#   from speechbrain.inference.ASR import EncoderASR
#   asr = EncoderASR.from_hparams(source="<this folder>", savedir="<a cache folder>")
#   asr.transcribe_file("speech.flac")
# The modules are this recipe's own (ssl_ctc, early_exiting): pip install the recipe
# (package {PACKAGE_NAME}) or run from a checkout of it.
# LM beam search (the benchmark's pyctcdecode + KenLM): overrides={{"lm_path": "4-gram.arpa"}}.

inference_format_version: {INFERENCE_FORMAT_VERSION}
brain_class: {importable_class_name(type(brain))}
{value_lines}
# ------------------------------------------------------------------ decoding
lm_path: null  # a KenLM model (.arpa, .arpa.gz, .bin) turns on the beam search
{lm_lines}
# ------------------------------------------------------------------ model
ssl: !new:{dotted_name(ConfigOnlySSLEncoder)}
    model_config: !ref <ssl_model_config>
    preprocessor_config: !ref <ssl_preprocessor_config>
    output_norm: {yaml_value(bool(ssl.output_norm))}
    matmul_front_end: {yaml_value(bool(getattr(hparams, "matmul_front_end", True)))}
{brain.inference_modules_yaml()}
encoder: !new:{dotted_name(RecipeCTCEncoder)}
    brain_class: !ref <brain_class>
    blank_index: !ref <blank_index>
    modules:
{references(module_names)}    hparams:
{references(brain_hparams)}
tokenizer: !new:speechbrain.dataio.encoder.CTCTextEncoder
decoding_function: !name:{dotted_name(decode_tokens)}
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
{references(module_names)}        tokenizer: !ref <tokenizer>
    custom_hooks:
{hooks}
# ------------------------------------------------------------------ the SSL encoder
# What it is built from: its config.json and preprocessor_config.json (in {SSL_CONFIG_FOLDER}/)
ssl_model_config:
{yaml_block(model_config, 4)}ssl_preprocessor_config:
{yaml_block(preprocessor_config, 4)}"""
