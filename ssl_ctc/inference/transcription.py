"""Audio files to transcripts with an inference folder: reading, batching, long files, precision.

What ``transcribe.py`` runs. Inputs are read with soundfile (WAV, FLAC, OGG),
mixed down to mono and resampled to 16 kHz (SpeechBrain's ``AudioNormalizer``,
as ``EncoderASR.load_audio``); batches are sorted by duration and run through the
trained Brain's ``infer_batch`` with each utterance's exact frame lengths, then
decoded greedily or with the benchmark's LM beam search, so the transcripts are
the benchmark's. Files longer than ``window_seconds`` are cut into overlapping
windows whose CTC log-probs are joined at the middle of each overlap before one
decoding. With ``runtime="onnxruntime"`` or ``"openvino"`` only the acoustic model
changes: the folder's exported ONNX graph (``ssl_ctc.inference.deploy``) runs in place
of the PyTorch model, behind the same ``infer_batch``.

Usage::

    transcriber = Transcriber("results/demo/SD2", precision="fp32")
    transcriber = Transcriber("results/demo/SD2", runtime="openvino", precision="int8")
    results = transcriber.transcribe(["a.flac", "b.wav"])   # [TranscriptionResult, ...]
"""

import contextlib
import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import soundfile
import torch
from speechbrain.dataio.preprocess import AudioNormalizer

from ssl_ctc.cpu.decision import cpu_inference
from ssl_ctc.encoder import SAMPLE_RATE
from ssl_ctc.inference.deploy import GRAPH_FILES, RUNTIMES, load_exported_model
from ssl_ctc.inference.loading import load_inference_encoder
from ssl_ctc.inference.runtime import decode_words
from ssl_ctc.precision import PRECISIONS, autocast, precisions_of

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what soundfile (libsndfile >= 1.1) reads
LIST_SUFFIXES = (".txt", ".lst", ".list")


class AudioInputError(Exception):
    """An input that cannot be transcribed; the message names the file."""


@dataclasses.dataclass
class TranscriptionResult:
    """One input: its path, and its words or the error that stopped it.

    Arguments
    ---------
    path : str
        The input as given (or as listed).
    words : list of str, optional
        The transcript, None on error.
    error : str, optional
        Why it could not be transcribed.
    seconds : float
        Duration of the audio.
    extras : dict
        Per-utterance outputs of the model (``exit_layer`` for early exit).
    """

    path: str
    words: list | None = None
    error: str | None = None
    seconds: float = 0.0
    extras: dict = dataclasses.field(default_factory=dict)

    @property
    def text(self):
        """The transcript as one string."""
        return " ".join(self.words or [])


def expand_inputs(inputs):
    """Input arguments to the audio paths they stand for, in order.

    A folder stands for its audio files (WAV, FLAC, OGG, MP3; recursively, sorted); a
    ``.txt`` / ``.lst`` / ``.list`` file for the paths it lists, one a line (relative
    paths are taken from the working directory, else from the list's folder);
    anything else for itself (checked when read). A folder without audio, or nothing
    to transcribe at all, raises ``AudioInputError`` naming it.

    Example
    -------
    >>> expand_inputs(["a.flac", "b.wav"])
    ['a.flac', 'b.wav']
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     expand_inputs([folder])
    Traceback (most recent call last):
    ...
    ssl_ctc.inference.transcription.AudioInputError: no audio file (...) in folder '...'
    """
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                str(found) for found in path.rglob("*")
                if found.is_file() and found.suffix.lower() in AUDIO_SUFFIXES
            )
            if not found:
                raise AudioInputError(
                    f"no audio file ({', '.join(AUDIO_SUFFIXES)}) in folder '{item}'")
            paths += found
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                listed = Path(line)
                if not listed.is_absolute() and not listed.exists():
                    listed = path.parent / listed
                paths.append(str(listed))
        else:
            paths.append(item)
    if not paths:
        raise AudioInputError(f"nothing to transcribe in {', '.join(map(str, inputs))}")
    return paths


def read_audio(path, normalizer=None):
    """Read an audio file as a mono 16 kHz float tensor; raise ``AudioInputError`` naming it.

    Arguments
    ---------
    path : str
        WAV, FLAC or OGG (anything soundfile reads).
    normalizer : speechbrain.dataio.preprocess.AudioNormalizer, optional
        Mixing and resampling (default: 16 kHz, average to mono).

    Returns
    -------
    torch.Tensor
        ``[samples]``.

    Example
    -------
    >>> read_audio("/nonexistent.flac")
    Traceback (most recent call last):
    ...
    ssl_ctc.inference.transcription.AudioInputError: /nonexistent.flac: file not found
    """
    if not os.path.exists(path):
        raise AudioInputError(f"{path}: file not found")
    if os.path.isdir(path):
        raise AudioInputError(f"{path}: is a folder with no WAV, FLAC or OGG file")
    try:
        audio, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError
        raise AudioInputError(
            f"{path}: not a readable audio file ({str(error).splitlines()[0]}); "
            "WAV, FLAC and OGG are read"
        ) from error
    if audio.shape[0] == 0:
        raise AudioInputError(f"{path}: empty audio (0 samples)")
    waveform = torch.from_numpy(audio)  # [samples, channels]
    if waveform.shape[1] > 1:
        logger.info(f"{path}: {waveform.shape[1]} channels mixed down to mono")
    if sample_rate != SAMPLE_RATE:
        logger.info(f"{path}: resampled from {sample_rate} Hz to {SAMPLE_RATE} Hz")
    normalizer = normalizer or AudioNormalizer(sample_rate=SAMPLE_RATE, mix="avg-to-mono")
    waveform = normalizer(waveform.squeeze(1) if waveform.shape[1] == 1 else waveform,
                          sample_rate)
    if waveform.numel() < 400:  # shorter than the encoders' receptive field (25 ms)
        raise AudioInputError(f"{path}: too short to transcribe ({waveform.numel()} samples)")
    return waveform


def pad_batch(waveforms):
    """Pad waveforms into ``[B, samples]`` with SpeechBrain's relative lengths.

    Example
    -------
    >>> wavs, wav_lens = pad_batch([torch.ones(4), torch.ones(2)])
    >>> wavs.shape, wav_lens.tolist()
    (torch.Size([2, 4]), [1.0, 0.5])
    """
    longest = max(len(waveform) for waveform in waveforms)
    wavs = torch.zeros(len(waveforms), longest)
    for row, waveform in enumerate(waveforms):
        wavs[row, : len(waveform)] = waveform
    wav_lens = torch.tensor([len(waveform) / longest for waveform in waveforms])
    return wavs, wav_lens


def window_starts(num_samples, window, hop):
    """Start samples of windows every ``hop`` samples until one reaches the end.

    The last window may be shorter than ``window``; it is longer than the overlap.

    Example
    -------
    >>> window_starts(100, 40, 30)
    [0, 30, 60]
    >>> window_starts(30, 40, 30)
    [0]
    """
    starts = [0]
    while starts[-1] + window < num_samples:
        starts.append(starts[-1] + hop)
    return starts


class Transcriber:
    """An inference folder loaded for transcription.

    Arguments
    ---------
    folder : str or Path
        An experiment folder or its ``inference/`` folder.
    device : str
        ``cpu`` or ``cuda``.
    precision : str
        On CPU the five tests' CPU path (``ssl_ctc.cpu.decision``): ``fp32`` (the fastest
        exact kernel), ``bf16``, ``int8`` (dynamic, every linear layer) or ``auto``; on
        GPU ``fp32``, ``fp16`` or ``bf16`` autocast. With an ONNX runtime, the exported
        graph: ``fp32`` (``model.onnx``) or ``int8`` (``model.int8.onnx``).
    lm_path : str, optional
        KenLM model for the beam search (the folder's alpha, beta and beam width).
    batch_size : int
        Utterances per batch (sorted by duration).
    window_seconds : float
        Longer files are cut into windows of this length...
    overlap_seconds : float
        ...overlapping by this much.
    runtime : str
        Where the acoustic model runs: ``torch`` (the PyTorch model), ``onnxruntime`` or
        ``openvino`` (the folder's exported graph, on CPU).
    threads : int, optional
        CPU threads of the ONNX runtime (None: its default); unused by ``torch``, whose
        threads are ``torch.set_num_threads``'s.
    """

    def __init__(self, folder, device="cpu", precision="fp32", lm_path=None, batch_size=4,
                 window_seconds=30.0, overlap_seconds=4.0, runtime="torch", threads=None):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime}")
        if runtime != "torch" and (precision not in GRAPH_FILES or device != "cpu"):
            raise ValueError(f"--runtime {runtime} runs the exported graph on the CPU in "
                             f"{' or '.join(GRAPH_FILES)} (got --precision {precision}, "
                             f"--device {device})")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision}")
        if precision not in precisions_of(device):
            raise ValueError(f"--precision {precision} does not run on {device} "
                             f"({', '.join(precisions_of(device))} do)")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device} was given but no CUDA device is available")
        if not overlap_seconds < window_seconds:
            raise ValueError("the window overlap must be shorter than the window")
        if lm_path is not None and not os.path.isfile(lm_path):
            raise ValueError(f"--lm: no such file: {lm_path}")
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.runtime = runtime
        if runtime == "torch":
            self.encoder, self.hparams, self.manifest = load_inference_encoder(folder, device)
            frame_grid = self.encoder.brain.frame_grid
        else:
            self.encoder, self.hparams, self.manifest = load_exported_model(
                folder, runtime, precision, threads)
            frame_grid = self.encoder.frame_grid
        self._path_active = False
        self.cpu_decision = None  # the CPU decision of the last block (what ``auto`` chose)
        self.tokenizer = self.hparams["tokenizer"]
        self.decoding_options = {
            "lm_path": lm_path,
            "lm_unigrams_path": self.hparams.get("lm_unigrams_path"),
            **{key: self.hparams[key] for key in ("lm_alpha", "lm_beta", "lm_beam_width")},
        }
        # Windows start on the encoder's frame grid, so their frames fall on the whole file's.
        grid, self.frame_samples = frame_grid()
        self.window = max(round(window_seconds * SAMPLE_RATE / grid), 1) * grid
        self.hop = max(round((window_seconds - overlap_seconds) * SAMPLE_RATE / grid), 1) * grid
        self.normalizer = AudioNormalizer(sample_rate=SAMPLE_RATE, mix="avg-to-mono")

    @contextlib.contextmanager
    def inference_path(self, probe_waveforms=()):
        """The precision's inference path for a block (entered once, however deeply nested).

        On CPU ``ssl_ctc.cpu.decision.cpu_inference`` (measured once per block, modules
        restored after it; ``cpu_decision`` says what it chose), on GPU autocast; nothing for an
        exported graph (its runtime and file are its path).

        Arguments
        ---------
        probe_waveforms : sequence of torch.Tensor
            A batch of the files to transcribe: the CPU decision checks a reduced precision's
            output on it and, for ``auto``, times bf16 against fp32 on it.
        """
        if self._path_active or self.runtime != "torch":
            yield
            return
        probe = None
        if probe_waveforms:
            wavs, wav_lens = pad_batch(list(probe_waveforms))

            def probe():
                return self.encoder.infer_batch(wavs, wav_lens)

        path = (cpu_inference(self.encoder, self.precision, probe=probe) if self.device == "cpu"
                else autocast(self.device, self.precision))
        self._path_active = True
        try:
            with path as decision:
                if decision is not None:
                    self.cpu_decision = decision
                    logger.info(f"CPU inference: {decision.precision}, {decision.backend} kernels"
                                + (f", fp32 fallbacks: {sorted(decision.fallbacks)}"
                                   if decision.fallbacks else ""))
                yield
        finally:
            self._path_active = False

    def infer(self, waveforms):
        """Log-probs (float32, CPU), exact lengths and extras of a list of waveforms."""
        wavs, wav_lens = pad_batch(waveforms)
        with torch.inference_mode(), self.inference_path():
            output = self.encoder.infer_batch(wavs.to(self.device), wav_lens.to(self.device))
        extras = {
            name: value.cpu() for name, value in output.items()
            if name not in ("log_probs", "lengths") and torch.is_tensor(value)
            and value.dim() == 1 and len(value) == len(waveforms)
        }
        return output["log_probs"].float().cpu(), output["lengths"].cpu(), extras

    def windowed_log_probs(self, waveform):
        """Log-probs ``[T, V]`` of a long waveform from overlapping windows.

        Each window's frames are kept from the middle of its overlap with the previous
        window to the middle of its overlap with the next one. Windows start on the
        encoder's frame grid, so frame j of a window starting at sample s is frame
        ``s / frame_samples + j`` of the whole file: every frame of the file is kept
        once, from a window that gives it at least ``overlap / 2`` of context.
        """
        starts = window_starts(len(waveform), self.window, self.hop)
        pieces = []
        for first in range(0, len(starts), self.batch_size):
            group = starts[first:first + self.batch_size]
            log_probs, lengths, _ = self.infer([waveform[s:s + self.window] for s in group])
            for row, start in enumerate(group):
                index = first + row
                frames = int(lengths[row])
                keep_from = 0 if index == 0 else (start + starts[index - 1] + self.window) / 2
                keep_to = (math.inf if index == len(starts) - 1
                           else (starts[index + 1] + start + self.window) / 2)
                times = start + torch.arange(frames) * self.frame_samples
                selected = (times >= keep_from) & (times < keep_to)
                pieces.append(log_probs[row, :frames][selected])
        return torch.cat(pieces)

    def transcribe(self, paths):
        """Transcribe audio files; errors are kept per file, in input order.

        Returns
        -------
        list of TranscriptionResult
        """
        results = [TranscriptionResult(path) for path in paths]
        waveforms = {}
        for index, result in enumerate(results):
            try:
                waveforms[index] = read_audio(result.path, self.normalizer)
                result.seconds = len(waveforms[index]) / SAMPLE_RATE
            except AudioInputError as error:
                result.error = str(error)
        probe = [waveform[:self.window] for waveform in list(waveforms.values())[:self.batch_size]]
        with self.inference_path(probe):
            return self._transcribe(results, waveforms)

    def _transcribe(self, results, waveforms):
        """``transcribe`` of the files read (``waveforms``: result index -> samples)."""
        short = sorted((index for index in waveforms if len(waveforms[index]) <= self.window),
                       key=lambda index: len(waveforms[index]))
        for first in range(0, len(short), self.batch_size):
            batch = short[first:first + self.batch_size]
            log_probs, lengths, extras = self.infer([waveforms[index] for index in batch])
            words = decode_words(log_probs, lengths, self.tokenizer, **self.decoding_options)
            for row, index in enumerate(batch):
                results[index].words = words[row]
                results[index].extras = {name: value[row].item() for name, value in extras.items()}
        for index in waveforms:
            if len(waveforms[index]) > self.window:
                logger.info(f"{results[index].path}: {results[index].seconds:.1f} s, cut into "
                            f"windows of {self.window / SAMPLE_RATE:.1f} s")
                log_probs = self.windowed_log_probs(waveforms[index])
                results[index].words = decode_words(
                    log_probs[None], torch.tensor([len(log_probs)]), self.tokenizer,
                    **self.decoding_options
                )[0]
        return results


def transcribe_files(folder, inputs, **options):
    """Expand the inputs, load the folder, transcribe; return the results and the seconds spent.

    Arguments
    ---------
    folder : str or Path
        Experiment or inference folder.
    inputs : list of str
        Audio files, folders of audio, lists of paths.
    **options
        ``Transcriber`` options.

    Returns
    -------
    tuple
        ``(results, load_seconds, transcribe_seconds)``.
    """
    paths = expand_inputs(inputs)  # before the model loads: a wrong input fails at once
    start = time.perf_counter()
    transcriber = Transcriber(folder, **options)
    loaded = time.perf_counter()
    results = transcriber.transcribe(paths)
    return results, loaded - start, time.perf_counter() - loaded
