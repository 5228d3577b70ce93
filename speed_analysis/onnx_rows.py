"""The peers beside the CPU path: the baseline exported to ONNX, run by ONNX Runtime (fp32, int8)
and OpenVINO (fp32 forced, and its own default precision: bf16 where the CPU has it).

Usage::

    rows, report = onnx_rows(baseline, cpu_batches, threads=2, folder=work_folder / "onnx")
"""

import torch

from ssl_ctc.cpu.check import relative_error
from ssl_ctc.inference.deploy import RuntimeMissingError, openvino_runner


def onnx_rows(brain, batches, threads, folder):
    """ONNX Runtime and OpenVINO runs of the baseline as rows, or why export failed.

    Arguments
    ---------
    brain : ssl_ctc.SSLCTCBrain
        The baseline, in eval mode, on CPU.
    batches : list of tuple
        CPU batches (the first one is the export's example).
    threads : int
        Intra-op threads of the sessions.
    folder : Path
        Where the ``.onnx`` files go.

    Returns
    -------
    tuple
        ``(rows, report)``: ``(label, batch function, "fp32")`` rows and a dict with
        the export's outcome (``error`` naming the failing step) and each session's
        largest log-prob difference from the brain's own (fp32) forward; a runtime that
        is not installed says so.
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
    openvino_runs = {"openvino fp32": "f32", "openvino default": None}
    for name, hint in openvino_runs.items():
        try:
            run_batch = openvino_batch_function(openvino_runner(path, threads, hint))
            outputs = [run_batch(wavs, wav_lens) for wavs, wav_lens in batches]
        except RuntimeMissingError as error:
            report[name] = {"error": f"not installed: {error}"}
            continue
        except Exception as error:
            report[name] = {"error": f"{type(error).__name__}: {str(error)[:2000]}"}
            continue
        report[name] = {"relative_error": max(
            relative_error(output.exp(), reference.exp())
            for output, reference in zip(outputs, references, strict=True))}
        rows.append((f"baseline {name}", run_batch, "fp32"))
    return rows, report


def openvino_batch_function(run):
    """``run_batch(wavs, wav_lens)`` -> log-probs ``[B, T, V]`` through an OpenVINO runner."""

    def run_batch(wavs, wav_lens):
        return torch.from_numpy(run(wavs.numpy(), wav_lens.numpy())[0])

    return run_batch
