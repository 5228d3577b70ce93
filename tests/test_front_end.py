"""The channels-last matmul CNN front end: same outputs, gradients, keys, MACs as HF's."""

import pytest
import torch
import transformers

import ssl_ctc.encoder
from ssl_ctc.benchmarking import macs as mac_counting
from ssl_ctc.cpu.front_end import MatmulFeatureEncoder, use_matmul_front_end

# Large models use LayerNorm convolution layers; base wav2vec 2.0 / HuBERT / WavLM use a
# GroupNorm first layer and no norm after, without convolution biases.
FRONT_ENDS = {
    "wavlm-layer": (transformers.WavLMConfig, transformers.WavLMModel,
                    {"feat_extract_norm": "layer", "conv_bias": True}),
    "wav2vec2-group": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model,
                       {"feat_extract_norm": "group", "conv_bias": False}),
    "hubert-layer": (transformers.HubertConfig, transformers.HubertModel,
                     {"feat_extract_norm": "layer", "conv_bias": True}),
}


def tiny_model(name):
    config_class, model_class, extra = FRONT_ENDS[name]
    torch.manual_seed(0)
    config = config_class(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(16,) * 7,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **extra)
    return model_class(config).eval()


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_same_features_and_encoder_output(name):
    model = tiny_model(name)
    wavs = torch.randn(3, 5000)
    wav_mask = torch.ones(3, 5000, dtype=torch.long)
    wav_mask[1, 4000:] = 0
    with torch.no_grad():
        features = model.feature_extractor(wavs)
        output = model(wavs, attention_mask=wav_mask).last_hidden_state
        use_matmul_front_end(model)
        assert isinstance(model.feature_extractor, MatmulFeatureEncoder)
        torch.testing.assert_close(model.feature_extractor(wavs), features, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model(wavs, attention_mask=wav_mask).last_hidden_state,
                                   output, atol=1e-5, rtol=1e-4)


def test_state_dict_keys_and_values_unchanged(tmp_path):
    model = tiny_model("wavlm-layer")
    before = model.state_dict()
    use_matmul_front_end(model)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], before[key]) for key in before)
    model.save_pretrained(tmp_path)  # and back into a plain Hugging Face model
    reloaded = transformers.WavLMModel.from_pretrained(tmp_path)
    assert not isinstance(reloaded.feature_extractor, MatmulFeatureEncoder)
    torch.testing.assert_close(reloaded.state_dict(), before)


def test_gradients_match_through_the_front_end():
    """A learned downsampler before a frozen front end needs gradients w.r.t. the input."""
    model = tiny_model("wavlm-layer")
    wavs = torch.randn(2, 3000)
    gradients = []
    for matmul in (False, True):
        if matmul:
            use_matmul_front_end(model)
        inputs = wavs.clone().requires_grad_()
        model.feature_extractor(inputs).square().sum().backward()
        weight_gradient = model.feature_extractor.conv_layers[1].conv.weight.grad.clone()
        model.zero_grad()
        gradients.append((inputs.grad, weight_gradient))
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-4, rtol=1e-4)


def test_freezing_stops_parameter_gradients():
    model = tiny_model("wavlm-layer")
    use_matmul_front_end(model)
    model.freeze_feature_encoder()  # Hugging Face's call reaches the new module
    inputs = torch.randn(2, 3000, requires_grad=True)
    model.feature_extractor(inputs).sum().backward()
    assert inputs.grad is not None
    assert all(parameter.grad is None for parameter in model.feature_extractor.parameters())


def test_padded_convolutions_are_refused():
    model = tiny_model("wavlm-layer")
    model.feature_extractor.conv_layers[2].conv.padding = (1,)
    with pytest.raises(ValueError, match=r"conv_layers\.2: .*padding \(1,\)"):
        MatmulFeatureEncoder(model.feature_extractor)


def test_mac_counts_unchanged():
    """Both counts see the front end's matmuls as they saw its convolutions."""
    model = tiny_model("wavlm-layer")
    wavs, wav_lens = torch.randn(2, 8000), torch.ones(2)

    def infer_batch(wavs, wav_lens):
        return {"log_probs": model(wavs).last_hidden_state}

    counts = []
    for matmul in (False, True):
        if matmul:
            use_matmul_front_end(model)
        counts.append((mac_counting.count_macs(infer_batch, wavs, wav_lens)[0],
                       mac_counting.count_module_hook_macs(infer_batch, model, wavs, wav_lens)))
    (aten, hooks), (aten_matmul, hooks_matmul) = counts
    assert aten_matmul == pytest.approx(aten, rel=1e-3)
    assert hooks_matmul == pytest.approx(hooks, rel=1e-3)


@pytest.mark.parametrize("matmul_front_end", [True, False])
def test_recipe_encoder_option(tiny_encoders, tmp_path, matmul_front_end):
    encoder = ssl_ctc.encoder.load_ssl_encoder(tiny_encoders["wavlm"], str(tmp_path),
                                       matmul_front_end=matmul_front_end,
                                       freeze_feature_extractor=True)
    front_end = encoder.model.feature_extractor
    assert isinstance(front_end, MatmulFeatureEncoder) == matmul_front_end
    assert not any(parameter.requires_grad for parameter in front_end.parameters())
