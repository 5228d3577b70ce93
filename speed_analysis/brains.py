"""The speed script's setup: each variant's Brain built as its script would, on shared weights.

A random encoder of the chosen shape is saved once; every variant's Brain comes
from its recipe YAML with its overrides (``SPEED_VARIANTS`` in
``ssl_ctc.experiments.registry``) and is the YAML's ``brain_class``; the CTC head is
made to look trained (``sharpen_ctc_head``).

Usage::

    setup = prepare(arguments, work_folder)  # config, durations, dataset, batches, brains
"""

import math
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

from speed_analysis.random_encoders import (
    LARGE_SHAPE,
    TINY_SHAPE,
    save_random_encoder,
    share_weights,
)
from speed_analysis.synthetic_utterances import librispeech_like_durations, write_corpus
from ssl_ctc.benchmarking.grid import parse_overrides, yaml_value
from ssl_ctc.benchmarking.settings import PAPER_TEST_BATCH_SIZE as BATCH_SIZE
from ssl_ctc.ctc import make_tokenizer
from ssl_ctc.data import make_test_loader
from ssl_ctc.experiments.registry import RECIPE, SPEED_VARIANTS

# The speed script's variants by name (``--variants``), baseline first.
VARIANTS = {row.name: row for row in SPEED_VARIANTS}


# Head posteriors like a trained CTC model's (see ``sharpen_ctc_head``).
TRAINED_BLANK_FRACTION = 0.7


TRAINED_LOGIT_STD = 20.0


QUICK_DURATION_SCALE = 0.2


QUICK_OVERRIDES = {"dnn_neurons": 32}


def variant_overrides(variant):
    """A variant's overrides as YAML values, key -> value.

    Example
    -------
    >>> variant_overrides(VARIANTS["EE18"])
    {'exit_criterion': 'fixed', 'exit_layer': 18}
    """
    return {key: yaml_value(text) for key, text in parse_overrides(variant.arguments()).items()}


def build_brain(variant, overrides, loaded_encoders):
    """Build a variant's Brain from its recipe YAML, as the recipe script would.

    Encoders loaded from the same folder with the same depth are identical, so
    the one already loaded is shared (``loaded_encoders``, depth -> Hugging Face
    model); a truncated encoder runs the modules of the first one loaded (the
    baseline's, see ``share_weights``).

    Arguments
    ---------
    variant : ssl_ctc.experiments.registry.Row
        YAML and strategy overrides.
    overrides : dict
        Overrides common to every variant (data and output folders, ``ssl_hub``...).
    loaded_encoders : dict
        Depth -> loaded Hugging Face model; updated.

    Returns
    -------
    ssl_ctc.brain.SSLCTCBrain
        The variant's Brain on CPU, in eval mode, with its tokenizer.
    """
    with open(Path(RECIPE) / variant.recipe[1], encoding="utf-8") as yaml_file:
        hparams = load_hyperpyyaml(yaml_file, {**overrides, **variant_overrides(variant)})
    ssl = hparams["ssl"]
    depth = ssl.model.config.num_hidden_layers
    if depth not in loaded_encoders and loaded_encoders:
        share_weights(ssl.model, next(iter(loaded_encoders.values())))
    model = loaded_encoders.setdefault(depth, ssl.model)
    ssl.model = model
    if "early_exit" in hparams["modules"]:  # its layer-by-layer runner holds the encoder too
        hparams["early_exit"].encoder.model = model
    brain = hparams["brain_class"](
        modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"}, checkpointer=None
    )
    brain.tokenizer = make_tokenizer()
    brain.modules.eval()
    return brain


def sharpen_ctc_head(brain, wavs, wav_lens, blank_fraction=TRAINED_BLANK_FRACTION,
                     logit_std=TRAINED_LOGIT_STD):
    """Give a random CTC head the posteriors of a trained one: confident, mostly blank.

    A random head gives near-uniform posteriors: every label passes the beam
    search's pruning at every frame, so LM decoding costs tens of times what it
    costs on a trained model (whose frames are mostly blank with probability near
    1). The CTC layer is rescaled so that its logits have standard deviation
    ``logit_std`` on a probe batch, and the blank bias is raised so that blank
    wins on ``blank_fraction`` of the frames. Dense compute, and so every timing
    but the LM's, does not depend on the weights' values.

    Arguments
    ---------
    brain : ssl_ctc.SSLCTCBrain
        A brain with ``modules.enc`` and ``modules.ctc_lin`` (modified in place).
    wavs : torch.Tensor
        Probe batch ``[B, samples]``.
    wav_lens : torch.Tensor
        Relative lengths.
    blank_fraction : float
        Share of frames whose best label becomes blank.
    logit_std : float
        Standard deviation of the logits after rescaling.

    Returns
    -------
    float
        The share of the probe's frames whose best label is blank afterwards.
    """
    linear = brain.modules.ctc_lin.w
    vocabulary = brain.hparams.output_neurons
    blank = brain.hparams.blank_index
    with torch.inference_mode():
        logits = linear(brain.modules.enc(brain.encode(wavs, wav_lens)))
    scale = logit_std / float(logits.std())
    logits = (logits * scale).reshape(-1, vocabulary)
    others = logits.clone()
    others[:, blank] = -math.inf
    margins = others.max(dim=-1).values - logits[:, blank]
    offset = float(torch.quantile(margins, blank_fraction))
    with torch.no_grad():
        linear.weight.mul_(scale)
        linear.bias.mul_(scale)
        linear.bias[blank::vocabulary] += offset
    logits[:, blank] += offset
    return float((logits.argmax(dim=-1) == blank).float().mean())


def prepare(arguments, work_folder):
    """Save the encoder, write the utterances, build every variant's brain.

    Arguments
    ---------
    arguments : argparse.Namespace
        ``speed_benchmark.py``'s (architecture, quick, utterances, seed, variants).
    work_folder : Path
        Temporary folder of the encoder, the utterances and the experiments.

    Returns
    -------
    dict
        ``config`` (encoder), ``durations``, ``dataset``, ``cpu_batches`` (as the
        five tests batch them), ``brains`` (name -> brain, baseline first),
        ``encoder_parameters`` and ``probe_blank_fraction`` (see ``sharpen_ctc_head``).
    """
    encoder_folder = work_folder / "encoder"
    config = save_random_encoder(encoder_folder, arguments.architecture,
                                 TINY_SHAPE if arguments.quick else LARGE_SHAPE)
    durations = librispeech_like_durations(
        arguments.num_utterances, arguments.min_seconds, arguments.max_seconds,
        scale=QUICK_DURATION_SCALE if arguments.quick else 1.0)
    dataset = write_corpus(work_folder, durations, arguments.seed)
    cpu_batches = [(batch.sig.data, batch.sig.lengths)
                   for batch in make_test_loader(dataset, BATCH_SIZE)]
    overrides = {"data_folder": str(work_folder), "ssl_hub": str(encoder_folder),
                 "ssl_folder": str(work_folder / "ssl_cache"),
                 **(QUICK_OVERRIDES if arguments.quick else {})}
    loaded_encoders = {}
    brains = {
        name: build_brain(
            VARIANTS[name],
            {**overrides, "output_folder": str(work_folder / "experiments" / name)},
            loaded_encoders)
        for name in arguments.variants
    }
    return {
        "config": config,
        "durations": durations,
        "dataset": dataset,
        "cpu_batches": cpu_batches,
        "brains": brains,
        "encoder_parameters": sum(
            parameter.numel()
            for parameter in loaded_encoders[config.num_hidden_layers].parameters()),
        "probe_blank_fraction": sharpen_ctc_head(brains["baseline"], *cpu_batches[0]),
    }
