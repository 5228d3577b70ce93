"""Tests of the ``early_exiting`` package on tiny random encoders (no hub, CPU)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from speechbrain.integrations.huggingface.hubert import HuBERT  # noqa: E402
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2  # noqa: E402
from speechbrain.integrations.huggingface.wavlm import WavLM  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from early_exiting import (  # noqa: E402
    EarlyExitEncoder,
    EntropyCriterion,
    ExitHeads,
    FixedLayerCriterion,
    LayerwiseEncoder,
    SimilarityCriterion,
    build_exit_criterion,
)
from ssl_ctc.encoder import SSLEncoder  # noqa: E402

NUM_LAYERS = 4
HIDDEN_SIZE = 32
VOCABULARY_SIZE = 8
WAV_LENGTHS = [16000, 11000, 6400, 13500]  # samples; 49, 34, 19 and 42 frames

# name: (config class, model class, SpeechBrain wrapper, config settings)
ARCHITECTURES = {
    "wavlm_stable": (
        transformers.WavLMConfig,
        transformers.WavLMModel,
        WavLM,
        {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    ),
    "wavlm_post": (
        transformers.WavLMConfig,
        transformers.WavLMModel,
        WavLM,
        {"feat_extract_norm": "group", "do_stable_layer_norm": False},
    ),
    "wav2vec2_stable": (
        transformers.Wav2Vec2Config,
        transformers.Wav2Vec2Model,
        Wav2Vec2,
        {"feat_extract_norm": "layer", "do_stable_layer_norm": True},
    ),
    "wav2vec2_stable_eager": (
        transformers.Wav2Vec2Config,
        transformers.Wav2Vec2Model,
        Wav2Vec2,
        {
            "feat_extract_norm": "layer",
            "do_stable_layer_norm": True,
            "attn_implementation": "eager",
        },
    ),
    "wav2vec2_post": (
        transformers.Wav2Vec2Config,
        transformers.Wav2Vec2Model,
        Wav2Vec2,
        {"feat_extract_norm": "group", "do_stable_layer_norm": False},
    ),
    "hubert": (
        transformers.HubertConfig,
        transformers.HubertModel,
        HuBERT,
        {"feat_extract_norm": "group", "do_stable_layer_norm": False},
    ),
}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread: much faster for tiny models, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_model(architecture, **config_overrides):
    """A tiny randomly initialised encoder, in eval mode."""
    config_class, model_class, _, settings = ARCHITECTURES[architecture]
    torch.manual_seed(0)
    config = config_class(
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=2,
        intermediate_size=2 * HIDDEN_SIZE,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        **{**settings, **config_overrides},
    )
    return model_class(config).eval()


def padded_batch(lengths=WAV_LENGTHS):
    """Zero-padded random waveforms, their relative lengths and HF attention mask."""
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor(lengths)
    attention_mask = torch.arange(int(lengths.max())) < lengths[:, None]
    wavs = torch.randn(len(lengths), int(lengths.max()), generator=generator) * attention_mask
    return wavs, lengths / lengths.max(), attention_mask.long()


def build_early_exit(criterion, exit_layers=(1, 2, 3, 4), decision="utterance"):
    """EarlyExitEncoder on a tiny WavLM Large-shaped encoder with random heads.

    Weights larger than the default init make each layer change the hidden states
    clearly, so that criterion scores differ between layers and utterances.
    """
    model = build_model("wavlm_stable", initializer_range=0.2)
    torch.manual_seed(2)
    heads = ExitHeads(exit_layers, HIDDEN_SIZE, VOCABULARY_SIZE, dnn_neurons=16)
    return EarlyExitEncoder(model, heads, criterion, decision=decision).eval()


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_parity_with_hf_forward(architecture):
    model = build_model(architecture)
    wavs, wav_lens, attention_mask = padded_batch()
    encoder = LayerwiseEncoder(model)
    with torch.no_grad():
        expected = model(wavs, attention_mask=attention_mask).last_hidden_state
        unpadded = model(wavs).last_hidden_state
        assert (encoder(wavs, wav_lens) - expected).abs().max() < 1e-5
        assert (encoder(wavs) - unpadded).abs().max() < 1e-5


@pytest.mark.parametrize("architecture", ["wavlm_stable", "wav2vec2_post", "hubert"])
def test_intermediate_layers_are_raw_layer_outputs(architecture):
    """After layer N (N < depth) the state equals HF's ``hidden_states[N]``."""
    model = build_model(architecture)
    wavs, wav_lens, attention_mask = padded_batch()
    with torch.no_grad():
        expected = model(wavs, attention_mask=attention_mask, output_hidden_states=True)
        states = list(LayerwiseEncoder(model).iter_layers(wavs, wav_lens))
    assert [state.completed_layers for state in states] == list(range(1, NUM_LAYERS + 1))
    for state in states[:-1]:
        reference = expected.hidden_states[state.completed_layers]
        assert (state.hidden_states - reference).abs().max() < 1e-5


@pytest.mark.parametrize("architecture", ["wavlm_stable", "wav2vec2_post", "hubert"])
def test_parity_in_training_mode_with_layerdrop(architecture):
    """Dropout and LayerDrop draw random numbers in the same order as the HF forward."""
    model = build_model(architecture, layerdrop=0.5, mask_time_prob=0.0).train()
    wavs, wav_lens, attention_mask = padded_batch()
    encoder = LayerwiseEncoder(model)
    for seed in range(3):
        torch.manual_seed(seed)
        expected = model(wavs, attention_mask=attention_mask).last_hidden_state
        torch.manual_seed(seed)
        assert (encoder(wavs, wav_lens) - expected).abs().max() < 1e-5


@pytest.fixture(scope="module")
def saved_encoders(tmp_path_factory):
    """Each architecture saved to a local folder, as a SpeechBrain wrapper can load it."""
    root = tmp_path_factory.mktemp("early_exit_encoders")
    folders = {}
    for architecture in ARCHITECTURES:
        folder = root / architecture
        build_model(architecture).save_pretrained(folder)
        transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
        folders[architecture] = folder
    return folders


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_parity_with_the_recipe_encoder_and_speechbrain_wrapper(architecture, saved_encoders,
                                                                 tmp_path):
    """Padded: the recipe's padding-exact encoder. Unpadded: SpeechBrain's own wrapper too."""
    folder = str(saved_encoders[architecture])
    recipe_encoder = SSLEncoder(folder, str(tmp_path), output_norm=True,
                                matmul_front_end=False).eval()
    encoder = LayerwiseEncoder(recipe_encoder)
    assert encoder.model is recipe_encoder.model and encoder.normalize_wav and encoder.output_norm
    wavs, wav_lens, _ = padded_batch()
    with torch.no_grad():
        frames = encoder.frame_lengths(wavs, wav_lens)
        layerwise, wrapped = encoder(wavs, wav_lens), recipe_encoder(wavs, wav_lens)
        for index, length in enumerate(frames.tolist()):
            assert (layerwise[index, :length] - wrapped[index, :length]).abs().max() < 1e-5
        speechbrain_wrapper = ARCHITECTURES[architecture][2](
            source=folder, save_path=str(tmp_path), output_norm=True).eval()
        longest = int(wav_lens.argmax())
        unpadded = wavs[longest:longest + 1]
        difference = LayerwiseEncoder(speechbrain_wrapper)(unpadded) - speechbrain_wrapper(unpadded)
    assert difference.abs().max() < 1e-5


def test_frozen_wrapper_gives_no_gradients(saved_encoders, tmp_path):
    folder = str(saved_encoders["wavlm_stable"])
    wrapper = WavLM(source=folder, save_path=str(tmp_path), freeze=True)
    wavs, wav_lens, _ = padded_batch()
    assert not LayerwiseEncoder(wrapper)(wavs, wav_lens).requires_grad


def entropy_scores(all_exit_log_probs, frame_lengths):
    """Reference: {layer: [B] mean entropy over each utterance's valid frames}."""
    return {
        layer: torch.stack(
            [
                torch.special.entr(log_probs[index, :length].exp()).sum(-1).mean()
                for index, length in enumerate(frame_lengths.tolist())
            ]
        )
        for layer, log_probs in all_exit_log_probs.items()
    }


def similarity_scores(encoder, wavs, wav_lens):
    """Reference: {layer: [B] mean cosine similarity between input and output of the layer}."""
    state = encoder.embed(wavs, wav_lens)
    scores = {}
    for layer_state in encoder.iter_layers(wavs, wav_lens):
        similarity = torch.cosine_similarity(layer_state.hidden_states, state.hidden_states, dim=-1)
        scores[layer_state.completed_layers] = torch.stack(
            [
                similarity[index, :length].mean()
                for index, length in enumerate(layer_state.frame_lengths.tolist())
            ]
        )
        state = layer_state
    return scores


def reference_exit_layers(scores, fires):
    """First exit layer whose score fires, else the last exit layer, per utterance."""
    exit_layers = list(scores)
    decided = []
    for index in range(len(scores[exit_layers[0]])):
        candidates = [layer for layer in exit_layers[:-1] if fires(scores[layer][index])]
        decided.append(candidates[0] if candidates else exit_layers[-1])
    return torch.tensor(decided)


def splitting_thresholds(scores):
    """Midpoints between the scores of the non-final exits: thresholds that change decisions."""
    values = sorted({float(value) for layer in list(scores)[:-1] for value in scores[layer]})
    return [(low + high) / 2 for low, high in zip(values, values[1:], strict=False)]


@pytest.fixture(scope="module")
def reference_run():
    """All exits of the tiny WavLM on the padded batch, and reference criterion scores."""
    early_exit = build_early_exit(FixedLayerCriterion(NUM_LAYERS))
    wavs, wav_lens, _ = padded_batch()
    with torch.no_grad():
        all_exits = early_exit(wavs, wav_lens, all_exits=True)
        similarities = similarity_scores(early_exit.encoder, wavs, wav_lens)
    return {
        "early_exit": early_exit,
        "all_exits": all_exits,
        "scores": {
            "entropy": entropy_scores(all_exits.log_probs, all_exits.frame_lengths),
            "similarity": similarities,
        },
    }


FIRES = {
    "entropy": lambda threshold: lambda score: score < threshold,
    "similarity": lambda threshold: lambda score: score > threshold,
}


def most_spread_threshold(scores, name):
    """The threshold giving the most distinct exit layers over the batch."""

    def distinct_exit_layers(threshold):
        return len(set(reference_exit_layers(scores, FIRES[name](threshold)).tolist()))

    return max(splitting_thresholds(scores), key=distinct_exit_layers)


@pytest.mark.parametrize("name", ["entropy", "similarity"])
def test_exit_layers_and_log_probs_match_reference(name, reference_run):
    early_exit, all_exits = reference_run["early_exit"], reference_run["all_exits"]
    scores = reference_run["scores"][name]
    threshold = most_spread_threshold(scores, name)
    early_exit.criterion = build_exit_criterion(name, threshold=threshold)
    wavs, wav_lens, _ = padded_batch()
    with torch.no_grad():
        log_probs, frame_lengths, exit_layers = early_exit(wavs, wav_lens)
    expected_layers = reference_exit_layers(scores, FIRES[name](threshold))
    assert len(set(expected_layers.tolist())) > 1, "the batch should exit at several layers"
    assert exit_layers.dtype == frame_lengths.dtype == torch.long
    assert torch.equal(exit_layers, expected_layers)
    assert torch.equal(frame_lengths, all_exits.frame_lengths)
    assert log_probs.shape == all_exits.log_probs[NUM_LAYERS].shape
    for index, (length, layer) in enumerate(
        zip(frame_lengths.tolist(), exit_layers.tolist(), strict=True)
    ):
        reference = all_exits.log_probs[layer][index, :length]
        assert (log_probs[index, :length] - reference).abs().max() < 1e-5
        assert not log_probs[index, length:].any()


@pytest.mark.parametrize("name", ["entropy", "similarity"])
def test_stricter_threshold_never_exits_earlier(name, reference_run):
    early_exit = reference_run["early_exit"]
    thresholds = splitting_thresholds(reference_run["scores"][name])
    # Six thresholds, from the strictest to the loosest one.
    thresholds = sorted(thresholds[:: len(thresholds) // 5], reverse=name == "similarity")
    wavs, wav_lens, _ = padded_batch()
    exit_layers = []
    for threshold in thresholds:
        early_exit.criterion = build_exit_criterion(name, threshold=threshold)
        with torch.no_grad():
            exit_layers.append(early_exit(wavs, wav_lens).exit_layers)
    for stricter, looser in zip(exit_layers, exit_layers[1:], strict=False):
        assert torch.all(stricter >= looser)
    assert not torch.equal(exit_layers[0], exit_layers[-1])


@pytest.mark.parametrize("name", ["entropy", "similarity"])
def test_batch_decision_uses_all_valid_frames_of_the_batch(name, reference_run):
    early_exit = reference_run["early_exit"]
    all_exits = reference_run["all_exits"]
    lengths = all_exits.frame_lengths.float()
    # The batch mean over valid frames weights each utterance by its number of frames.
    batch_scores = {
        layer: (scores * lengths).sum() / lengths.sum() * torch.ones_like(scores)
        for layer, scores in reference_run["scores"][name].items()
    }
    thresholds = splitting_thresholds({layer: s[:1] for layer, s in batch_scores.items()})
    wavs, wav_lens, _ = padded_batch()
    early_exit.decision = "batch"
    try:
        for threshold in thresholds:
            early_exit.criterion = build_exit_criterion(name, threshold=threshold)
            with torch.no_grad():
                exit_layers = early_exit(wavs, wav_lens).exit_layers
            expected = reference_exit_layers(batch_scores, FIRES[name](threshold))
            assert torch.equal(exit_layers, expected)
    finally:
        early_exit.decision = "utterance"


def test_each_utterance_exits_as_if_alone(reference_run):
    early_exit = reference_run["early_exit"]
    threshold = most_spread_threshold(reference_run["scores"]["entropy"], "entropy")
    early_exit.criterion = EntropyCriterion(threshold)
    wavs, wav_lens, _ = padded_batch()
    with torch.no_grad():
        batch = early_exit(wavs, wav_lens)
        for index, samples in enumerate(WAV_LENGTHS):
            alone = early_exit(wavs[index : index + 1, :samples])
            length = int(batch.frame_lengths[index])
            assert alone.log_probs.shape[1] == length == int(alone.frame_lengths[0])
            assert alone.exit_layers[0] == batch.exit_layers[index]
            assert (alone.log_probs[0] - batch.log_probs[index, :length]).abs().max() < 1e-5


def test_layers_run_only_on_utterances_still_in_the_batch(reference_run):
    early_exit = reference_run["early_exit"]
    threshold = most_spread_threshold(reference_run["scores"]["entropy"], "entropy")
    early_exit.criterion = EntropyCriterion(threshold)
    shapes = []
    hooks = [
        layer.register_forward_hook(lambda module, args, output: shapes.append(output[0].shape[:2]))
        for layer in early_exit.encoder.model.encoder.layers
    ]
    wavs, wav_lens, _ = padded_batch()
    try:
        with torch.no_grad():
            output = early_exit(wavs, wav_lens)
    finally:
        for hook in hooks:
            hook.remove()
    expected = []
    for layer in range(1, int(output.exit_layers.max()) + 1):
        # Utterances that exited at an earlier layer are gone; padding is trimmed.
        running = output.exit_layers >= layer
        expected.append((int(running.sum()), int(output.frame_lengths[running].max())))
    assert [tuple(shape) for shape in shapes] == expected
    assert len(set(expected)) > 1


def count_flops(early_exit, wavs, wav_lens):
    """Total FLOPs of an early-exit inference (under no_grad, as FlopCounterMode needs)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        early_exit(wavs, wav_lens)
    return counter.get_total_flops()


def test_earlier_exits_cost_fewer_flops(reference_run):
    early_exit = reference_run["early_exit"]
    wavs, wav_lens, _ = padded_batch()
    flops = {}
    for layer in range(1, NUM_LAYERS + 1):
        early_exit.criterion = FixedLayerCriterion(layer)
        flops[layer] = count_flops(early_exit, wavs, wav_lens)
    assert flops[1] < flops[2] < flops[3] < flops[4]
    threshold = most_spread_threshold(reference_run["scores"]["similarity"], "similarity")
    early_exit.criterion = SimilarityCriterion(threshold)
    assert count_flops(early_exit, wavs, wav_lens) < flops[4]


def test_all_exits_train_heads_and_encoder():
    early_exit = build_early_exit(FixedLayerCriterion(3), exit_layers=(2, 3)).train()
    wavs, wav_lens, _ = padded_batch()
    output = early_exit(wavs, wav_lens, all_exits=True)
    assert sorted(output.log_probs) == [2, 3]
    targets = torch.randint(1, VOCABULARY_SIZE, (len(WAV_LENGTHS), 5))
    target_lengths = torch.full((len(WAV_LENGTHS),), 5)
    loss = sum(
        torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), targets, output.frame_lengths, target_lengths
        )
        for log_probs in output.log_probs.values()
    )
    loss.backward()
    assert all(parameter.grad is not None for parameter in early_exit.exit_heads.parameters())
    first_layer = early_exit.encoder.model.encoder.layers[0]
    assert all(parameter.grad is not None for parameter in first_layer.parameters())
    # The fourth layer runs after the last exit: never run, never trained.
    assert early_exit.encoder.model.encoder.layers[3].feed_forward.output_dense.weight.grad is None


def test_heads_are_saved_restored_moved_and_counted():
    torch.manual_seed(0)
    heads = ExitHeads([3, 4], HIDDEN_SIZE, VOCABULARY_SIZE, dnn_neurons=16)
    per_head = (HIDDEN_SIZE + 1) * 16 + (16 + 1) * VOCABULARY_SIZE
    assert sum(parameter.numel() for parameter in heads.parameters()) == 2 * per_head
    torch.manual_seed(1)
    restored = ExitHeads([3, 4], HIDDEN_SIZE, VOCABULARY_SIZE, dnn_neurons=16)
    restored.load_state_dict(heads.state_dict())
    hidden_states = torch.randn(2, 5, HIDDEN_SIZE)
    assert torch.equal(restored(hidden_states, 4), heads(hidden_states, 4))
    heads.to(torch.float64)
    assert all(parameter.dtype == torch.float64 for parameter in heads.parameters())
    heads.to("meta")
    assert all(parameter.device.type == "meta" for parameter in heads.parameters())
    early_exit = build_early_exit(FixedLayerCriterion(4), exit_layers=(3, 4))
    assert "exit_heads.heads.3.0.weight" in early_exit.state_dict()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: build_exit_criterion("confidence", threshold=0.1), "entropy, similarity, fixed"),
        (lambda: EntropyCriterion(-0.1), "-0.1"),
        (lambda: SimilarityCriterion(1.5), "1.5"),
        (lambda: SimilarityCriterion(-1.2), "-1.2"),
        (lambda: build_exit_criterion("entropy"), "entropy threshold"),
        (lambda: FixedLayerCriterion(0), "0"),
        (lambda: ExitHeads([], HIDDEN_SIZE, VOCABULARY_SIZE), "no exit layer"),
        (lambda: ExitHeads([0, 2], HIDDEN_SIZE, VOCABULARY_SIZE), "exit layer 0"),
        (lambda: ExitHeads([2, 2], HIDDEN_SIZE, VOCABULARY_SIZE), "repeated"),
        (lambda: build_early_exit(FixedLayerCriterion(2), exit_layers=(2, 5)), "5 is outside 1..4"),
        (
            lambda: build_early_exit(FixedLayerCriterion(3), exit_layers=(2, 4)),
            "fixed exit layer 3",
        ),
        (lambda: build_early_exit(FixedLayerCriterion(2), decision="frame"), "utterance, batch"),
        (
            lambda: EarlyExitEncoder(
                build_model("hubert"), ExitHeads([2], 16, VOCABULARY_SIZE), FixedLayerCriterion(2)
            ),
            "exit heads take 16 features, the encoder gives 32",
        ),
    ],
)
def test_invalid_arguments_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        build()


def test_unsupported_encoder_is_rejected():
    with pytest.raises(TypeError, match="WavLMModel, Wav2Vec2Model, HubertModel"):
        LayerwiseEncoder(torch.nn.Linear(4, 4))
