"""What an inference folder's ``hyperparams.yaml`` builds when ``EncoderASR`` loads it.

The SSL encoder from its configuration (no hub), the trained Brain's inference path
as ``EncoderASR``'s ``encoder`` module, the decoding function (greedy, or the
benchmark's KenLM beam search) and the Pretrainer's strict weight loading. Loading
a folder needs nothing of the benchmark (no ptflops, no ``ssl_ctc.benchmarking``).

Usage (what the YAML says)::

    ssl: !new:ssl_ctc.inference.runtime.ConfigOnlySSLEncoder
    encoder: !new:ssl_ctc.inference.runtime.RecipeCTCEncoder
    decoding_function: !name:ssl_ctc.inference.runtime.decode_tokens
"""

import tempfile
import types
from pathlib import Path

import torch

from ssl_ctc.ctc import greedy_decode
from ssl_ctc.encoder import SSLEncoder
from ssl_ctc.files import write_json
from ssl_ctc.imports import import_object
from ssl_ctc.inference.loading import InferenceFolderError
from ssl_ctc.lm_decoding import LM_DEFAULTS, LMDecoder


class ConfigOnlySSLEncoder(SSLEncoder):
    """The recipe's ``SSLEncoder`` built from its configuration; weights come from the folder.

    The Hugging Face configuration and feature-extractor settings are given as
    dicts (``hyperparams.yaml`` holds them, so the folder needs no hub and no path
    of its own); the model is built with ``from_config`` and its fine-tuned weights
    are loaded afterwards by the Pretrainer. Forward, padding handling and depth are
    ``SSLEncoder``'s.

    Arguments
    ---------
    model_config : dict
        The encoder's ``config.json`` (already cut to the kept layers).
    preprocessor_config : dict
        Its ``preprocessor_config.json`` (``do_normalize`` decides waveform normalisation).
    **encoder_options
        Passed to ``SSLEncoder`` (``output_norm``, ``matmul_front_end``...).

    Example
    -------
    >>> import transformers
    >>> config = transformers.WavLMConfig(hidden_size=16, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
    ...     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2).to_dict()
    >>> encoder = ConfigOnlySSLEncoder(config, {"do_normalize": True}, output_norm=True)
    >>> encoder.eval()(torch.randn(1, 4000)).shape
    torch.Size([1, 12, 16])
    """

    def __init__(self, model_config, preprocessor_config, **encoder_options):
        with tempfile.TemporaryDirectory(prefix="ssl_config_") as folder:
            write_json(Path(folder) / "config.json", model_config)
            write_json(Path(folder) / "preprocessor_config.json", preprocessor_config)
            super().__init__(folder, folder, **encoder_options)

    def _from_pretrained(self, source, save_path, cache_dir, device=None, **kwargs):
        """Build the model from its configuration (random weights, replaced when loaded)."""
        self.model = self.auto_class.from_config(self.config)


class RecipeCTCEncoder(torch.nn.Module):
    """A trained Brain's inference path as a module: ``EncoderASR``'s ``encoder``.

    It runs the strategy Brain's own ``infer_batch`` (downsampler, SSL encoder,
    head, CTC upsampling, log-softmax, or early exit) on the modules the YAML
    built, so inference is the benchmark's code path. ``forward`` returns the
    log-probs with the frames past each utterance's exact length set to a certain
    blank (log-prob 0 for blank, -inf elsewhere): greedy decoding of all frames
    then equals decoding each utterance's valid frames, and ``valid_frame_lengths``
    recovers the lengths.

    Arguments
    ---------
    brain_class : str
        Dotted name of the Brain, e.g. ``ssl_ctc.downsampling.DownsampledBrain``.
    modules : dict
        The Brain's ``modules`` (names as in the recipe's YAML).
    hparams : dict
        What its ``infer_batch`` reads from ``self.hparams``.
    blank_index : int
        CTC blank label.
    """

    def __init__(self, brain_class, modules, hparams, blank_index=0):
        super().__init__()
        self.brain_class = brain_class
        self.recipe_modules = torch.nn.ModuleDict(modules)
        self.blank_index = blank_index
        brain_type = import_object(brain_class)
        # A Brain without its training machinery: only its inference methods run,
        # on these modules and hparams.
        brain = brain_type.__new__(brain_type)
        brain.modules = self.recipe_modules
        brain.hparams = types.SimpleNamespace(**hparams)
        brain.device = "cpu"
        object.__setattr__(self, "brain", brain)  # not a submodule: no second copy of weights

    def infer_batch(self, wavs, wav_lens=None):
        """The Brain's ``infer_batch``: ``{"log_probs", "lengths", ...}`` (exact lengths)."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        self.brain.device = str(wavs.device)
        return self.brain.infer_batch(wavs, wav_lens)

    def forward(self, wavs, wav_lens=None):
        """CTC log-probs ``[B, T, V]``, padding frames set to a certain blank."""
        output = self.infer_batch(wavs, wav_lens)
        return blank_padding(output["log_probs"].float(), output["lengths"], self.blank_index)


def blank_padding(log_probs, lengths, blank_index):
    """Set the frames past each utterance's length to log-prob 0 for blank, -inf elsewhere.

    Example
    -------
    >>> padded = blank_padding(torch.zeros(1, 3, 2).log_softmax(-1), torch.tensor([2]), 0)
    >>> padded[0, 2].tolist(), valid_frame_lengths(padded).tolist()
    ([0.0, -inf], [2])
    """
    padding = torch.arange(log_probs.shape[1], device=log_probs.device) >= lengths[:, None]
    blank = torch.full_like(log_probs[0, 0], float("-inf"))
    blank[blank_index] = 0.0
    return torch.where(padding[..., None], blank, log_probs)


def valid_frame_lengths(log_probs):
    """Frames of each utterance that are not padding (see ``blank_padding``)."""
    return (~torch.isneginf(log_probs).any(dim=-1)).sum(dim=1)


def in_process_lm_decoder(tokenizer, lm_path, lm_unigrams_path, lm_alpha, lm_beta,
                          lm_beam_width):
    """An in-process ``LMDecoder`` (its LM is loaded once per process by ``lm_decoding``).

    Its settings are the LM keys of the YAML, with no worker pool.
    """
    settings = types.SimpleNamespace(lm_path=str(lm_path), lm_unigrams_path=lm_unigrams_path,
                                     lm_alpha=lm_alpha, lm_beta=lm_beta,
                                     lm_beam_width=lm_beam_width, lm_decode_workers=1)
    return LMDecoder(tokenizer, settings)


def decode_words(log_probs, lengths, tokenizer, lm_path=None, lm_unigrams_path=None,
                 lm_alpha=LM_DEFAULTS["lm_alpha"], lm_beta=LM_DEFAULTS["lm_beta"],
                 lm_beam_width=LM_DEFAULTS["lm_beam_width"]):
    """Greedy CTC decoding, or the benchmark's KenLM beam search when ``lm_path`` is set.

    Arguments
    ---------
    log_probs : torch.Tensor
        ``[B, T, V]`` CTC log-probs.
    lengths : torch.Tensor
        ``[B]`` valid frames.
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
    lm_path, lm_unigrams_path, lm_alpha, lm_beta, lm_beam_width
        As the recipe's YAML keys of the same names.

    Returns
    -------
    list of list of str
    """
    if lm_path is None:
        return greedy_decode(log_probs, lengths, tokenizer)
    decoder = in_process_lm_decoder(tokenizer, str(lm_path), lm_unigrams_path,
                                    float(lm_alpha), float(lm_beta), int(lm_beam_width))
    return decoder.decode(log_probs, lengths)


def decode_tokens(log_probs, wav_lens, tokenizer, **decoding_options):
    """``EncoderASR``'s ``decoding_function``: the token ids of ``decode_words``'s transcript.

    ``EncoderASR`` joins the labels of the ids it gets back, so each transcript
    comes back as its words' labels joined by single spaces: its text is the
    benchmark's ``" ".join(words)``, spelt with the tokenizer's characters (greedy
    or with the LM, as ``decode_words``).

    Arguments
    ---------
    log_probs : torch.Tensor
        ``RecipeCTCEncoder`` output (padding set to blank).
    wav_lens : torch.Tensor
        Relative input lengths (unused: the padding is in ``log_probs``).
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
    **decoding_options
        ``lm_path`` and the LM settings of ``decode_words``.

    Returns
    -------
    list of list of int

    Example
    -------
    >>> from ssl_ctc.ctc import make_tokenizer
    >>> tokenizer = make_tokenizer()
    >>> labels = [" ", "H", "<eos>", "I", " ", " ", "Y", " "]
    >>> frames = [tokenizer.lab2ind[label] for label in labels]
    >>> logits = 10 * torch.nn.functional.one_hot(torch.tensor([frames]), len(tokenizer))
    >>> ids = decode_tokens(logits.float().log_softmax(-1), torch.ones(1), tokenizer)
    >>> "".join(tokenizer.decode_ndim(ids[0]))
    'HI Y'
    """
    words = decode_words(log_probs, valid_frame_lengths(log_probs), tokenizer, **decoding_options)
    return [[tokenizer.lab2ind[character] for character in " ".join(utterance)]
            for utterance in words]


def load_weights_strictly(module, path):
    """Pretrainer hook: load a state dict, every key required, naming the file if it fails."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except Exception as error:
        raise InferenceFolderError(
            f"weights file '{path}' does not fit the model ({type(error).__name__}: "
            f"{str(error).splitlines()[0]})"
        ) from error
