"""The speed script's run, step by step: build, count, choose the CPU paths, time, record.

On the same synthetic utterances (LibriSpeech-like durations, written as FLAC,
batches of 4 sorted by duration), every variant is timed through its
``brain.infer_batch`` on the five tests' path, interleaved: a round-robin over
all rows, repeated, rotated each repeat, the median kept. For each: time and
GMACs ratios to the baseline (``ssl_ctc.benchmarking.macs.count_macs``),
achieved GMAC/s and its fraction of the machine's own matmul throughput (a
transformer layer's linear layers at the baseline's frame counts, same
round-robin). On CPU the paths are the five tests' decisions
(``ssl_ctc.cpu.decision.decide_cpu_inference``, one per precision compared: the
same function the five tests call), compared with Hugging Face's path, int8, bf16
where the CPU has bf16 instructions, ONNX Runtime and GEMM limits. Then the five tests' path and
the LM against bare forwards (``speed_analysis.overheads``).

Usage::

    results = run(arguments, work_folder)  # arguments: speed_benchmark.parse_arguments
"""

import dataclasses
import os
import platform
import statistics
import sys
from pathlib import Path

import torch
import transformers

from speed_analysis.brains import BATCH_SIZE, TRAINED_BLANK_FRACTION, TRAINED_LOGIT_STD, prepare
from speed_analysis.onnx_rows import onnx_rows
from speed_analysis.overheads import measure_inference_path, precision_wer_change
from speed_analysis.reference_workloads import (
    count_variant_macs,
    front_end_only,
    layer_macs_per_row,
    layer_matmuls,
)
from speed_analysis.report import save_results, theoretical_fp32_peak_gmacs
from speed_analysis.rows import (
    compared_rows,
    encoder_differences,
    extra_rows,
    path_runner,
    timed_entries,
    variant_rows,
)
from speed_analysis.synthetic_utterances import padding_fraction
from ssl_ctc.benchmarking.measurement import round_robin
from ssl_ctc.benchmarking.records import utc_timestamp
from ssl_ctc.benchmarking.settings import BenchmarkSettings
from ssl_ctc.cpu.allocator import use_allocator
from ssl_ctc.cpu.decision import decide_cpu_inference
from ssl_ctc.cpu.kernels import usable_backends
from ssl_ctc.cpu.machine import cpu_flags, cpu_name, has_bf16_instructions
from ssl_ctc.cpu.path import HuggingFacePath
from ssl_ctc.encoder import SAMPLE_RATE, encoder_frames


def run(arguments, work_folder):
    """Build, count, time and measure; return the ``speed.json`` content (also written).

    Arguments
    ---------
    arguments : argparse.Namespace
        ``speed_benchmark.parse_arguments``'s.
    work_folder : Path
        Temporary folder (encoder, utterances, experiments, ONNX files).

    Returns
    -------
    dict
    """
    torch.set_num_threads(arguments.threads[0])
    load_before = os.getloadavg()
    setup = prepare(arguments, work_folder)
    work = count_work(setup)
    place_brains(setup["brains"], arguments.device, arguments.compile)
    batches = [(wavs.to(arguments.device), wav_lens.to(arguments.device))
               for wavs, wav_lens in setup["cpu_batches"]]
    timed = time_rows(arguments, setup, work, batches, work_folder)
    results = results_record(arguments, setup, work, timed, load_before)
    save_results(results, arguments.output_folder, complete=False)
    if not arguments.skip_inference_path:
        print("measuring the five tests' path and LM ...", flush=True)
        results.update(measure_overheads(arguments, setup, batches, timed["decisions"]))
        save_results(results, arguments.output_folder, complete=False)
    if arguments.wer_experiment is not None:
        results["wer_change"] = precision_wer_change(
            arguments.wer_experiment, arguments.wer_precisions, arguments.threads[0], work_folder)
    return save_results(results, arguments.output_folder, complete=True)


def count_work(setup):
    """MACs of every variant, of the front end and of the matmul rows, on the CPU batches.

    Returns
    -------
    dict
        ``macs`` (name -> MACs, "matmul" included), ``front_end_macs`` and
        ``rows_by_samples`` (padded samples -> the matmul rows of such a batch).
    """
    brains, cpu_batches, config = setup["brains"], setup["cpu_batches"], setup["config"]
    baseline = brains["baseline"]
    rows_by_samples = {
        wavs.shape[1]: len(wavs) * encoder_frames(baseline.modules.ssl, wavs.shape[1])
        for wavs, _ in cpu_batches}
    matmul_macs = sum(rows_by_samples[wavs.shape[1]] for wavs, _ in cpu_batches) * (
        layer_macs_per_row(config.hidden_size, config.intermediate_size))
    print(f"counting MACs of {len(brains)} variants ...", flush=True)
    macs = {name: count_variant_macs(brain.infer_batch, cpu_batches)
            for name, brain in brains.items()}
    return {"macs": {**macs, "matmul": matmul_macs},
            "front_end_macs": count_variant_macs(front_end_only(baseline), cpu_batches),
            "rows_by_samples": rows_by_samples}


def place_brains(brains, device, compile_modules):
    """Move every brain to ``device``; ``torch.compile`` its modules if asked."""
    for brain in brains.values():
        brain.modules.to(device)
        brain.device = device
        if compile_modules:
            for key in list(brain.modules):
                brain.modules[key] = torch.compile(brain.modules[key])


def hugging_face_forward(brain):
    """The brain's forward on Hugging Face's own layers (``HuggingFacePath``): the reference row."""

    def run_batch(wavs, wav_lens):
        with HuggingFacePath(brain.modules).applied():
            return brain.infer_batch(wavs, wav_lens)

    return run_batch


def decide_cpu_rows(baseline, backend, cpu_batches, precision, allocator_setting="keep_freed"):
    """The five tests' CPU decisions for the precisions compared, and what they recorded.

    One ``decide_cpu_inference`` for every precision compared and the main one (the five
    tests' decision: kernels, front end, the reduced-precision check and its fallbacks),
    made on the baseline with the five tests' probe; every variant runs it.

    Returns
    -------
    tuple
        ``(decisions, record)``: precision -> ``CpuDecision``, and the ``cpu_paths`` part of
        ``speed.json`` (flags, measurements, choices, each precision's check and fallbacks,
        each decision's encoder output against Hugging Face's).
    """
    # Before any row is timed, so that every row runs with the same allocator.
    allocator = use_allocator(allocator_setting)
    compared = ["fp32", "int8"] + (["bf16"] if has_bf16_instructions() else [])
    # the five tests' probe: a representative batch (the median one of the sorted set)
    probe_batch = cpu_batches[len(cpu_batches) // 2]
    decisions = decide_cpu_inference(baseline.modules, [*compared, precision], backend,
                                     probe=lambda: baseline.infer_batch(*probe_batch))
    choices = decisions["fp32"].choices  # shared by the precisions decided together
    record = {"flags": cpu_flags(), "allocator": allocator, **choices.measurements,
              "fp32_backend": choices.fp32_backend, "fp32_path": choices.fp32_path,
              **({"bf16_backend": choices.bf16_backend} if "bf16" in compared else {}),
              "front_ends": choices.front_ends, "compared_precisions": compared,
              "bf16_instructions": has_bf16_instructions(),
              "decision_setup_time_s": decisions["fp32"].setup_time_s,
              "decisions": {name: {"precision": decision.precision,
                                   "backend": decision.backend,
                                   "front_end": decision.front_end,
                                   "fp32_fallbacks": decision.fallbacks,
                                   "precision_check": decision.check}
                            for name, decision in decisions.items()}}
    record["encoder_differences"] = encoder_differences(
        baseline, {name: decisions[name] for name in compared}, cpu_batches)
    return decisions, record


def time_rows(arguments, setup, work, batches, work_folder):
    """Decide the CPU rows, build every row, time them in one round-robin.

    Returns
    -------
    dict
        ``times`` and ``cpu_times`` (label -> seconds per repeat), ``medians``,
        ``extra`` (the extra settings), ``decisions`` (precision -> ``CpuDecision``, None on
        GPU) and ``cpu_paths`` (the CPU comparison's record, None on GPU).
    """
    device, precision, threads = arguments.device, arguments.precision, arguments.threads[0]
    brains, config = setup["brains"], setup["config"]
    baseline = brains["baseline"]
    on_cpu = not device.startswith("cuda")
    decisions, cpu_paths, cpu_rows, matmul_backends = None, None, [], ["aten"]
    run_precision = precision  # what the main rows run: on CPU, the decision's precision
    if on_cpu:
        print("deciding the CPU path, exporting to ONNX ...", flush=True)
        decisions, cpu_paths = decide_cpu_rows(baseline, arguments.cpu_backend,
                                               setup["cpu_batches"], precision,
                                               arguments.cpu_allocator)
        run_precision = decisions[precision].precision
        matmul_backends += ["onednn", "int8"] + (list(usable_backends("bf16"))
                                                 if cpu_paths["bf16_instructions"] else [])
    run_of = path_runner(decisions)
    if on_cpu:
        cpu_rows.append(("baseline, HF path", hugging_face_forward(baseline), "fp32"))
        cpu_rows += [(f"baseline {name}", run_of(baseline, name), decisions[name].precision)
                     for name in cpu_paths["compared_precisions"] if name != precision]
    matmuls = {backend: layer_matmuls(config.hidden_size, config.intermediate_size,
                                      work["rows_by_samples"], device, backend)
               for backend in matmul_backends}
    cpu_rows += [(f"matmul {backend}", matmuls[backend], "fp32")
                 for backend in matmul_backends[1:]]
    if on_cpu and not arguments.skip_onnx:
        rows, cpu_paths["onnx"] = onnx_rows(baseline, setup["cpu_batches"], threads,
                                            work_folder / "onnx")
        cpu_rows += rows
    extra = [("fp32", threads)] if precision != "fp32" else []
    extra += [(precision, other) for other in arguments.threads[1:]]
    entries = timed_entries(
        brains, run_of, run_of(baseline, precision, front_end_only(baseline)),
        front_end_only(baseline, channels_first=True),
        matmuls["aten"], run_precision, threads, extra, cpu_rows)
    print(f"timing {len(entries)} rows x {arguments.repeats} repeats ...", flush=True)
    times, cpu_times = round_robin(entries, batches, arguments.repeats, device,
                                   warmup_batches=len(batches) if arguments.compile else 1)
    medians = {label: statistics.median(seconds) for label, seconds in times.items()}
    if on_cpu:
        cpu_paths.update(compared_rows(cpu_rows, medians, work["macs"]["baseline"],
                                       work["macs"]["matmul"], precision),
                         theoretical_fp32_peak=theoretical_fp32_peak_gmacs(
                             cpu_paths["flags"]["flags"], threads))
    return {"times": times, "cpu_times": cpu_times, "medians": medians, "extra": extra,
            "decisions": decisions, "cpu_paths": cpu_paths}


def results_record(arguments, setup, work, timed, load_before):
    """The ``speed.json`` content of the timed rows (the overheads come after)."""
    device, precision, threads = arguments.device, arguments.precision, arguments.threads[0]
    times, cpu_times, medians = timed["times"], timed["cpu_times"], timed["medians"]
    macs, front_end_macs = work["macs"], work["front_end_macs"]
    cpu_batches, durations = setup["cpu_batches"], setup["durations"]
    variants = variant_rows(setup["brains"], macs, times, cpu_times)
    return {
        "command": " ".join([sys.executable, *sys.argv]),
        "timestamp": utc_timestamp(),
        "host": platform.node(),
        "device_name": (torch.cuda.get_device_name(device) if device.startswith("cuda")
                        else cpu_name()),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "settings": {key: (str(value) if isinstance(value, Path) else value)
                     for key, value in vars(arguments).items()},
        "encoder_config": setup["config"].to_diff_dict(),
        "encoder_parameters": setup["encoder_parameters"],
        "ctc_head": {"sharpened": True, "blank_fraction": TRAINED_BLANK_FRACTION,
                     "logit_std": TRAINED_LOGIT_STD,
                     "probe_blank_fraction": setup["probe_blank_fraction"]},
        "durations_s": durations,
        "audio_seconds": sum(durations),
        "batches": [{"utterances": len(wavs), "samples": wavs.shape[1],
                     "padding_fraction": padding_fraction(wav_lens)}
                    for wavs, wav_lens in cpu_batches],
        "padding_fraction": 1 - sum(durations) * SAMPLE_RATE / sum(
            wavs.numel() for wavs, _ in cpu_batches),
        "variants": variants,
        "extra_rows": extra_rows(timed["extra"], times, cpu_times, macs["baseline"],
                                 macs["matmul"], precision, threads),
        "matmul": {"macs": macs["matmul"], "rows_by_samples": work["rows_by_samples"],
                   "times_s": times["matmul"], "median_time_s": medians["matmul"],
                   "cpu_times_s": cpu_times["matmul"],
                   "gmacs_per_s": macs["matmul"] / medians["matmul"] / 1e9},
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
        "cpu_paths": timed["cpu_paths"],
        "inference_path": None,
        "lm": None,
        "records": [],
        "wer_change": None,
        "load_average_before": load_before,
    }


def measure_overheads(arguments, setup, batches, decisions):
    """The five tests' path and the LM against bare forwards, on the baseline (``overheads``)."""
    device, precision, threads = arguments.device, arguments.precision, arguments.threads[0]
    baseline = setup["brains"]["baseline"]
    settings = dataclasses.replace(
        BenchmarkSettings.from_hparams(vars(baseline.hparams)),
        batch_size=BATCH_SIZE, devices=[device], cpu_threads=threads, warmup_batches=1,
        cpu_precision="fp32" if device.startswith("cuda") else precision,
        gpu_precision=precision if device.startswith("cuda") else "fp32", mac_batches=1,
        lm_path=arguments.lm_path)
    cpu_path = None if decisions is None else decisions[precision].path(baseline.modules)
    return measure_inference_path(baseline, setup["dataset"], batches, settings,
                                  arguments.repeats, device, cpu_path)
