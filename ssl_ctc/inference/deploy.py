"""An inference folder's exported ONNX graph run by ONNX Runtime or OpenVINO, not by PyTorch.

``python -m ssl_ctc.inference export FOLDER --format onnx [--int8]``
(``ssl_ctc.inference.onnx_export``) writes the whole acoustic model (downsampler, SSL
encoder cut to its layers, head, CTC upsampling, log-softmax, exact frame lengths) as
``model.onnx`` (and ``model.int8.onnx``) into the folder and records them under the
``onnx`` key of ``inference.json``. This module reads that entry and runs a graph
behind the ``infer_batch(wavs, wav_lens) -> {"log_probs", "lengths"}`` interface of the
PyTorch ``RecipeCTCEncoder``, so that ``Transcriber`` (``transcribe.py --runtime``) reads,
windows and decodes as with PyTorch. It imports no Brain, no SSL encoder and no
``transformers``: the graph needs ``onnxruntime`` or ``openvino`` (each optional) and numpy.

Usage::

    model, hparams, manifest = load_exported_model("results/demo/SD2", "openvino", "int8")
    output = model.infer_batch(wavs, wav_lens)   # {"log_probs": [B, T, V], "lengths": [B]}
"""

import importlib
from pathlib import Path

import numpy
import torch
import yaml
from speechbrain.dataio.encoder import CTCTextEncoder

from ssl_ctc.inference.loading import (
    HPARAMS_FILE,
    MANIFEST,
    TOKENIZER_FILE,
    InferenceFolderError,
    find_inference_folder,
    read_manifest,
)

# Where the acoustic model runs (transcribe.py --runtime) and the Python package each needs.
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
RUNTIMES = ("torch", *RUNTIME_PACKAGES)
# The exported graphs: precision -> file name in the inference folder.
GRAPH_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
ONNX_ENTRY = "onnx"  # the key of inference.json that lists them
# Bumped when a graph's inputs, outputs or entry change (1: wavs, wav_lens -> log_probs, lengths).
ONNX_EXPORT_VERSION = 1
INPUT_NAMES = ("wavs", "wav_lens")
OUTPUT_NAMES = ("log_probs", "lengths")
# hyperparams.yaml keys of the decoding (the LM beam search), read without building the modules.
DECODING_KEYS = ("lm_unigrams_path", "lm_alpha", "lm_beta", "lm_beam_width")


class RuntimeMissingError(Exception):
    """The package of the requested runtime is not installed; the message names it."""


def export_command(folder, precision="fp32"):
    """The command that exports a folder's graph of ``precision``.

    Example
    -------
    >>> export_command("results/SD2/inference", "int8")
    'python -m ssl_ctc.inference export results/SD2/inference --format onnx --int8'
    """
    return (f"python -m ssl_ctc.inference export {folder} --format onnx"
            + (" --int8" if precision == "int8" else ""))


def exported_graph_path(folder, manifest, precision="fp32"):
    """The path of an inference folder's exported graph; ``InferenceFolderError`` naming the file.

    Arguments
    ---------
    folder : Path
        The inference folder.
    manifest : dict
        Its ``inference.json``.
    precision : str
        ``fp32`` or ``int8``.

    Returns
    -------
    Path

    Example
    -------
    >>> exported_graph_path(Path("SD2"), {"format_version": 2})
    Traceback (most recent call last):
    ...
    ssl_ctc.inference.loading.InferenceFolderError: inference folder 'SD2' has no exported ...
    """
    command = export_command(folder, precision)
    entry = manifest.get(ONNX_ENTRY)
    if entry is None:
        raise InferenceFolderError(
            f"inference folder '{folder}' has no exported graph (no '{ONNX_ENTRY}' entry in "
            f"'{folder / MANIFEST}'): run {command}")
    version = entry.get("export_version")
    if version != ONNX_EXPORT_VERSION:
        age = "a newer" if (version or 0) > ONNX_EXPORT_VERSION else "an older"
        raise InferenceFolderError(
            f"the graphs listed in '{folder / MANIFEST}' were exported by {age} version of this "
            f"recipe (ONNX export_version {version}, this code reads {ONNX_EXPORT_VERSION}): "
            f"run {command}")
    if precision not in entry:
        raise InferenceFolderError(
            f"inference folder '{folder}' has no {precision} graph ('{precision}' not in the "
            f"'{ONNX_ENTRY}' entry of '{folder / MANIFEST}'): run {command}")
    path = folder / entry[precision]
    if not path.is_file():
        raise InferenceFolderError(
            f"exported graph '{path}' not found (listed in '{folder / MANIFEST}'): run {command}")
    return path


def import_runtime(runtime):
    """The runtime's Python module; ``RuntimeMissingError`` naming the package when absent.

    Example
    -------
    >>> from unittest import mock
    >>> with mock.patch.dict("sys.modules", {"openvino": None}):  # as if it were not installed
    ...     import_runtime("openvino")
    Traceback (most recent call last):
    ...
    ssl_ctc.inference.deploy.RuntimeMissingError: --runtime openvino needs the Python package ...
    """
    package = RUNTIME_PACKAGES[runtime]
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise RuntimeMissingError(
            f"--runtime {runtime} needs the Python package '{package}', which cannot be "
            f"imported ({error}): pip install {package}") from error


def onnxruntime_session(path, threads=None):
    """An ONNX Runtime CPU session of a graph (``threads``: intra-op threads, None: its default)."""
    onnxruntime = import_runtime("onnxruntime")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_runner(path, threads=None):
    """``run(wavs, wav_lens) -> (log_probs, lengths)`` (numpy) through an ONNX Runtime session."""
    session = onnxruntime_session(path, threads)

    def run(wavs, wav_lens):
        return session.run(list(OUTPUT_NAMES), dict(zip(INPUT_NAMES, (wavs, wav_lens),
                                                        strict=True)))

    return run


def openvino_runner(path, threads=None, precision_hint="f32"):
    """``run(wavs, wav_lens) -> (log_probs, lengths)`` (numpy) through OpenVINO on the CPU.

    OpenVINO reads the ONNX graph itself; its CPU plugin would run float layers in bf16
    where the processor has bf16 instructions: the precision hint keeps them in fp32
    (``precision_hint=None``: OpenVINO's own choice, as the speed script compares).
    """
    openvino = import_runtime("openvino")
    core = openvino.Core()
    config = {} if precision_hint is None else {"INFERENCE_PRECISION_HINT": precision_hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)

    def run(wavs, wav_lens):
        outputs = compiled(dict(zip(INPUT_NAMES, (wavs, wav_lens), strict=True)))
        return [outputs[name] for name in OUTPUT_NAMES]

    return run


RUNNERS = {"onnxruntime": onnxruntime_runner, "openvino": openvino_runner}


class ExportedAcousticModel:
    """An exported graph in ONNX Runtime or OpenVINO, with ``RecipeCTCEncoder``'s ``infer_batch``.

    Arguments
    ---------
    path : str or Path
        The ``.onnx`` graph (inputs ``wavs``, ``wav_lens``; outputs ``log_probs``, ``lengths``).
    runtime : str
        ``onnxruntime`` or ``openvino``.
    threads : int, optional
        CPU threads of the runtime (None: its default).
    frame_grid : tuple, optional
        Input samples per encoder frame and per CTC frame (the Brain's ``frame_grid``,
        recorded at export): where ``Transcriber`` starts the windows of a long file.
    """

    def __init__(self, path, runtime="onnxruntime", threads=None, frame_grid=None):
        if runtime not in RUNNERS:
            raise ValueError(f"runtime must be one of {', '.join(RUNNERS)}, got {runtime}")
        self.path = Path(path)
        self.runtime = runtime
        self._frame_grid = frame_grid
        self._run = RUNNERS[runtime](self.path, threads)

    def infer_batch(self, wavs, wav_lens=None):
        """CTC log-probs ``[B, T, V]`` and each utterance's exact frames, as torch tensors.

        Arguments
        ---------
        wavs : torch.Tensor or numpy.ndarray
            ``[B, samples]`` waveforms at 16 kHz, zero-padded.
        wav_lens : torch.Tensor or numpy.ndarray, optional
            Relative lengths in (0, 1] (SpeechBrain's); None: unpadded.

        Returns
        -------
        dict
            ``log_probs`` (float32) and ``lengths`` (int64); frames past an utterance's
            length are padding.
        """
        wavs = numpy.ascontiguousarray(numpy.asarray(wavs, dtype=numpy.float32))
        if wav_lens is None:
            wav_lens = numpy.ones(wavs.shape[0], dtype=numpy.float32)
        wav_lens = numpy.ascontiguousarray(numpy.asarray(wav_lens, dtype=numpy.float32))
        log_probs, lengths = self._run(wavs, wav_lens)
        return {"log_probs": torch.from_numpy(numpy.asarray(log_probs)),
                "lengths": torch.from_numpy(numpy.asarray(lengths, dtype=numpy.int64))}

    def frame_grid(self):
        """Input samples per encoder frame and per CTC frame, as the Brain's ``frame_grid``."""
        return self._frame_grid


class _PlainValuesLoader(yaml.SafeLoader):
    """Reads ``hyperparams.yaml`` without building anything: every tagged node is None."""


_PlainValuesLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def decoding_hparams(folder):
    """The tokenizer and the decoding keys of an inference folder, no module built.

    Returns
    -------
    dict
        ``tokenizer`` (from ``tokenizer.ckpt``, its size checked against ``output_neurons``)
        and ``DECODING_KEYS`` (``hyperparams.yaml``).
    """
    path = Path(folder) / HPARAMS_FILE
    try:
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_PlainValuesLoader)
        hparams = {key: values[key] for key in DECODING_KEYS}
        output_neurons = int(values["output_neurons"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise InferenceFolderError(f"cannot read the decoding keys of '{path}': {error}") from error
    tokenizer = CTCTextEncoder()
    tokenizer.load(Path(folder) / TOKENIZER_FILE)
    tokenizer.expect_len(output_neurons)
    return {"tokenizer": tokenizer, **hparams}


def load_exported_model(folder, runtime="onnxruntime", precision="fp32", threads=None):
    """An inference folder's exported graph in a runtime, as ``load_inference_encoder`` returns.

    Arguments
    ---------
    folder : str or Path
        An inference folder, or an experiment folder holding one.
    runtime : str
        ``onnxruntime`` or ``openvino``.
    precision : str
        ``fp32`` (``model.onnx``) or ``int8`` (``model.int8.onnx``).
    threads : int, optional
        CPU threads of the runtime.

    Returns
    -------
    tuple
        ``(model, hparams, manifest)``: the ``ExportedAcousticModel``, the tokenizer and
        the decoding keys, and ``inference.json``.
    """
    folder = find_inference_folder(folder)
    manifest = read_manifest(folder)
    path = exported_graph_path(folder, manifest, precision)
    hparams = decoding_hparams(folder)
    model = ExportedAcousticModel(path, runtime, threads,
                                  frame_grid=tuple(manifest[ONNX_ENTRY]["frame_grid"]))
    return model, hparams, manifest
