"""Runs a Hugging Face speech SSL encoder one transformer layer at a time.

Early exit needs the hidden states after every layer and the freedom to stop, or
to drop utterances from the batch, between two layers. ``LayerwiseEncoder``
unrolls the forward pass of ``transformers``' ``WavLMModel``, ``Wav2Vec2Model``
and ``HubertModel`` with the model's own submodules and weights (nothing is
copied or patched), so that with every layer run its output equals the model's
``last_hidden_state``.

What "the hidden states after layer N" are: the raw output of transformer
layer N (1-based), before any final LayerNorm (post-layer-norm encoders such as
wav2vec 2.0 Base and HuBERT Base end each layer with a LayerNorm; stable-layer-norm
ones do not). Stable-layer-norm encoders
(WavLM Large, wav2vec 2.0 Large) apply their encoder LayerNorm only after the
last layer; ``final_output`` adds it (and the SpeechBrain wrapper's
``output_norm``), the exit heads never see it.

Usage: ``encoder = LayerwiseEncoder(hparams["ssl"]); features = encoder(wavs, wav_lens)``
"""

import contextlib
import dataclasses

import torch
import transformers
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2 as SpeechBrainWav2Vec2
from transformers import HubertModel, Wav2Vec2Model, WavLMModel

from ssl_ctc.encoder import (
    encoder_frame_lengths,
    normalize_frames,
    normalize_waveforms,
    sample_lengths_of,
)

SUPPORTED_MODELS = (WavLMModel, Wav2Vec2Model, HubertModel)


@dataclasses.dataclass
class EncoderState:
    """A batch between two transformer layers.

    Arguments
    ---------
    hidden_states : torch.Tensor
        ``[B, T, C]`` input of the next layer (output of the last one run).
    frame_mask : torch.Tensor
        ``[B, T]`` bool, True on valid (non-padded) frames.
    frame_lengths : torch.Tensor
        ``[B]`` LongTensor, number of valid frames of each utterance.
    attention_mask : torch.Tensor or None
        ``frame_mask`` in the form the layers take: the 2D mask for WavLM, the
        expanded 4D mask of the model's attention implementation otherwise.
    position_bias : torch.Tensor or None
        WavLM's relative position bias ``[B * heads, T, T]``, computed by layer 1
        and passed to the following ones; None before layer 1 and for other models.
    completed_layers : int
        Number of transformer layers already applied.
    """

    hidden_states: torch.Tensor
    frame_mask: torch.Tensor
    frame_lengths: torch.Tensor
    attention_mask: torch.Tensor | None
    position_bias: torch.Tensor | None
    completed_layers: int


class LayerwiseEncoder(torch.nn.Module):
    """Layer-by-layer forward pass of a WavLM, wav2vec 2.0 or HuBERT encoder.

    The model is shared, not copied: training through this class trains the
    given encoder. With a SpeechBrain wrapper, its preprocessing is reproduced:
    waveform normalisation (``normalize_wav``), the attention mask from relative
    lengths, ``output_norm`` on the final output and ``freeze`` (no gradients).

    Arguments
    ---------
    ssl_model : torch.nn.Module
        A ``transformers`` ``WavLMModel``, ``Wav2Vec2Model`` (either
        ``do_stable_layer_norm``) or ``HubertModel``, or a SpeechBrain
        ``speechbrain.integrations.huggingface`` ``WavLM``, ``Wav2Vec2`` or
        ``HuBERT`` wrapper around one.

    Example
    -------
    >>> import torch, transformers
    >>> config = transformers.WavLMConfig(
    ...     hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    ...     intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
    ...     num_conv_pos_embedding_groups=2, do_stable_layer_norm=True,
    ...     feat_extract_norm="layer")
    >>> model = transformers.WavLMModel(config).eval()
    >>> encoder = LayerwiseEncoder(model)
    >>> wavs, wav_lens = torch.randn(2, 4000), torch.tensor([1.0, 0.6])
    >>> features = encoder(wavs, wav_lens)
    >>> features.shape
    torch.Size([2, 12, 32])
    >>> encoder.frame_lengths(wavs, wav_lens)
    tensor([12,  7])
    >>> [state.completed_layers for state in encoder.iter_layers(wavs, wav_lens)]
    [1, 2]
    """

    def __init__(self, ssl_model):
        super().__init__()
        self.normalize_wav = False
        self.output_norm = False
        self.freeze = False
        if isinstance(ssl_model, SpeechBrainWav2Vec2):
            self.normalize_wav = ssl_model.normalize_wav
            self.output_norm = ssl_model.output_norm
            self.freeze = ssl_model.freeze
            ssl_model = ssl_model.model
        if not isinstance(ssl_model, SUPPORTED_MODELS):
            supported = ", ".join(model.__name__ for model in SUPPORTED_MODELS)
            raise TypeError(
                f"LayerwiseEncoder takes a {supported} or a SpeechBrain wrapper around one, "
                f"got {type(ssl_model).__name__}"
            )
        if getattr(ssl_model.config, "add_adapter", False):
            raise ValueError("encoders with an adapter (config.add_adapter) are not supported")
        self.model = ssl_model
        self.is_wavlm = isinstance(ssl_model, WavLMModel)
        if not self.is_wavlm and not hasattr(ssl_model.encoder, "_update_full_mask"):
            raise NotImplementedError(
                f"transformers {transformers.__version__}: {type(ssl_model.encoder).__name__} has "
                "no _update_full_mask to build the attention mask (written for transformers 4.57)"
            )

    @property
    def num_layers(self):
        """Number of transformer layers of the encoder."""
        return len(self.model.encoder.layers)

    @property
    def hidden_size(self):
        """Size of the hidden states."""
        return self.model.config.hidden_size

    def frame_lengths(self, wavs, wav_lens=None):
        """Number of valid encoder frames of each utterance.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` padded waveforms.
        wav_lens : torch.Tensor, optional
            ``[B]`` lengths relative to ``wavs.shape[1]`` (SpeechBrain convention);
            None means no padding.

        Returns
        -------
        torch.Tensor
            ``[B]`` LongTensor, from the model's ``_get_feat_extract_output_lengths``.
        """
        return encoder_frame_lengths(self.model, sample_lengths_of(wavs, wav_lens))

    def embed(self, wavs, wav_lens=None):
        """Run everything before the first transformer layer.

        That is: waveform normalisation (wrapper setting), CNN feature extractor,
        feature projection, SpecAugment (the model's own ``_mask_hidden_states``,
        active in training when the config asks for it; spans are drawn within
        each utterance's valid frames, which HuBERT's own forward does not do),
        zeroing of padded frames, positional convolution, the encoder LayerNorm
        of post-layer-norm models, and dropout.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` padded waveforms.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths; None means no padding.

        Returns
        -------
        EncoderState
            With ``completed_layers == 0``.
        """
        encoder = self.model.encoder
        with self._grad_context():
            frame_lengths = self.frame_lengths(wavs, wav_lens)
            if self.normalize_wav:
                wavs = normalize_waveforms(wavs, sample_lengths_of(wavs, wav_lens))
            features = self.model.feature_extractor(wavs).transpose(1, 2)
            frame_lengths = frame_lengths.clamp(max=features.shape[1])
            frame_indices = torch.arange(features.shape[1], device=wavs.device)
            frame_mask = frame_indices < frame_lengths[:, None]
            hidden_states = self.model.feature_projection(features)
            if isinstance(hidden_states, tuple):  # wav2vec 2.0 and WavLM add the normed features
                hidden_states = hidden_states[0]
            hidden_states = self.model._mask_hidden_states(hidden_states, attention_mask=frame_mask)
            hidden_states = hidden_states.masked_fill(~frame_mask.unsqueeze(-1), 0.0)
            hidden_states = hidden_states + encoder.pos_conv_embed(hidden_states)
            if not self.model.config.do_stable_layer_norm:
                hidden_states = encoder.layer_norm(hidden_states)
            hidden_states = encoder.dropout(hidden_states)
        return EncoderState(
            hidden_states=hidden_states,
            frame_mask=frame_mask,
            frame_lengths=frame_lengths,
            attention_mask=self._layer_attention_mask(frame_mask, hidden_states),
            position_bias=None,
            completed_layers=0,
        )

    def run_next_layer(self, state):
        """Apply transformer layer ``state.completed_layers + 1``.

        In training mode LayerDrop skips the layer as ``transformers`` does (one
        ``torch.rand`` draw per layer; WavLM never skips its first layer, which
        computes the position bias), so seeded runs match the model's forward.

        Arguments
        ---------
        state : EncoderState
            The batch before the layer.

        Returns
        -------
        EncoderState
            The batch after the layer.
        """
        index = state.completed_layers
        layer = self.model.encoder.layers[index]
        dropout_probability = torch.rand([])
        owns_position_bias = self.is_wavlm and index == 0
        skip_the_layer = (
            self.model.encoder.training
            and not owns_position_bias
            and dropout_probability < self.model.config.layerdrop
        )
        hidden_states, position_bias = state.hidden_states, state.position_bias
        if not skip_the_layer:
            with self._grad_context():
                if self.is_wavlm:
                    hidden_states, position_bias = layer(
                        hidden_states,
                        attention_mask=state.attention_mask,
                        position_bias=position_bias,
                    )[:2]
                else:
                    hidden_states = layer(hidden_states, attention_mask=state.attention_mask)[0]
        return dataclasses.replace(
            state,
            hidden_states=hidden_states,
            position_bias=position_bias,
            completed_layers=index + 1,
        )

    def final_output(self, state):
        """The encoder output for ``state``: final LayerNorm and wrapper ``output_norm``.

        After all layers this is the model's ``last_hidden_state`` (and the
        SpeechBrain wrapper's output); after fewer, it is the output of the
        encoder truncated to ``state.completed_layers`` layers.

        Arguments
        ---------
        state : EncoderState
            The batch after the last layer run.

        Returns
        -------
        torch.Tensor
            ``[B, T, C]`` features.
        """
        hidden_states = state.hidden_states
        with self._grad_context():
            if self.model.config.do_stable_layer_norm:
                hidden_states = self.model.encoder.layer_norm(hidden_states)
            if self.output_norm:
                hidden_states = normalize_frames(hidden_states, state.frame_lengths)
        return hidden_states

    def iter_layers(self, wavs, wav_lens=None, last_layer=None):
        """Yield the batch after each transformer layer, from layer 1 to ``last_layer``.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` padded waveforms.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths; None means no padding.
        last_layer : int, optional
            Stop after this layer (default: the last one).

        Yields
        ------
        EncoderState
            ``state.hidden_states`` is the raw output of layer ``state.completed_layers``.
        """
        state = self.embed(wavs, wav_lens)
        for _ in range(self.num_layers if last_layer is None else last_layer):
            state = self.run_next_layer(state)
            yield state

    def select(self, state, keep):
        """Keep some utterances of a batch, trimming the padding that is no longer needed.

        Hidden states, masks and WavLM's position bias are re-sliced, so the next
        layers only compute on the kept utterances, up to their longest length.

        Arguments
        ---------
        state : EncoderState
            The batch.
        keep : torch.Tensor
            ``[B]`` bool, True for the utterances to keep (at least one).

        Returns
        -------
        EncoderState
            The smaller batch.
        """
        frame_lengths = state.frame_lengths[keep]
        num_frames = int(frame_lengths.max())
        hidden_states = state.hidden_states[keep, :num_frames]
        frame_mask = state.frame_mask[keep, :num_frames]
        position_bias = state.position_bias
        if position_bias is not None:
            batch_size, old_num_frames = state.hidden_states.shape[:2]
            position_bias = position_bias.view(batch_size, -1, old_num_frames, old_num_frames)
            position_bias = position_bias[keep, :, :num_frames, :num_frames]
            position_bias = position_bias.reshape(-1, num_frames, num_frames)
        return EncoderState(
            hidden_states=hidden_states,
            frame_mask=frame_mask,
            frame_lengths=frame_lengths,
            attention_mask=self._layer_attention_mask(frame_mask, hidden_states),
            position_bias=position_bias,
            completed_layers=state.completed_layers,
        )

    def forward(self, wavs, wav_lens=None):
        """Encode a batch with every layer, as the model (or wrapper) itself does.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` padded waveforms.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths; None means no padding.

        Returns
        -------
        torch.Tensor
            ``[B, T, C]``, equal to ``last_hidden_state``.
        """
        *_, state = self.iter_layers(wavs, wav_lens)
        return self.final_output(state)

    def _layer_attention_mask(self, frame_mask, hidden_states):
        """The attention mask in the form the layers take, as the HF encoder builds it."""
        if self.is_wavlm:
            return frame_mask
        return self.model.encoder._update_full_mask(frame_mask, hidden_states)

    def _grad_context(self):
        """No gradients through a frozen encoder, as the SpeechBrain wrapper does."""
        return torch.no_grad() if self.freeze else contextlib.nullcontext()
