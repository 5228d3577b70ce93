"""ONNX Runtime beside the CPU path: the baseline exported, timed in fp32 and int8 sessions.

Usage::

    rows, report = onnx_rows(baseline, cpu_batches, threads=2, folder=work_folder / "onnx")
"""

import torch


def onnx_rows(brain, batches, threads, folder):
    """ONNX Runtime fp32 and int8 sessions of the baseline as rows, or why export failed.

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
