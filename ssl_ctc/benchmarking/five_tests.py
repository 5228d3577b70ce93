"""The five tests of the inference benchmark (Zaiem et al. 2023), run after training.

At the end of every experiment (and with ``--test_only``) each strategy script
measures the trained model on every test set with five tests:

1. GPU, greedy CTC decoding;
2. GPU, CTC beam search with a KenLM n-gram LM (pyctcdecode);
3. CPU, greedy CTC decoding;
4. CPU, CTC beam search with the LM;
5. multiply-accumulate operations (MACs) per test batch, counted on CPU.

The benchmark knows nothing about strategies: the Brain says *what* to measure
(``benchmark_configurations``: one configuration per early-exit criterion, say),
the benchmark says *how*. It takes a Brain that provides
``infer_batch(wavs, wav_lens) -> {"log_probs", "lengths", ...}``, the test
datasets, ``BenchmarkSettings`` and the strategy's tags, and appends one record
per test and test set to ``<output_folder>/benchmark.json`` and
``benchmark.csv``. A test that cannot run (no CUDA device, no LM configured) is
recorded as skipped, with its reason.

Timing covers the whole split's inference (reading the audio, the forward and
decoding: the paper's number; the WER alignments are computed after the clock),
after an untimed memory pass on the longest batch and warm-up batches (the
longest ones), with ``torch.inference_mode()``, a fixed CPU
thread count and ``torch.cuda.synchronize()`` before a GPU timer is read; with
``benchmark_timed_passes`` above 1 the median pass is reported, every pass's time
recorded. Nothing touches the allocator between the warm-up and the timer. The
CPU decision (kernel choice, packed weights, reduced-precision check) is made once per
model and kept for the later tests (``ssl_ctc.cpu.decision.CpuDecisions``), its time
recorded apart (``cpu_plan_setup_time_s``). The LM is loaded once, outside the
timing, and its beam search runs in a process pool while the next batches go
through the acoustic model. MACs are
counted in a separate pass with ptflops' ATen backend (attention products
included), next to the module-hook count that the paper's numbers correspond to.

Usage
-----
A strategy script hands it to the recipe, which calls it after training and testing::

    run_recipe(DownsampledBrain, benchmark=benchmark_experiment)

or on one configuration::

    run_five_tests(brain, test_datasets, settings, tags, output_folder)

``python benchmark.py summarize results/`` tabulates and plots the records
(``ssl_ctc.benchmarking.summary``).
"""

import contextlib
import logging
import platform
import sys

import torch

from ssl_ctc.benchmarking.passes import brain_on, run_inference_test, run_mac_test
from ssl_ctc.benchmarking.records import (
    append_records,
    cpu_name,
    device_name,
    package_versions,
    utc_timestamp,
)
from ssl_ctc.cpu.decision import CpuDecisions
from ssl_ctc.cpu.machine import available_cpu_cores
from ssl_ctc.lm_decoding import LMDecoder
from ssl_ctc.names import CPU_TESTS, GPU_TESTS, MAC_TEST

logger = logging.getLogger(__name__)

TEST_SORTING = "ascending duration"


def _tagged(record, tags):
    """The record with the experiment's tags added as fields; a tag may not
    replace a record field."""
    clashes = sorted(set(tags) & set(record))
    if clashes:
        raise ValueError(f"tags {clashes} clash with fields of the benchmark records")
    return {**record, **tags}


def _skip_reason(device, listed, uses_lm, settings):
    """Why a timed test cannot run, or None."""
    if not listed:
        return f"{device} not in benchmark_devices"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device"
    if uses_lm and settings.lm_path is None:
        return "no LM configured (lm_path is null)"
    return None


def _timed_test_record(brain, test_set, dataset, settings, test, lm_decoder, common, threads,
                       cpu_decisions):
    """Runs one timed test, or records why it is skipped; returns its record.

    ``test`` is ``(name, device, listed in settings.devices, uses_lm)``;
    ``common`` holds the fields shared by every record.
    """
    name, device, listed, uses_lm = test
    record = {
        "test": name,
        "test_set": test_set,
        "device": device,
        "decoding": "lm" if uses_lm else "greedy",
        "lm": _lm_fields(settings, lm_decoder) if uses_lm else None,
        **common,
    }
    reason = _skip_reason(device, listed, uses_lm, settings)
    if reason is not None:
        return {**record, "status": "skipped", "reason": reason}
    with brain_on(brain, device):
        measures = run_inference_test(
            brain, dataset, settings, device, lm_decoder if uses_lm else None, cpu_decisions
        )
    return {**record, "status": "ok", "reason": None, "device_name": device_name(device),
            "threads": threads, **measures}


def _mac_test_record(brain, test_set, dataset, settings, common, threads):
    """Runs the MAC count of a test set on CPU; returns its record."""
    with brain_on(brain, "cpu"):
        measures = run_mac_test(brain, dataset, settings)
    return {
        "test": MAC_TEST,
        "test_set": test_set,
        "device": "cpu",
        "decoding": None,
        "lm": None,
        **common,
        "status": "ok",
        "reason": None,
        "device_name": cpu_name(),
        "threads": threads,
        **measures,
    }


def _lm_fields(settings, lm_decoder):
    """The LM settings of an LM record."""
    return {
        "path": settings.lm_path,
        "unigrams_path": settings.lm_unigrams_path,
        "alpha": settings.lm_alpha,
        "beta": settings.lm_beta,
        "beam_width": settings.lm_beam_width,
        "decode_workers": settings.lm_decode_workers,
        "pool_start_method": lm_decoder.start_method if lm_decoder else None,
        "load_time_s": lm_decoder.load_time_s if lm_decoder else None,
        "loaded_before": lm_decoder.loaded_before if lm_decoder else None,
    }


def run_five_tests(brain, test_datasets, settings, tags, output_folder, cpu_decisions=None,
                   lm_first=False):
    """Runs the five tests on every test set and appends their records to
    ``<output_folder>/benchmark.json`` and ``benchmark.csv``.

    Arguments
    ---------
    brain : speechbrain.Brain
        Provides ``modules``, ``device``, ``tokenizer`` (CTCTextEncoder) and
        ``infer_batch(wavs, wav_lens) -> {"log_probs": [B, T, V],
        "lengths": [B], ...per-utterance extras}``. Device and mode are
        restored afterwards.
    test_datasets : dict
        Test set name -> DynamicItemDataset providing "id", "sig", "wrd",
        "duration".
    settings : BenchmarkSettings
    tags : dict
        Describes the experiment (name, strategy, factor, layers, label,
        baseline, ...); added as fields to every record. ``summarize`` reads
        name, strategy, factor, layers, label (point label) and baseline
        (without it: factor 1 at the largest depth seen). A tag named like a
        record field raises a ValueError.
    output_folder : str or Path
        The experiment folder.
    cpu_decisions : CpuDecisions, optional
        CPU decisions kept from earlier tests of the same model (a new one otherwise).
    lm_first : bool
        Run the LM tests before the greedy tests and the MAC count (to show that the
        order moves no figure: ``tools/clock_check.py``); the records keep their order.

    Returns
    -------
    list of dict
        The new records: five per test set, in the order GPU greedy, GPU LM,
        CPU greedy, CPU LM, MACs.
    """
    settings.validate()
    cpu_decisions = CpuDecisions() if cpu_decisions is None else cpu_decisions
    gpu_device = next((d for d in settings.devices if d.startswith("cuda")), "cuda")
    timed_tests = [
        (test, device, device in settings.devices, uses_lm)
        for tests, device in ((GPU_TESTS, gpu_device), (CPU_TESTS, "cpu"))
        for test, uses_lm in tests
    ]
    common = {
        "output_folder": str(output_folder),
        "command": " ".join(sys.argv),
        "timestamp": utc_timestamp(),
        "host": platform.node(),
        "versions": package_versions(),
        "batch_size": settings.batch_size,
        "sorting": TEST_SORTING,
    }
    previous_threads = torch.get_num_threads()
    threads = settings.cpu_threads or available_cpu_cores()
    logger.info(
        f"CPU tests on {threads} threads ("
        + ("benchmark_cpu_threads" if settings.cpu_threads else
           "benchmark_cpu_threads: null, the cores this process may use")
        + f"; torch had {previous_threads})"
    )
    torch.set_num_threads(threads)
    common["threads_source"] = (
        "benchmark_cpu_threads" if settings.cpu_threads else "cpu_affinity"
    )
    needs_lm = any(
        uses_lm and _skip_reason(device, listed, uses_lm, settings) is None
        for _, device, listed, uses_lm in timed_tests
    )
    # The greedy tests and the MAC count run before the LM decoder starts its worker
    # processes: forked workers share the parent's memory copy-on-write, which slows
    # the forward of whatever runs while they live (about 2-3 % on CPU).
    results = {}
    try:
        for lm_pass in (True, False) if lm_first else (False, True):
            with (
                LMDecoder(brain.tokenizer, settings)
                if lm_pass and needs_lm
                else contextlib.nullcontext() as lm_decoder
            ):
                for test_set, dataset in test_datasets.items():
                    for test in timed_tests:
                        name, _, _, uses_lm = test
                        if uses_lm == lm_pass:
                            record = _timed_test_record(
                                brain, test_set, dataset, settings, test, lm_decoder, common,
                                threads, cpu_decisions,
                            )
                            results[test_set, name] = _tagged(record, tags)
                    if not lm_pass:
                        record = _mac_test_record(
                            brain, test_set, dataset, settings, common, threads
                        )
                        results[test_set, MAC_TEST] = _tagged(record, tags)
    finally:
        torch.set_num_threads(previous_threads)
    test_names = [name for name, *_ in timed_tests] + [MAC_TEST]
    records = [results[test_set, name] for test_set in test_datasets for name in test_names]
    append_records(records, output_folder)
    return records


def benchmark_experiment(brain, test_datasets, settings):
    """The five tests of each configuration the Brain names (``benchmark_configurations``).

    Arguments
    ---------
    brain : ssl_ctc.brain.SSLCTCBrain
        Trained (best checkpoint loaded), its modules unwrapped.
    test_datasets : dict
        Test set name -> dataset (see ``run_five_tests``).
    settings : BenchmarkSettings

    Returns
    -------
    list of dict
        The records of every configuration, in the Brain's order.
    """
    records = []
    cpu_decisions = CpuDecisions()  # the CPU decision is made once for every configuration's tests
    for tags, configured in brain.benchmark_configurations():
        with configured:
            records += run_five_tests(brain, test_datasets, settings, tags,
                                      brain.hparams.output_folder, cpu_decisions)
    return records
