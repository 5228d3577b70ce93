#!/usr/bin/env python3
"""Transcribe audio files with a trained experiment: one ``<file>\\t<TRANSCRIPT>`` line per input.

FOLDER is an experiment folder (``results/demo/SD2``) or its ``inference/`` folder.
Inputs are audio files (WAV, FLAC, OGG; any sample rate, resampled to 16 kHz; several
channels mixed down), folders of audio files, or text files listing paths. Files
longer than ``--window_seconds`` are cut into overlapping windows joined before
decoding. Lines come in input order; an input that cannot be transcribed gets a
message naming it on stderr, the others are still transcribed, and the exit status
is then 1 (2 when the model cannot be loaded). ``--runtime onnxruntime`` or ``openvino``
runs the folder's exported ONNX graph (``python -m ssl_ctc.inference export FOLDER
--format onnx [--int8]``) in place of the PyTorch model; the rest is the same.

Usage::

    python transcribe.py results/demo/SD2 audio.flac more.wav
    python transcribe.py results/demo/SD2 audio_folder/ --lm embedded/LibriSpeech/4-gram.arpa
    python transcribe.py results/demo/SD2/inference list.txt --precision int8 --batch_size 8
    python transcribe.py results/demo/SD2 audio.flac --runtime openvino --precision int8
"""

import argparse
import logging
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folder holds everything: never ask the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ssl_ctc.cpu.allocator import CPU_ALLOCATORS, use_allocator  # noqa: E402
from ssl_ctc.inference.deploy import RUNTIMES, RuntimeMissingError  # noqa: E402
from ssl_ctc.inference.loading import InferenceFolderError  # noqa: E402
from ssl_ctc.inference.transcription import AudioInputError, transcribe_files  # noqa: E402
from ssl_ctc.precision import PRECISIONS  # noqa: E402

logger = logging.getLogger("transcribe")


def parse_arguments(argv):
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", help="experiment folder or its inference/ folder")
    parser.add_argument("inputs", nargs="+",
                        help="audio files, folders of audio, or .txt/.lst files listing paths")
    parser.add_argument("--lm", default=None,
                        help="KenLM model (.arpa, .arpa.gz, .bin) for the beam search "
                             "(alpha, beta, beam width of the experiment)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--runtime", default="torch", choices=RUNTIMES,
                        help="the acoustic model in PyTorch (default), or the folder's exported "
                             "ONNX graph in ONNX Runtime or OpenVINO (CPU; fp32 or int8)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32; bf16; int8 (CPU: dynamic quantisation; ONNX runtimes: the "
                             "int8 graph); auto (CPU: bf16 where checked and faster); fp16 (GPU)")
    parser.add_argument("--batch_size", type=int, default=4,
                        help="utterances per batch, sorted by duration (default: 4)")
    parser.add_argument("--window_seconds", type=float, default=30.0,
                        help="longer files are cut into windows of this length (default: 30)")
    parser.add_argument("--overlap_seconds", type=float, default=4.0,
                        help="overlap of consecutive windows (default: 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch, or the ONNX runtime's)")
    parser.add_argument("--cpu_allocator", default="keep_freed", choices=CPU_ALLOCATORS,
                        help="keep_freed: glibc keeps freed memory for the next batch (no page "
                             "faults per batch); system: malloc as started, e.g. an LD_PRELOAD'ed "
                             "jemalloc (default: keep_freed)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    return parser.parse_args(argv)


# Loggers whose messages go to stderr, and third-party ones kept to warnings.
OWN_LOGGERS = ("transcribe", "ssl_ctc")
QUIET_LOGGERS = ("speechbrain.utils.parameter_transfer", "speechbrain.utils.fetching",
                 "speechbrain.dataio.encoder", "speechbrain.integrations", "transformers",
                 "pyctcdecode")


def main(argv=None):
    """Transcribe; return the exit status (0, 1 when an input failed, 2 when nothing ran)."""
    arguments = parse_arguments(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    changed = {name: logging.getLogger(name) for name in OWN_LOGGERS + QUIET_LOGGERS}
    saved = {name: (found.level, found.propagate) for name, found in changed.items()}
    for name in OWN_LOGGERS:
        changed[name].addHandler(handler)
        changed[name].setLevel(logging.WARNING if arguments.quiet else logging.INFO)
        changed[name].propagate = False
    for name in QUIET_LOGGERS:
        changed[name].setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            return run(arguments)
    finally:
        for name, (level, propagate) in saved.items():
            changed[name].setLevel(level)
            changed[name].propagate = propagate
            changed[name].removeHandler(handler)


def run(arguments):
    """Load the model, transcribe, print; return the exit status."""
    if arguments.batch_size < 1:
        logger.error("error: --batch_size must be at least 1")
        return 2
    if arguments.device == "cpu" and arguments.runtime == "torch":
        use_allocator(arguments.cpu_allocator)
    if arguments.threads:
        import torch

        torch.set_num_threads(arguments.threads)
    try:
        results, load_seconds, seconds = transcribe_files(
            arguments.folder, arguments.inputs, device=arguments.device,
            precision=arguments.precision, lm_path=arguments.lm,
            batch_size=arguments.batch_size, window_seconds=arguments.window_seconds,
            overlap_seconds=arguments.overlap_seconds, runtime=arguments.runtime,
            threads=arguments.threads,
        )
    except (InferenceFolderError, AudioInputError, RuntimeMissingError, ValueError) as error:
        logger.error(f"error: {error}")
        return 2
    failed = 0
    for result in results:
        if result.error is not None:
            failed += 1
            logger.error(f"error: {result.error}")
        else:
            print(f"{result.path}\t{result.text}", flush=True)
    audio_seconds = sum(result.seconds for result in results)
    logger.info(
        f"{len(results) - failed} of {len(results)} inputs transcribed, {audio_seconds:.1f} s of "
        f"audio in {seconds:.2f} s ({arguments.runtime}, {arguments.precision}, "
        f"{arguments.device}, batch {arguments.batch_size}; model loaded in {load_seconds:.2f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
