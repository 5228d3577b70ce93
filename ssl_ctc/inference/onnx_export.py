"""A model's whole acoustic path as one ONNX graph: exported, quantised, checked, deployed.

``export_acoustic_model`` traces a model's ``infer_batch`` (a Brain, or the
``RecipeCTCEncoder`` an inference folder builds: downsampler, SSL encoder cut to its
layers, head, CTC upsampling, log-softmax) to ONNX (TorchScript exporter): inputs
``wavs`` ``[B, samples]`` and ``wav_lens`` (relative lengths), outputs ``log_probs``
``[B, T, V]`` and ``lengths`` (each utterance's exact frames), batch and time axes
dynamic. The encoder normalises each utterance over its valid samples and frames in a
masked form while exporting (``ssl_ctc.encoder``), so a padded batch gives each
utterance its own output. ``quantize_int8`` is ONNX Runtime's dynamic int8
quantisation of the MatMuls; the speed script times both in ``onnx_session``.

``export_inference_folder`` (``python -m ssl_ctc.inference export``) writes the graphs
into an inference folder only after checking them against the PyTorch model on a test
split in padded batches (fp32: log-probs within a tolerance on valid frames, exact
lengths, identical greedy transcripts; int8: a bounded WER change), records them under
``onnx`` in ``inference.json`` and lists them in the model card;
``ssl_ctc.inference.deploy`` runs them. Early exit is not exported: its ``infer_batch``
decides per utterance, at run time, how many layers run.

Usage::

    python -m ssl_ctc.inference export results/demo/SD2 --format onnx --int8

    path = export_acoustic_model(brain, wavs, wav_lens, folder / "model.onnx")
    run_batch = onnx_batch_function(onnx_session(path, threads=2, int8=True))
"""

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ssl_ctc.brain import SSLCTCBrain
from ssl_ctc.cpu.front_end import channels_first_front_ends
from ssl_ctc.ctc import greedy_decode
from ssl_ctc.files import current_umask, display_path, write_atomically, write_json
from ssl_ctc.imports import import_object
from ssl_ctc.inference.deploy import (
    GRAPH_FILES,
    INPUT_NAMES,
    ONNX_ENTRY,
    ONNX_EXPORT_VERSION,
    OUTPUT_NAMES,
    ExportedAcousticModel,
    onnxruntime_session,
)
from ssl_ctc.inference.loading import (
    MANIFEST,
    find_inference_folder,
    load_inference_encoder,
    read_manifest,
)
from ssl_ctc.inference.model_card import describe_check, exported_graphs_section, with_section
from ssl_ctc.inference.transcription import pad_batch, read_audio

ONNX_OPSET = 17
# What ONNX Runtime's dynamic int8 quantises: the linear layers' products only (the CNN front
# end's convolutions in int8 run slower than in fp32).
INT8_OP_TYPES = ["MatMul"]
# The export's self-check: the embedded test split in padded batches of 4; the fp32 graph's
# log-probs within FP32_TOLERANCE of PyTorch's on valid frames (and the same greedy
# transcripts), the int8 graph's WER at most INT8_MAX_WER_INCREASE points above PyTorch's.
CHECK_DATA = Path(__file__).resolve().parents[2] / "embedded" / "LibriSpeech" / "test-clean"
CHECK_BATCH_SIZE = 4
FP32_TOLERANCE = 1e-3
INT8_MAX_WER_INCREASE = 2.0


class ExportError(Exception):
    """A model that is not exported: a strategy with no graph, or a graph that failed its check."""


class AcousticModel(torch.nn.Module):
    """A model's ``infer_batch`` as one module to export: ``(log_probs, lengths)``.

    Arguments
    ---------
    model : ssl_ctc.brain.SSLCTCBrain or ssl_ctc.inference.runtime.RecipeCTCEncoder
        In eval mode, on CPU.
    """

    def __init__(self, model):
        super().__init__()
        self.infer_batch = model.infer_batch
        # registered, so the exporter sees the weights and the front-end switch finds them
        self.weights = model if isinstance(model, torch.nn.Module) else model.modules

    def forward(self, wavs, wav_lens):
        output = self.infer_batch(wavs, wav_lens)
        return output["log_probs"], output["lengths"]


def export_acoustic_model(model, wavs, wav_lens, path):
    """Export a model's acoustic path to ``path``; raises with the failing step named.

    Arguments
    ---------
    model : ssl_ctc.brain.SSLCTCBrain or ssl_ctc.inference.runtime.RecipeCTCEncoder
        In eval mode, on CPU.
    wavs, wav_lens : torch.Tensor
        An example batch (its shapes are made dynamic).
    path : pathlib.Path
        Where the ``.onnx`` file goes (weights in the same file).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    acoustic_model = AcousticModel(model).eval()
    # The channels-last front end's ``Tensor.unfold`` has no ONNX export with dynamic
    # lengths ("input size not accessible"): export Hugging Face's convolutions. The
    # encoder's valid-prefix normalisations trace their masked formulation by themselves.
    with torch.no_grad(), channels_first_front_ends(acoustic_model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes: the check says the rest
        torch.onnx.export(
            acoustic_model, (wavs, wav_lens), str(path), dynamo=False,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes={"wavs": {0: "batch", 1: "samples"}, "wav_lens": {0: "batch"},
                          "log_probs": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}},
            opset_version=ONNX_OPSET)
    return path


def quantize_int8(path, int8_path=None, external_data=True):
    """ONNX Runtime's dynamic int8 quantisation of every MatMul's weights; the new path.

    Arguments
    ---------
    path : pathlib.Path
        The fp32 graph.
    int8_path : pathlib.Path, optional
        Default ``<name>.int8.onnx`` beside it.
    external_data : bool
        Weights in a ``.data`` file beside the graph (needed past 2 GB), else in it.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = int8_path or path.with_name(path.stem + ".int8.onnx")
    quantize_dynamic(str(path), str(int8_path), op_types_to_quantize=INT8_OP_TYPES,
                     weight_type=QuantType.QInt8, use_external_data_format=external_data)
    return int8_path


def onnx_session(path, threads, int8=False):
    """An ONNX Runtime CPU session of ``path`` (int8: of its dynamic int8 quantisation)."""
    return onnxruntime_session(quantize_int8(path) if int8 else path, threads)


def onnx_batch_function(session):
    """``run_batch(wavs, wav_lens)`` -> log-probs ``[B, T, V]`` (a tensor) through a session."""

    def run_batch(wavs, wav_lens):
        outputs = session.run(None, {"wavs": wavs.numpy(), "wav_lens": wav_lens.numpy()})
        return torch.from_numpy(outputs[0])

    return run_batch


def check_exportable(manifest, folder):
    """Refuse a strategy whose inference is not one fixed graph (early exit), naming it."""
    brain_class = manifest.get("brain_class", "")
    if import_object(brain_class).infer_batch is not SSLCTCBrain.infer_batch:
        raise ExportError(
            f"'{folder}' holds '{manifest.get('name')}' ({brain_class}), which is not "
            "exportable to ONNX: its own infer_batch decides per utterance, at run time, "
            "how many layers run (early exit: data-dependent control flow, not one graph); "
            "transcribe it with the PyTorch model (transcribe.py --runtime torch)")


def read_test_split(split_folder):
    """``(id, words, waveform)`` of every utterance of a LibriSpeech-layout split, by id.

    Example
    -------
    >>> read_test_split("/nonexistent/test-clean")
    Traceback (most recent call last):
    ...
    ssl_ctc.inference.onnx_export.ExportError: no check data: '/nonexistent/test-clean' is ...
    """
    if not Path(split_folder).is_dir():
        raise ExportError(f"no check data: '{split_folder}' is not a folder (an installed "
                          "package does not ship the recipe's embedded/ corpus): pass "
                          "--check_data with a LibriSpeech-layout split, e.g. "
                          "/path/to/LibriSpeech/test-clean")
    utterances = []
    for transcript in sorted(Path(split_folder).rglob("*.trans.txt")):
        for line in transcript.read_text(encoding="utf-8").splitlines():
            if line.strip():
                utterance, _, words = line.strip().partition(" ")
                audio = read_audio(str(transcript.parent / f"{utterance}.flac"))
                utterances.append((utterance, words.split(), audio))
    if not utterances:
        raise ExportError(f"no LibriSpeech transcripts (*.trans.txt) in '{split_folder}' to "
                          "check the export on (--check_data)")
    return sorted(utterances, key=lambda utterance: utterance[0])


def word_error_rate(ids, hypotheses, references):
    """SpeechBrain's WER (%) of hypotheses against references (lists of words)."""
    from speechbrain.utils.metric_stats import ErrorRateStats

    stats = ErrorRateStats()
    stats.append(ids, hypotheses, references)
    return stats.summarize("error_rate")


def check_graph(path, precision, batches, reference, tolerance, max_wer_increase, threads):
    """Run a graph in ONNX Runtime on the check batches and compare it with PyTorch.

    Arguments
    ---------
    path : Path
        The graph.
    precision : str
        ``fp32`` (log-probs within ``tolerance``, identical transcripts) or ``int8``
        (WER at most ``max_wer_increase`` points above PyTorch's).
    batches : list of tuple
        ``(wavs, wav_lens)`` padded batches.
    reference : dict
        ``outputs`` (PyTorch's ``(log_probs, lengths)`` per batch), ``ids``, ``words``
        (its greedy transcripts), ``references``, ``tokenizer``, ``wer``.
    tolerance, max_wer_increase : float
    threads : int or None

    Returns
    -------
    dict
        The check's numbers and ``passed``.
    """
    model = ExportedAcousticModel(path, "onnxruntime", threads)
    lengths_equal, difference, hypotheses = True, 0.0, []
    for (wavs, wav_lens), (log_probs, lengths) in zip(batches, reference["outputs"], strict=True):
        output = model.infer_batch(wavs, wav_lens)
        hypotheses += greedy_decode(output["log_probs"], output["lengths"],
                                    reference["tokenizer"])
        if not torch.equal(output["lengths"], lengths):
            lengths_equal = False
            continue
        valid = torch.arange(log_probs.shape[1]) < lengths[:, None]
        difference = max(difference, (output["log_probs"] - log_probs).abs()[valid].max().item())
    wer = word_error_rate(reference["ids"], hypotheses, reference["references"])
    check = {
        "data": reference["data"], "utterances": len(hypotheses), "batch_size": CHECK_BATCH_SIZE,
        "lengths_equal": lengths_equal, "max_abs_log_prob_diff": difference,
        "transcripts_differing": sum(hypothesis != words for hypothesis, words
                                     in zip(hypotheses, reference["words"], strict=True)),
        "wer": wer, "wer_torch": reference["wer"],
    }
    if precision == "fp32":
        check["tolerance"] = tolerance
        check["passed"] = (lengths_equal and difference <= tolerance
                           and check["transcripts_differing"] == 0)
    else:
        check["max_wer_increase"] = max_wer_increase
        check["passed"] = lengths_equal and wer - reference["wer"] <= max_wer_increase
    return check


def torch_reference(encoder, hparams, utterances, data):
    """The check batches and what the PyTorch model gives on them (see ``check_graph``)."""
    batches = [pad_batch([audio for _, _, audio in utterances[first:first + CHECK_BATCH_SIZE]])
               for first in range(0, len(utterances), CHECK_BATCH_SIZE)]
    tokenizer = hparams["tokenizer"]
    with torch.no_grad():
        outputs = []
        for wavs, wav_lens in batches:
            output = encoder.infer_batch(wavs, wav_lens)
            outputs.append((output["log_probs"].float(), output["lengths"].long()))
    words = [hypothesis for log_probs, lengths in outputs
             for hypothesis in greedy_decode(log_probs, lengths, tokenizer)]
    ids = [utterance for utterance, _, _ in utterances]
    references = [reference for _, reference, _ in utterances]
    return batches, {"outputs": outputs, "ids": ids, "words": words, "references": references,
                     "tokenizer": tokenizer, "data": data,
                     "wer": word_error_rate(ids, words, references)}


def export_inference_folder(folder, int8=False, check_data=CHECK_DATA, tolerance=FP32_TOLERANCE,
                            max_wer_increase=INT8_MAX_WER_INCREASE, threads=None):
    """Export an inference folder's acoustic model to ONNX, check it, record it in the folder.

    Arguments
    ---------
    folder : str or Path
        An inference folder, or an experiment folder holding one.
    int8 : bool
        Also write ``model.int8.onnx`` (dynamic int8 MatMuls).
    check_data : str or Path
        A LibriSpeech-layout split the graphs are checked on (default: the embedded test-clean).
    tolerance : float
        Largest log-prob difference of the fp32 graph from PyTorch on valid frames.
    max_wer_increase : float
        Largest WER increase (absolute points) of the int8 graph over PyTorch.
    threads : int, optional
        ONNX Runtime threads of the check.

    Returns
    -------
    tuple
        ``(folder, entry)``: the inference folder and its new ``onnx`` entry. Nothing
        is written when a graph fails its check (``ExportError`` says which and why).
    """
    folder = find_inference_folder(folder)
    manifest = read_manifest(folder)
    check_exportable(manifest, folder)
    encoder, hparams, _ = load_inference_encoder(folder)
    utterances = read_test_split(check_data)
    batches, reference = torch_reference(encoder, hparams, utterances, display_path(check_data))
    staging = Path(tempfile.mkdtemp(prefix=".onnx_export.", dir=folder))
    try:
        graphs = {"fp32": export_acoustic_model(encoder, *batches[0],
                                                staging / GRAPH_FILES["fp32"])}
        if int8:
            graphs["int8"] = quantize_int8(graphs["fp32"], staging / GRAPH_FILES["int8"],
                                           external_data=False)
        checks = {precision: check_graph(path, precision, batches, reference, tolerance,
                                         max_wer_increase, threads)
                  for precision, path in graphs.items()}
        failed = [f"{precision}: {describe_check(precision, check)}"
                  for precision, check in checks.items() if not check["passed"]]
        if failed:
            raise ExportError(f"not exported: the graph of '{folder}' fails its check against "
                              f"the PyTorch model, nothing written ({'; '.join(failed)})")
        entry = {
            "export_version": ONNX_EXPORT_VERSION, "opset": ONNX_OPSET,
            **{precision: GRAPH_FILES[precision] for precision in graphs},
            "inputs": {"wavs": "[batch, samples] float32, 16 kHz, zero-padded",
                       "wav_lens": "[batch] float32, relative lengths in (0, 1]"},
            "outputs": {"log_probs": "[batch, frames, labels] float32 CTC log-probs",
                        "lengths": "[batch] int64, valid frames of each utterance"},
            "frame_grid": list(encoder.brain.frame_grid()),
            "torch": torch.__version__, "check": checks,
        }
        if int8:
            entry["int8_quantization"] = ("ONNX Runtime's dynamic quantisation of the "
                                          f"{', '.join(INT8_OP_TYPES)} weights (QInt8)")
        for name in set(GRAPH_FILES.values()) - {path.name for path in graphs.values()}:
            (folder / name).unlink(missing_ok=True)  # an earlier export's graph, now stale
        for path in graphs.values():
            path.chmod(0o666 & ~current_umask())
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(folder / MANIFEST, {**manifest, ONNX_ENTRY: entry})
    card = folder / "README.md"
    if card.is_file():
        write_atomically(card, with_section(card.read_text(encoding="utf-8"),
                                            exported_graphs_section(entry, display_path(folder))))
    return folder, entry
