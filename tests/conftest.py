"""Shared fixtures: tiny encoders built from configs, the embedded corpus, run helpers."""

import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_CORPUS = os.path.join(REPO, "embedded", "LibriSpeech")
SEED_ENCODER = os.path.join(REPO, "embedded", "seed_wavlm")
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build_tiny_encoder(folder, architecture, hidden_size=32, num_layers=3):
    """Save a randomly initialised tiny WavLM, wav2vec 2.0 or HuBERT to ``folder``."""
    import torch

    from speed_analysis.random_encoders import save_random_encoder

    torch.manual_seed(0)
    shape = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden_size,
        "conv_dim": (16,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": architecture != "hubert",  # HuBERT: the post-norm path
        "conv_bias": False,
    }
    save_random_encoder(folder, f"{architecture}-large", shape)
    return folder


@pytest.fixture(scope="session")
def tiny_encoders(tmp_path_factory):
    """Folders holding tiny random WavLM, wav2vec 2.0 and HuBERT encoders."""
    root = tmp_path_factory.mktemp("encoders")
    return {
        name: build_tiny_encoder(str(root / name), name) for name in ("wavlm", "wav2vec2", "hubert")
    }


@pytest.fixture(scope="session")
def embedded_corpus():
    """The shipped synthetic corpus in LibriSpeech layout."""
    assert os.path.isdir(EMBEDDED_CORPUS), "embedded corpus missing: see embedded/README.md"
    return EMBEDDED_CORPUS


@pytest.fixture
def small_corpus(tmp_path, embedded_corpus):
    """A writable copy of a few chapters of each split, for breaking on purpose."""
    target = tmp_path / "LibriSpeech"
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        speakers = sorted(os.listdir(os.path.join(embedded_corpus, split)))[:2]
        for speaker in speakers:
            shutil.copytree(
                os.path.join(embedded_corpus, split, speaker), target / split / speaker
            )
    for name in os.listdir(embedded_corpus):
        if name.endswith(".arpa"):
            shutil.copy(os.path.join(embedded_corpus, name), target / name)
    return str(target)


# Utterances per split in ``few_utterances_corpus``: enough for several training
# steps per epoch and per process, small enough for real (non --debug) runs in seconds.
FEW_UTTERANCES = {"train-clean-100": 8, "dev-clean": 2, "test-clean": 2}


@pytest.fixture(scope="session")
def few_utterances_corpus(tmp_path_factory, embedded_corpus):
    """The first utterances of each split of the embedded corpus (see ``FEW_UTTERANCES``).

    For real runs that must finish in seconds (resume, torchrun); read-only: break
    ``small_corpus`` instead.
    """
    from librispeech_prepare import copy_first_utterances

    target = tmp_path_factory.mktemp("few_utterances") / "LibriSpeech"
    copy_first_utterances(embedded_corpus, target, FEW_UTTERANCES)
    return str(target)
