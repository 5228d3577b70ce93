"""SSL encoder loading: WavLM, wav2vec 2.0 or HuBERT through SpeechBrain's wrapper.

Usage::

    ssl = load_ssl_encoder("microsoft/wavlm-large", "cache", considered_layers=18)
"""

import json
import os

import torch
import torch.nn.functional as F
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

from ssl_ctc.cpu.front_end import use_matmul_front_end
from ssl_ctc.errors import ConfigurationError

SAMPLE_RATE = 16000  # what the SSL encoders were pre-trained on
# Hugging Face model types the recipe fine-tunes (config.json "model_type").
SSL_MODEL_TYPES = ("hubert", "wav2vec2", "wavlm")


def load_ssl_encoder(source, save_path, considered_layers=None, matmul_front_end=True,
                     layerdrop=None, **wrapper_options):
    """Load a WavLM, wav2vec 2.0 or HuBERT encoder through SpeechBrain's wrapper.

    The wrapper uses ``AutoModel``, so one class serves all three architectures,
    from a hub id (``microsoft/wavlm-large``) or a local folder holding
    ``config.json``, the weights and ``preprocessor_config.json``.

    Arguments
    ---------
    source : str
        Hub id or local folder (the YAML key ``ssl_hub``).
    save_path : str
        Cache folder for downloaded files.
    considered_layers : int, optional
        Keep only the first N transformer layers (layer removal); None keeps all.
    matmul_front_end : bool
        Run the CNN front end as channels-last matrix products on CPU (see ``front_end``).
    layerdrop : float, optional
        Probability of skipping a transformer layer in training; None keeps the config's.
    **wrapper_options
        Passed to ``speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2``
        (``freeze``, ``freeze_feature_extractor``, ``output_norm``...).

    Returns
    -------
    SSLEncoder
        The wrapped encoder; ``.model`` is the Hugging Face model.

    Example
    -------
    >>> load_ssl_encoder("/nonexistent/encoder", "/tmp/ssl_cache")
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: ssl_hub '/nonexistent/encoder' cannot be loaded ...
    """
    local_config = os.path.join(str(source), "config.json")
    if os.path.isfile(local_config):  # types unknown to transformers fail before override_config
        with open(local_config, encoding="utf-8") as config_file:
            check_ssl_architecture(source, json.load(config_file).get("model_type"))
    try:
        return SSLEncoder(source, save_path, considered_layers=considered_layers,
                          matmul_front_end=matmul_front_end, layerdrop=layerdrop,
                          **wrapper_options)
    except (OSError, ValueError) as error:
        if isinstance(error, ConfigurationError):
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "the hub is switched off (HF_HUB_OFFLINE=1): give a local folder with "
            "config.json, the weights and preprocessor_config.json"
            if offline
            else "give a hub id such as microsoft/wavlm-large or a local folder with "
            "config.json, the weights and preprocessor_config.json"
        )
        raise ConfigurationError(
            f"ssl_hub '{source}' cannot be loaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}); {hint}"
        ) from error


class SSLEncoder(Wav2Vec2):
    """SpeechBrain's Hugging Face SSL wrapper, padding-exact, that can keep only the first N layers.

    Padding-exact: the waveform normalisation and ``output_norm`` use each
    utterance's valid samples and frames only (the parent class normalises over
    the padded batch, so a transcript depended on the batch it was in); on an
    unpadded input both are the parent's ``F.layer_norm`` exactly. With ``freeze``
    the encoder's weights get no gradient, but an input that needs one (from a
    learned downsampler) still gets it through the frozen encoder.

    The depth is cut in the configuration before the weights are loaded, so the
    removed layers never take memory, the final encoder LayerNorm stays, and
    layers go from the top only (WavLM's layer 0 owns the relative position
    bias). Checkpoints of a truncated encoder therefore restore into the same
    shapes, whether training resumes or ``--test_only`` runs.

    Arguments
    ---------
    source : str
        Hub id or local folder.
    save_path : str
        Cache folder for downloaded files.
    considered_layers : int, optional
        Number of transformer layers to keep, 1 to the encoder's depth; None keeps all.
    matmul_front_end : bool
        Run the CNN front end as channels-last matrix products on CPU
        (``front_end.MatmulFeatureEncoder``: same weights and outputs, faster).
    layerdrop : float, optional
        Probability of skipping a transformer layer in training; None keeps the config's.
    **wrapper_options
        Passed to ``speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2``.
    """

    def __init__(self, source, save_path, considered_layers=None, matmul_front_end=True,
                 layerdrop=None, **wrapper_options):
        # Read by override_config, which the parent constructor calls before loading.
        self.considered_layers = considered_layers
        self.layerdrop = layerdrop
        super().__init__(source=source, save_path=save_path, **wrapper_options)
        if matmul_front_end:
            use_matmul_front_end(self.model)
        if self.freeze_feature_extractor:
            # Hugging Face's own freezing also stops the CNN from marking its input as
            # requiring grad, which fails when a learned downsampler produced that input.
            self.model.feature_extractor._freeze_parameters()

    def forward(self, wav, wav_lens=None):
        """Features ``[B, T, C]``; without gradient when frozen, unless the input needs one."""
        if self.freeze and not (torch.is_grad_enabled() and wav.requires_grad):
            with torch.no_grad():
                return self.extract_features(wav, wav_lens)
        return self.extract_features(wav, wav_lens)

    def extract_features(self, wav, wav_lens=None):
        """Run the model with its padding mask; normalise over valid samples and frames only.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, samples]`` padded waveforms.
        wav_lens : torch.Tensor, optional
            Relative lengths (SpeechBrain convention); None means unpadded.

        Returns
        -------
        torch.Tensor
            ``[B, T, C]``; padded frames are zero when ``output_norm`` is on.
        """
        if self.output_all_hiddens:
            return super().extract_features(wav, wav_lens)
        sample_lengths = sample_lengths_of(wav, wav_lens)
        if self.normalize_wav:
            wav = normalize_waveforms(wav, sample_lengths)
        padding_mask = torch.arange(wav.shape[1], device=wav.device) < sample_lengths[:, None]
        out = self.model(wav, attention_mask=padding_mask.long()).last_hidden_state
        if self.output_norm:
            frame_lengths = encoder_frame_lengths(self.model, sample_lengths)
            out = normalize_frames(out, frame_lengths.clamp(max=out.shape[1]))
        return out

    def override_config(self, config):
        """Check the architecture; set ``layerdrop`` and the depth (before loading)."""
        check_ssl_architecture(config.name_or_path, config.model_type)
        if self.layerdrop is not None:
            config.layerdrop = self.layerdrop
        if self.considered_layers is None:
            return config
        depth = config.num_hidden_layers
        layers = self.considered_layers
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= depth:
            raise ConfigurationError(
                f"considered_layers must be between 1 and the encoder's depth {depth}, "
                f"got {layers!r}"
            )
        config.num_hidden_layers = layers
        return config


def check_ssl_architecture(source, model_type):
    """Refuse an encoder that is not WavLM, wav2vec 2.0 or HuBERT, naming its model type.

    Arguments
    ---------
    source : str
        Hub id or local folder (the YAML key ``ssl_hub``), for the message.
    model_type : str
        ``model_type`` of the encoder's ``config.json``.

    Example
    -------
    >>> check_ssl_architecture("microsoft/wavlm-large", "wavlm")
    >>> check_ssl_architecture("bert-base-uncased", "bert")
    Traceback (most recent call last):
    ...
    ssl_ctc.errors.ConfigurationError: ssl_hub 'bert-base-uncased' holds a 'bert' model ...
    """
    if model_type not in SSL_MODEL_TYPES:
        raise ConfigurationError(
            f"ssl_hub '{source}' holds a '{model_type}' model (model_type in its config.json); "
            f"supported SSL architectures: {', '.join(SSL_MODEL_TYPES)}"
        )


def encoder_hidden_size(ssl_encoder):
    """Return the width of the encoder's output frames (1024 for WavLM Large).

    Arguments
    ---------
    ssl_encoder : speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        The wrapped encoder.

    Returns
    -------
    int
        ``config.hidden_size`` of the Hugging Face model.
    """
    return ssl_encoder.model.config.hidden_size


def encoder_frames(ssl_encoder, num_samples):
    """Number of frames the encoder's CNN front end makes from ``num_samples`` samples.

    Arguments
    ---------
    ssl_encoder : speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        The wrapped encoder.
    num_samples : int
        Input length in samples (after any downsampling).

    Returns
    -------
    int
        Output frames (0 when the input is shorter than the receptive field).
    """
    return int(encoder_frame_lengths(ssl_encoder.model, torch.tensor([num_samples]))[0])


def normalize_waveforms(wavs, sample_lengths):
    """Normalise each waveform to zero mean and unit variance over its own samples only.

    SpeechBrain's wrapper normalises over the padded length, so an utterance's
    features changed with the batch it was in. Here each utterance is normalised
    on its valid samples with the same ``F.layer_norm`` (identical to the wrapper
    on an unpadded batch) and its padding is set to zero.

    Arguments
    ---------
    wavs : torch.Tensor
        ``[B, samples]`` padded waveforms.
    sample_lengths : torch.Tensor
        ``[B]`` number of valid samples of each utterance.

    Returns
    -------
    torch.Tensor
        The normalised waveforms, zero on padding.

    Example
    -------
    >>> wavs = torch.tensor([[1.0, 3.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    >>> normalize_waveforms(wavs, torch.tensor([2, 4]))[0]
    tensor([-1.0000,  1.0000,  0.0000,  0.0000])
    """
    return _layer_norm_valid_prefix(wavs, sample_lengths)


def normalize_frames(features, frame_lengths):
    """Layer-normalise each utterance's ``[T, C]`` features over its valid frames only.

    The wrapper's ``output_norm`` (``F.layer_norm`` over ``[T, C]``) on an
    unpadded utterance; padded frames are set to zero.

    Arguments
    ---------
    features : torch.Tensor
        ``[B, T, C]`` encoder output.
    frame_lengths : torch.Tensor
        ``[B]`` valid frames of each utterance.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> features = torch.randn(2, 5, 3)
    >>> alone = normalize_frames(features[1:, :2], torch.tensor([2]))
    >>> batched = normalize_frames(features, torch.tensor([5, 2]))
    >>> torch.equal(batched[1:, :2], alone), batched[1, 2:].abs().sum().item()
    (True, 0.0)
    """
    return _layer_norm_valid_prefix(features, frame_lengths)


def _layer_norm_valid_prefix(values, lengths, masked=None):
    """``F.layer_norm`` of each item's first ``lengths[i]`` steps (all other dims); zero after.

    Item by item, so that an utterance's output is bit for bit the same in any
    batch. The masked formulation computes the same statistics over the same
    steps on the whole padded batch: its shapes do not depend on the lengths, so
    it is what an ONNX export traces (the item-by-item shapes cannot be graph inputs).

    Arguments
    ---------
    values : torch.Tensor
        ``[B, T, ...]``.
    lengths : torch.Tensor
        ``[B]`` valid steps of each item.
    masked : bool, optional
        Use the masked formulation; by default only while exporting to ONNX.

    Example
    -------
    >>> values, lengths = torch.randn(3, 7, 2), torch.tensor([7, 4, 1])
    >>> exact = _layer_norm_valid_prefix(values, lengths)
    >>> torch.allclose(_layer_norm_valid_prefix(values, lengths, masked=True), exact, atol=1e-5)
    True
    """
    if masked is None:
        masked = torch.onnx.is_in_onnx_export()
    if masked:
        steps = torch.arange(values.shape[1], device=values.device)
        mask = (steps[None, :] < lengths[:, None]).to(values.dtype)
        mask = mask.view(*mask.shape, *([1] * (values.dim() - 2)))
        dims = tuple(range(1, values.dim()))
        count = mask.sum(dim=dims, keepdim=True) * values.shape[2:].numel()
        mean = (values * mask).sum(dim=dims, keepdim=True) / count
        variance = ((values - mean) * mask).square().sum(dim=dims, keepdim=True) / count
        return (values - mean) * torch.rsqrt(variance + 1e-5) * mask  # F.layer_norm's eps
    normalized = torch.zeros_like(values)
    for index, length in enumerate(lengths.tolist()):
        valid = values[index, :length]
        normalized[index, :length] = F.layer_norm(valid, valid.shape)
    return normalized


def sample_lengths_of(wavs, wav_lens):
    """Valid samples of each utterance from SpeechBrain's relative lengths (None: unpadded).

    Example
    -------
    >>> sample_lengths_of(torch.zeros(2, 10), torch.tensor([1.0, 0.45]))
    tensor([10,  4])
    """
    if wav_lens is None:
        return torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long, device=wavs.device)
    return torch.round(wav_lens * wavs.shape[1]).long()


def encoder_frame_lengths(model, sample_lengths):
    """Encoder frames of each utterance from its valid samples (its CNN's receptive field).

    Arguments
    ---------
    model : transformers.PreTrainedModel
        WavLM, wav2vec 2.0 or HuBERT.
    sample_lengths : torch.Tensor
        ``[B]`` valid samples.

    Returns
    -------
    torch.Tensor
        ``[B]`` LongTensor, 0 for inputs shorter than one receptive field.
    """
    lengths = model._get_feat_extract_output_lengths(sample_lengths.clamp(min=0))
    return lengths.long().clamp(min=0)
