#!/usr/bin/env python3
"""Speed benchmark: does each strategy's time saving follow its compute saving?

Builds a real encoder architecture from its configuration (WavLM Large shape
by default; random weights, nothing downloaded), saves it once to a temporary
folder, and builds every variant from the recipe's own YAML files with
command-line-style overrides and the strategies' own Brains (``DownsampledBrain``,
``LayerRemovalBrain``, ``EarlyExitBrain``). Every variant is timed through its
``brain.infer_batch``, the inference path of training, testing and the benchmark.

On the same synthetic utterances (LibriSpeech-like durations, written as FLAC,
batches of 4 sorted by duration, neighbours of similar length), the variants are
timed interleaved: a round-robin over all of them, repeated, rotated each repeat,
the median kept.
For each: median time, time ratio to the baseline, GMACs ratio to the baseline
(``ssl_ctc.benchmarking.macs.count_macs``, a separate pass under ``torch.no_grad``), achieved
GMAC/s, and its fraction of the machine's own matmul throughput, measured in the
same round-robin with ``torch.nn.functional.linear`` on the shapes of a
transformer layer at the baseline's frame counts. The downsamplers are also
timed alone (their share of the variant's time).

Then, on the baseline, the benchmark's inference path (``benchmark.benchmark_experiment``,
the five tests: data loading, forward, decoding) is measured against a bare
``model(wavs)`` forward plus head and argmax on the same batches, alternated in
the same run; and the CPU (or GPU) time with the LM against without it, at the
YAML's beam settings, with ``benchmark.py``'s overlapped LM decoder.

On CPU every variant runs through ``ssl_ctc.cpu.plan`` (the five tests'
default: the fastest exact fp32 backend, measured at start), beside the baseline
on Hugging Face's own path (before this change), in int8, in bf16 where the CPU
has bf16 instructions, and exported to ONNX in ONNX Runtime's CPU session (fp32
and int8): same batches, same round-robin. The matmul limits are measured the
same way: ``F.linear``, oneDNN with packed weights (exact), int8 and bf16 GEMMs
at one layer's shapes, beside the theoretical fp32 peak from the CPU flags.

Optional: another precision (``--precision bf16`` or ``int8`` adds fp32 rows and
reports the speed-up), other thread counts (``--threads 2 1``), ``torch.compile``
(``--compile``), a GPU (``--device cuda``), and the WER change of bf16 and int8 on
a trained experiment (``--wer_experiment``, e.g. a ``make demo`` run).

Usage::

    python speed_benchmark.py --threads 2                     # WavLM Large shape, every variant
    python speed_benchmark.py --architecture hubert-large --variants baseline SD2 18L
    python speed_benchmark.py --precision bf16 --threads 2 1  # + fp32 and 1-thread baseline rows
    python speed_benchmark.py --device cuda --precision fp16 --compile
    python speed_benchmark.py --wer_experiment results/demo/baseline  # WER of bf16 and int8
    python speed_benchmark.py --quick                         # tiny shapes, seconds (tests)

Writes ``<output_folder>/speed.json`` (default ``results/speed/``) after each phase
(``"complete": false`` until the last), and prints the tables at the end.

Authors
 * Recipe team 2026
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from hyperpyyaml import load_hyperpyyaml

from early_exiting.brain import EarlyExitBrain
from speed_analysis.overheads import measure_inference_path, precision_wer_change
from speed_analysis.random_encoders import (
    ARCHITECTURES,
    LARGE_SHAPE,
    TINY_SHAPE,
    save_random_encoder,
    share_weights,
)
from speed_analysis.reference_workloads import (
    count_variant_macs,
    downsample_only,
    front_end_only,
    layer_macs_per_row,
    layer_matmuls,
)
from speed_analysis.report import (
    check_targets,
    print_report,
    ratio_gap,
    theoretical_fp32_peak_gmacs,
)
from speed_analysis.synthetic_utterances import (
    librispeech_like_durations,
    padding_fraction,
    write_corpus,
)
from ssl_ctc.benchmarking.measurement import TimedEntry, round_robin
from ssl_ctc.benchmarking.records import utc_timestamp
from ssl_ctc.benchmarking.settings import PAPER_TEST_BATCH_SIZE, BenchmarkSettings
from ssl_ctc.cpu.machine import cpu_flags, cpu_name
from ssl_ctc.cpu.plan import (
    FP32_BACKENDS,
    CpuInferencePath,
    choose_fp32_backend,
    choose_front_end,
    has_bf16_instructions,
)
from ssl_ctc.ctc import make_tokenizer
from ssl_ctc.data import make_test_loader
from ssl_ctc.downsampling import DownsampledBrain
from ssl_ctc.encoder import SAMPLE_RATE, encoder_frames
from ssl_ctc.files import write_atomically
from ssl_ctc.layer_removal import LayerRemovalBrain
from ssl_ctc.recipe import check_device

REPO = Path(__file__).resolve().parent


HPARAMS = REPO / "hparams"


DEFAULT_LM = REPO / "embedded" / "LibriSpeech" / "4-gram.arpa"


DEFAULT_OUTPUT = Path("results") / "speed"


RESULTS_JSON = "speed.json"




BATCH_SIZE = PAPER_TEST_BATCH_SIZE


# Head posteriors like a trained CTC model's (see ``sharpen_ctc_head``).
TRAINED_BLANK_FRACTION = 0.7


TRAINED_LOGIT_STD = 20.0


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
    brain_class : type
        The strategy's Brain (what its script runs).
    """

    name: str
    hparams_file: str
    overrides: dict
    brain_class: type


def _downsampling(name, **overrides):
    return Variant(name, "sig_down8000.yaml", overrides, DownsampledBrain)


def _layer_removal(name, **overrides):
    return Variant(name, "layer_removal.yaml", overrides, LayerRemovalBrain)


VARIANTS = {
    variant.name: variant
    for variant in (
        _downsampling("baseline", downsampling_factor=1),
        _downsampling("SD2", downsampling_technique="signal_downsampling", downsampling_factor=2),
        _downsampling("SD3", downsampling_technique="signal_downsampling", downsampling_factor=3),
        _downsampling("AV2", downsampling_technique="averaging", downsampling_factor=2),
        _downsampling("CL2", downsampling_technique="convolutional", downsampling_factor=2),
        _downsampling("CL3", downsampling_technique="convolutional", downsampling_factor=3),
        _layer_removal("18L", considered_layers=18, downsampling_factor=1),
        _layer_removal("12L", considered_layers=12, downsampling_factor=1),
        Variant("EE18", "early_exiting/early_exits.yaml",
                {"exit_criterion": "fixed", "exit_layer": 18}, EarlyExitBrain),
        _layer_removal("SD2+18L", considered_layers=18, downsampling_factor=2,
                       downsampling_technique="signal_downsampling"),
    )
}


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
    ssl_ctc.brain.SSLCTCBrain
        The variant's Brain on CPU, in eval mode, with its tokenizer.
    """
    with open(HPARAMS / variant.hparams_file, encoding="utf-8") as yaml_file:
        hparams = load_hyperpyyaml(yaml_file, {**overrides, **variant.overrides})
    ssl = hparams["ssl"]
    depth = ssl.model.config.num_hidden_layers
    if depth not in loaded_encoders and loaded_encoders:
        share_weights(ssl.model, next(iter(loaded_encoders.values())))
    model = loaded_encoders.setdefault(depth, ssl.model)
    ssl.model = model
    if "early_exit" in hparams["modules"]:  # its layer-by-layer runner holds the encoder too
        hparams["early_exit"].encoder.model = model
    brain = variant.brain_class(
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
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "int8"],
                        help="precision of the timed passes (fp16: GPU only; int8: CPU only); "
                        "other than fp32, fp32 baseline and matmul rows are added")
    parser.add_argument("--cpu_backend", default="auto", choices=["auto", *FP32_BACKENDS],
                        help="fp32 kernel of the CPU path (auto: measured at start)")
    parser.add_argument("--skip_onnx", action="store_true",
                        help="skip the ONNX Runtime rows (export, fp32 and int8 sessions)")
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
                        "in --wer_precisions (e.g. results/demo/baseline from make demo)")
    parser.add_argument("--wer_precisions", nargs="+", default=["bf16", "int8"],
                        choices=["bf16", "int8", "auto"], help="CPU precisions of --wer_experiment")
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
    if arguments.precision == "int8" and arguments.device.startswith("cuda"):
        parser.error("--precision int8 is CPU only")
    check_device(arguments.device)
    if arguments.min_seconds > arguments.max_seconds or arguments.min_seconds <= 0:
        parser.error("need 0 < --min_seconds <= --max_seconds")
    if arguments.num_utterances < 1 or arguments.repeats < 1:
        parser.error("--num_utterances and --repeats must be at least 1")
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


# Kernel of the linear layers for each precision on the CPU path (bf16: autocast's F.linear).
PATH_KERNELS = {"bf16": "aten", "int8": "int8"}


class CpuPaths:
    """The five tests' CPU path of any brain in a precision, with the choices made once.

    Arguments
    ---------
    fp32_backend : str
        Kernel of fp32 linear layers (see ``ssl_ctc.cpu.plan.FP32_BACKENDS``).
    front_ends : dict
        Precision -> CNN front end (``ssl_ctc.cpu.plan.FRONT_ENDS``); "matmul" if absent.
    """

    def __init__(self, fp32_backend, front_ends):
        self.fp32_backend = fp32_backend
        self.front_ends = front_ends
        self.kernel_cache = {}  # the variants share one encoder: weights packed once

    def of(self, modules, precision):
        """``CpuInferencePath`` of ``modules`` in ``precision``."""
        return CpuInferencePath(modules, PATH_KERNELS.get(precision, self.fp32_backend),
                                self.kernel_cache, self.front_ends.get(precision, "matmul"))


def cpu_path_runner(device, cpu_paths):
    """``run_of(brain, precision)``: the brain's batch function on the five tests' path.

    On CPU, ``brain.infer_batch`` inside ``ssl_ctc.cpu.plan``'s path for the
    precision (applied and undone around each batch: a class swap, the weights
    packed once); on GPU, ``brain.infer_batch``.
    """

    def run_of(brain, precision):
        if device.startswith("cuda"):
            return brain.infer_batch
        path = cpu_paths.of(brain.modules, precision)

        def run_batch(wavs, wav_lens):
            with path.applied():
                return brain.infer_batch(wavs, wav_lens)

        return run_batch

    return run_of


def timed_entries(brains, run_of, front_end, hf_front_end, matmul_batch, precision, threads,
                  extra, cpu_rows):
    """The round-robin's rows: variants, downsamplers alone, front end, matmul, extra settings.

    Arguments
    ---------
    brains : dict
        Name -> brain.
    run_of : callable
        ``run_of(brain, precision)`` -> batch function (``cpu_path_runner``).
    front_end : callable
        The baseline's CNN front end as a batch function.
    hf_front_end : callable
        The same with Hugging Face's convolution layers.
    matmul_batch : callable
        See ``layer_matmuls`` (``F.linear``).
    precision : str
        Precision of the main rows.
    threads : int
        Threads of the main rows.
    extra : list of tuple
        ``(precision, threads)`` of the additional baseline and matmul rows.
    cpu_rows : list of tuple
        ``(label, batch function, precision)``: CPU paths, engines and GEMMs compared.

    Returns
    -------
    list of TimedEntry
    """
    entries = [TimedEntry(name, run_of(brain, precision), precision, threads)
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
            TimedEntry(f"baseline {suffix}", run_of(brains["baseline"], extra_precision),
                       extra_precision, extra_threads),
            TimedEntry(f"matmul {suffix}", matmul_batch, extra_precision, extra_threads),
        ]
    entries += [TimedEntry(label, run_batch, row_precision, threads)
                for label, run_batch, row_precision in cpu_rows]
    return entries


def encoder_differences(brain, paths, batches):
    """Each path's encoder output against Hugging Face's path on every batch (fp32 reference).

    Arguments
    ---------
    brain : ssl_ctc.SSLCTCBrain
        The baseline.
    paths : dict
        Precision -> ``CpuInferencePath`` of the brain's modules.
    batches : list of tuple
        CPU batches.

    Returns
    -------
    dict
        Precision -> ``max_abs_diff`` and ``relative_error`` (Frobenius) of ``brain.encode``.
    """
    differences = {}
    with torch.inference_mode():
        references = [brain.encode(wavs, wav_lens) for wavs, wav_lens in batches]
        for precision, path in paths.items():
            autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                        else contextlib.nullcontext())
            with path.applied(), autocast:
                outputs = [brain.encode(wavs, wav_lens).float() for wavs, wav_lens in batches]
            differences[precision] = {
                "max_abs_diff": max(float((output - reference).abs().max())
                                    for output, reference in zip(outputs, references,
                                                                 strict=True)),
                "relative_error": max(float((output - reference).norm() / reference.norm())
                                      for output, reference in zip(outputs, references,
                                                                   strict=True)),
            }
    return differences


def onnx_rows(brain, batches, threads, folder):
    """ONNX Runtime fp32 and int8 sessions of the baseline as rows, or why export failed.

    Returns
    -------
    tuple
        ``(rows, report)``: ``(label, batch function, "fp32")`` rows and a dict with
        the export's outcome (``error`` naming the failing step) and each session's
        largest log-prob difference from the brain's own (fp32) forward.
    """
    try:
        from ssl_ctc.inference.onnx_export import (
            export_acoustic_model,
            onnx_batch_function,
            onnx_session,
        )
    except ImportError as error:
        return [], {"error": f"onnx/onnxruntime not installed: {error}"}
    report = {}
    try:
        path = export_acoustic_model(brain, *batches[0], folder / "acoustic_model.onnx")
    except Exception as error:  # the exporter's message names the failing node and line
        return [], {"error": f"export: {type(error).__name__}: {str(error)[:2000]}"}
    rows = []
    with torch.inference_mode():
        references = [brain.classify(brain.encode(wavs, wav_lens)) for wavs, wav_lens in batches]
    for name, int8 in (("fp32", False), ("int8", True)):
        try:
            run_batch = onnx_batch_function(onnx_session(path, threads, int8=int8))
            outputs = [run_batch(wavs, wav_lens) for wavs, wav_lens in batches]
        except Exception as error:
            report[name] = {"error": f"{type(error).__name__}: {str(error)[:2000]}"}
            continue
        report[name] = {"max_abs_log_prob_diff": max(
            float((output - reference).abs().max())
            for output, reference in zip(outputs, references, strict=True))}
        rows.append((f"baseline onnx {name}", run_batch, "fp32"))
    return rows, report


def compared_rows(cpu_rows, medians, baseline_macs, matmul_macs, precision):
    """The compared CPU rows against the baseline on the five tests' path (``medians["baseline"]``).

    Returns
    -------
    dict
        ``rows``: label -> median seconds, GMAC/s and speed-up over the main
        baseline row (> 1: faster); ``best_exact_fp32_matmul_gmacs_per_s`` (F.linear
        or oneDNN, whichever is faster) and the baseline's fraction of it.
    """
    rows = {}
    for label, _, _ in [("baseline", None, precision), *cpu_rows]:
        macs = matmul_macs if label.startswith("matmul") else baseline_macs
        rows[label] = {"median_time_s": medians[label],
                       "gmacs_per_s": macs / medians[label] / 1e9,
                       "speedup_vs_baseline": medians["baseline"] / medians[label]}
    exact = [medians[label] for label in ("matmul", "matmul onednn") if label in medians]
    best = matmul_macs / min(exact) / 1e9
    return {"rows": rows, "main_precision": precision,
            "best_exact_fp32_matmul_gmacs_per_s": best,
            "baseline_fraction_of_best_exact_fp32_matmul": rows["baseline"]["gmacs_per_s"] / best}


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
        wavs.shape[1]: len(wavs) * encoder_frames(baseline.modules.ssl, wavs.shape[1])
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
    on_cpu = not device.startswith("cuda")
    cpu_paths, cpu_rows = {"flags": cpu_flags()}, []
    fp32_backend, front_ends = arguments.cpu_backend, {}
    if on_cpu:
        print("choosing the CPU path, exporting to ONNX ...", flush=True)
        compared = ["fp32", "int8"] + (["bf16"] if has_bf16_instructions() else [])
        if fp32_backend == "auto":
            linears = [module for module in baseline.modules.modules()
                       if type(module) is torch.nn.Linear]
            fp32_backend, cpu_paths["fp32_backend_gmacs_per_s"] = choose_fp32_backend(linears)
            # The front end runs in fp32 under int8: its fp32 measurement serves both.
            measured = {precision_name: choose_front_end(baseline.modules, precision_name)
                        for precision_name in {"fp32", *compared} - {"int8"}}
            choices = {name: measured["fp32" if name == "int8" else name] for name in compared}
            front_ends = {name: front_end for name, (front_end, _) in choices.items()}
            cpu_paths["front_end_seconds"] = {name: seconds
                                              for name, (_, seconds) in choices.items()}
        cpu_paths.update(fp32_backend=fp32_backend, front_ends=front_ends,
                         compared_precisions=compared, bf16_instructions=has_bf16_instructions())
    paths = CpuPaths(fp32_backend, front_ends)
    if on_cpu:
        cpu_paths["encoder_differences"] = encoder_differences(baseline, {
            name: paths.of(baseline.modules, name) for name in compared}, cpu_batches)
    run_of = cpu_path_runner(device, paths)
    matmul_backends = ["aten"]
    if on_cpu:
        matmul_backends += ["onednn", "int8"] + (["bf16"] if has_bf16_instructions() else [])
        cpu_rows.append(("baseline, HF path", baseline.infer_batch, "fp32"))
        cpu_rows += [(f"baseline {name}", run_of(baseline, name), name)
                     for name in compared if name != precision]
    matmuls = {backend: layer_matmuls(config.hidden_size, config.intermediate_size,
                                      rows_by_samples, device, backend)
               for backend in matmul_backends}
    cpu_rows += [(f"matmul {backend}", matmuls[backend], "fp32")
                 for backend in matmul_backends[1:]]
    if on_cpu and not arguments.skip_onnx:
        rows, cpu_paths["onnx"] = onnx_rows(baseline, cpu_batches, threads, work_folder / "onnx")
        cpu_rows += rows
    entries = timed_entries(
        brains, run_of, front_end, front_end_only(baseline, channels_first=True),
        matmuls["aten"], precision, threads, extra, cpu_rows)
    print(f"timing {len(entries)} rows x {arguments.repeats} repeats ...", flush=True)
    times, cpu_times = round_robin(entries, batches, arguments.repeats, device,
                                   warmup_batches=len(batches) if arguments.compile else 1)
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    matmul_rate = matmul_macs / medians["matmul"] / 1e9
    variants = variant_rows(brains, {**macs, "matmul": matmul_macs}, times, cpu_times)
    if on_cpu:
        cpu_paths.update(compared_rows(cpu_rows, medians, macs["baseline"], matmul_macs,
                                       precision),
                         theoretical_fp32_peak=theoretical_fp32_peak_gmacs(
                             cpu_paths["flags"]["flags"], threads))

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
        "timestamp": utc_timestamp(),
        "host": platform.node(),
        "device_name": (torch.cuda.get_device_name(device) if device.startswith("cuda")
                        else cpu_name()),
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
        "cpu_paths": cpu_paths if on_cpu else None,
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
            BenchmarkSettings.from_hparams(vars(baseline.hparams)),
            batch_size=BATCH_SIZE, devices=[device], cpu_threads=threads, warmup_batches=1,
            cpu_precision="fp32" if device.startswith("cuda") else precision,
            gpu_precision=precision, mac_batches=1, lm_path=arguments.lm_path)
        cpu_path = paths.of(baseline.modules, precision) if on_cpu else None
        results.update(measure_inference_path(
            baseline, setup["dataset"], batches, settings, arguments.repeats, device, cpu_path))
        save_results(results, arguments.output_folder, complete=False)
    if arguments.wer_experiment is not None:
        results["wer_change"] = precision_wer_change(
            arguments.wer_experiment, arguments.wer_precisions, threads, work_folder)
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
    write_atomically(output_folder / RESULTS_JSON,
                     json.dumps(results, indent=2, default=str) + "\n")
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
