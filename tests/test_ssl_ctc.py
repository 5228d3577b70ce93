"""The shared core: downsamplers, CTC upsampling, encoders, truncation, every YAML."""

import glob
import os

import pytest
import torch
from conftest import REPO
from hyperpyyaml import load_hyperpyyaml

import ssl_ctc.ctc
import ssl_ctc.downsampling
import ssl_ctc.encoder
import ssl_ctc.errors
from early_exiting.brain import EarlyExitBrain
from ssl_ctc.benchmarking.settings import BenchmarkSettings
from ssl_ctc.downsampling import DownsampledBrain
from ssl_ctc.encoder import load_ssl_encoder
from ssl_ctc.experiments.registry import TECHNIQUE_ABBREVIATIONS
from ssl_ctc.layer_removal import LayerRemovalBrain

TECHNIQUES = list(TECHNIQUE_ABBREVIATIONS)


def load_yaml(path, overrides):
    with open(path, encoding="utf-8") as yaml_file:
        return load_hyperpyyaml(yaml_file, overrides)


def yaml_overrides(encoder_folder, tmp_path, **extra):
    return {
        "data_folder": str(tmp_path),
        "ssl_hub": encoder_folder,
        "output_folder": str(tmp_path / "out"),
        "dnn_neurons": 16,
        **extra,
    }


@pytest.mark.parametrize("technique", TECHNIQUES)
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_downsampler_output_length(tiny_encoders, tmp_path, technique, factor):
    hparams = load_yaml(
        os.path.join(REPO, "hparams", "sig_down8000.yaml"),
        yaml_overrides(tiny_encoders["wavlm"], tmp_path, downsampling_technique=technique,
                       downsampling_factor=factor),
    )
    downsampled = hparams["downsampler"](torch.rand(2, 48000))
    assert downsampled.shape[0] == 2
    assert downsampled.shape[1] == pytest.approx(48000 / factor, rel=0.01, abs=81)
    learned = sum(p.numel() for p in hparams["downsampler"].parameters())
    assert (learned > 0) == (technique == "convolutional" and factor > 1)
    # learned downsamplers are optimised and checkpointed with the head
    model_params = {id(p) for p in hparams["model"].parameters()}
    assert all(id(p) in model_params for p in hparams["downsampler"].parameters())
    assert hparams["ctc_upsampling_factor"] == (2 if factor >= 3 else 1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"downsampling_technique": "decimation"}, "unknown downsampling_technique 'decimation'; "
         "valid: averaging, convolutional, signal_downsampling"),
        ({"downsampling_factor": 0}, "downsampling_factor must be an integer >= 1"),
        ({"downsampling_factor": 2.5}, "downsampling_factor must be an integer >= 1"),
        ({"ctc_upsampling_factor": 0}, "ctc_upsampling_factor must be an integer >= 1"),
        ({"considered_layers": 9}, "between 1 and the encoder's depth 3, got 9"),
        ({"considered_layers": 0}, "between 1 and the encoder's depth 3, got 0"),
        ({"ssl_hub": "/nonexistent/wavlm"}, "ssl_hub '/nonexistent/wavlm' cannot be loaded"),
    ],
)
def test_bad_configuration_fails_at_yaml_load(tiny_encoders, tmp_path, overrides, message):
    with pytest.raises(ssl_ctc.errors.ConfigurationError, match=message.replace("(", r"\(")):
        load_yaml(os.path.join(REPO, "hparams", "sig_down8000.yaml"),
                  yaml_overrides(tiny_encoders["wavlm"], tmp_path, **overrides))


def test_upsampled_head_shapes(tiny_encoders, tmp_path):
    hparams = load_yaml(
        os.path.join(REPO, "hparams", "sig_down8000.yaml"),
        yaml_overrides(tiny_encoders["wavlm"], tmp_path, downsampling_factor=3),
    )
    brain = ssl_ctc.downsampling.DownsampledBrain(modules=hparams["modules"], hparams=hparams)
    brain.modules.eval()
    wavs = torch.rand(2, 32000)
    wav_lens = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        features = brain.encode(wavs, wav_lens)
        output = brain.infer_batch(wavs, wav_lens)
        half_alone = brain.infer_batch(wavs[1:, :16000], torch.ones(1))
    assert output["log_probs"].shape == (2, 2 * features.shape[1], 31)
    # exact frame counts: the shorter utterance gets the frames it gets alone
    assert output["lengths"].tolist() == [2 * features.shape[1], half_alone["log_probs"].shape[1]]
    assert torch.allclose(output["log_probs"].exp().sum(-1), torch.ones(2, 2 * features.shape[1]))


@pytest.mark.parametrize("architecture", ["wavlm", "wav2vec2", "hubert"])
def test_encoders_load_offline(tiny_encoders, tmp_path, architecture):
    encoder = load_ssl_encoder(tiny_encoders[architecture], str(tmp_path))
    assert encoder(torch.rand(2, 16000), torch.tensor([1.0, 0.7])).shape == (2, 49, 32)


@pytest.mark.parametrize("architecture", ["wavlm", "wav2vec2", "hubert"])
def test_truncation_keeps_first_layers(tiny_encoders, tmp_path, architecture):
    full = load_ssl_encoder(tiny_encoders[architecture], str(tmp_path)).model.eval()
    truncated = load_ssl_encoder(
        tiny_encoders[architecture], str(tmp_path), considered_layers=2
    ).model.eval()
    assert len(truncated.encoder.layers) == truncated.config.num_hidden_layers == 2
    full_state = full.state_dict()
    for name, tensor in truncated.state_dict().items():
        assert torch.equal(tensor, full_state[name]), name
    wavs = torch.rand(2, 16000)
    with torch.no_grad():
        hidden = full(wavs, output_hidden_states=True).hidden_states[2]
        if full.config.do_stable_layer_norm:  # the final encoder LayerNorm stays
            hidden = full.encoder.layer_norm(hidden)
        assert torch.allclose(truncated(wavs).last_hidden_state, hidden, atol=1e-5)


def test_truncated_checkpoint_round_trip(tiny_encoders, tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    encoder = load_ssl_encoder(tiny_encoders["wavlm"], str(tmp_path), considered_layers=2)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(0.01)
    Checkpointer(str(tmp_path / "ckpt"), {"ssl": encoder}).save_checkpoint()
    restored = load_ssl_encoder(tiny_encoders["wavlm"], str(tmp_path), considered_layers=2)
    Checkpointer(str(tmp_path / "ckpt"), {"ssl": restored}).recover_if_possible()
    for (name, expected), actual in zip(encoder.state_dict().items(),
                                        restored.state_dict().values(), strict=True):
        assert torch.equal(expected, actual), name


def test_tokenizer_is_the_papers_31_labels():
    tokenizer = ssl_ctc.ctc.make_tokenizer()
    assert len(tokenizer) == 31 and tokenizer.get_blank_index() == 0
    assert "".join(tokenizer.decode_ndim(tokenizer.encode_sequence(list("IT'S A DOG")))) == (
        "IT'S A DOG"
    )


@pytest.mark.parametrize(
    "yaml_path", sorted(glob.glob(os.path.join(REPO, "hparams", "**", "*.yaml"), recursive=True))
)
def test_every_yaml_loads(tiny_encoders, tmp_path, yaml_path):
    tiny_depth = {"considered_layers": None}
    if "early_exit" in yaml_path:  # the paper's exits (13-24) do not fit a 3-layer encoder
        tiny_depth["exit_layers"] = [2, 3]
    hparams = load_yaml(yaml_path, yaml_overrides(tiny_encoders["wavlm"], tmp_path, **tiny_depth))
    early_exit = "early_exit" in yaml_path
    inference_modules = {"early_exit"} if early_exit else {"ssl", "downsampler", "enc", "ctc_lin"}
    assert set(hparams["modules"]) == inference_modules
    # the checkpointer saves every trained part, and only the main model's optimiser state
    recoverables = set(hparams["checkpointer"].recoverables)
    assert {"ssl", "model", "counter", "scheduler_model", "scheduler_ssl"} <= recoverables
    trained = {id(p) for p in hparams["model"].parameters()}
    head = hparams["exit_heads"] if early_exit else hparams["enc"]
    assert {id(p) for p in head.parameters()} <= trained
    # loaders decode audio in worker processes, the benchmark settings pass their checks
    for loader in ("train", "valid", "test"):
        assert hparams[f"{loader}_dataloader_opts"]["num_workers"] == hparams["num_workers"] > 0
    BenchmarkSettings.from_hparams({**hparams, "lm_path": None}).validate()
    # the Brain the strategy script runs turns a padded batch into 31-label log-probs
    brain_class = hparams["brain_class"]  # the YAML names its strategy's Brain
    assert brain_class is {"downsampling": DownsampledBrain, "sig_down8000": DownsampledBrain,
                           "layer_removal": LayerRemovalBrain, "early_exits": EarlyExitBrain}[
        os.path.basename(yaml_path).removesuffix(".yaml")]
    brain = brain_class(modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"})
    brain.modules.eval()
    with torch.no_grad():
        output = brain.infer_batch(torch.rand(2, 16000), torch.tensor([1.0, 0.6]))
    assert output["log_probs"].shape[-1] == hparams["output_neurons"] == 31
    assert output["lengths"][0] == output["log_probs"].shape[1] > output["lengths"][1]


def test_frozen_encoder_still_trains_the_learned_downsampler(tiny_encoders, tmp_path):
    """freeze_ssl: True trains the head and the convolutional downsampler, not the encoder."""
    hparams = load_yaml(
        os.path.join(REPO, "hparams", "sig_down8000.yaml"),
        yaml_overrides(tiny_encoders["wavlm"], tmp_path, freeze_ssl=True,
                       downsampling_technique="convolutional", downsampling_factor=2),
    )
    brain = ssl_ctc.downsampling.DownsampledBrain(modules=hparams["modules"], hparams=hparams)
    brain.modules.train()
    output = brain.infer_batch(torch.rand(2, 16000), torch.tensor([1.0, 0.8]))
    output["log_probs"].sum().backward()
    downsampler_grads = [p.grad for p in hparams["downsampler"].parameters()]
    assert downsampler_grads and all(g is not None and g.abs().sum() > 0 for g in downsampler_grads)
    assert all(p.grad is None for p in hparams["ssl"].parameters())


def test_the_paper_name_of_the_downsampling_yaml_is_the_same_file():
    """The paper's command, with hparams/sig_down8000.yaml, keeps working."""
    hparams = os.path.join(REPO, "hparams")
    assert os.path.samefile(os.path.join(hparams, "sig_down8000.yaml"),
                            os.path.join(hparams, "downsampling.yaml"))
