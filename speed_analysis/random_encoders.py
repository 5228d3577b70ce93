"""Encoders with random weights built from a configuration, saved as a local model folder.

Usage::

    config = save_random_encoder(folder, "wavlm-large", LARGE_SHAPE)
"""

import torch
import transformers

from ssl_ctc.encoder import SAMPLE_RATE

# Encoder shapes. WavLM Large, wav2vec 2.0 Large (LV-60) and HuBERT Large share them:
# 24 layers of 1024 units, 16 heads, feed-forward 4096, seven 512-channel convolutions,
# layer-norm CNN and stable layer norm.
LARGE_SHAPE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": (512,) * 7,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
}


# --quick: the same depth (so that 18 and 12 layers and the exit at 18 exist), tiny widths
# (wide enough that the linear layers, not attention, make most of the MACs, as in Large).
TINY_SHAPE = {
    **LARGE_SHAPE,
    "hidden_size": 64,
    "num_attention_heads": 2,
    "intermediate_size": 256,
    "conv_dim": (16,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


ARCHITECTURES = {
    "wavlm-large": (transformers.WavLMConfig, transformers.WavLMModel, {}),
    "wav2vec2-large": (
        transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, {"conv_bias": True}
    ),
    "hubert-large": (transformers.HubertConfig, transformers.HubertModel, {"conv_bias": True}),
}


def save_random_encoder(folder, architecture, shape):
    """Build an encoder with random weights from its configuration and save it for loading.

    Writes ``config.json``, the weights and ``preprocessor_config.json``: what
    ``ssl_ctc.load_ssl_encoder`` needs from a local folder.

    Arguments
    ---------
    folder : str or Path
        Where to save.
    architecture : str
        Key of ``ARCHITECTURES``.
    shape : dict
        Configuration values (``LARGE_SHAPE`` or ``TINY_SHAPE``).

    Returns
    -------
    transformers.PretrainedConfig
        The configuration saved.
    """
    config_class, model_class, extra = ARCHITECTURES[architecture]
    config = config_class(**{**extra, **shape})
    model_class(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return config


def share_weights(truncated_model, full_model):
    """Make a truncated encoder run the full encoder's modules, so all variants use one copy.

    Each depth loaded as the recipe loads it (``considered_layers``) gets
    weights of its own, placed in memory wherever the allocator put them; on
    this kind of machine the layers of the last encoder loaded ran about 10 %
    slower than the same layers of the first, which made 12 layers look worse
    than their MACs. Sharing the modules (the truncated model keeps its own
    configuration and forward, so it still runs only its first layers) leaves
    the strategy as the only difference between the variants.

    Arguments
    ---------
    truncated_model : transformers.PreTrainedModel
        Loaded with fewer layers (changed in place).
    full_model : transformers.PreTrainedModel
        The same encoder with every layer.

    Example
    -------
    >>> config = transformers.WavLMConfig(hidden_size=32, num_hidden_layers=3,
    ...     num_attention_heads=2, intermediate_size=64, conv_dim=(8,) * 7)
    >>> full = transformers.WavLMModel(config)
    >>> config.num_hidden_layers = 2
    >>> truncated = transformers.WavLMModel(config)
    >>> share_weights(truncated, full)
    >>> truncated.encoder.layers[1] is full.encoder.layers[1], len(truncated.encoder.layers)
    (True, 2)
    >>> truncated.feature_extractor is full.feature_extractor
    True
    """
    for name, _ in list(truncated_model.named_children()):
        if name != "encoder":
            setattr(truncated_model, name, getattr(full_model, name))
    encoder, full_encoder = truncated_model.encoder, full_model.encoder
    for name, _ in list(encoder.named_children()):
        if name != "layers":
            setattr(encoder, name, getattr(full_encoder, name))
    encoder.layers = torch.nn.ModuleList(full_encoder.layers[: len(encoder.layers)])
