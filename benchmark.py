#!/usr/bin/env python3
"""Inference benchmark of the fine-tuned SSL + CTC models: the paper's five tests.

At the end of every experiment (and with ``--test_only``) each strategy script
measures the trained model on every test set with five tests (Zaiem et al. 2023):

1. GPU, greedy CTC decoding;
2. GPU, CTC beam search with a KenLM n-gram LM (pyctcdecode);
3. CPU, greedy CTC decoding;
4. CPU, CTC beam search with the LM;
5. multiply-accumulate operations (MACs) per test batch, counted on CPU.

The benchmark knows nothing about strategies. It takes a Brain that provides
``infer_batch(wavs, wav_lens) -> {"log_probs", "lengths", ...}``, the test
datasets, ``BenchmarkSettings`` and the strategy's tags, and appends one record
per test and test set to ``<output_folder>/benchmark.json`` and
``benchmark.csv``. A test that cannot run (no CUDA device, no LM configured) is
recorded as skipped, with its reason.

Timing covers the whole split (data loading, forward, decoding and scoring:
the paper's number), after warm-up batches, with ``torch.inference_mode()``, a
fixed CPU thread count and ``torch.cuda.synchronize()`` before a GPU timer is
read. The LM is loaded once, outside the timing, and its beam search runs in a
process pool while the next batches go through the acoustic model. MACs are
counted in a separate pass with ptflops' ATen backend (attention products
included), next to the module-hook count that the paper's numbers correspond to.

Usage
-----
In a recipe script::

    settings = benchmark.BenchmarkSettings.from_hparams(hparams)
    settings.validate()  # at start-up, before training
    ...
    benchmark.run_five_tests(brain, test_datasets, settings, tags, output_folder)

From the command line, to tabulate and plot every benchmark.json under a folder::

    python benchmark.py summarize results/
"""

import argparse
import collections
import contextlib
import csv
import dataclasses
import datetime
import gzip
import importlib
import importlib.metadata
import io
import itertools
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from ptflops import get_model_complexity_info
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.utils.metric_stats import ErrorRateStats

from front_end import channels_first_front_ends

RESULTS_JSON = "benchmark.json"
RESULTS_CSV = "benchmark.csv"
SUMMARY_MARKDOWN = "summary.md"
SUMMARY_CSV = "summary.csv"

TEST_ITEM_KEYS = ["id", "sig", "wrd", "duration"]
TEST_SORTING = "ascending duration"

CPU_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
GPU_PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")
ARPA_SUFFIXES = (".arpa", ".arpa.gz")
LM_PACKAGES = ("kenlm", "pyctcdecode")
SPECIAL_LABEL_PATTERN = re.compile(r"^<[^<>]+>$")

GPU_TESTS = (("gpu_greedy", False), ("gpu_lm", True))
CPU_TESTS = (("cpu_greedy", False), ("cpu_lm", True))
MAC_TEST = "macs"
REPORTED_VERSIONS = (
    "torch",
    "torchaudio",
    "transformers",
    "speechbrain",
    "ptflops",
    "pyctcdecode",
    "kenlm",
    "numpy",
)


# ---------------------------------------------------------------- settings
@dataclasses.dataclass
class BenchmarkSettings:
    """What the five tests run with; read from the recipe's YAML.

    Arguments
    ---------
    batch_size : int
        Test batch size (YAML ``benchmark_batch_size``; 4 in the paper).
    devices : list of str
        Devices of the timed tests (``benchmark_devices``): "cuda", "cuda:N",
        "cpu". A listed GPU without CUDA available gives skipped records.
    cpu_threads : int, optional
        ``torch.set_num_threads`` during the tests (``benchmark_cpu_threads``);
        None keeps torch's current number. Always recorded.
    warmup_batches : int
        Untimed batches before each timed pass (``benchmark_warmup_batches``).
    cpu_precision : str
        "fp32" or "bf16" (autocast) on CPU (``benchmark_cpu_precision``).
    gpu_precision : str
        "fp32", "fp16" or "bf16" (autocast) on GPU (``benchmark_gpu_precision``).
    mac_batches : int, optional
        Number of test batches whose MACs are counted (``benchmark_mac_batches``);
        None counts every batch.
    lm_path : str, optional
        KenLM model, ARPA (.arpa, .arpa.gz) or binary (``lm_path``); None skips
        the LM tests.
    lm_unigrams_path : str, optional
        Text file of the LM's words, needed with a binary LM (``lm_unigrams_path``).
    lm_alpha : float
        LM weight of the shallow fusion (``lm_alpha``).
    lm_beta : float
        Word insertion bonus (``lm_beta``).
    lm_beam_width : int
        Beam width (``lm_beam_width``; 100 is pyctcdecode's default).
    lm_decode_workers : int
        Processes that run the beam search (``lm_decode_workers``); 1 decodes
        in the main process.

    Example
    -------
    >>> settings = BenchmarkSettings.from_hparams({"benchmark_batch_size": 8})
    >>> settings.batch_size, settings.devices, settings.lm_alpha
    (8, ['cuda', 'cpu'], 0.5)
    >>> settings.validate()
    """

    batch_size: int = 4
    devices: list = dataclasses.field(default_factory=lambda: ["cuda", "cpu"])
    cpu_threads: int | None = None
    warmup_batches: int = 2
    cpu_precision: str = "fp32"
    gpu_precision: str = "fp32"
    mac_batches: int | None = None
    lm_path: str | None = None
    lm_unigrams_path: str | None = None
    lm_alpha: float = 0.5
    lm_beta: float = 1.0
    lm_beam_width: int = 100
    lm_decode_workers: int = 2

    # Field name -> YAML key.
    HPARAM_KEYS = {
        "batch_size": "benchmark_batch_size",
        "devices": "benchmark_devices",
        "cpu_threads": "benchmark_cpu_threads",
        "warmup_batches": "benchmark_warmup_batches",
        "cpu_precision": "benchmark_cpu_precision",
        "gpu_precision": "benchmark_gpu_precision",
        "mac_batches": "benchmark_mac_batches",
        "lm_path": "lm_path",
        "lm_unigrams_path": "lm_unigrams_path",
        "lm_alpha": "lm_alpha",
        "lm_beta": "lm_beta",
        "lm_beam_width": "lm_beam_width",
        "lm_decode_workers": "lm_decode_workers",
    }

    @classmethod
    def from_hparams(cls, hparams):
        """Reads the settings from a hyperparameter dict, with defaults for
        absent keys (see the class arguments for the keys)."""
        values = {field: hparams[key] for field, key in cls.HPARAM_KEYS.items() if key in hparams}
        if isinstance(values.get("devices"), str):
            values["devices"] = [values["devices"]]
        for path_field in ("lm_path", "lm_unigrams_path"):
            if values.get(path_field) is not None:
                values[path_field] = str(values[path_field])
        return cls(**values)

    def validate(self):
        """Fails fast on settings that would only break the tests at the end
        of training.

        Raises
        ------
        ValueError
            A value out of range or an unknown device or precision name.
        FileNotFoundError
            ``lm_path`` or ``lm_unigrams_path`` names no file.
        ImportError
            An LM is configured but kenlm or pyctcdecode cannot be imported.

        Example
        -------
        >>> BenchmarkSettings(batch_size=0).validate()
        Traceback (most recent call last):
        ...
        ValueError: benchmark_batch_size must be a positive integer, got 0
        """
        for field in ("batch_size", "lm_beam_width", "lm_decode_workers"):
            self._check_integer(field, getattr(self, field), minimum=1)
        self._check_integer("warmup_batches", self.warmup_batches, minimum=0)
        for field in ("cpu_threads", "mac_batches"):
            if getattr(self, field) is not None:
                self._check_integer(field, getattr(self, field), minimum=1)
        for device in self.devices:
            if not DEVICE_PATTERN.match(str(device)):
                raise ValueError(
                    f"{self.HPARAM_KEYS['devices']}: unknown device {device!r} "
                    "(expected 'cpu', 'cuda' or 'cuda:N')"
                )
        for field, known in (
            ("cpu_precision", CPU_PRECISIONS),
            ("gpu_precision", GPU_PRECISIONS),
        ):
            if getattr(self, field) not in known:
                raise ValueError(
                    f"{self.HPARAM_KEYS[field]}: unknown precision "
                    f"{getattr(self, field)!r} (expected one of {sorted(known)})"
                )
        for field in ("lm_alpha", "lm_beta"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"{self.HPARAM_KEYS[field]} must be a finite number, got {value!r}"
                )
        if self.lm_path is not None:
            self._validate_lm()

    def _check_integer(self, field, value, minimum):
        """Raises a ValueError naming the YAML key unless value is an
        integer >= minimum."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            kind = "a positive" if minimum == 1 else "a non-negative"
            raise ValueError(f"{self.HPARAM_KEYS[field]} must be {kind} integer, got {value!r}")

    def _validate_lm(self):
        """Checks the LM files and packages."""
        if not Path(self.lm_path).is_file():
            raise FileNotFoundError(f"lm_path: no such file: {self.lm_path}")
        if self.lm_unigrams_path is not None:
            if not Path(self.lm_unigrams_path).is_file():
                raise FileNotFoundError(f"lm_unigrams_path: no such file: {self.lm_unigrams_path}")
        elif not is_arpa(self.lm_path):
            raise ValueError(
                f"lm_unigrams_path is needed with a binary KenLM model "
                f"(lm_path={self.lm_path}): a text file of the LM's words"
            )
        for package in LM_PACKAGES:
            try:
                importlib.import_module(package)
            except ImportError as error:
                raise ImportError(
                    f"lm_path={self.lm_path} needs the '{package}' package "
                    f"(pip install {package}): {error}"
                ) from error


# ---------------------------------------------------------------- data
def make_test_loader(dataset, batch_size):
    """Batches a test set in ascending duration, padded with PaddedBatch.

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        Items provide "id", "sig", "wrd" and "duration"; the dataset itself
        is left unchanged (the sorted copy has its own output keys).
    batch_size : int
        Utterances per batch.

    Returns
    -------
    torch.utils.data.DataLoader

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> dataset = DynamicItemDataset({
    ...     "long": {"sig": torch.zeros(300), "wrd": "B", "duration": 3.0},
    ...     "short": {"sig": torch.zeros(100), "wrd": "A", "duration": 1.0},
    ... })
    >>> [batch.id for batch in make_test_loader(dataset, batch_size=1)]
    [['short'], ['long']]
    """
    sorted_dataset = dataset.filtered_sorted(sort_key="duration")
    sorted_dataset.set_output_keys(TEST_ITEM_KEYS)
    return torch.utils.data.DataLoader(
        sorted_dataset, batch_size=batch_size, collate_fn=PaddedBatch
    )


# ---------------------------------------------------------------- decoding
def greedy_decode(log_probs, lengths, tokenizer):
    """Best-path CTC decoding of a batch into lists of words.

    Arguments
    ---------
    log_probs : torch.Tensor
        [batch, frames, labels] CTC log-probabilities.
    lengths : torch.Tensor
        True number of frames of each utterance.
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
        Character encoder with a blank label; " " separates words.

    Returns
    -------
    list of list of str

    Example
    -------
    >>> tokenizer = _example_tokenizer()
    >>> labels = ["H", "H", "<blank>", "I", " ", "Y", "Y"]
    >>> frames = [tokenizer.lab2ind[label] for label in labels]
    >>> log_probs = torch.nn.functional.one_hot(torch.tensor([frames]), 8).float()
    >>> greedy_decode(log_probs.log(), torch.tensor([len(frames)]), tokenizer)
    [['HI', 'Y']]
    >>> greedy_decode(log_probs.log(), torch.tensor([3]), tokenizer)
    [['H']]
    """
    relative_lengths = lengths.float() / log_probs.shape[1]
    sequences = ctc_greedy_decode(log_probs, relative_lengths, blank_id=tokenizer.get_blank_index())
    return ["".join(characters).split() for characters in tokenizer.decode_ndim(sequences)]


def _example_tokenizer():
    """A CTCTextEncoder over blank, bos, eos, "H", "I", "Y", " " and "'", for
    examples and tests.

    Returns
    -------
    speechbrain.dataio.encoder.CTCTextEncoder

    Example
    -------
    >>> _example_tokenizer().ind2lab[0]
    '<blank>'
    """
    tokenizer = CTCTextEncoder()
    tokenizer.insert_blank(index=0)
    tokenizer.insert_bos_eos(bos_label="<bos>", eos_label="<eos>", bos_index=1)
    tokenizer.update_from_iterable("HIY '", sequence_input=False)
    tokenizer.ignore_len()
    return tokenizer


def pyctcdecode_labels(tokenizer):
    """The label list pyctcdecode needs, and the log-prob columns it covers.

    SpeechBrain's blank label becomes "" (pyctcdecode does not recognise
    "<blank>" and would append a blank of its own, shifting every label).
    Other bracketed labels ("<bos>", "<eos>", "<unk>") are never part of a
    transcript: their columns are dropped, so that they cannot be emitted or
    taken for word pieces; pyctcdecode renormalises the remaining columns.

    Arguments
    ---------
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder

    Returns
    -------
    labels : list of str
    kept_indices : list of int
        The tokenizer indices of ``labels``, in order.

    Example
    -------
    >>> labels, kept_indices = pyctcdecode_labels(_example_tokenizer())
    >>> labels
    ['', 'H', 'I', 'Y', ' ', "'"]
    >>> kept_indices
    [0, 3, 4, 5, 6, 7]
    """
    blank_label = tokenizer.blank_label
    labels, kept_indices = [], []
    for index in range(len(tokenizer.ind2lab)):
        label = tokenizer.ind2lab[index]
        if label == blank_label:
            labels.append("")
        elif SPECIAL_LABEL_PATTERN.match(label):
            continue
        else:
            labels.append(label)
        kept_indices.append(index)
    return labels, kept_indices


def trim_log_probs(log_probs, lengths, kept_indices):
    """Cuts each utterance's log-probs to its true length, as float32 numpy
    arrays of the kept label columns: no padding frame reaches the decoder.

    Arguments
    ---------
    log_probs : torch.Tensor
        [batch, frames, labels], possibly padded.
    lengths : torch.Tensor
        True number of frames of each utterance.
    kept_indices : list of int
        Label columns to keep (see ``pyctcdecode_labels``).

    Returns
    -------
    list of numpy.ndarray
        One [length, len(kept_indices)] array per utterance.

    Example
    -------
    >>> trimmed = trim_log_probs(torch.zeros(2, 5, 4), torch.tensor([5, 2]), [0, 2])
    >>> [array.shape for array in trimmed]
    [(5, 2), (2, 2)]
    """
    selected = log_probs[..., kept_indices].float().cpu().numpy()
    return [selected[utterance, :length] for utterance, length in enumerate(lengths.tolist())]


def is_arpa(lm_path):
    """Whether a KenLM file is ARPA text (else binary), by its name.

    Arguments
    ---------
    lm_path : str

    Returns
    -------
    bool

    Example
    -------
    >>> is_arpa("4-gram.arpa.gz"), is_arpa("4-gram.bin")
    (True, False)
    """
    return str(lm_path).lower().endswith(ARPA_SUFFIXES)


def read_unigrams(lm_path, unigrams_path=None):
    """The LM's words: from ``unigrams_path`` (whitespace-separated words) if
    given, else from the 1-gram section of the ARPA file (plain or gzip).

    Arguments
    ---------
    lm_path : str
    unigrams_path : str, optional

    Returns
    -------
    list of str
        Without the <s>, </s> and <unk> tokens.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     arpa = Path(folder) / "lm.arpa"
    ...     _ = arpa.write_text(
    ...         "\\\\data\\\\\\nngram 1=3\\n\\n\\\\1-grams:\\n-1.0\\t<s>\\n"
    ...         "-0.5\\tHI\\n-0.5\\tYE\\n\\n\\\\end\\\\\\n"
    ...     )
    ...     read_unigrams(arpa)
    ['HI', 'YE']
    """
    if unigrams_path is not None:
        return Path(unigrams_path).read_text().split()
    opener = gzip.open if str(lm_path).endswith(".gz") else open
    unigrams, in_unigrams = [], False
    with opener(lm_path, "rt") as arpa:
        for line in arpa:
            line = line.strip()
            if line == "\\1-grams:":
                in_unigrams = True
            elif line.startswith("\\"):
                if in_unigrams:
                    break
            elif in_unigrams and line:
                word = line.split()[1]
                if word not in ("<s>", "</s>", "<unk>"):
                    unigrams.append(word)
    return unigrams


# The decoder of a pool worker process: a forked worker inherits the one that
# LMDecoder sets here just while it starts the pool; a spawned worker (or one
# that replaces a dead worker) loads its own in the pool initializer.
_worker_decoder = None


def _load_worker_decoder(decoder_arguments):
    """Pool initializer: loads the decoder unless it was inherited."""
    global _worker_decoder
    if _worker_decoder is None:
        _worker_decoder = _build_decoder(**decoder_arguments)


def _build_decoder(labels, lm_path, unigrams_path, alpha, beta):
    """Builds pyctcdecode's beam search decoder with a KenLM model."""
    import pyctcdecode

    return pyctcdecode.build_ctcdecoder(
        labels,
        kenlm_model_path=str(lm_path),
        unigrams=read_unigrams(lm_path, unigrams_path),
        alpha=alpha,
        beta=beta,
    )


def _timed_beam_search(decoder, log_probs, beam_width):
    """Decodes one trimmed utterance; returns its text and the seconds spent."""
    start = time.perf_counter()
    text = decoder.decode(log_probs, beam_width=beam_width)
    return text, time.perf_counter() - start


def _worker_beam_search(log_probs, beam_width):
    """``_timed_beam_search`` with the worker process's decoder."""
    return _timed_beam_search(_worker_decoder, log_probs, beam_width)


class _Decoded:
    """An in-process decoding result with the interface of an AsyncResult."""

    def __init__(self, value):
        self.value = value

    def get(self):
        """Returns the decoded (text, seconds) pairs."""
        return self.value


class LMDecoder:
    """CTC beam search with a KenLM n-gram LM (pyctcdecode), asynchronous.

    The LM is loaded once when the decoder is built (``load_time_s``). With
    several workers, a process pool is started once ('fork' on Linux, where
    the workers inherit the loaded LM; 'spawn' elsewhere, where each worker
    loads it); ``submit`` queues a batch and returns at once, so the beam
    search of batch i runs while batch i + 1 goes through the acoustic model.
    (pyctcdecode's ``decode_batch(pool, ...)`` maps the same per-utterance
    decode over a pool, but blocks until the batch is done and falls back to
    sequential decoding with a spawn pool.) Use it as a context manager, or
    call ``close``.

    Arguments
    ---------
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
        Character encoder of the acoustic model's outputs.
    settings : BenchmarkSettings
        LM path, unigrams, alpha, beta, beam width and workers.

    Example
    -------
    >>> import tempfile
    >>> tokenizer = _example_tokenizer()
    >>> labels = ["H", "H", "<blank>", "I", " ", "Y"]
    >>> frames = [tokenizer.lab2ind[label] for label in labels]
    >>> log_probs = torch.nn.functional.one_hot(torch.tensor([frames]), 8)
    >>> log_probs = (log_probs + 1e-3).log().log_softmax(dim=-1)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     arpa = Path(folder) / "lm.arpa"
    ...     _ = arpa.write_text(
    ...         "\\\\data\\\\\\nngram 1=4\\nngram 2=1\\n\\n\\\\1-grams:\\n"
    ...         "-1.0\\t<unk>\\n-1.0\\t<s>\\t-0.3\\n-1.0\\t</s>\\n-0.5\\tHI\\t-0.3\\n\\n"
    ...         "\\\\2-grams:\\n-0.1\\t<s> HI\\n\\n\\\\end\\\\\\n"
    ...     )
    ...     settings = BenchmarkSettings(lm_path=str(arpa), lm_decode_workers=1)
    ...     with LMDecoder(tokenizer, settings) as lm_decoder:
    ...         lm_decoder.decode(log_probs, torch.tensor([len(frames)]))
    [['HI', 'Y']]
    """

    def __init__(self, tokenizer, settings):
        global _worker_decoder
        self.settings = settings
        labels, self.kept_indices = pyctcdecode_labels(tokenizer)
        decoder_arguments = {
            "labels": labels,
            "lm_path": settings.lm_path,
            "unigrams_path": settings.lm_unigrams_path,
            "alpha": settings.lm_alpha,
            "beta": settings.lm_beta,
        }
        start = time.perf_counter()
        self.decoder = _build_decoder(**decoder_arguments)
        self.load_time_s = time.perf_counter() - start
        self.beam_search_time_s = 0.0
        self.start_method = None
        self.pool = None
        if settings.lm_decode_workers > 1:
            self.start_method = "fork" if sys.platform.startswith("linux") else "spawn"
            context = multiprocessing.get_context(self.start_method)
            _worker_decoder = self.decoder
            try:
                self.pool = context.Pool(
                    settings.lm_decode_workers,
                    initializer=_load_worker_decoder,
                    initargs=(decoder_arguments,),
                )
            finally:
                _worker_decoder = None

    def submit(self, log_probs, lengths):
        """Queues the beam search of a batch.

        Arguments
        ---------
        log_probs : torch.Tensor
            [batch, frames, labels] CTC log-probabilities, possibly padded.
        lengths : torch.Tensor
            True number of frames of each utterance (the rest is cut off).

        Returns
        -------
        A pending result, to pass to ``collect``.
        """
        utterances = trim_log_probs(log_probs, lengths, self.kept_indices)
        beam_width = self.settings.lm_beam_width
        if self.pool is None:
            return _Decoded(
                [_timed_beam_search(self.decoder, item, beam_width) for item in utterances]
            )
        return self.pool.starmap_async(
            _worker_beam_search, [(item, beam_width) for item in utterances]
        )

    def collect(self, pending):
        """Waits for a submitted batch; returns its upper-case word lists."""
        decoded = pending.get()
        self.beam_search_time_s += sum(seconds for _, seconds in decoded)
        return [text.upper().split() for text, _ in decoded]

    def decode(self, log_probs, lengths):
        """Decodes a batch and waits for it (see ``submit``)."""
        return self.collect(self.submit(log_probs, lengths))

    def close(self):
        """Stops the worker processes and frees the LM."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        self.decoder.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()


# ---------------------------------------------------------------- MAC counting
def _attention_product_macs(inputs, outputs):
    """MACs of a fused scaled-dot-product attention op: Q K^T and A V."""
    query, key, value = inputs[:3]
    return query.shape[:-1].numel() * key.shape[-2] * (query.shape[-1] + value.shape[-1])


def _baddbmm_macs(inputs, outputs):
    """MACs of aten.baddbmm (bias + batch1 @ batch2), the bias counted as in
    ptflops' addmm."""
    batch1, batch2 = inputs[1], inputs[2]
    return batch1.shape.numel() * batch2.shape[-1] + outputs[0].shape.numel()


def _aten_mac_formulas():
    """ATen ops that ptflops' table lacks, with their MAC formulas."""
    attention_ops = (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    )
    formulas = {
        getattr(torch.ops.aten, name): _attention_product_macs
        for name in attention_ops
        if hasattr(torch.ops.aten, name)
    }
    formulas[torch.ops.aten.baddbmm] = _baddbmm_macs
    return formulas


class _InferBatchModule(torch.nn.Module):
    """Presents ``brain.infer_batch`` to ptflops as a module returning the
    log-probabilities; keeps the whole output in ``last_output``.

    ``modules`` are registered as children only when module hooks must see
    them (ptflops' "pytorch" backend); the "aten" backend counts dispatched
    ops and would leave hooks behind on children.
    """

    def __init__(self, infer_batch, modules=None):
        super().__init__()
        self.infer_batch = infer_batch
        self.inference_modules = modules
        self.last_output = None

    def forward(self, wavs, wav_lens):
        """Runs infer_batch; returns its log-probabilities."""
        self.last_output = self.infer_batch(wavs, wav_lens)
        return self.last_output["log_probs"]


def _ptflops_count(module, wavs, wav_lens, backend, custom_hooks):
    """Runs ptflops on one batch; raises with ptflops' output if it fails."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        macs, _ = get_model_complexity_info(
            module,
            (wavs.shape[-1],),
            input_constructor=lambda _: {"wavs": wavs, "wav_lens": wav_lens},
            print_per_layer_stat=False,
            as_strings=False,
            backend=backend,
            custom_modules_hooks=custom_hooks,
            ost=printed,
        )
    if macs is None:
        raise RuntimeError(f"ptflops ({backend} backend) failed:\n{printed.getvalue()}")
    return int(macs)


def count_macs(infer_batch, wavs, wav_lens):
    """Counts the MACs of one call of ``infer_batch``, at the ATen level.

    Every matrix product and convolution that runs is counted (ptflops
    ``backend="aten"``), including the attention products of the fused
    scaled-dot-product attention ops, which ptflops' own table lacks. Runs
    under ``torch.no_grad()`` (ptflops' dispatch mode counts nothing under
    ``torch.inference_mode()``).

    Arguments
    ---------
    infer_batch : callable
        ``infer_batch(wavs, wav_lens) -> {"log_probs": ..., ...}``.
    wavs : torch.Tensor
        [batch, samples] waveforms.
    wav_lens : torch.Tensor
        Relative lengths.

    Returns
    -------
    macs : int
    output : dict
        What infer_batch returned.

    Example
    -------
    >>> linear = torch.nn.Linear(160, 8)
    >>> def infer_batch(wavs, wav_lens):
    ...     frames = wavs.view(wavs.shape[0], -1, 160)
    ...     return {"log_probs": linear(frames).log_softmax(-1)}
    >>> count_macs(infer_batch, torch.zeros(2, 1600), torch.ones(2))[0]
    25760
    """
    module = _InferBatchModule(infer_batch)
    with torch.no_grad():
        macs = _ptflops_count(module, wavs, wav_lens, "aten", _aten_mac_formulas())
    return macs, module.last_output


def count_module_hook_macs(infer_batch, modules, wavs, wav_lens):
    """Counts the MACs of one call of ``infer_batch`` with module hooks
    (ptflops ``backend="pytorch"``), like the thop count of the paper.

    Module hooks only see modules that are called: they miss functional
    calls such as WavLM's attention (projections passed as weights, and the
    products) and the weight-normed positional convolution, so this is lower
    than ``count_macs``; it is reported to compare with the paper's numbers.
    CNN front ends run as Hugging Face's ``Conv1d`` layers while counting
    (``front_end.channels_first_front_ends``), so that the hooks see them.

    Arguments
    ---------
    infer_batch : callable
        ``infer_batch(wavs, wav_lens) -> {"log_probs": ..., ...}``.
    modules : torch.nn.Module
        The modules infer_batch runs (hooked while counting).
    wavs : torch.Tensor
        [batch, samples] waveforms.
    wav_lens : torch.Tensor
        Relative lengths.

    Returns
    -------
    int

    Example
    -------
    >>> linear = torch.nn.Linear(160, 8)
    >>> def infer_batch(wavs, wav_lens):
    ...     frames = wavs.view(wavs.shape[0], -1, 160)
    ...     return {"log_probs": linear(frames).log_softmax(-1)}
    >>> count_module_hook_macs(infer_batch, linear, torch.zeros(2, 1600), torch.ones(2))
    25760
    """
    module = _InferBatchModule(infer_batch, modules)
    with torch.no_grad(), channels_first_front_ends(module):
        return _ptflops_count(module, wavs, wav_lens, "pytorch", {})


# ---------------------------------------------------------------- records
def summarize_extras(extras):
    """Aggregates per-utterance strategy outputs (e.g. exit layers).

    Arguments
    ---------
    extras : dict
        Name -> list of 1-D tensors (one per batch).

    Returns
    -------
    dict
        Name -> {"mean", "min", "max"} and, for integer values, a
        "distribution" of [value, count] pairs.

    Example
    -------
    >>> batches = [torch.tensor([13, 15]), torch.tensor([13])]
    >>> summarize_extras({"exit_layers": batches})["exit_layers"]
    {'mean': 13.666666666666666, 'min': 13, 'max': 15, 'distribution': [[13, 2], [15, 1]]}
    """
    summary = {}
    for name, batches in extras.items():
        values = torch.cat([batch.flatten().cpu() for batch in batches])
        stats = {
            "mean": values.double().mean().item(),
            "min": values.min().item(),
            "max": values.max().item(),
        }
        if not values.is_floating_point():
            counts = collections.Counter(values.tolist())
            stats["distribution"] = [[value, counts[value]] for value in sorted(counts)]
        summary[name] = stats
    return summary


def _per_utterance_extras(output, batch_size):
    """The entries of an infer_batch output other than log_probs and lengths
    that hold one value per utterance."""
    return {
        name: value.detach()
        for name, value in output.items()
        if name not in ("log_probs", "lengths")
        and torch.is_tensor(value)
        and value.dim() == 1
        and len(value) == batch_size
    }


def flatten_record(record, prefix=""):
    """Flattens nested dicts into dotted keys, for CSV; lists become JSON.

    Arguments
    ---------
    record : dict
    prefix : str
        Prepended to every key.

    Returns
    -------
    dict

    Example
    -------
    >>> flatten_record({"wer": 4.1, "lm": {"alpha": 0.5}, "d": [[13, 2]]})
    {'wer': 4.1, 'lm.alpha': 0.5, 'd': '[[13, 2]]'}
    """
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten_record(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = json.dumps(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _write_atomically(path, text):
    """Writes a file through a temporary file and os.replace: readers see the
    old or the new content, never a partial one."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as temporary:
        temporary.write(text)
        temporary.flush()
        os.fsync(temporary.fileno())
    os.replace(temporary.name, path)


def _csv_text(rows):
    """CSV text of dict rows, columns in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def append_records(records, output_folder):
    """Adds records to ``benchmark.json`` (kept, never overwritten) and
    rewrites ``benchmark.csv`` from all of them, both atomically.

    Arguments
    ---------
    records : list of dict
    output_folder : str or Path

    Returns
    -------
    list of dict
        Every record of the folder.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = append_records([{"test": "cpu_greedy"}], folder)
    ...     len(append_records([{"test": "macs"}], folder))
    2
    """
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    json_path = output_folder / RESULTS_JSON
    previous = json.loads(json_path.read_text()) if json_path.exists() else []
    all_records = previous + list(records)
    _write_atomically(json_path, json.dumps(all_records, indent=2) + "\n")
    _write_atomically(
        output_folder / RESULTS_CSV,
        _csv_text([flatten_record(record) for record in all_records]),
    )
    return all_records


def _versions():
    """Versions of Python and of the packages that shape the numbers."""
    versions = {"python": platform.python_version()}
    for package in REPORTED_VERSIONS:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def cpu_name():
    """CPU model from /proc/cpuinfo, else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _device_name(device):
    """Human-readable name of a device."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return cpu_name()


def _lm_fields(settings, lm_decoder):
    """The LM settings of an LM record."""
    return {
        "path": settings.lm_path,
        "unigrams_path": settings.lm_unigrams_path,
        "alpha": settings.lm_alpha,
        "beta": settings.lm_beta,
        "beam_width": settings.lm_beam_width,
        "decode_workers": settings.lm_decode_workers,
        "pool_start_method": lm_decoder.start_method if lm_decoder else None,
        "load_time_s": lm_decoder.load_time_s if lm_decoder else None,
    }


# ---------------------------------------------------------------- timed tests
def _synchronize(device):
    """Waits for the GPU's queued work, so that a timer read is true."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _autocast(device, precision):
    """Autocast context for a precision name ("fp32": none)."""
    dtype = (GPU_PRECISIONS if device.startswith("cuda") else CPU_PRECISIONS)[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _peak_memory(device):
    """Peak memory in MiB, and what it measures."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kibibytes on Linux, bytes on macOS.
    divisor = 2**20 if sys.platform == "darwin" else 2**10
    return peak_rss / divisor, "process_peak_rss"


def _transcribe(brain, batches, device, precision, lm_decoder, timers):
    """Runs the model and the decoder over batches; adds the seconds spent
    loading data, in the forward and decoding to ``timers``."""
    ids, references, hypotheses, pending = [], [], [], []
    extras = collections.defaultdict(list)
    audio_seconds = 0.0
    data_start = time.perf_counter()
    for batch in batches:
        wavs = batch.sig.data.to(device)
        wav_lens = batch.sig.lengths.to(device)
        forward_start = time.perf_counter()
        timers["data"] += forward_start - data_start
        with _autocast(device, precision):
            output = brain.infer_batch(wavs, wav_lens)
        _synchronize(device)
        decode_start = time.perf_counter()
        timers["forward"] += decode_start - forward_start
        log_probs = output["log_probs"].float()
        if lm_decoder is None:
            hypotheses.extend(greedy_decode(log_probs, output["lengths"], brain.tokenizer))
        else:
            pending.append(lm_decoder.submit(log_probs, output["lengths"]))
        timers["decode"] += time.perf_counter() - decode_start
        ids.extend(batch.id)
        references.extend(words.split() for words in batch.wrd)
        audio_seconds += float(batch.duration.sum())
        for name, values in _per_utterance_extras(output, len(batch.id)).items():
            extras[name].append(values)
        data_start = time.perf_counter()
    wait_start = time.perf_counter()
    for batch_result in pending:
        hypotheses.extend(lm_decoder.collect(batch_result))
    timers["decode"] += time.perf_counter() - wait_start
    return ids, references, hypotheses, audio_seconds, extras


def _run_inference_test(brain, dataset, settings, device, lm_decoder):
    """Warm-up, then one timed pass over a test set; returns the measures."""
    precision = settings.gpu_precision if device.startswith("cuda") else settings.cpu_precision
    loader = make_test_loader(dataset, settings.batch_size)
    with torch.inference_mode():
        warmup_batches = itertools.islice(loader, settings.warmup_batches)
        _transcribe(brain, warmup_batches, device, precision, lm_decoder, collections.Counter())
        _synchronize(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        beam_search_before = lm_decoder.beam_search_time_s if lm_decoder else 0.0
        timers = collections.Counter()
        start = time.perf_counter()
        ids, references, hypotheses, audio_seconds, extras = _transcribe(
            brain, loader, device, precision, lm_decoder, timers
        )
        wer_stats = ErrorRateStats()
        cer_stats = ErrorRateStats(split_tokens=True)
        wer_stats.append(ids, hypotheses, references)
        cer_stats.append(ids, hypotheses, references)
        wer, cer = wer_stats.summarize("error_rate"), cer_stats.summarize("error_rate")
        total_time_s = time.perf_counter() - start
    peak_memory_mb, peak_memory_kind = _peak_memory(device)
    measures = {
        "precision": precision,
        "warmup_batches": settings.warmup_batches,
        "num_utterances": len(ids),
        "num_batches": math.ceil(len(ids) / settings.batch_size),
        "audio_seconds": audio_seconds,
        "total_time_s": total_time_s,
        "forward_time_s": timers["forward"],
        "decode_time_s": timers["decode"],
        "data_time_s": timers["data"],
        "real_time_factor": total_time_s / audio_seconds,
        "inverse_real_time_factor": audio_seconds / total_time_s,
        "ms_per_utterance": 1000 * total_time_s / len(ids),
        "peak_memory_mb": peak_memory_mb,
        "peak_memory_kind": peak_memory_kind,
        "wer": wer,
        "cer": cer,
        "wer_details": {
            key: wer_stats.summarize(key)
            for key in ("num_scored_tokens", "insertions", "deletions", "substitutions")
        },
        "extras": summarize_extras(extras),
    }
    if lm_decoder is not None:
        measures["lm_beam_search_time_s"] = lm_decoder.beam_search_time_s - beam_search_before
    return measures


def evenly_spaced_indices(total, count=None):
    """``count`` indices spread evenly over ``range(total)`` (all of them if count is None).

    Test batches are sorted by duration, so the first batches are the shortest;
    spreading the counted batches keeps the mean MACs per batch unbiased.

    Example
    -------
    >>> sorted(evenly_spaced_indices(10, 3))
    [0, 4, 9]
    >>> len(evenly_spaced_indices(5))
    5
    """
    if count is None or count >= total:
        return set(range(total))
    if count == 1:
        return {total // 2}
    return {round(i * (total - 1) / (count - 1)) for i in range(count)}


def _run_mac_test(brain, dataset, settings):
    """Counts the MACs of ``mac_batches`` test batches spread evenly over the sorted set, on CPU."""
    loader = make_test_loader(dataset, settings.batch_size)
    counted = evenly_spaced_indices(len(loader), settings.mac_batches)
    aten_macs, hook_macs, extras = [], [], collections.defaultdict(list)
    audio_seconds, utterances = 0.0, 0
    start = time.perf_counter()
    for index, batch in enumerate(loader):
        if index not in counted:
            continue
        macs, output = count_macs(brain.infer_batch, batch.sig.data, batch.sig.lengths)
        aten_macs.append(macs)
        hook_macs.append(
            count_module_hook_macs(
                brain.infer_batch, brain.modules, batch.sig.data, batch.sig.lengths
            )
        )
        audio_seconds += float(batch.duration.sum())
        utterances += len(batch.id)
        for name, values in _per_utterance_extras(output, len(batch.id)).items():
            extras[name].append(values)
    return {
        "precision": "fp32",
        "counter": "ptflops aten backend + SDPA formulas",
        "num_batches": len(aten_macs),
        "num_utterances": utterances,
        "audio_seconds": audio_seconds,
        "gmacs_per_batch": sum(aten_macs) / len(aten_macs) / 1e9,
        "gmacs_per_audio_second": sum(aten_macs) / audio_seconds / 1e9,
        "gmacs_per_batch_module_hooks": sum(hook_macs) / len(hook_macs) / 1e9,
        "gmacs_per_audio_second_module_hooks": sum(hook_macs) / audio_seconds / 1e9,
        "parameters": sum(p.numel() for p in brain.modules.parameters()),
        "count_time_s": time.perf_counter() - start,
        "extras": summarize_extras(extras),
    }


@contextlib.contextmanager
def _brain_on(brain, device):
    """Moves the brain's modules to a device in eval mode; restores device and
    mode afterwards."""
    original_device = brain.device
    training_modes = {module: module.training for module in brain.modules.modules()}
    brain.modules.to(device)
    brain.device = device
    brain.modules.eval()
    try:
        yield
    finally:
        brain.modules.to(original_device)
        brain.device = original_device
        for module, training in training_modes.items():
            module.training = training


def _tagged(record, tags):
    """The record with the experiment's tags added as fields; a tag may not
    replace a record field."""
    clashes = sorted(set(tags) & set(record))
    if clashes:
        raise ValueError(f"tags {clashes} clash with fields of the benchmark records")
    return {**record, **tags}


def _skip_reason(device, listed, uses_lm, settings):
    """Why a timed test cannot run, or None."""
    if not listed:
        return f"{device} not in benchmark_devices"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device"
    if uses_lm and settings.lm_path is None:
        return "no LM configured (lm_path is null)"
    return None


def _timed_test_record(brain, test_set, dataset, settings, test, lm_decoder, common, threads):
    """Runs one timed test, or records why it is skipped; returns its record.

    ``test`` is ``(name, device, listed in settings.devices, uses_lm)``;
    ``common`` holds the fields shared by every record.
    """
    name, device, listed, uses_lm = test
    record = {
        "test": name,
        "test_set": test_set,
        "device": device,
        "decoding": "lm" if uses_lm else "greedy",
        "lm": _lm_fields(settings, lm_decoder) if uses_lm else None,
        **common,
    }
    reason = _skip_reason(device, listed, uses_lm, settings)
    if reason is not None:
        return {**record, "status": "skipped", "reason": reason}
    with _brain_on(brain, device):
        measures = _run_inference_test(
            brain, dataset, settings, device, lm_decoder if uses_lm else None
        )
    return {**record, "status": "ok", "reason": None, "device_name": _device_name(device),
            "threads": threads, **measures}


def _mac_test_record(brain, test_set, dataset, settings, common, threads):
    """Runs the MAC count of a test set on CPU; returns its record."""
    with _brain_on(brain, "cpu"):
        measures = _run_mac_test(brain, dataset, settings)
    return {
        "test": MAC_TEST,
        "test_set": test_set,
        "device": "cpu",
        "decoding": None,
        "lm": None,
        **common,
        "status": "ok",
        "reason": None,
        "device_name": cpu_name(),
        "threads": threads,
        **measures,
    }


def run_five_tests(brain, test_datasets, settings, tags, output_folder):
    """Runs the five tests on every test set and appends their records to
    ``<output_folder>/benchmark.json`` and ``benchmark.csv``.

    Arguments
    ---------
    brain : speechbrain.Brain
        Provides ``modules``, ``device``, ``tokenizer`` (CTCTextEncoder) and
        ``infer_batch(wavs, wav_lens) -> {"log_probs": [B, T, V],
        "lengths": [B], ...per-utterance extras}``. Device and mode are
        restored afterwards.
    test_datasets : dict
        Test set name -> DynamicItemDataset providing "id", "sig", "wrd",
        "duration".
    settings : BenchmarkSettings
    tags : dict
        Describes the experiment (name, strategy, factor, layers, label,
        baseline, ...); added as fields to every record. ``summarize`` reads
        name, strategy, factor, layers, label (point label) and baseline
        (without it: factor 1 at the largest depth seen). A tag named like a
        record field raises a ValueError.
    output_folder : str or Path
        The experiment folder.

    Returns
    -------
    list of dict
        The new records: five per test set, in the order GPU greedy, GPU LM,
        CPU greedy, CPU LM, MACs.
    """
    settings.validate()
    gpu_device = next((d for d in settings.devices if d.startswith("cuda")), "cuda")
    timed_tests = [
        (test, device, device in settings.devices, uses_lm)
        for tests, device in ((GPU_TESTS, gpu_device), (CPU_TESTS, "cpu"))
        for test, uses_lm in tests
    ]
    common = {
        "output_folder": str(output_folder),
        "command": " ".join(sys.argv),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "host": platform.node(),
        "versions": _versions(),
        "batch_size": settings.batch_size,
        "sorting": TEST_SORTING,
    }
    previous_threads = torch.get_num_threads()
    threads = settings.cpu_threads or previous_threads
    torch.set_num_threads(threads)
    needs_lm = any(
        uses_lm and _skip_reason(device, listed, uses_lm, settings) is None
        for _, device, listed, uses_lm in timed_tests
    )
    # The greedy tests and the MAC count run before the LM decoder starts its worker
    # processes: forked workers share the parent's memory copy-on-write, which slows
    # the forward of whatever runs while they live (about 2-3 % on CPU).
    results = {}
    try:
        for lm_pass in (False, True):
            with (
                LMDecoder(brain.tokenizer, settings)
                if lm_pass and needs_lm
                else contextlib.nullcontext() as lm_decoder
            ):
                for test_set, dataset in test_datasets.items():
                    for test in timed_tests:
                        name, _, _, uses_lm = test
                        if uses_lm == lm_pass:
                            record = _timed_test_record(
                                brain, test_set, dataset, settings, test, lm_decoder, common,
                                threads,
                            )
                            results[test_set, name] = _tagged(record, tags)
                    if not lm_pass:
                        record = _mac_test_record(
                            brain, test_set, dataset, settings, common, threads
                        )
                        results[test_set, MAC_TEST] = _tagged(record, tags)
    finally:
        torch.set_num_threads(previous_threads)
    test_names = [name for name, *_ in timed_tests] + [MAC_TEST]
    records = [results[test_set, name] for test_set in test_datasets for name in test_names]
    append_records(records, output_folder)
    return records


# ---------------------------------------------------------------- summary
SUMMARY_COLUMNS = (
    ("name", "Name"),
    ("test_set", "Test set"),
    ("setting", "Factor / layers"),
    ("wer", "WER"),
    ("gpu_time_s", "GPU s"),
    ("cpu_time_s", "CPU s"),
    ("wer_lm", "WER-LM"),
    ("gpu_lm_time_s", "GPU-LM s"),
    ("cpu_lm_time_s", "CPU-LM s"),
    ("gmacs_per_batch", "MACs (G)"),
    ("cpu_real_time_factor", "CPU RTF"),
    ("gmacs_per_audio_second", "GMACs/s"),
)
# Summary column -> (tests it is read from, first that ran wins; record field).
SUMMARY_SOURCES = {
    "wer": (("cpu_greedy", "gpu_greedy"), "wer"),
    "gpu_time_s": (("gpu_greedy",), "total_time_s"),
    "cpu_time_s": (("cpu_greedy",), "total_time_s"),
    "wer_lm": (("cpu_lm", "gpu_lm"), "wer"),
    "gpu_lm_time_s": (("gpu_lm",), "total_time_s"),
    "cpu_lm_time_s": (("cpu_lm",), "total_time_s"),
    "gmacs_per_batch": ((MAC_TEST,), "gmacs_per_batch"),
    "cpu_real_time_factor": (("cpu_greedy",), "real_time_factor"),
    "gmacs_per_audio_second": ((MAC_TEST,), "gmacs_per_audio_second"),
    "gmacs_per_batch_module_hooks": ((MAC_TEST,), "gmacs_per_batch_module_hooks"),
}
# (file stem, x column, y column, x axis label, y axis label)
SUMMARY_PLOTS = (
    ("wer_vs_gpu_time", "gpu_time_s", "wer", "GPU time for the split (s)", "WER (%)"),
    ("wer_vs_cpu_time", "cpu_time_s", "wer", "CPU time for the split (s)", "WER (%)"),
    ("wer_vs_gmacs", "gmacs_per_batch", "wer", "GMACs per test batch", "WER (%)"),
    ("wer_lm_vs_gpu_lm_time", "gpu_lm_time_s", "wer_lm", "GPU time with LM (s)", "WER with LM (%)"),
    ("wer_lm_vs_cpu_lm_time", "cpu_lm_time_s", "wer_lm", "CPU time with LM (s)", "WER with LM (%)"),
    ("wer_lm_vs_gmacs", "gmacs_per_batch", "wer_lm", "GMACs per test batch", "WER with LM (%)"),
)
SKIPPED = "skipped"
MISSING = "–"


def _latest_records(records):
    """The latest record per (test set, test): a measured one if any, else
    the latest skipped one (a later run without a GPU does not hide an earlier
    GPU measurement)."""
    latest = {}
    for record in records:
        key = (record["test_set"], record["test"])
        rank = (record["status"] == "ok", record["timestamp"])
        if key not in latest or rank >= latest[key][0]:
            latest[key] = (rank, record)
    return {key: record for key, (_, record) in latest.items()}


def _is_baseline(tags, deepest):
    """The "baseline" tag if present, else whether factor is 1 at full depth."""
    if tags.get("baseline") is not None:
        return bool(tags["baseline"])
    return (tags.get("factor") or 1) == 1 and tags.get("layers", deepest) == deepest


def _setting_label(tags, baseline):
    """Short label of an experiment: its "label" tag, else x<factor> or
    <layers> L."""
    if tags.get("label") is not None:
        return str(tags["label"])
    if baseline:
        return "baseline"
    if (tags.get("factor") or 1) != 1:
        return f"x{tags['factor']}"
    if tags.get("layers") is not None:
        return f"{tags['layers']} L"
    return str(tags.get("name") or "")


def _summary_rows(results_root):
    """One summary row per experiment folder, test set and name (an early-exit
    threshold sweep gives one name per threshold in one folder)."""
    grouped = collections.defaultdict(list)
    for json_path in sorted(Path(results_root).rglob(RESULTS_JSON)):
        experiment = json_path.parent.relative_to(results_root).as_posix()
        for record in json.loads(json_path.read_text()):
            grouped[(experiment, record["test_set"], record.get("name"))].append(record)
    deepest = max(
        (r["layers"] for rs in grouped.values() for r in rs if r.get("layers") is not None),
        default=None,
    )
    rows = []
    for (experiment, test_set, _), records in grouped.items():
        latest = _latest_records(records)
        tags = records[-1]  # the experiment's tags are fields of its records
        baseline = _is_baseline(tags, deepest)
        row = {
            "experiment": experiment,
            "name": tags.get("name") or experiment,
            "test_set": test_set,
            "strategy": tags.get("strategy") or "",
            "setting": _setting_label(tags, baseline),
            "baseline": baseline,
        }
        for column, (tests, field) in SUMMARY_SOURCES.items():
            ran = [latest[(test_set, t)] for t in tests if (test_set, t) in latest]
            measured = [record for record in ran if record["status"] == "ok"]
            if measured:
                row[column] = measured[0][field]
            else:
                row[column] = SKIPPED if ran else None
        greedy = latest.get((test_set, "cpu_greedy")) or latest.get((test_set, "gpu_greedy"))
        for name, stats in (greedy or {}).get("extras", {}).items():
            row[f"{name}_mean"] = stats["mean"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["test_set"], not r["baseline"], r["strategy"], r["name"]))


def _format_cell(value):
    """Markdown text of a summary value."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def _markdown_table(rows):
    """The paper's table (plus strategy extras) in markdown."""
    extra_columns = list(dict.fromkeys(k for r in rows for k in r if k.endswith("_mean")))
    columns = list(SUMMARY_COLUMNS) + [(name, name.replace("_", " ")) for name in extra_columns]
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format_cell(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def _plot_summary(rows, results_root):
    """Draws WER-versus-cost plots per test set; returns the written paths and
    the reasons for the plots left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written, skipped = [], []
    for test_set in sorted({row["test_set"] for row in rows}):
        set_rows = [row for row in rows if row["test_set"] == test_set]
        for stem, x_key, y_key, x_label, y_label in SUMMARY_PLOTS:
            points = [
                row
                for row in set_rows
                if isinstance(row[x_key], (int, float)) and isinstance(row[y_key], (int, float))
            ]
            if not points:
                skipped.append(f"{stem} ({test_set}): no {x_key} and {y_key} recorded")
                continue
            figure, axes = plt.subplots(figsize=(6.4, 4.8))
            strategies = sorted({row["strategy"] for row in points if not row["baseline"]})
            for strategy in strategies:
                series = sorted(
                    (row for row in points if row["strategy"] == strategy and not row["baseline"]),
                    key=lambda row: row[x_key],
                )
                axes.plot(
                    [row[x_key] for row in series],
                    [row[y_key] for row in series],
                    marker="o",
                    label=strategy or "untagged",
                )
            baselines = [row for row in points if row["baseline"]]
            if baselines:
                axes.scatter(
                    [row[x_key] for row in baselines],
                    [row[y_key] for row in baselines],
                    marker="*",
                    s=250,
                    color="black",
                    zorder=3,
                    label="baseline",
                )
            for row in points:
                axes.annotate(
                    row["setting"],
                    (row[x_key], row[y_key]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
            axes.set_xlabel(x_label)
            axes.set_ylabel(y_label)
            axes.set_title(f"{y_label} vs cost, {test_set}")
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8)
            figure.tight_layout()
            path = Path(results_root) / f"{stem}_{test_set}.png"
            figure.savefig(path, dpi=120)
            plt.close(figure)
            written.append(path)
    return written, skipped


def summarize(results_root):
    """Tabulates and plots every benchmark.json under a folder.

    Writes ``summary.md`` and ``summary.csv`` (one row per experiment folder
    and test set; the latest measured record of each test) and
    ``wer*_vs_*_<test set>.png`` plots into ``results_root``, and prints the
    table and the plots left out for lack of data.

    Arguments
    ---------
    results_root : str or Path

    Returns
    -------
    list of dict
        The rows; a test that was skipped reads "skipped", one never run None.
    """
    results_root = Path(results_root)
    rows = _summary_rows(results_root)
    if not rows:
        raise FileNotFoundError(f"no {RESULTS_JSON} under {results_root}")
    table = _markdown_table(rows)
    _write_atomically(results_root / SUMMARY_MARKDOWN, table)
    _write_atomically(results_root / SUMMARY_CSV, _csv_text(rows))
    print(table)
    written, skipped = _plot_summary(rows, results_root)
    for path in written:
        print(f"Plot: {path}")
    for reason in skipped:
        print(f"No plot {reason}")
    return rows


# ---------------------------------------------------------------- command line
def _summarize_command(arguments):
    """``summarize`` subcommand."""
    summarize(arguments.results_root)


def main(argv=None):
    """Command-line entry point with one subcommand per tool."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    subcommands = parser.add_subparsers(dest="command", required=True)
    summarize_parser = subcommands.add_parser(
        "summarize", help="tabulate and plot every benchmark.json under a folder"
    )
    summarize_parser.add_argument("results_root", help="folder searched recursively")
    summarize_parser.set_defaults(handler=_summarize_command)
    arguments = parser.parse_args(argv)
    arguments.handler(arguments)


if __name__ == "__main__":
    main()
