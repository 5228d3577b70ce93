#!/usr/bin/env python3
"""GPU readiness check: the recipe's GPU paths on a WavLM-Large-shaped encoder, in minutes.

Run it on a CUDA machine before committing hours of training (``make gpu-check``).
From the embedded corpus (a few utterances per split) and a WavLM-Large-shaped
encoder built from its configuration (random weights, no download), for the
baseline, SD2, CL3, 18 layers and early exit: two ``--debug`` training batches on
the GPU in fp32 followed by the five tests (GPU tests must be "ok"), two more
in fp16 and in bf16; then, on one model, that GPU and CPU give the same greedy
log-probabilities in fp32, that GPU times and peak memory are recorded and
positive, and that a checkpoint written on the GPU reloads on the CPU
(``--test_only --device cpu``). One line per check; exit 1 if any failed.
Without CUDA it prints "skipped" and exits 0.

Usage::

    python tools/gpu_check.py                      # cuda, WavLM-Large shape
    python tools/gpu_check.py --device cpu --shape tiny --variants baseline EE   # the check itself
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from librispeech_prepare import copy_first_utterances  # noqa: E402
from speed_analysis.random_encoders import LARGE_SHAPE, TINY_SHAPE, save_random_encoder  # noqa: E402
from ssl_ctc.benchmarking.five_tests import benchmark_experiment  # noqa: E402
from ssl_ctc.experiments.registry import GPU_CHECK  # noqa: E402
from ssl_ctc.recipe import run_recipe  # noqa: E402

EMBEDDED = REPO / "embedded" / "LibriSpeech"
UTTERANCES = {"train-clean-100": 4, "dev-clean": 2, "test-clean": 8}
# The checked rows by name (ssl_ctc.experiments.registry); each runs its YAML's brain_class.
VARIANTS = {row.name: row for row in GPU_CHECK}
# Greedy log-probabilities of the same fp32 model on GPU and CPU: both accumulate in fp32,
# in different orders, through 24 layers; with TF32 off that moves log-probs by ~1e-5 on a
# random model. 1e-3 leaves margin and still catches a wrong kernel, mask or precision.
GPU_CPU_TOLERANCE = 1e-3


def small_corpus(target):
    """The first utterances of each split of the embedded corpus (``UTTERANCES``) and its LM."""
    copy_first_utterances(EMBEDDED, target, UTTERANCES)
    shutil.copy(EMBEDDED / "4-gram.arpa", target / "4-gram.arpa")
    return target


class Checks:
    """Prints one line per check and remembers failures."""

    def __init__(self):
        self.failed = []

    def record(self, name, passed, detail=""):
        print(f"{'ok  ' if passed else 'FAIL'} {name}{': ' + detail if detail else ''}",
              flush=True)
        if not passed:
            self.failed.append(name)
        return passed

    def run(self, name, function):
        """Run ``function``; a raised exception fails the check with its message."""
        start = time.perf_counter()
        try:
            detail = function()
        except Exception as error:  # noqa: BLE001 - every failure is reported, then the next check
            return self.record(name, False, f"{type(error).__name__}: {error}")
        return self.record(name, True, f"{detail or ''} ({time.perf_counter() - start:.1f} s)")


def recipe_argv(variant, corpus, encoder, output_folder, device, *extra):
    row = VARIANTS[variant]
    return [str(REPO / row.recipe[1]), "--data_folder", str(corpus),
            "--ssl_hub", str(encoder), "--output_folder", str(output_folder),
            "--test_splits=[test-clean]", "--device", device, "--debug", "--debug_batches", "2",
            "--batch_size", "2", "--num_workers", "0", "--lm_beam_width", "8",
            "--lm_decode_workers", "1", "--benchmark_mac_batches", "1",
            "--benchmark_warmup_batches", "1", *row.arguments(), *extra]


def train_and_benchmark(variant, corpus, encoder, folder, device):
    """Two fp32 debug batches, then the five tests; the timed tests on ``device`` must be ok."""
    brain = run_recipe(None,
                       recipe_argv(variant, corpus, encoder, folder, device),
                       benchmark=benchmark_experiment)
    kind = "gpu" if device.startswith("cuda") else "cpu"
    timed = [r for r in brain.benchmark_records if r["test"].startswith(kind)]
    bad = [f"{r['test']} {r['status']} ({r['reason']})" for r in timed if r["status"] != "ok"]
    if bad or not timed:
        raise AssertionError(f"five tests: {', '.join(bad) or 'no ' + kind + ' test ran'}")
    for record in timed:
        # on the GPU the activations are allocated above the model; a CPU test may reuse
        # memory its warm-up freed, so its peak above the start can be 0
        memory_ok = record["peak_memory_mb"] > 0 if kind == "gpu" else (
            record["peak_memory_mb"] >= 0)
        if not (record["total_time_s"] > 0 and memory_ok):
            raise AssertionError(f"{record['test']}: time {record['total_time_s']}, "
                                 f"peak memory {record['peak_memory_mb']} MiB")
    greedy = next(r for r in timed if r["test"] == f"{kind}_greedy")
    return (f"{kind} greedy {greedy['total_time_s']:.2f} s, peak "
            f"{greedy['peak_memory_mb']:.0f} MiB above the model, WER {greedy['wer']:.1f}")


def train_in_precision(variant, corpus, encoder, folder, device, precision):
    """Two debug training batches with ``--precision``; the benchmark on the device only."""
    run_recipe(None, recipe_argv(
        variant, corpus, encoder, folder, device, "--precision", precision,
        "--benchmark_devices", f"[{device}]", "--lm_path", "null"), benchmark=benchmark_experiment)


def gpu_and_cpu_agree(variant, corpus, encoder, folder, device):
    """The fp32 model's greedy log-probs on the GPU and the CPU, on one padded batch."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    brain = run_recipe(None, recipe_argv(
        variant, corpus, encoder, folder, device, "--test_only", "--benchmark_devices=[cpu]",
        "--lm_path", "null"), benchmark=benchmark_experiment)
    generator = torch.Generator().manual_seed(0)
    wavs = torch.randn(2, 48000, generator=generator) * 0.1
    wav_lens = torch.tensor([1.0, 0.7])
    outputs = {}
    for target in (device, "cpu"):
        brain.modules.to(target).eval()
        with torch.inference_mode():
            output = brain.infer_batch(wavs.to(target), wav_lens.to(target))
        outputs[target] = {key: value.cpu() for key, value in output.items()}
    gpu, cpu = outputs[device], outputs["cpu"]
    if not torch.equal(gpu["lengths"], cpu["lengths"]):
        raise AssertionError(f"frame lengths differ: {gpu['lengths']} vs {cpu['lengths']}")
    difference = max(float((gpu["log_probs"][i, :n] - cpu["log_probs"][i, :n]).abs().max())
                     for i, n in enumerate(cpu["lengths"].tolist()))
    if difference > GPU_CPU_TOLERANCE:
        raise AssertionError(f"max |log-prob difference| {difference:.2e} > {GPU_CPU_TOLERANCE}")
    return f"max |log-prob difference| {difference:.1e} (tolerance {GPU_CPU_TOLERANCE})"


def reload_on_cpu(variant, corpus, encoder, folder):
    """The checkpoint the device run wrote, tested again on the CPU (``--test_only``)."""
    records_before = len(json.loads((folder / "benchmark.json").read_text()))
    run_recipe(None, recipe_argv(
        variant, corpus, encoder, folder, "cpu", "--test_only", "--benchmark_devices=[cpu]",
        "--lm_path", "null"), benchmark=benchmark_experiment)
    records = json.loads((folder / "benchmark.json").read_text())
    new = [r for r in records[records_before:] if r["test"] == "cpu_greedy"]
    if not new or new[0]["status"] != "ok":
        raise AssertionError("no CPU greedy record after reloading")
    return f"CPU greedy WER {new[0]['wer']:.1f} from the device's checkpoint"


def main(argv=None):
    """Run every check; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu, to test this)")
    parser.add_argument("--shape", choices=["large", "tiny"], default="large")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--precisions", nargs="*", default=None,
                        help="mixed precisions to train in (default: fp16 bf16 on cuda, "
                        "none on cpu)")
    arguments = parser.parse_args(argv)
    if arguments.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check: skipped (no CUDA device)")
        return 0
    precisions = arguments.precisions
    if precisions is None:
        precisions = ["fp16", "bf16"] if arguments.device.startswith("cuda") else []
    checks = Checks()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        work = Path(work)
        corpus = small_corpus(work / "LibriSpeech")
        encoder = work / "encoder"
        shape = {**(LARGE_SHAPE if arguments.shape == "large" else TINY_SHAPE), "layerdrop": 0.0}
        save_random_encoder(encoder, "wavlm-large", shape)
        device_name = (torch.cuda.get_device_name(arguments.device)
                       if arguments.device.startswith("cuda") else "cpu")
        print(f"gpu-check on {device_name}: WavLM {arguments.shape} shape (random weights), "
              f"{', '.join(arguments.variants)}", flush=True)
        for variant in arguments.variants:
            folder = work / variant
            checks.run(f"{variant}: fp32 training + five tests on {arguments.device}",
                       lambda variant=variant, folder=folder: train_and_benchmark(
                           variant, corpus, encoder, folder, arguments.device))
            for precision in precisions:
                checks.run(f"{variant}: {precision} training on {arguments.device}",
                           lambda variant=variant, precision=precision: train_in_precision(
                               variant, corpus, encoder, work / f"{variant}_{precision}",
                               arguments.device, precision))
        first = arguments.variants[0]
        checks.run(f"{first}: same greedy log-probs on {arguments.device} and cpu (fp32)",
                   lambda: gpu_and_cpu_agree(first, corpus, encoder, work / first,
                                             arguments.device))
        checks.run(f"{first}: checkpoint written on {arguments.device} reloads on cpu",
                   lambda: reload_on_cpu(first, corpus, encoder, work / first))
    verdict = "failed: " + ", ".join(checks.failed) if checks.failed else "all checks passed"
    print(f"gpu-check {verdict} in {time.perf_counter() - start:.0f} s")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
