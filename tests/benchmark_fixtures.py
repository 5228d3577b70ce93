"""Tiny stand-ins for what the benchmark is given: a brain built from a random
WavLM, a synthetic test set, a character encoder and a hand-written ARPA LM.

Usage
-----
>>> brain = TinyBrain()
>>> dataset = make_test_dataset()
>>> output = brain.infer_batch(torch.zeros(1, 16000), torch.ones(1))
>>> output["log_probs"].shape[-1] == len(brain.tokenizer.ind2lab)
True
"""

import math

import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.lobes.downsampling import SignalDownsampler
from transformers import WavLMConfig, WavLMModel

from ssl_ctc.ctc import make_tokenizer

SAMPLE_RATE = 16000
TRANSCRIPTS = (
    "THE CAT SAT",
    "A DOG RAN HOME",
    "THE DOG SAT ON THE MAT",
    "HELLO WORLD",
    "A CAT RAN",
    "IT'S THE END OF THE DAY",
)


def tiny_wavlm_config(**overrides):
    """A WavLM with hidden size 32, 2 layers and 16-channel CNN (~31 k params)."""
    config = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (16,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "apply_spec_augment": False,
    }
    return WavLMConfig(**{**config, **overrides})


class TinyBrain:
    """Satisfies the benchmark's contract with a random tiny WavLM + linear
    CTC head; optionally resamples the input first (SignalDownsampler).

    Arguments
    ---------
    downsampling_factor : int
        1 for none.
    seed : int
        Seed of the random weights.
    """

    def __init__(self, downsampling_factor=1, seed=1986):
        torch.manual_seed(seed)
        self.tokenizer = make_tokenizer()
        encoder = WavLMModel(tiny_wavlm_config())
        modules = {
            "encoder": encoder,
            "head": torch.nn.Linear(encoder.config.hidden_size, len(self.tokenizer.ind2lab)),
        }
        if downsampling_factor > 1:
            modules["downsampler"] = SignalDownsampler(downsampling_factor, SAMPLE_RATE)
        self.modules = torch.nn.ModuleDict(modules)
        self.device = "cpu"

    def infer_batch(self, wavs, wav_lens):
        """Log-probabilities, true frame counts and a per-utterance extra
        ("exit_layers": 2 for utterances over 30 frames, else 1)."""
        if "downsampler" in self.modules:
            wavs = self.modules.downsampler(wavs)
        samples = torch.round(wav_lens * wavs.shape[1]).long()
        attention_mask = torch.arange(wavs.shape[1], device=wavs.device) < samples[:, None]
        encoder = self.modules.encoder
        hidden = encoder(wavs, attention_mask=attention_mask.long()).last_hidden_state
        log_probs = self.modules.head(hidden).log_softmax(dim=-1)
        lengths = encoder._get_feat_extract_output_lengths(samples).clamp(max=hidden.shape[1])
        return {
            "log_probs": log_probs,
            "lengths": lengths,
            "exit_layers": torch.where(lengths > 30, 2, 1),
        }


def synthetic_waveform(seconds, seed):
    """A few seconds of tones in noise at 16 kHz."""
    generator = torch.Generator().manual_seed(seed)
    time_axis = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    frequency = 200 + 50 * seed
    tone = 0.3 * torch.sin(2 * math.pi * frequency * time_axis)
    return tone + 0.05 * torch.randn(len(time_axis), generator=generator)


def make_test_dataset(durations=(0.6, 1.4, 0.9, 1.8, 0.7, 1.2)):
    """A DynamicItemDataset of synthetic utterances with TRANSCRIPTS."""
    data = {
        f"utt{index}": {
            "wav_seed": index,
            "duration": duration,
            "wrd": TRANSCRIPTS[index % len(TRANSCRIPTS)],
        }
        for index, duration in enumerate(durations)
    }
    dataset = DynamicItemDataset(data)

    def audio_pipeline(wav_seed, duration):
        return synthetic_waveform(duration, wav_seed)

    dataset.add_dynamic_item(audio_pipeline, takes=["wav_seed", "duration"], provides="sig")
    return dataset


def write_arpa(path, sentences=TRANSCRIPTS):
    """Writes a bigram ARPA LM over the sentences' words (KenLM needs at
    least bigrams): uniform unigrams, the observed bigrams."""
    words = sorted({word for sentence in sentences for word in sentence.split()})
    bigrams = sorted(
        {
            pair
            for sentence in sentences
            for pair in zip(["<s>"] + sentence.split(), sentence.split() + ["</s>"], strict=True)
        }
    )
    unigram_logprob = -math.log10(len(words) + 1)
    lines = ["\\data\\", f"ngram 1={len(words) + 3}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    lines += ["-99\t<s>\t-0.3", f"{unigram_logprob:.4f}\t</s>", f"{unigram_logprob:.4f}\t<unk>"]
    lines += [f"{unigram_logprob:.4f}\t{word}\t-0.3" for word in words]
    lines += ["", "\\2-grams:"]
    lines += [f"-0.3\t{first} {second}" for first, second in bigrams]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path
