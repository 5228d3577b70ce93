"""Early-exit CTC encoder: a layer-by-layer SSL encoder, exit heads and an exit criterion.

Inference (``early_exit``) stops each utterance at the first exit layer whose
criterion fires; utterances that exit leave the batch, and the remaining layers
run only on the others. Training (``all_exits``) returns every exit's
log-probs, for a (weighted) sum of CTC losses.

Usage: ``log_probs, lengths, exit_layers = EarlyExitEncoder(ssl, heads, criterion)(wavs, wav_lens)``
"""

import contextlib
from typing import NamedTuple

import torch

from early_exiting.criteria import check_decision
from early_exiting.exit_heads import check_exit_layers
from early_exiting.layerwise_encoder import LayerwiseEncoder


class EarlyExitOutput(NamedTuple):
    """Result of early-exit inference.

    Arguments
    ---------
    log_probs : torch.Tensor
        ``[B, T, V]`` CTC log-probs of each utterance's exit; 0 on padded frames.
    frame_lengths : torch.Tensor
        ``[B]`` LongTensor, valid frames of each utterance.
    exit_layers : torch.Tensor
        ``[B]`` LongTensor, the layer (1-based) each utterance exited after.
    """

    log_probs: torch.Tensor
    frame_lengths: torch.Tensor
    exit_layers: torch.Tensor


class AllExitsOutput(NamedTuple):
    """Result of running every exit (training).

    Arguments
    ---------
    log_probs : dict
        Exit layer (int) -> ``[B, T, V]`` CTC log-probs of that exit.
    frame_lengths : torch.Tensor
        ``[B]`` LongTensor, valid frames of each utterance.
    """

    log_probs: dict
    frame_lengths: torch.Tensor


class EarlyExitEncoder(torch.nn.Module):
    """SSL encoder with CTC exits, run with early exit or with all exits.

    Arguments
    ---------
    encoder : torch.nn.Module
        A ``LayerwiseEncoder``, or what it takes (a ``transformers`` WavLM /
        wav2vec 2.0 / HuBERT model or a SpeechBrain wrapper around one).
    exit_heads : ExitHeads
        The heads; every exit layer must be within the encoder's depth.
    criterion : ExitCriterion
        The exit criterion of ``early_exit`` (may be replaced between runs).
    decision : str
        ``"utterance"`` (default): each utterance exits on its own criterion;
        ``"batch"``: the whole batch exits together, on the criterion averaged
        over all its valid frames (the paper's behaviour).

    Example
    -------
    >>> import transformers
    >>> from early_exiting import ExitHeads, build_exit_criterion
    >>> config = transformers.WavLMConfig(
    ...     hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
    ...     intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
    ...     num_conv_pos_embedding_groups=2)
    >>> model = transformers.WavLMModel(config)
    >>> heads = ExitHeads([2, 3, 4], input_size=32, output_size=8, dnn_neurons=16)
    >>> early_exit = EarlyExitEncoder(model, heads, build_exit_criterion("fixed", layer=3))
    >>> early_exit = early_exit.eval()
    >>> wavs, wav_lens = torch.randn(2, 4000), torch.tensor([1.0, 0.6])
    >>> log_probs, frame_lengths, exit_layers = early_exit(wavs, wav_lens)
    >>> log_probs.shape, frame_lengths, exit_layers
    (torch.Size([2, 12, 8]), tensor([12,  7]), tensor([3, 3]))
    >>> all_exits = early_exit(wavs, wav_lens, all_exits=True)
    >>> sorted(all_exits.log_probs)
    [2, 3, 4]
    """

    def __init__(self, encoder, exit_heads, criterion, decision="utterance"):
        super().__init__()
        if not isinstance(encoder, LayerwiseEncoder):
            encoder = LayerwiseEncoder(encoder)
        check_exit_layers(exit_heads.exit_layers, encoder.num_layers)
        if exit_heads.input_size != encoder.hidden_size:
            raise ValueError(
                f"exit heads take {exit_heads.input_size} features, "
                f"the encoder gives {encoder.hidden_size}"
            )
        self.encoder = encoder
        self.exit_heads = exit_heads
        self.criterion = criterion
        self.decision = decision

    @property
    def criterion(self):
        """The exit criterion of ``early_exit``; checked against the exit layers when set."""
        return self._criterion

    @criterion.setter
    def criterion(self, criterion):
        criterion.check_exit_layers(self.exit_heads.exit_layers)
        self._criterion = criterion

    @contextlib.contextmanager
    def using_criterion(self, criterion):
        """Run a block with another exit criterion, then restore the one installed before.

        Arguments
        ---------
        criterion : ExitCriterion
            Checked against the exit layers, like the ``criterion`` setter.
        """
        installed = self.criterion
        self.criterion = criterion
        try:
            yield criterion
        finally:
            self.criterion = installed

    @property
    def decision(self):
        """``"utterance"`` or ``"batch"``; checked when set."""
        return self._decision

    @decision.setter
    def decision(self, decision):
        self._decision = check_decision(decision)

    def forward(self, wavs, wav_lens=None, all_exits=False):
        """Early-exit inference, or every exit when ``all_exits`` (training, validation loss).

        Both go through ``forward`` so that a DistributedDataParallel wrapper sees them.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` padded waveforms.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths (SpeechBrain convention); None means no padding.
        all_exits : bool
            Return ``all_exits(...)`` instead of ``early_exit(...)``.

        Returns
        -------
        EarlyExitOutput or AllExitsOutput
        """
        if all_exits:
            return self.all_exits(wavs, wav_lens)
        return self.early_exit(wavs, wav_lens)

    def early_exit(self, wavs, wav_lens=None):
        """Run each utterance up to its exit layer and return that exit's log-probs.

        After each exit layer the criterion decides which utterances exit; those
        leave the batch (hidden states, masks and position bias are re-sliced and
        padding trimmed), so later layers compute only on the others. Whatever
        remains at the last exit layer exits there.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` padded waveforms.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths; None means no padding.

        Returns
        -------
        EarlyExitOutput
            ``log_probs`` ``[B, T, V]``, ``frame_lengths`` ``[B]``, ``exit_layers`` ``[B]``.
        """
        state = self.encoder.embed(wavs, wav_lens)
        batch_size, num_frames = state.hidden_states.shape[:2]
        frame_lengths = state.frame_lengths
        exit_layers = torch.zeros(batch_size, dtype=torch.long, device=frame_lengths.device)
        remaining = torch.arange(batch_size, device=frame_lengths.device)
        log_probs = None
        last_exit_layer = self.exit_heads.exit_layers[-1]
        for layer in range(1, last_exit_layer + 1):
            previous_hidden_states = state.hidden_states
            state = self.encoder.run_next_layer(state)
            if layer not in self.exit_heads.exit_layers:
                continue
            exit_log_probs = None
            if self.criterion.uses_exit_head:
                exit_log_probs = self.exit_heads(state.hidden_states, layer)
            if layer == last_exit_layer:
                leaving = torch.ones_like(remaining, dtype=torch.bool)
            else:
                leaving = self.criterion.should_exit(
                    layer,
                    state.hidden_states,
                    previous_hidden_states,
                    exit_log_probs,
                    state.frame_mask,
                    self.decision,
                )
                if not leaving.any():
                    continue
            if exit_log_probs is None:
                exit_log_probs = self.exit_heads(state.hidden_states[leaving], layer)
            else:
                exit_log_probs = exit_log_probs[leaving]
            exit_log_probs = exit_log_probs.masked_fill(~state.frame_mask[leaving, :, None], 0.0)
            if log_probs is None:
                vocabulary_size = exit_log_probs.shape[-1]
                log_probs = exit_log_probs.new_zeros(batch_size, num_frames, vocabulary_size)
            leaving_rows = remaining[leaving]
            log_probs[leaving_rows, : exit_log_probs.shape[1]] = exit_log_probs
            exit_layers[leaving_rows] = layer
            if leaving.all():
                break
            remaining = remaining[~leaving]
            state = self.encoder.select(state, ~leaving)
        return EarlyExitOutput(log_probs, frame_lengths, exit_layers)

    def all_exits(self, wavs, wav_lens=None):
        """Run the encoder up to the last exit layer and every exit head.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` padded waveforms.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths; None means no padding.

        Returns
        -------
        AllExitsOutput
            ``log_probs`` {exit layer: ``[B, T, V]``} and ``frame_lengths`` ``[B]``.
        """
        log_probs = {}
        last_exit_layer = self.exit_heads.exit_layers[-1]
        for state in self.encoder.iter_layers(wavs, wav_lens, last_layer=last_exit_layer):
            if state.completed_layers in self.exit_heads.exit_layers:
                log_probs[state.completed_layers] = self.exit_heads(
                    state.hidden_states, state.completed_layers
                )
        return AllExitsOutput(log_probs, state.frame_lengths)
