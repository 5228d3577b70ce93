#!/usr/bin/env python3
"""Speed benchmark: does each strategy's time saving follow its compute saving?

Builds a real encoder architecture from its configuration (WavLM Large shape
by default; random weights, nothing downloaded), saves it once to a temporary
folder, and builds every variant from the recipe's own YAML files with
command-line-style overrides: the project's ``ssl_ctc.load_ssl_encoder``
(layer removal), ``ssl_ctc.build_downsampler`` (SD, AV, CL), the YAML's head and
``SSLCTCBrain`` / ``EarlyExitBrain``. Every variant is timed through its
``brain.infer_batch``, the inference path of training, testing and the benchmark.

On the same synthetic utterances (LibriSpeech-like durations, written as FLAC,
batches of 4 sorted by duration, neighbours of similar length), the variants are
timed interleaved: a round-robin over all of them, repeated, rotated each repeat,
the median kept.
For each: median time, time ratio to the baseline, GMACs ratio to the baseline
(``benchmark.count_macs``, a separate pass under ``torch.no_grad``), achieved
GMAC/s, and its fraction of the machine's own matmul throughput, measured in the
same round-robin with ``torch.nn.functional.linear`` on the shapes of a
transformer layer at the baseline's frame counts. The downsamplers are also
timed alone (their share of the variant's time).

Then, on the baseline, the benchmark's inference path (``brain.run_benchmark``,
the five tests: data loading, forward, decoding) is measured against a bare
``model(wavs)`` forward plus head and argmax on the same batches, alternated in
the same run; and the CPU (or GPU) time with the LM against without it, at the
YAML's beam settings, with ``benchmark.py``'s overlapped LM decoder.

Optional: another precision (``--precision bf16`` adds fp32 rows and reports the
speed-up), other thread counts (``--threads 2 1``), ``torch.compile``
(``--compile``), a GPU (``--device cuda``), and the WER change of the precision on
a trained experiment (``--wer_experiment``, e.g. a ``make demo`` run).

Usage::

    python speed_benchmark.py --threads 2                     # WavLM Large shape, every variant
    python speed_benchmark.py --architecture hubert-large --variants baseline SD2 18L
    python speed_benchmark.py --precision bf16 --threads 2 1  # + fp32 and 1-thread baseline rows
    python speed_benchmark.py --device cuda --precision fp16 --compile
    python speed_benchmark.py --precision bf16 --wer_experiment results/demo/baseline
    python speed_benchmark.py --quick                         # tiny shapes, seconds (tests)

Writes ``<output_folder>/speed.json`` (default ``results/speed/``) after each phase
(``"complete": false`` until the last), and prints the tables at the end.

Authors
 * Recipe team 2026
"""

import argparse
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch
import transformers
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.integrations.huggingface.wav2vec2 import make_padding_masks

import benchmark
import ssl_ctc

REPO = Path(__file__).resolve().parent
HPARAMS = REPO / "hparams"
DEFAULT_LM = REPO / "embedded" / "LibriSpeech" / "4-gram.arpa"
DEFAULT_OUTPUT = Path("results") / "speed"
RESULTS_JSON = "speed.json"
SAMPLE_RATE = 16000
BATCH_SIZE = 4  # the paper's test batch size

# LibriSpeech test-clean durations, roughly: log-normal with median 6 s (mean 7.4 s,
# the paper's ~29.7 s per batch of 4).
DURATION_MEDIAN_S = 6.0
DURATION_SIGMA = 0.65

# Encoder shapes. WavLM Large, wav2vec 2.0 Large (LV-60) and HuBERT Large share them:
# 24 layers of 1024 units, 16 heads, feed-forward 4096, seven 512-channel convolutions,
# layer-norm CNN and stable layer norm.
LARGE_SHAPE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": (512,) * 7,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
}
# --quick: the same depth (so that 18 and 12 layers and the exit at 18 exist), tiny widths
# (wide enough that the linear layers, not attention, make most of the MACs, as in Large).
TINY_SHAPE = {
    **LARGE_SHAPE,
    "hidden_size": 64,
    "num_attention_heads": 2,
    "intermediate_size": 256,
    "conv_dim": (16,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
ARCHITECTURES = {
    "wavlm-large": (transformers.WavLMConfig, transformers.WavLMModel, {}),
    "wav2vec2-large": (
        transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, {"conv_bias": True}
    ),
    "hubert-large": (transformers.HubertConfig, transformers.HubertModel, {"conv_bias": True}),
}

# Head posteriors like a trained CTC model's (see ``sharpen_ctc_head``).
TRAINED_BLANK_FRACTION = 0.7
TRAINED_LOGIT_STD = 20.0

TARGETS = {
    "time_ratio_vs_gmacs_ratio": 0.10,  # |time ratio / GMACs ratio - 1|, every variant
    "fraction_of_matmul": 0.60,  # baseline GMAC/s over matmul GMAC/s, at least
    "inference_path_overhead": 0.05,  # benchmark path over bare forward + argmax, at most
    "lm_overhead": 0.20,  # time with the LM over time without, minus 1, at most
}

RUN_DEFAULTS = {"num_utterances": 8, "min_seconds": 2.0, "max_seconds": 20.0, "repeats": 3}
QUICK_DEFAULTS = {"num_utterances": 5, "min_seconds": 0.5, "max_seconds": 2.0, "repeats": 2}
QUICK_DURATION_SCALE = 0.2
QUICK_OVERRIDES = {"dnn_neurons": 32}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A row of the comparison: a recipe YAML and the overrides that make the strategy.

    Arguments
    ---------
    name : str
        Short name, also the ``--variants`` key.
    hparams_file : str
        YAML under ``hparams/``.
    overrides : dict
        YAML keys to override, as on the recipe's command line.
    """

    name: str
    hparams_file: str
    overrides: dict


_DOWNSAMPLING = "sig_down8000.yaml"
_LAYER_REMOVAL = "layer_removal.yaml"
_EARLY_EXIT = "early_exiting/early_exits.yaml"
VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("baseline", _DOWNSAMPLING, {"downsampling_factor": 1}),
        Variant("SD2", _DOWNSAMPLING, {"downsampling_technique": "signal_downsampling",
                                       "downsampling_factor": 2}),
        Variant("SD3", _DOWNSAMPLING, {"downsampling_technique": "signal_downsampling",
                                       "downsampling_factor": 3}),
        Variant("AV2", _DOWNSAMPLING, {"downsampling_technique": "averaging",
                                       "downsampling_factor": 2}),
        Variant("CL2", _DOWNSAMPLING, {"downsampling_technique": "convolutional",
                                       "downsampling_factor": 2}),
        Variant("CL3", _DOWNSAMPLING, {"downsampling_technique": "convolutional",
                                       "downsampling_factor": 3}),
        Variant("18L", _LAYER_REMOVAL, {"considered_layers": 18, "downsampling_factor": 1}),
        Variant("12L", _LAYER_REMOVAL, {"considered_layers": 12, "downsampling_factor": 1}),
        Variant("EE18", _EARLY_EXIT, {"exit_criterion": "fixed", "exit_layer": 18}),
        Variant("SD2+18L", _LAYER_REMOVAL, {"considered_layers": 18, "downsampling_factor": 2,
                                            "downsampling_technique": "signal_downsampling"}),
    )
}


# ------------------------------------------------------------------ encoder and brains


def save_encoder(folder, architecture, shape):
    """Build an encoder with random weights from its configuration and save it for loading.

    Writes ``config.json``, the weights and ``preprocessor_config.json``: what
    ``ssl_ctc.load_ssl_encoder`` needs from a local folder.

    Arguments
    ---------
    folder : str or Path
        Where to save.
    architecture : str
        Key of ``ARCHITECTURES``.
    shape : dict
        Configuration values (``LARGE_SHAPE`` or ``TINY_SHAPE``).

    Returns
    -------
    transformers.PretrainedConfig
        The configuration saved.
    """
    config_class, model_class, extra = ARCHITECTURES[architecture]
    config = config_class(**shape, **extra)
    model_class(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return config


def share_weights(truncated_model, full_model):
    """Make a truncated encoder run the full encoder's modules, so all variants use one copy.

    Each depth loaded as the recipe loads it (``considered_layers``) gets
    weights of its own, placed in memory wherever the allocator put them; on
    this kind of machine the layers of the last encoder loaded ran about 10 %
    slower than the same layers of the first, which made 12 layers look worse
    than their MACs. Sharing the modules (the truncated model keeps its own
    configuration and forward, so it still runs only its first layers) leaves
    the strategy as the only difference between the variants.

    Arguments
    ---------
    truncated_model : transformers.PreTrainedModel
        Loaded with fewer layers (changed in place).
    full_model : transformers.PreTrainedModel
        The same encoder with every layer.

    Example
    -------
    >>> config = transformers.WavLMConfig(hidden_size=32, num_hidden_layers=3,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8,) * 7)
    >>> full = transformers.WavLMModel(config)
    >>> config.num_hidden_layers = 2
    >>> truncated = transformers.WavLMModel(config)
    >>> share_weights(truncated, full)
    >>> truncated.encoder.layers[1] is full.encoder.layers[1], len(truncated.encoder.layers)
    (True, 2)
    >>> truncated.feature_extractor is full.feature_extractor
    True
    """
    for name, _ in list(truncated_model.named_children()):
        if name != "encoder":
            setattr(truncated_model, name, getattr(full_model, name))
    encoder, full_encoder = truncated_model.encoder, full_model.encoder
    for name, _ in list(encoder.named_children()):
        if name != "layers":
            setattr(encoder, name, getattr(full_encoder, name))
    encoder.layers = torch.nn.ModuleList(full_encoder.layers[: len(encoder.layers)])


def early_exit_brain_class():
    """``EarlyExitBrain`` from the recipe script ``early_exiting.py``.

    ``import early_exiting`` reaches the package of the same name, so the script
    is loaded from its path.
    """
    spec = importlib.util.spec_from_file_location("early_exiting_recipe", REPO / "early_exiting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EarlyExitBrain


def build_brain(variant, overrides, loaded_encoders):
    """Build a variant's Brain from its recipe YAML, as the recipe script would.

    Encoders loaded from the same folder with the same depth are identical, so
    the one already loaded is shared (``loaded_encoders``, depth -> Hugging Face
    model); a truncated encoder runs the modules of the first one loaded (the
    baseline's, see ``share_weights``).

    Arguments
    ---------
    variant : Variant
        YAML and strategy overrides.
    overrides : dict
        Overrides common to every variant (data and output folders, ``ssl_hub``...).
    loaded_encoders : dict
        Depth -> loaded Hugging Face model; updated.

    Returns
    -------
    ssl_ctc.SSLCTCBrain
        An ``SSLCTCBrain`` or ``EarlyExitBrain`` on CPU, in eval mode, with its tokenizer.
    """
    with open(HPARAMS / variant.hparams_file, encoding="utf-8") as yaml_file:
        hparams = load_hyperpyyaml(yaml_file, {**overrides, **variant.overrides})
    ssl = hparams["ssl"]
    depth = ssl.model.config.num_hidden_layers
    if depth not in loaded_encoders and loaded_encoders:
        share_weights(ssl.model, next(iter(loaded_encoders.values())))
    model = loaded_encoders.setdefault(depth, ssl.model)
    ssl.model = model
    if "early_exit" in hparams["modules"]:
        hparams["early_exit"].encoder.model = model
        brain_class = early_exit_brain_class()
    else:
        brain_class = ssl_ctc.SSLCTCBrain
    brain = brain_class(
        modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"}, checkpointer=None
    )
    brain.tokenizer = ssl_ctc.make_tokenizer()
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


# ------------------------------------------------------------------ synthetic utterances


def librispeech_like_durations(count, min_seconds, max_seconds, scale=1.0):
    """Durations of a length-sorted, LibriSpeech-like test set in batches of 4, deterministically.

    One evenly spaced quantile of a log-normal distribution (median 6 s, mean
    7.4 s) per batch, times ``scale``; within a batch each utterance is 2 %
    longer than the one before, like neighbours in a sorted test set (so
    padding stays small, as in the five tests on LibriSpeech); all clipped to
    ``[min_seconds, max_seconds]``. Ascending.

    Arguments
    ---------
    count : int
        Number of utterances.
    min_seconds : float
        Shortest duration.
    max_seconds : float
        Longest duration.
    scale : float
        Shrinks (or stretches) every duration first (``--quick``: 0.2).

    Returns
    -------
    list of float
        Durations in seconds, rounded to 10 ms.

    Example
    -------
    >>> librispeech_like_durations(8, 2.0, 20.0)
    [3.64, 3.72, 3.79, 3.87, 8.74, 8.93, 9.12, 9.3]
    >>> librispeech_like_durations(5, 0.5, 2.0, scale=0.2)
    [0.73, 0.74, 0.76, 0.77, 1.75]
    """
    distribution = statistics.NormalDist(math.log(DURATION_MEDIAN_S * scale), DURATION_SIGMA)
    batches = math.ceil(count / BATCH_SIZE)
    durations = []
    for index in range(count):
        batch, position = divmod(index, BATCH_SIZE)
        longest = math.exp(distribution.inv_cdf((batch + 0.5) / batches))
        value = longest * (1 - 0.02 * (BATCH_SIZE - 1 - position))
        durations.append(round(min(max(value, min_seconds), max_seconds), 2))
    return durations


def write_corpus(folder, durations, seed):
    """Write synthetic utterances as 16-bit FLAC files and a LibriSpeech-style CSV.

    Arguments
    ---------
    folder : Path
        Where the files go.
    durations : list of float
        Seconds of each utterance.
    seed : int
        Seed of the signals.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Items "id", "sig" (read by the recipe's ``ssl_ctc.read_waveform``), "wrd", "duration".
    """
    generator = torch.Generator().manual_seed(seed)
    lines = ["ID,duration,wav,spk_id,wrd"]
    for index, duration in enumerate(durations):
        samples = int(duration * SAMPLE_RATE)
        time_axis = torch.arange(samples) / SAMPLE_RATE
        signal = 0.3 * torch.sin(2 * math.pi * (150 + 20 * index) * time_axis)
        signal += 0.05 * torch.randn(samples, generator=generator)
        path = folder / f"utterance{index}.flac"
        soundfile.write(path, signal.numpy(), SAMPLE_RATE, subtype="PCM_16")
        words = " ".join(["SPEED", "TEST"] * max(1, round(1.3 * duration)))
        lines.append(f"utterance{index},{duration},{path},0,{words}")
    csv_path = folder / "synthetic.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset = DynamicItemDataset.from_csv(csv_path=str(csv_path))
    dataset.add_dynamic_item(ssl_ctc.read_waveform, takes="wav", provides="sig")
    dataset.set_output_keys(["id", "sig", "wrd", "duration"])
    return dataset


def padding_fraction(wav_lens):
    """Share of a padded batch that is padding.

    Arguments
    ---------
    wav_lens : torch.Tensor
        Relative lengths (1.0 for the longest utterance).

    Returns
    -------
    float

    Example
    -------
    >>> padding_fraction(torch.tensor([1.0, 0.5, 0.5, 1.0]))
    0.25
    """
    return 1.0 - float(wav_lens.mean())


# ------------------------------------------------------------------ timing


def autocast(device, precision):
    """Autocast context of a precision name, as the five tests use it.

    Arguments
    ---------
    device : str
        "cpu" or "cuda[:N]".
    precision : str
        "fp32" (no autocast), "bf16" or "fp16" (GPU only).

    Returns
    -------
    context manager
    """
    precisions = benchmark.GPU_PRECISIONS if device.startswith("cuda") else benchmark.CPU_PRECISIONS
    return torch.autocast(
        device_type=torch.device(device).type,
        dtype=precisions[precision] or torch.float32,
        enabled=precisions[precision] is not None,
    )


def synchronize(device):
    """Wait for queued GPU work, so that a timer read is true."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class TimedEntry:
    """One thing timed in the round-robin: a function applied to every batch.

    Arguments
    ---------
    label : str
        Row label.
    run_batch : callable
        ``run_batch(wavs, wav_lens)``; its output is discarded.
    precision : str
        Autocast precision of the pass.
    threads : int
        CPU threads of the pass.
    """

    label: str
    run_batch: object
    precision: str
    threads: int

    def time_pass(self, batches, device):
        """Wall and process CPU seconds to run the batches once (inference mode, autocast).

        CPU time counts only what this process's threads ran, so it moves less
        than wall time when other jobs share the cores.

        Returns
        -------
        tuple of float
            ``(wall_seconds, cpu_seconds)``.
        """
        torch.set_num_threads(self.threads)
        with torch.inference_mode(), autocast(device, self.precision):
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            for wavs, wav_lens in batches:
                self.run_batch(wavs, wav_lens)
            synchronize(device)
            return time.perf_counter() - wall, time.process_time() - cpu


def round_robin(entries, batches, repeats, device, warmup_batches):
    """Time every entry over every batch, interleaved batch by batch, ``repeats`` times.

    Within a repeat, each batch goes through every entry before the next batch,
    so that the entries compared are timed minutes apart at most, under the
    same background load; each repeat starts one entry later than the previous
    one, so that no entry always runs first or after the same one.

    Arguments
    ---------
    entries : list of TimedEntry
        What to time.
    batches : list of tuple
        ``(wavs, wav_lens)`` on the device.
    repeats : int
        Passes per entry.
    device : str
        Where the batches are.
    warmup_batches : int
        Untimed batches per entry before the first repeat.

    Returns
    -------
    wall : dict
        Label -> wall seconds of each repeat (every batch once).
    cpu : dict
        Label -> process CPU seconds of each repeat.

    Example
    -------
    >>> entries = [TimedEntry(name, lambda wavs, lens: wavs.sum(), "fp32", 1) for name in "ab"]
    >>> wall, cpu = round_robin(entries, [(torch.ones(2, 8), torch.ones(2))] * 2, 3, "cpu", 1)
    >>> sorted(wall), [len(seconds) for seconds in cpu.values()]
    (['a', 'b'], [3, 3])
    """
    for entry in entries:
        entry.time_pass(batches[:warmup_batches], device)
    wall = {entry.label: [] for entry in entries}
    cpu = {entry.label: [] for entry in entries}
    for repeat in range(repeats):
        start = repeat % len(entries)
        order = entries[start:] + entries[:start]
        for label in wall:
            wall[label].append(0.0)
            cpu[label].append(0.0)
        for batch in batches:
            for entry in order:
                wall_seconds, cpu_seconds = entry.time_pass([batch], device)
                wall[entry.label][-1] += wall_seconds
                cpu[entry.label][-1] += cpu_seconds
    return wall, cpu


def layer_matmuls(hidden_size, intermediate_size, rows_by_samples, device):
    """The linear layers of one transformer layer, as a batch function.

    For a batch: the Q, K, V and output projections (``hidden x hidden``) and
    the feed-forward pair (``hidden x intermediate``, ``intermediate x hidden``)
    with ``torch.nn.functional.linear``, the op of ``nn.Linear``, on ``rows x
    hidden`` inputs, ``rows`` being the batch's utterances times its padded
    encoder frames. ``layer_macs_per_row`` gives the MACs of one row.

    Arguments
    ---------
    hidden_size : int
        Model width.
    intermediate_size : int
        Feed-forward width.
    rows_by_samples : dict
        Padded samples of a batch -> its rows.
    device : str
        Where the operands live.

    Returns
    -------
    callable
        ``run_batch(wavs, wav_lens)``: the matmuls of the batch of ``wavs``'s length.

    Example
    -------
    >>> run_batch = layer_matmuls(8, 16, {1600: 10}, "cpu")
    >>> run_batch(torch.zeros(2, 1600), None).shape
    torch.Size([10, 8])
    """
    generator = torch.Generator().manual_seed(0)

    def operand(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    projections = [(operand(hidden_size, hidden_size), operand(hidden_size)) for _ in range(4)]
    feed_in = (operand(intermediate_size, hidden_size), operand(intermediate_size))
    feed_out = (operand(hidden_size, intermediate_size), operand(hidden_size))
    inputs = {samples: operand(rows, hidden_size) for samples, rows in rows_by_samples.items()}

    def run_batch(wavs, wav_lens):
        rows = inputs[wavs.shape[1]]
        for weight, bias in projections:
            torch.nn.functional.linear(rows, weight, bias)
        hidden = torch.nn.functional.linear(rows, *feed_in)
        return torch.nn.functional.linear(hidden, *feed_out)

    return run_batch


def layer_macs_per_row(hidden_size, intermediate_size):
    """MACs of ``layer_matmuls`` per input row (biases not counted).

    Example
    -------
    >>> layer_macs_per_row(1024, 4096)
    12582912
    """
    return 4 * hidden_size * hidden_size + 2 * hidden_size * intermediate_size


def bare_forward(brain, masked=False):
    """A bare ``model(wavs)`` forward of the Hugging Face encoder, the head, and argmax.

    No downsampler, waveform normalisation, output norm, log-softmax or
    decoding: the least a baseline forward can do; and no attention mask unless
    ``masked``, when the model gets the padding mask the recipe's wrapper gives
    it (padded frames must not be attended to).

    Arguments
    ---------
    brain : ssl_ctc.SSLCTCBrain
        A baseline brain.
    masked : bool
        Pass the padding mask of ``wav_lens`` as ``attention_mask``.

    Returns
    -------
    callable
        ``run_batch(wavs, wav_lens)`` -> best label per frame.
    """
    model, enc, ctc_lin = brain.modules.ssl.model, brain.modules.enc, brain.modules.ctc_lin

    def run_batch(wavs, wav_lens):
        mask = make_padding_masks(wavs, wav_len=wav_lens) if masked else None
        return ctc_lin(enc(model(wavs, attention_mask=mask).last_hidden_state)).argmax(dim=-1)

    return run_batch


def downsample_only(brain):
    """The brain's downsampler alone, as a batch function."""
    downsampler = brain.modules.downsampler

    def run_batch(wavs, wav_lens):
        return downsampler(wavs)

    return run_batch


def front_end_only(brain, channels_first=False):
    """The encoder's CNN feature extractor alone, as a batch function (``log_probs``: features).

    The output is a dict so that ``benchmark.count_macs`` can count it too.
    ``channels_first`` runs Hugging Face's own convolution layers instead of the
    recipe's channels-last matrix products (``front_end.MatmulFeatureEncoder``).
    """
    cnn = brain.modules.ssl.model.feature_extractor
    run_cnn = cnn.channels_first if channels_first else cnn

    def run_batch(wavs, wav_lens):
        return {"log_probs": run_cnn(wavs)}

    return run_batch


def count_variant_macs(infer_batch, batches):
    """MACs of ``infer_batch`` over every batch, with ``benchmark.count_macs`` (CPU, fp32).

    Returns
    -------
    int
    """
    return sum(benchmark.count_macs(infer_batch, wavs, wav_lens)[0] for wavs, wav_lens in batches)


# ------------------------------------------------------------------ the benchmark's path and LM


def measure_inference_path(brain, dataset, batches, settings, repeats, device):
    """The five tests' inference path against a bare forward, alternated, on the same batches.

    Each repeat times one pass of ``bare_forward`` over the batches, one with
    the padding mask (``masked=True``, what the model needs for padded batches), and
    ``brain.run_benchmark`` (the five tests on the synthetic set): its greedy test
    is the inference path (data loading, forward, greedy decoding, scoring), its
    LM test the same with the LM decoder. Odd repeats run the tests first, so
    that a drifting load favours neither side; each overhead is the median over
    repeats of the ratio within the repeat (``paired_overhead``).

    Arguments
    ---------
    brain : ssl_ctc.SSLCTCBrain
        The baseline brain.
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        The synthetic utterances (read from FLAC by the tests).
    batches : list of tuple
        The same utterances, batched as the tests batch them, on the device.
    settings : benchmark.BenchmarkSettings
        The tests' settings.
    repeats : int
        Number of alternations.
    device : str
        Device of the bare forward and of the timed tests.

    Returns
    -------
    dict
        Times, overheads and the tests' records.
    """
    kind = "gpu" if device.startswith("cuda") else "cpu"
    precision = settings.gpu_precision if kind == "gpu" else settings.cpu_precision
    bare, masked = (
        TimedEntry(label, bare_forward(brain, masked=with_mask), precision, settings.cpu_threads)
        for label, with_mask in (("bare forward + argmax", False), ("masked forward", True)))
    bare.time_pass(batches[: settings.warmup_batches], device)
    masked.time_pass(batches[: settings.warmup_batches], device)
    bare_times, masked_times, greedy, with_lm, records = [], [], [], [], []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            bare_times.append(bare.time_pass(batches, device)[0])
            masked_times.append(masked.time_pass(batches, device)[0])
        run = brain.run_benchmark({"synthetic": dataset}, settings)
        if repeat % 2 == 1:
            bare_times.append(bare.time_pass(batches, device)[0])
            masked_times.append(masked.time_pass(batches, device)[0])
        records.extend(run)
        tests = {record["test"]: record for record in run if record["status"] == "ok"}
        greedy.append(tests[f"{kind}_greedy"])
        if f"{kind}_lm" in tests:
            with_lm.append(tests[f"{kind}_lm"])

    def median_of(runs, field):
        return statistics.median(run[field] for run in runs)

    path = {
        "bare_forward_times_s": bare_times,
        "bare_forward_median_s": statistics.median(bare_times),
        "masked_forward_times_s": masked_times,
        "masked_forward_median_s": statistics.median(masked_times),
        "path_times_s": [run["total_time_s"] for run in greedy],
        "path_median_s": median_of(greedy, "total_time_s"),
        "path_forward_median_s": median_of(greedy, "forward_time_s"),
        "path_data_median_s": median_of(greedy, "data_time_s"),
        "path_decode_median_s": median_of(greedy, "decode_time_s"),
        "warmup_batches": settings.warmup_batches,
    }
    path_forward_times = [run["forward_time_s"] for run in greedy]
    path["overhead"] = paired_overhead(path["path_times_s"], bare_times)
    path["forward_overhead"] = paired_overhead(path_forward_times, bare_times)
    path["mask_overhead"] = paired_overhead(masked_times, bare_times)
    path["overhead_vs_masked"] = paired_overhead(path["path_times_s"], masked_times)
    lm = None
    if with_lm:
        lm = {
            "lm_path": settings.lm_path,
            "beam_width": settings.lm_beam_width,
            "alpha": settings.lm_alpha,
            "beta": settings.lm_beta,
            "decode_workers": settings.lm_decode_workers,
            "greedy_times_s": path["path_times_s"],
            "lm_times_s": [run["total_time_s"] for run in with_lm],
            "greedy_median_s": path["path_median_s"],
            "lm_median_s": median_of(with_lm, "total_time_s"),
            "beam_search_cpu_median_s": median_of(with_lm, "lm_beam_search_time_s"),
            "lm_wait_median_s": median_of(with_lm, "decode_time_s"),
            "wer_greedy": greedy[-1]["wer"],
            "wer_lm": with_lm[-1]["wer"],
        }
        lm["overhead"] = paired_overhead(lm["lm_times_s"], lm["greedy_times_s"])
    return {"inference_path": path, "lm": lm, "records": records}


def paired_overhead(times, reference_times):
    """Median over repeats of ``times[i] / reference_times[i]``, minus 1.

    Both were timed within the same repeat, minutes apart at most, so their
    ratio cancels most of the machine's drifting load.

    Example
    -------
    >>> round(paired_overhead([10.5, 13.0, 11.0], [10.0, 12.0, 10.0]), 3)
    0.083
    """
    ratios = [time / reference for time, reference in zip(times, reference_times, strict=True)]
    return statistics.median(ratios) - 1


def precision_wer_change(experiment, precision, threads, work_folder):
    """WER and CPU time of a trained experiment's test sets in fp32 and in ``precision``.

    Reruns the recipe itself (``ssl_ctc.run_recipe`` with ``--test_only``) on the
    experiment's saved ``hyperparams.yaml`` and best checkpoint, twice, with
    ``--benchmark_cpu_precision`` fp32 then ``precision``, greedy decoding on CPU.
    Records go to ``work_folder``, never to the experiment's folder.

    Arguments
    ---------
    experiment : Path
        Folder of a finished run (``hyperparams.yaml`` and ``save/``).
    precision : str
        The precision to compare with fp32.
    threads : int
        CPU threads.
    work_folder : Path
        Output folder of the two evaluations.

    Returns
    -------
    dict
        Per test set and precision: WER and CPU greedy time; the WER change and speed-up.
    """
    hparams_file = experiment / "hyperparams.yaml"
    with open(hparams_file, encoding="utf-8") as yaml_file:
        is_early_exit = "early_exit:" in yaml_file.read()
    brain_class = early_exit_brain_class() if is_early_exit else ssl_ctc.SSLCTCBrain
    measures = {}
    for name in ("fp32", precision):
        output_folder = work_folder / f"wer_{name}"
        brain = ssl_ctc.run_recipe(brain_class, [
            str(hparams_file), "--test_only", "--output_folder", str(output_folder),
            "--save_folder", str(experiment / "save"), "--benchmark_devices=[cpu]",
            "--benchmark_cpu_precision", name, "--benchmark_cpu_threads", str(threads),
            "--lm_path", "null",
        ])
        for record in brain.benchmark_records:
            if record["test"] == "cpu_greedy":
                measures.setdefault(record["test_set"], {})[name] = {
                    "wer": record["wer"], "time_s": record["total_time_s"]}
    for results in measures.values():
        results["wer_change"] = results[precision]["wer"] - results["fp32"]["wer"]
        results["speedup"] = results["fp32"]["time_s"] / results[precision]["time_s"]
    return {"experiment": str(experiment), "precision": precision, "test_sets": measures}


# ------------------------------------------------------------------ summary


def ratio_gap(time_ratio, gmacs_ratio):
    """Relative gap between a time ratio and a GMACs ratio (0 when time follows compute).

    Example
    -------
    >>> round(ratio_gap(0.55, 0.5), 3)
    0.1
    """
    return time_ratio / gmacs_ratio - 1


def check_targets(results):
    """Compare the measures with the issue's targets.

    Arguments
    ---------
    results : dict
        The ``speed.json`` content so far (``variants``, ``inference_path``, ``lm``).

    Returns
    -------
    list of dict
        ``target``, ``subject``, ``value`` (wall time), ``cpu_value`` (the same
        from process CPU time, where it applies), ``limit``, ``met`` (on wall
        time; None when not measured).

    Example
    -------
    >>> variants = [{"name": "baseline", "fraction_of_matmul": 0.7, "fraction_of_matmul_cpu": 0.7},
    ...             {"name": "SD2", "ratio_gap": 0.12, "cpu_ratio_gap": 0.05}]
    >>> results = {"variants": variants, "lm": None, "inference_path": {"overhead": 0.01}}
    >>> [(row["subject"], row["met"]) for row in check_targets(results)]
    [('SD2', False), ('baseline', True), ('inference path', True), ('LM', None)]
    """
    rows = [
        {"target": "time_ratio_vs_gmacs_ratio", "subject": variant["name"],
         "value": variant["ratio_gap"], "cpu_value": variant["cpu_ratio_gap"],
         "limit": TARGETS["time_ratio_vs_gmacs_ratio"],
         "met": abs(variant["ratio_gap"]) <= TARGETS["time_ratio_vs_gmacs_ratio"]}
        for variant in results["variants"]
        if variant["name"] != "baseline"
    ]
    baseline = results["variants"][0]
    fraction = baseline["fraction_of_matmul"]
    rows.append({"target": "fraction_of_matmul", "subject": "baseline", "value": fraction,
                 "cpu_value": baseline["fraction_of_matmul_cpu"],
                 "limit": TARGETS["fraction_of_matmul"],
                 "met": fraction >= TARGETS["fraction_of_matmul"]})
    for key, subject, section in (("inference_path_overhead", "inference path", "inference_path"),
                                  ("lm_overhead", "LM", "lm")):
        value = (results[section] or {}).get("overhead")
        rows.append({"target": key, "subject": subject, "value": value, "cpu_value": None,
                     "limit": TARGETS[key],
                     "met": None if value is None else value <= TARGETS[key]})
    return rows


def print_report(results):
    """Print the tables of a ``speed.json``."""
    settings = results["settings"]
    print(f"\n{settings['architecture']} ({results['encoder_parameters'] / 1e6:.1f} M parameters"
          f"{', tiny shapes' if settings['quick'] else ''}) on {results['device_name']}, "
          f"{settings['device']}, {settings['threads'][0]} threads, {settings['precision']}"
          f"{', compiled' if settings['compile'] else ''}; {settings['num_utterances']} "
          f"utterances, {results['audio_seconds']:.1f} s of audio in "
          f"{len(results['batches'])} sorted batches of {BATCH_SIZE} (padding "
          f"{100 * results['padding_fraction']:.1f} %); median of {settings['repeats']}; "
          f"load average {results['load_average_before'][0]:.1f} -> "
          f"{results['load_average_after'][0]:.1f}")
    header = (f"{'variant':<9}{'median s':>10}{'time ratio':>11}{'GMACs':>9}{'GMACs ratio':>12}"
              f"{'gap':>8}{'GMAC/s':>8}{'of matmul':>10}{'downsampler':>12}"
              f"{'CPU s':>9}{'CPU ratio':>10}{'CPU gap':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for row in results["variants"]:
        downsampler = row.get("downsampler_share")
        print(f"{row['name']:<9}{row['median_time_s']:>10.3f}{row['time_ratio']:>11.3f}"
              f"{row['gmacs']:>9.1f}{row['gmacs_ratio']:>12.3f}{100 * row['ratio_gap']:>+7.1f}%"
              f"{row['gmacs_per_s']:>8.1f}{100 * row['fraction_of_matmul']:>9.1f}%"
              + (f"{100 * downsampler:>11.1f}%" if downsampler is not None else f"{'-':>12}")
              + f"{row['median_cpu_time_s']:>9.2f}{row['cpu_time_ratio']:>10.3f}"
              f"{100 * row['cpu_ratio_gap']:>+8.1f}%")
    for row in results["extra_rows"]:
        print(f"{row['label']:<34} median {row['median_time_s']:.3f} s, "
              f"{row['gmacs_per_s']:.1f} GMAC/s; {row['comparison']}")
    matmul = results["matmul"]
    print(f"\nmatmul limit (F.linear, one layer's shapes at the baseline's frame counts, "
          f"{settings['precision']}): {matmul['gmacs_per_s']:.1f} GMAC/s; the baseline reaches "
          f"{100 * results['baseline_fraction_of_matmul']:.1f} % of it (on CPU time: "
          f"{100 * results['variants'][0]['fraction_of_matmul_cpu']:.1f} %)")
    front_end = results["front_end"]
    print(f"CNN front end of the baseline: {100 * front_end['share_of_baseline_time']:.1f} % of "
          f"its time for {100 * front_end['share_of_baseline_gmacs']:.1f} % of its MACs "
          f"({front_end['gmacs_per_s']:.1f} GMAC/s; Hugging Face's convolutions: "
          f"{front_end['hf_conv_gmacs_per_s']:.1f} GMAC/s, "
          f"x{front_end['hf_conv_median_time_s'] / front_end['median_time_s']:.2f} the time)")
    path = results["inference_path"]
    if path:
        print(f"inference path (five tests' greedy test) {path['path_median_s']:.3f} s "
              f"(forward {path['path_forward_median_s']:.3f}, data {path['path_data_median_s']:.3f}"
              f", decode {path['path_decode_median_s']:.3f}) vs bare forward + argmax "
              f"{path['bare_forward_median_s']:.3f} s: {100 * path['overhead']:+.1f} % "
              f"(forward alone {100 * path['forward_overhead']:+.1f} %); the model's own padding "
              f"mask alone: {100 * path['mask_overhead']:+.1f} % "
              f"({path['masked_forward_median_s']:.3f} s); the path vs the masked forward: "
              f"{100 * path['overhead_vs_masked']:+.1f} % (overheads: medians of ratios within a "
              f"repeat)")
    lm = results["lm"]
    if lm:
        print(f"LM (beam {lm['beam_width']}, alpha {lm['alpha']}, beta {lm['beta']}, "
              f"{lm['decode_workers']} workers): {lm['lm_median_s']:.3f} s vs greedy "
              f"{lm['greedy_median_s']:.3f} s: {100 * lm['overhead']:+.1f} % (beam search "
              f"{lm['beam_search_cpu_median_s']:.3f} s of CPU, waited {lm['lm_wait_median_s']:.3f}"
              f" s at the end)")
    for test_set, change in (results.get("wer_change") or {}).get("test_sets", {}).items():
        precision = results["wer_change"]["precision"]
        print(f"{precision} on {test_set}: WER {change['fp32']['wer']:.2f} -> "
              f"{change[precision]['wer']:.2f} ({change['wer_change']:+.2f}), CPU time x"
              f"{1 / change['speedup']:.2f} (speed-up {change['speedup']:.2f})")
    print("\ntargets (on wall time; CPU time in brackets):")
    for row in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        value = "-" if row["value"] is None else f"{100 * row['value']:+.1f} %"
        cpu_value = "" if row["cpu_value"] is None else f"({100 * row['cpu_value']:+.1f} %)"
        print(f"  {row['target']:<27} {row['subject']:<15} {value:>9} {cpu_value:>10}  "
              f"limit {100 * row['limit']:.0f} %  {verdict}")


# ------------------------------------------------------------------ main


def parse_arguments(argv):
    """Command line -> namespace, with the defaults of a full or ``--quick`` run."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="wavlm-large")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                        help="CPU threads; the first for every row, the others add baseline "
                        "and matmul rows (default: torch's current number)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="autocast precision of the timed passes (fp16: GPU only); "
                        "other than fp32, fp32 baseline and matmul rows are added")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every module of every brain before timing")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="rows to time (the baseline is always added)")
    parser.add_argument("--repeats", type=int, help="timed passes per row (median kept)")
    parser.add_argument("--num_utterances", type=int, help="synthetic utterances")
    parser.add_argument("--min_seconds", type=float, help="shortest utterance")
    parser.add_argument("--max_seconds", type=float, help="longest utterance")
    parser.add_argument("--lm_path", default=str(DEFAULT_LM),
                        help="ARPA LM of the LM overhead measure; 'none' skips it")
    parser.add_argument("--skip_inference_path", action="store_true",
                        help="skip the five tests' path and LM measures")
    parser.add_argument("--wer_experiment", type=Path,
                        help="a trained experiment folder: its WER and CPU time in fp32 and "
                        "in --precision (e.g. results/demo/baseline from make demo)")
    parser.add_argument("--output_folder", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=1986, help="seed of the synthetic signals")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes and a few short utterances (tests)")
    arguments = parser.parse_args(argv)
    for key, value in (QUICK_DEFAULTS if arguments.quick else RUN_DEFAULTS).items():
        if getattr(arguments, key) is None:
            setattr(arguments, key, value)
    if arguments.precision == "fp16" and not arguments.device.startswith("cuda"):
        parser.error("--precision fp16 needs --device cuda (use bf16 on CPU)")
    ssl_ctc.check_device(arguments.device)
    if arguments.min_seconds > arguments.max_seconds or arguments.min_seconds <= 0:
        parser.error("need 0 < --min_seconds <= --max_seconds")
    if arguments.num_utterances < 1 or arguments.repeats < 1:
        parser.error("--num_utterances and --repeats must be at least 1")
    if arguments.wer_experiment is not None and arguments.precision == "fp32":
        parser.error("--wer_experiment compares fp32 with --precision bf16 (or fp16)")
    arguments.variants = ["baseline"] + [name for name in arguments.variants if name != "baseline"]
    arguments.lm_path = None if arguments.lm_path.lower() == "none" else arguments.lm_path
    return arguments


def prepare(arguments, work_folder):
    """Save the encoder, write the utterances, build every variant's brain.

    Returns
    -------
    dict
        ``config`` (encoder), ``durations``, ``dataset``, ``cpu_batches`` (as the
        five tests batch them), ``brains`` (name -> brain, baseline first),
        ``encoder_parameters`` and ``probe_blank_fraction`` (see ``sharpen_ctc_head``).
    """
    encoder_folder = work_folder / "encoder"
    config = save_encoder(encoder_folder, arguments.architecture,
                          TINY_SHAPE if arguments.quick else LARGE_SHAPE)
    durations = librispeech_like_durations(
        arguments.num_utterances, arguments.min_seconds, arguments.max_seconds,
        scale=QUICK_DURATION_SCALE if arguments.quick else 1.0)
    dataset = write_corpus(work_folder, durations, arguments.seed)
    cpu_batches = [(batch.sig.data, batch.sig.lengths)
                   for batch in benchmark.make_test_loader(dataset, BATCH_SIZE)]
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


def timed_entries(brains, front_end, hf_front_end, matmul_batch, precision, threads, extra):
    """The round-robin's rows: variants, downsamplers alone, front end, matmul, extra settings.

    Arguments
    ---------
    brains : dict
        Name -> brain.
    front_end : callable
        The baseline's CNN front end as a batch function.
    hf_front_end : callable
        The same with Hugging Face's convolution layers.
    matmul_batch : callable
        See ``layer_matmuls``.
    precision : str
        Precision of the main rows.
    threads : int
        Threads of the main rows.
    extra : list of tuple
        ``(precision, threads)`` of the additional baseline and matmul rows.

    Returns
    -------
    list of TimedEntry
    """
    entries = [TimedEntry(name, brain.infer_batch, precision, threads)
               for name, brain in brains.items()]
    entries += [TimedEntry(f"{name} downsampler", downsample_only(brain), precision, threads)
                for name, brain in brains.items()
                if "downsampler" in brain.modules
                and not isinstance(brain.modules.downsampler, torch.nn.Identity)]
    entries += [TimedEntry("front end", front_end, precision, threads),
                TimedEntry("front end, HF conv", hf_front_end, precision, threads),
                TimedEntry("matmul", matmul_batch, precision, threads)]
    for extra_precision, extra_threads in extra:
        suffix = f"{extra_precision} {extra_threads} threads"
        entries += [
            TimedEntry(f"baseline {suffix}", brains["baseline"].infer_batch, extra_precision,
                       extra_threads),
            TimedEntry(f"matmul {suffix}", matmul_batch, extra_precision, extra_threads),
        ]
    return entries


def variant_rows(brains, macs, times, cpu_times):
    """One record per variant: times, ratios to the baseline, GMACs, GMAC/s.

    Arguments
    ---------
    brains : dict
        Name -> brain.
    macs : dict
        Name -> MACs over the batches.
    times : dict
        Row label -> wall seconds per repeat (``round_robin``); includes "matmul".
    cpu_times : dict
        Row label -> process CPU seconds per repeat.

    Returns
    -------
    list of dict
    """
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    cpu_medians = {label: statistics.median(seconds) for label, seconds in cpu_times.items()}
    matmul_macs = macs["matmul"]
    rows = []
    for name, brain in brains.items():
        tags = brain.experiment_tags()
        gmacs, seconds = macs[name] / 1e9, medians[name]
        downsampler = f"{name} downsampler"
        row = {
            "name": name,
            "recipe_name": tags["name"],
            "hparams_file": VARIANTS[name].hparams_file,
            "overrides": VARIANTS[name].overrides,
            "layers": tags["layers"],
            "factor": tags["factor"],
            "times_s": times[name],
            "median_time_s": seconds,
            "time_ratio": seconds / medians["baseline"],
            "cpu_times_s": cpu_times[name],
            "median_cpu_time_s": cpu_medians[name],
            "cpu_time_ratio": cpu_medians[name] / cpu_medians["baseline"],
            "gmacs": gmacs,
            "gmacs_ratio": macs[name] / macs["baseline"],
            "gmacs_per_s": gmacs / seconds,
            "fraction_of_matmul": macs[name] / seconds / (matmul_macs / medians["matmul"]),
            "fraction_of_matmul_cpu": (macs[name] / cpu_medians[name]
                                       / (matmul_macs / cpu_medians["matmul"])),
            "downsampler_times_s": times.get(downsampler),
            "downsampler_share": (medians[downsampler] / seconds if downsampler in medians
                                  else None),
        }
        row["ratio_gap"] = ratio_gap(row["time_ratio"], row["gmacs_ratio"])
        row["cpu_ratio_gap"] = ratio_gap(row["cpu_time_ratio"], row["gmacs_ratio"])
        rows.append(row)
    return rows


def run(arguments, work_folder):
    """Build, count, time and measure; return the ``speed.json`` content."""
    device, precision, threads = arguments.device, arguments.precision, arguments.threads[0]
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    setup = prepare(arguments, work_folder)
    config, brains, cpu_batches = setup["config"], setup["brains"], setup["cpu_batches"]
    baseline = brains["baseline"]
    front_end = front_end_only(baseline)
    rows_by_samples = {
        wavs.shape[1]: len(wavs) * ssl_ctc.encoder_frames(baseline.modules.ssl, wavs.shape[1])
        for wavs, _ in cpu_batches}
    matmul_macs = sum(rows_by_samples[wavs.shape[1]] for wavs, _ in cpu_batches) * (
        layer_macs_per_row(config.hidden_size, config.intermediate_size))

    print(f"counting MACs of {len(brains)} variants ...", flush=True)
    macs = {name: count_variant_macs(brain.infer_batch, cpu_batches)
            for name, brain in brains.items()}
    front_end_macs = count_variant_macs(front_end, cpu_batches)

    for brain in brains.values():
        brain.modules.to(device)
        brain.device = device
        if arguments.compile:
            for key in list(brain.modules):
                brain.modules[key] = torch.compile(brain.modules[key])
    batches = [(wavs.to(device), wav_lens.to(device)) for wavs, wav_lens in cpu_batches]
    extra = [("fp32", threads)] if precision != "fp32" else []
    extra += [(precision, other) for other in arguments.threads[1:]]
    entries = timed_entries(
        brains, front_end, front_end_only(baseline, channels_first=True),
        layer_matmuls(config.hidden_size, config.intermediate_size, rows_by_samples, device),
        precision, threads, extra)
    print(f"timing {len(entries)} rows x {arguments.repeats} repeats ...", flush=True)
    times, cpu_times = round_robin(entries, batches, arguments.repeats, device,
                                   warmup_batches=len(batches) if arguments.compile else 1)
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    matmul_rate = matmul_macs / medians["matmul"] / 1e9
    variants = variant_rows(brains, {**macs, "matmul": matmul_macs}, times, cpu_times)

    extra_rows = []
    for extra_precision, extra_threads in extra:
        suffix = f"{extra_precision} {extra_threads} threads"
        model_ratio = medians[f"baseline {suffix}"] / medians["baseline"]
        matmul_ratio = medians[f"matmul {suffix}"] / medians["matmul"]
        extra_rows.append({
            "label": f"baseline {suffix}", "precision": extra_precision,
            "threads": extra_threads, "times_s": times[f"baseline {suffix}"],
            "cpu_times_s": cpu_times[f"baseline {suffix}"],
            "median_time_s": medians[f"baseline {suffix}"],
            "gmacs_per_s": macs["baseline"] / medians[f"baseline {suffix}"] / 1e9,
            "matmul_times_s": times[f"matmul {suffix}"],
            "matmul_gmacs_per_s": matmul_macs / medians[f"matmul {suffix}"] / 1e9,
            "time_vs_main": model_ratio, "matmul_time_vs_main": matmul_ratio,
            "comparison": (f"{precision} {threads} threads is x{model_ratio:.2f} as fast "
                           f"(matmul x{matmul_ratio:.2f})"),
        })

    results = {
        "command": " ".join([sys.executable, *sys.argv]),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "host": platform.node(),
        "device_name": (torch.cuda.get_device_name(device) if device.startswith("cuda")
                        else benchmark.cpu_name()),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "settings": {key: (str(value) if isinstance(value, Path) else value)
                     for key, value in vars(arguments).items()},
        "encoder_config": config.to_diff_dict(),
        "encoder_parameters": setup["encoder_parameters"],
        "ctc_head": {"sharpened": True, "blank_fraction": TRAINED_BLANK_FRACTION,
                     "logit_std": TRAINED_LOGIT_STD,
                     "probe_blank_fraction": setup["probe_blank_fraction"]},
        "durations_s": setup["durations"],
        "audio_seconds": sum(setup["durations"]),
        "batches": [{"utterances": len(wavs), "samples": wavs.shape[1],
                     "padding_fraction": padding_fraction(wav_lens)}
                    for wavs, wav_lens in cpu_batches],
        "padding_fraction": 1 - sum(setup["durations"]) * SAMPLE_RATE / sum(
            wavs.numel() for wavs, _ in cpu_batches),
        "variants": variants,
        "extra_rows": extra_rows,
        "matmul": {"macs": matmul_macs, "rows_by_samples": rows_by_samples,
                   "times_s": times["matmul"], "median_time_s": medians["matmul"],
                   "cpu_times_s": cpu_times["matmul"], "gmacs_per_s": matmul_rate},
        "front_end": {"gmacs": front_end_macs / 1e9, "times_s": times["front end"],
                      "cpu_times_s": cpu_times["front end"],
                      "median_time_s": medians["front end"],
                      "share_of_baseline_time": medians["front end"] / medians["baseline"],
                      "share_of_baseline_gmacs": front_end_macs / macs["baseline"],
                      "gmacs_per_s": front_end_macs / medians["front end"] / 1e9,
                      "hf_conv_times_s": times["front end, HF conv"],
                      "hf_conv_median_time_s": medians["front end, HF conv"],
                      "hf_conv_gmacs_per_s": (front_end_macs / medians["front end, HF conv"]
                                              / 1e9)},
        "baseline_fraction_of_matmul": variants[0]["fraction_of_matmul"],
        "inference_path": None,
        "lm": None,
        "records": [],
        "wer_change": None,
        "load_average_before": load_before,
    }
    save_results(results, arguments.output_folder, complete=False)
    if not arguments.skip_inference_path:
        print("measuring the five tests' path and LM ...", flush=True)
        settings = dataclasses.replace(
            benchmark.BenchmarkSettings.from_hparams(vars(baseline.hparams)),
            batch_size=BATCH_SIZE, devices=[device], cpu_threads=threads, warmup_batches=1,
            cpu_precision="fp32" if device.startswith("cuda") else precision,
            gpu_precision=precision, mac_batches=1, lm_path=arguments.lm_path)
        results.update(measure_inference_path(
            baseline, setup["dataset"], batches, settings, arguments.repeats, device))
        save_results(results, arguments.output_folder, complete=False)
    if arguments.wer_experiment is not None:
        results["wer_change"] = precision_wer_change(
            arguments.wer_experiment, precision, threads, work_folder)
    return save_results(results, arguments.output_folder, complete=True)


def save_results(results, output_folder, complete):
    """Add the load average and the targets; write ``speed.json`` atomically.

    Called after each phase (``complete`` False), so that an interrupted run
    keeps what it measured.

    Arguments
    ---------
    results : dict
        Updated in place.
    output_folder : Path
        Where ``speed.json`` goes (created if needed).
    complete : bool
        Whether every phase ran.

    Returns
    -------
    dict
        ``results``.
    """
    results["complete"] = complete
    results["load_average_after"] = os.getloadavg()
    results["targets"] = check_targets(results)
    output_folder.mkdir(parents=True, exist_ok=True)
    path = output_folder / RESULTS_JSON
    temporary = path.with_name(f".{RESULTS_JSON}.partial")
    temporary.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return results


def main(argv=None):
    """Run the speed benchmark; write ``speed.json``; print the tables; return the results."""
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    transformers.logging.set_verbosity_error()
    previous_threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="speed_benchmark_") as work_folder:
            results = run(arguments, Path(work_folder))
    finally:
        torch.set_num_threads(previous_threads)
    print_report(results)
    print(f"\nwrote {arguments.output_folder / RESULTS_JSON}")
    return results


if __name__ == "__main__":
    main()
