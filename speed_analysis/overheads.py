"""Overheads the speed script measures: the five tests' path and the LM against bare forwards.

Usage::

    measures = measure_inference_path(brain, dataset, batches, settings, repeats=3, device="cpu")
"""

import statistics

from speed_analysis.reference_workloads import bare_forward
from ssl_ctc.benchmarking.five_tests import benchmark_experiment
from ssl_ctc.benchmarking.measurement import TimedEntry
from ssl_ctc.inference.loading import experiment_brain_class
from ssl_ctc.recipe import run_recipe


def measure_inference_path(brain, dataset, batches, settings, repeats, device, cpu_path=None):
    """The five tests' inference path against a bare forward, alternated, on the same batches.

    Each repeat times one pass of ``bare_forward`` over the batches, one with
    the padding mask (``masked=True``, what the model needs for padded batches), one of
    the brain's forward on Hugging Face's path in fp32 (the speed script's reference row,
    ``baseline, HF path``), and ``benchmark_experiment`` (the five tests on the
    synthetic set): its greedy test is the inference path (data loading, forward, greedy
    decoding, scoring), its LM test the same with the LM decoder. The greedy test's
    speed-up over Hugging Face's path is the figure a user reads; the speed script's own
    row ratio says what the kernels give, so the two must agree. Odd repeats run the tests first, so
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
    settings : ssl_ctc.benchmarking.settings.BenchmarkSettings
        The tests' settings.
    repeats : int
        Number of alternations.
    device : str
        Device of the bare forward and of the timed tests.
    cpu_path : ssl_ctc.cpu.path.CpuInferencePath or HuggingFacePath, optional
        The path the bare forwards run in (the tests' decision's path on CPU).

    Returns
    -------
    dict
        Times, overheads and the tests' records.
    """
    kind = "gpu" if device.startswith("cuda") else "cpu"
    precision = settings.gpu_precision if kind == "gpu" else settings.cpu_precision
    bare, masked = (
        TimedEntry(label, _on_path(bare_forward(brain, masked=with_mask), cpu_path), precision,
                   settings.cpu_threads)
        for label, with_mask in (("bare forward + argmax", False), ("masked forward", True)))
    hugging_face = TimedEntry("Hugging Face's path, fp32", brain.infer_batch, "fp32",
                              settings.cpu_threads)
    references = (bare, masked, hugging_face)
    for entry in references:
        entry.time_pass(batches[: settings.warmup_batches], device)
    reference_times = {entry.label: [] for entry in references}
    greedy, with_lm, records = [], [], []

    def time_references():
        for entry in references:
            reference_times[entry.label].append(entry.time_pass(batches, device)[0])

    for repeat in range(repeats):
        if repeat % 2 == 0:
            time_references()
        run = benchmark_experiment(brain, {"synthetic": dataset}, settings)
        if repeat % 2 == 1:
            time_references()
        records.extend(run)
        tests = {record["test"]: record for record in run if record["status"] == "ok"}
        greedy.append(tests[f"{kind}_greedy"])
        if f"{kind}_lm" in tests:
            with_lm.append(tests[f"{kind}_lm"])

    def median_of(runs, field):
        return statistics.median(run[field] for run in runs)

    bare_times, masked_times, hugging_face_times = (reference_times[entry.label]
                                                    for entry in references)
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
        "hugging_face_fp32_times_s": hugging_face_times,
        "hugging_face_fp32_median_s": statistics.median(hugging_face_times),
        "precision": settings.cpu_precision if kind == "cpu" else settings.gpu_precision,
        # what the tests ran: a reduced precision the check refused runs in fp32, and why
        "ran_precision": greedy[-1]["precision"],
        "fp32_fallbacks": greedy[-1].get("cpu_fp32_fallbacks", {}),
        "warmup_batches": settings.warmup_batches,
    }
    path_forward_times = [run["forward_time_s"] for run in greedy]
    path["overhead"] = paired_overhead(path["path_times_s"], bare_times)
    path["forward_overhead"] = paired_overhead(path_forward_times, bare_times)
    path["mask_overhead"] = paired_overhead(masked_times, bare_times)
    path["overhead_vs_masked"] = paired_overhead(path["path_times_s"], masked_times)
    # > 1: the greedy test is faster than Hugging Face's fp32 forward of the same batches
    path["speedup_vs_hugging_face_fp32"] = 1 / (1 + paired_overhead(path["path_times_s"],
                                                                    hugging_face_times))
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


def _on_path(run_batch, cpu_path):
    """``run_batch`` inside ``cpu_path`` (applied around each batch); itself without one."""
    if cpu_path is None:
        return run_batch

    def run_on_path(wavs, wav_lens):
        with cpu_path.applied():
            return run_batch(wavs, wav_lens)

    return run_on_path


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


def precision_wer_change(experiment, precisions, threads, work_folder):
    """WER and CPU time of a trained experiment's test sets in fp32 and in each of ``precisions``.

    Reruns the recipe itself (``ssl_ctc.run_recipe`` with ``--test_only``) on the
    experiment's saved ``hyperparams.yaml`` and best checkpoint, once per precision,
    with ``--benchmark_cpu_precision`` fp32 then each of ``precisions``, greedy
    decoding on CPU.
    Records go to ``work_folder``, never to the experiment's folder.

    Arguments
    ---------
    experiment : Path
        Folder of a finished run (``hyperparams.yaml`` and ``save/``).
    precisions : list of str
        The CPU precisions to compare with fp32 ("bf16", "int8", "auto").
    threads : int
        CPU threads.
    work_folder : Path
        Output folder of the two evaluations.

    Returns
    -------
    dict
        Per test set and precision: WER, CPU time, what the record says ran
        (``precision``: what "auto" chose); per precision the WER change and speed-up.
    """
    hparams_file = experiment / "hyperparams.yaml"
    brain_class = experiment_brain_class(experiment)
    measures = {}
    for name in ("fp32", *precisions):
        output_folder = work_folder / f"wer_{name}"
        brain = run_recipe(brain_class, [
            str(hparams_file), "--test_only", "--output_folder", str(output_folder),
            "--save_folder", str(experiment / "save"), "--benchmark_devices=[cpu]",
            "--benchmark_cpu_precision", name, "--benchmark_cpu_threads", str(threads),
            "--lm_path", "null",
        ], benchmark=benchmark_experiment)
        for record in brain.benchmark_records:
            if record["test"] == "cpu_greedy":
                measures.setdefault(record["test_set"], {})[name] = {
                    "wer": record["wer"], "time_s": record["total_time_s"],
                    "precision": record.get("precision"),
                    "cpu_backend": record.get("cpu_backend")}
    for results in measures.values():
        results["changes"] = {
            name: {"wer_change": results[name]["wer"] - results["fp32"]["wer"],
                   "speedup": results["fp32"]["time_s"] / results[name]["time_s"]}
            for name in precisions}
    return {"experiment": str(experiment), "precisions": list(precisions), "test_sets": measures}
