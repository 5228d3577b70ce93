"""CTC beam search with a KenLM n-gram LM (pyctcdecode), overlapped with the forward.

Usage::

    with LMDecoder(tokenizer, settings) as lm_decoder:
        words = lm_decoder.decode(log_probs, lengths)
"""

import gzip
import multiprocessing
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (the doctests use it)

from ssl_ctc.ctc import SPECIAL_LABEL_PATTERN

ARPA_SUFFIXES = (".arpa", ".arpa.gz")
LM_PACKAGES = ("kenlm", "pyctcdecode")


# The beam search's settings when the YAML gives none (keys as in the YAML): shallow-fusion
# LM weight, word insertion bonus, beam width (pyctcdecode's default).
LM_DEFAULTS = {"lm_alpha": 0.5, "lm_beta": 1.0, "lm_beam_width": 100}


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
    >>> from ssl_ctc.ctc import make_tokenizer
    >>> labels, kept_indices = pyctcdecode_labels(make_tokenizer())
    >>> labels[:3], labels[-2:], len(labels)
    (['', 'A', 'B'], ["'", ' '], 29)
    >>> kept_indices[:3]
    [0, 3, 4]
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


# Beam search decoders loaded in this process, by their arguments: an LM (several GB for
# the official 4-gram) is read once per process, however many LMDecoders are opened
# (an early-exit threshold sweep opens one per threshold).
_loaded_decoders = {}


def load_decoder(labels, lm_path, unigrams_path, alpha, beta):
    """The beam search decoder for these arguments, loaded once per process.

    Returns
    -------
    decoder : pyctcdecode.BeamSearchDecoderCTC
    cached : bool
        Whether it was already loaded.
    """
    key = (tuple(labels), str(lm_path), str(unigrams_path), float(alpha), float(beta))
    cached = key in _loaded_decoders
    if not cached:
        _loaded_decoders[key] = _build_decoder(labels, lm_path, unigrams_path, alpha, beta)
    return _loaded_decoders[key], cached


def release_decoders():
    """Free every LM this process loaded (``load_decoder``)."""
    for decoder in _loaded_decoders.values():
        decoder.cleanup()
    _loaded_decoders.clear()


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

    The LM is loaded when the first decoder with its settings is built in the
    process and kept for the next ones (``load_time_s``, ``loaded_before``). With
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
    settings : ssl_ctc.benchmarking.settings.BenchmarkSettings
        LM path, unigrams, alpha, beta, beam width and workers.

    Example
    -------
    >>> import tempfile
    >>> from ssl_ctc.benchmarking.settings import BenchmarkSettings
    >>> from ssl_ctc.ctc import make_tokenizer
    >>> tokenizer = make_tokenizer()
    >>> labels = ["H", "H", "<blank>", "I", " ", "Y"]
    >>> frames = [tokenizer.lab2ind[label] for label in labels]
    >>> log_probs = torch.nn.functional.one_hot(torch.tensor([frames]), len(tokenizer))
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
        self.decoder, self.loaded_before = load_decoder(**decoder_arguments)
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
        """Stops the worker processes (the LM stays loaded: ``release_decoders`` frees it)."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()
