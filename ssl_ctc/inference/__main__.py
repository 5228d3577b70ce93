"""``python -m ssl_ctc.inference``: the inference package's command line (its one home).

``python -m ssl_ctc.inference EXPERIMENT...`` (re)writes experiments' inference folders
(``ssl_ctc.inference.writer``); ``python -m ssl_ctc.inference export FOLDER... --format onnx
[--int8]`` exports their acoustic models to ONNX, checked against PyTorch
(``ssl_ctc.inference.onnx_export``). The arguments are parsed and the logging set up here,
nowhere else in the package.

Usage::

    python -m ssl_ctc.inference results/demo/SD2    # (re)write an experiment's inference folder
    python -m ssl_ctc.inference export results/demo/SD2 --format onnx --int8
"""

import argparse
import logging
import sys
import warnings

from ssl_ctc.files import display_path
from ssl_ctc.inference.deploy import GRAPH_FILES, RuntimeMissingError
from ssl_ctc.inference.loading import InferenceFolderError, load_experiment_brain
from ssl_ctc.inference.model_card import describe_check
from ssl_ctc.inference.onnx_export import (
    CHECK_DATA,
    FP32_TOLERANCE,
    INT8_MAX_WER_INCREASE,
    ExportError,
    export_inference_folder,
)
from ssl_ctc.inference.writer import write_inference_folder


def export_main(argv):
    """``python -m ssl_ctc.inference export FOLDER... --format onnx [--int8]``; exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m ssl_ctc.inference export",
        description="Export inference folders' acoustic models to ONNX (checked against "
                    "PyTorch on a test split, recorded in inference.json) for transcribe.py "
                    "--runtime onnxruntime|openvino.")
    parser.add_argument("folders", nargs="+", help="experiment folders or their inference/")
    parser.add_argument("--format", default="onnx", choices=["onnx"],
                        help="onnx (OpenVINO reads it too)")
    parser.add_argument("--int8", action="store_true",
                        help="also model.int8.onnx: dynamic int8 quantisation of the MatMuls")
    parser.add_argument("--check_data", default=str(CHECK_DATA),
                        help="LibriSpeech-layout split to check on (default: embedded test-clean)")
    parser.add_argument("--tolerance", type=float, default=FP32_TOLERANCE,
                        help="fp32: largest log-prob difference on valid frames (default 1e-3)")
    parser.add_argument("--max_wer_increase", type=float, default=INT8_MAX_WER_INCREASE,
                        help="int8: largest WER increase over PyTorch, in points (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    arguments = parser.parse_args(argv)
    # Warnings, but not the loading notes (INFO) nor the quantiser's advice (root's warnings).
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.ERROR, format="%(message)s", handlers=[handler])
    warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
    status = 0
    for given in arguments.folders:
        try:
            folder, entry = export_inference_folder(
                given, int8=arguments.int8, check_data=arguments.check_data,
                tolerance=arguments.tolerance, max_wer_increase=arguments.max_wer_increase,
                threads=arguments.threads)
        except (ExportError, InferenceFolderError, RuntimeMissingError, ImportError) as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
            continue
        precisions = [precision for precision in GRAPH_FILES if precision in entry]
        check = entry["check"]["fp32"]
        print(f"{display_path(folder)}: exported {', '.join(entry[p] for p in precisions)} "
              f"(opset {entry['opset']}), checked against PyTorch on {check['data']}: "
              f"{check['utterances']} utterances in padded batches of {check['batch_size']}")
        for precision in precisions:
            print(f"  {precision} ({entry[precision]}): "
                  f"{describe_check(precision, entry['check'][precision])}")
    return status


def main(argv=None):
    """``python -m ssl_ctc.inference EXPERIMENT...``: (re)write their inference folders.

    ``python -m ssl_ctc.inference export FOLDER... --format onnx [--int8]`` exports them
    (``export_main``; its exit status is returned); an experiment folder named ``export``
    is written with ``./export``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    parser = argparse.ArgumentParser(
        description="Write <experiment>/inference/ (EncoderASR folder) for finished experiments; "
                    "'export FOLDER --format onnx [--int8]' exports one to ONNX."
    )
    parser.add_argument("experiments", nargs="+", help="experiment (output) folders")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for experiment in arguments.experiments:
        folder = write_inference_folder(load_experiment_brain(experiment))
        print(folder)


if __name__ == "__main__":
    sys.exit(main())
