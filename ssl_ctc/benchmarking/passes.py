"""The passes of the five tests: timed inference over a test set, and a MAC count.

``five_tests`` runs these for each test set and device and turns them into records.
An inference test runs, in this order: the longest batch once under ``PeakMemory``
(the memory pass: the allocator's kept memory is given back first, so that the peak
counts what inference reuses); the warm-up, on the longest batches, so that the timed
passes allocate nothing the warm-up did not; then ``timed_passes`` passes over the whole
set with nothing in between (no allocator call, no measurement), the median kept. A
timed pass covers what inference does (reading the audio, the forward, decoding); the
transcripts are scored after the clock stops.

Usage::

    with brain_on(brain, "cpu"):
        measures = run_inference_test(brain, dataset, settings, "cpu", lm_decoder=None)
"""

import collections
import contextlib
import math
import statistics
import time

import torch
from speechbrain.utils.metric_stats import ErrorRateStats

from ssl_ctc.benchmarking.macs import count_macs, count_module_hook_macs, evenly_spaced_indices
from ssl_ctc.benchmarking.measurement import PeakMemory, synchronize
from ssl_ctc.benchmarking.records import per_utterance_extras, summarize_extras
from ssl_ctc.cpu.decision import cpu_inference
from ssl_ctc.ctc import greedy_decode
from ssl_ctc.data import longest_test_batches, make_test_loader, test_batches_from
from ssl_ctc.precision import autocast


def transcribe_batches(brain, batches, device, precision, lm_decoder, timers):
    """Runs the model and the decoder over batches; adds the seconds spent
    loading data, in the forward and decoding to ``timers``."""
    ids, references, hypotheses, pending = [], [], [], []
    extras = collections.defaultdict(list)
    audio_seconds = 0.0
    data_start = time.perf_counter()
    for batch in batches:
        wavs = batch.sig.data.to(device)
        wav_lens = batch.sig.lengths.to(device)
        forward_start = time.perf_counter()
        timers["data"] += forward_start - data_start
        # On CPU the precision is ``cpu_inference``'s decision, already entered.
        with autocast(device, precision) if device.startswith("cuda") else contextlib.nullcontext():
            output = brain.infer_batch(wavs, wav_lens)
        synchronize(device)
        decode_start = time.perf_counter()
        timers["forward"] += decode_start - forward_start
        log_probs = output["log_probs"].float()
        if lm_decoder is None:
            hypotheses.extend(greedy_decode(log_probs, output["lengths"], brain.tokenizer))
        else:
            pending.append(lm_decoder.submit(log_probs, output["lengths"]))
        timers["decode"] += time.perf_counter() - decode_start
        ids.extend(batch.id)
        references.extend(words.split() for words in batch.wrd)
        audio_seconds += float(batch.duration.sum())
        for name, values in per_utterance_extras(output, len(batch.id)).items():
            extras[name].append(values)
        data_start = time.perf_counter()
    wait_start = time.perf_counter()
    for batch_result in pending:
        hypotheses.extend(lm_decoder.collect(batch_result))
    timers["decode"] += time.perf_counter() - wait_start
    return ids, references, hypotheses, audio_seconds, extras


def inference_path(brain, loader, device, precision, cpu_decisions=None):
    """On CPU, ``cpu_inference`` over the brain's modules (its decision); on GPU, nothing (None).

    The probe (the median batch of the sorted set, loaded once and only if used) checks
    a reduced precision's output against fp32 and times ``"auto"``'s candidates; with
    ``cpu_decisions`` (a ``CpuDecisions``) a decision made by an earlier test of the same model
    is reused.
    """
    if device.startswith("cuda"):
        return contextlib.nullcontext()
    median_batch = []

    def probe():
        if not median_batch:
            median_batch.append(next(iter(test_batches_from(loader, len(loader) // 2))))
        signal = median_batch[0].sig
        return brain.infer_batch(signal.data.to(device), signal.lengths.to(device))

    return cpu_inference(brain.modules, precision, probe=probe, decisions=cpu_decisions)


def timed_pass(brain, loader, device, precision, lm_decoder):
    """One timed pass over the whole test set (reading the audio, the forward, decoding: every
    transcript), then its scoring, after the clock; returns its measures."""
    beam_search_before = lm_decoder.beam_search_time_s if lm_decoder else 0.0
    timers = collections.Counter()
    synchronize(device)
    start = time.perf_counter()
    ids, references, hypotheses, audio_seconds, extras = transcribe_batches(
        brain, loader, device, precision, lm_decoder, timers
    )
    total_time_s = time.perf_counter() - start
    wer_stats = ErrorRateStats()
    cer_stats = ErrorRateStats(split_tokens=True)
    wer_stats.append(ids, hypotheses, references)
    cer_stats.append(ids, hypotheses, references)
    wer, cer = wer_stats.summarize("error_rate"), cer_stats.summarize("error_rate")
    measures = {
        "num_utterances": len(ids),
        "audio_seconds": audio_seconds,
        "total_time_s": total_time_s,
        "forward_time_s": timers["forward"],
        "decode_time_s": timers["decode"],
        "data_time_s": timers["data"],
        # the WER and CER alignments, untimed: a fixed cost of the evaluation, not of inference
        "scoring_time_s": time.perf_counter() - start - total_time_s,
        "wer": wer,
        "cer": cer,
        "wer_details": {
            key: wer_stats.summarize(key)
            for key in ("num_scored_tokens", "insertions", "deletions", "substitutions")
        },
        "extras": summarize_extras(extras),
    }
    if lm_decoder is not None:
        measures["lm_beam_search_time_s"] = lm_decoder.beam_search_time_s - beam_search_before
    return measures


def run_inference_test(brain, dataset, settings, device, lm_decoder, cpu_decisions=None):
    """Memory pass, warm-up, then ``settings.timed_passes`` timed passes; returns the
    measures of the median pass (the lower middle one of an even count) with every
    pass's time.

    ``cpu_decisions`` (a ``ssl_ctc.cpu.decision.CpuDecisions``) keeps the CPU decision between
    tests.
    """
    precision = settings.gpu_precision if device.startswith("cuda") else settings.cpu_precision
    loader = make_test_loader(dataset, settings.batch_size)
    with torch.inference_mode(), inference_path(brain, loader, device, precision,
                                                cpu_decisions) as decision:
        precision = precision if decision is None else decision.precision
        with PeakMemory(device) as memory:
            transcribe_batches(brain, longest_test_batches(loader, 1), device, precision,
                               lm_decoder, collections.Counter())
            synchronize(device)
        transcribe_batches(brain, longest_test_batches(loader, settings.warmup_batches), device,
                           precision, lm_decoder, collections.Counter())
        passes = [timed_pass(brain, loader, device, precision, lm_decoder)
                  for _ in range(settings.timed_passes)]
    median_time = statistics.median_low(measured["total_time_s"] for measured in passes)
    measures = next(measured for measured in passes if measured["total_time_s"] == median_time)
    total_time_s, audio_seconds = measures["total_time_s"], measures["audio_seconds"]
    measures = {
        "precision": precision,
        "warmup_batches": settings.warmup_batches,
        "warmup": "the longest batches",
        "timed_passes": settings.timed_passes,
        "timed_pass_times_s": [measured["total_time_s"] for measured in passes],
        "num_batches": math.ceil(measures["num_utterances"] / settings.batch_size),
        **measures,
        "real_time_factor": total_time_s / audio_seconds,
        "inverse_real_time_factor": audio_seconds / total_time_s,
        "ms_per_utterance": 1000 * total_time_s / measures["num_utterances"],
        # the longest batch's peak above what was resident before it (untimed memory pass)
        "peak_memory_mb": memory.peak_mb,
        "peak_memory_kind": memory.kind,
        "peak_memory_pass": "the longest batch, before the warm-up",
        "resident_memory_before_mb": memory.resident_before_mb,
    }
    if decision is not None:
        measures.update(decision.record())
    return measures


def run_mac_test(brain, dataset, settings):
    """Counts the MACs of ``mac_batches`` test batches spread evenly over the sorted set, on CPU."""
    loader = make_test_loader(dataset, settings.batch_size)
    counted = evenly_spaced_indices(len(loader), settings.mac_batches)
    aten_macs, hook_macs, extras = [], [], collections.defaultdict(list)
    audio_seconds, utterances = 0.0, 0
    start = time.perf_counter()
    for index, batch in enumerate(loader):
        if index not in counted:
            continue
        macs, output = count_macs(brain.infer_batch, batch.sig.data, batch.sig.lengths)
        aten_macs.append(macs)
        hook_macs.append(
            count_module_hook_macs(
                brain.infer_batch, brain.modules, batch.sig.data, batch.sig.lengths
            )
        )
        audio_seconds += float(batch.duration.sum())
        utterances += len(batch.id)
        for name, values in per_utterance_extras(output, len(batch.id)).items():
            extras[name].append(values)
    return {
        "precision": "fp32",
        "counter": "ptflops aten backend + SDPA formulas",
        "num_batches": len(aten_macs),
        "num_utterances": utterances,
        "audio_seconds": audio_seconds,
        "gmacs_per_batch": sum(aten_macs) / len(aten_macs) / 1e9,
        "gmacs_per_audio_second": sum(aten_macs) / audio_seconds / 1e9,
        "gmacs_per_batch_module_hooks": sum(hook_macs) / len(hook_macs) / 1e9,
        "gmacs_per_audio_second_module_hooks": sum(hook_macs) / audio_seconds / 1e9,
        "parameters": sum(p.numel() for p in brain.modules.parameters()),
        "count_time_s": time.perf_counter() - start,
        "extras": summarize_extras(extras),
    }


@contextlib.contextmanager
def brain_on(brain, device):
    """Moves the brain's modules to a device in eval mode; restores device and
    mode afterwards."""
    original_device = brain.device
    training_modes = {module: module.training for module in brain.modules.modules()}
    brain.modules.to(device)
    brain.device = device
    brain.modules.eval()
    try:
        yield
    finally:
        brain.modules.to(original_device)
        brain.device = original_device
        for module, training in training_modes.items():
            module.training = training
