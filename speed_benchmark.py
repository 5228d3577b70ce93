#!/usr/bin/env python3
"""Speed benchmark: does each strategy's time saving follow its compute saving?

Builds a real encoder architecture from its configuration (WavLM Large shape
by default; random weights, nothing downloaded) and every variant from the
recipe's own YAML files with command-line-style overrides and the YAMLs' own
Brains (``SPEED_VARIANTS`` in ``ssl_ctc.experiments.registry``;
``speed_analysis.brains``). Every variant is timed through its ``brain.infer_batch``
on the five tests' path, in one interleaved round-robin beside the machine's matmul
limit, the CNN front end and downsamplers alone; on CPU also beside Hugging Face's own path, int8,
bf16 (where the CPU has bf16 instructions) and ONNX Runtime (fp32 and int8).
Then the benchmark's inference path and the LM against bare forwards. The
steps are ``speed_analysis.runner``'s.

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
import sys
import tempfile
from pathlib import Path

import torch
import transformers

from speed_analysis.brains import VARIANTS
from speed_analysis.random_encoders import ARCHITECTURES
from speed_analysis.report import RESULTS_JSON, print_report
from speed_analysis.runner import run
from ssl_ctc.cpu.allocator import CPU_ALLOCATORS
from ssl_ctc.cpu.kernels import FP32_BACKENDS
from ssl_ctc.recipe import check_device

REPO = Path(__file__).resolve().parent


DEFAULT_LM = REPO / "embedded" / "LibriSpeech" / "4-gram.arpa"


DEFAULT_OUTPUT = Path("results") / "speed"


RUN_DEFAULTS = {"num_utterances": 8, "min_seconds": 2.0, "max_seconds": 20.0, "repeats": 3}


QUICK_DEFAULTS = {"num_utterances": 5, "min_seconds": 0.5, "max_seconds": 2.0, "repeats": 2}


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
    parser.add_argument("--cpu_allocator", default="keep_freed", choices=CPU_ALLOCATORS,
                        help="keep_freed: glibc keeps freed memory for the next batch, set "
                        "before any row is timed; system: malloc as started (default: keep_freed)")
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
