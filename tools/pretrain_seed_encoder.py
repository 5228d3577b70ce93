"""Pre-train the tiny seed WavLM shipped in embedded/seed_wavlm (a stand-in SSL checkpoint).

The recipe's embedded default needs an encoder that, like a real self-supervised one, lets a
fresh CTC head learn quickly. Real checkpoints cannot be downloaded here, so this script trains
a tiny ``transformers.WavLMModel`` (hidden 128, 4 layers, WavLM-Large-style stable layer norm,
50 frames per second at 16 kHz) with *supervised* CTC on the synthetic pre-training sentences
and train-clean-100 (never dev or test), through a throw-away character head that is not saved.

After a start on 8 kHz batches only (cheapest, and the quickest way past CTC's all-blank
plateau), a third of the batches stay at 16 kHz, a third are resampled to 8 kHz and a third to
16/3 kHz, all fed as-is (shorter signals, fewer frames), so that the encoder also copes with
downsampled input. The 16/3 kHz batches have about as few frames as characters, so their head
emits two CTC frames per encoder frame (as the recipe does for downsampling factors >= 3).

Writes ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` to ``--out``.

Usage: python tools/pretrain_seed_encoder.py [--data embedded/LibriSpeech]
[--pretrain-dir embedded/.cache/pretrain] [--out embedded/seed_wavlm] [--steps 1500]
[--threads 1] [--seed 1986]
"""

import argparse
import math
import time
from pathlib import Path

import torch
from synthetic_asr import (
    N_OUTPUTS,
    SAMPLE_RATE,
    ErrorRates,
    collate,
    greedy_decode,
    make_batches,
    padding_mask,
    read_librispeech_split,
    read_pretrain_set,
    seed_everything,
)
from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

# Downsampling factor of a batch -> (probability, CTC frames emitted per encoder frame).
FACTOR_MIX = {1: (1 / 3, 1), 2: (1 / 3, 1), 3: (1 / 3, 2)}
START_FACTOR = 2  # the only factor during the first --start-steps steps


def seed_config():
    """Return the tiny WavLM configuration.

    Returns
    -------
    transformers.WavLMConfig
        Hidden 128, 4 layers of 4 heads, feed-forward 256, seven 64-channel convolutions with
        the standard WavLM kernels and strides (320x downsampling), layer-norm feature
        extractor and stable layer norm as in WavLM Large. LayerDrop is off so that layer
        removal and early exit start from a plain stack. Dropout 0.1 and light time masking
        (5 % of the frames in spans of 5) are on, in pre-training too.
    """
    return WavLMConfig(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        conv_dim=(64,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=4,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.05,
        mask_time_length=5,
        mask_time_min_masks=1,
        vocab_size=N_OUTPUTS,
    )


def feature_extractor():
    """Return the ``Wav2Vec2FeatureExtractor`` that SpeechBrain's wrapper loads with the model."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


class SeedCTC(torch.nn.Module):
    """The encoder plus throw-away linear CTC heads (one per frame multiplier).

    Parameters
    ----------
    config : transformers.WavLMConfig
        The encoder configuration.
    """

    def __init__(self, config):
        super().__init__()
        self.encoder = WavLMModel(config)
        self.heads = torch.nn.ModuleDict({
            str(k): torch.nn.Linear(config.hidden_size, k * N_OUTPUTS)
            for k in sorted({k for _, k in FACTOR_MIX.values()})
        })

    def forward(self, wav, lengths, frames_per_frame=1):
        """Return CTC log-probabilities ``(batch, frames, N_OUTPUTS)`` and frame counts.

        Parameters
        ----------
        wav : torch.Tensor
            ``(batch, samples)`` normalised, zero-padded waveforms.
        lengths : torch.Tensor
            Samples per utterance.
        frames_per_frame : int
            CTC frames emitted per encoder frame (selects the head).

        Returns
        -------
        log_probs : torch.Tensor
            ``(batch, frames * frames_per_frame, N_OUTPUTS)``.
        frame_lengths : torch.Tensor
            Valid CTC frames per utterance.
        """
        hidden = self.encoder(wav, attention_mask=padding_mask(wav, lengths)).last_hidden_state
        logits = self.heads[str(frames_per_frame)](hidden)
        logits = logits.reshape(hidden.shape[0], -1, N_OUTPUTS)
        frame_lengths = self.encoder._get_feat_extract_output_lengths(lengths) * frames_per_frame
        return logits.log_softmax(-1), frame_lengths


def learning_rate(step, total_steps, peak, warmup):
    """Linear warm-up then cosine decay to 5 % of ``peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def evaluate(model, utterances, factor, frames_per_frame):
    """Greedy CER/WER of ``model`` on ``utterances`` downsampled by ``factor``.

    Parameters
    ----------
    model : SeedCTC
        The model.
    utterances : list of Utterance
        The evaluation set.
    factor : int
        Input downsampling factor.
    frames_per_frame : int
        Which head to use.

    Returns
    -------
    dict
        ``{"CER": %, "WER": %}``.
    """
    model.eval()
    rates = ErrorRates()
    ordered = sorted(utterances, key=lambda u: len(u.audio))
    with torch.no_grad():
        for start in range(0, len(ordered), 8):
            batch = ordered[start:start + 8]
            wav, lengths, _, _ = collate(batch, factor)
            log_probs, frame_lengths = model(wav, lengths, frames_per_frame)
            rates.append([u.utt_id for u in batch], greedy_decode(log_probs, frame_lengths),
                         [u.text for u in batch])
    model.train()
    return rates.summarize()


def main():
    """Parse the command line, pre-train, evaluate on dev-clean and save the encoder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("embedded/LibriSpeech"))
    parser.add_argument("--pretrain-dir", type=Path, default=Path("embedded/.cache/pretrain"))
    parser.add_argument("--out", type=Path, default=Path("embedded/seed_wavlm"))
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps")
    parser.add_argument("--max-samples", type=int, default=8 * 3 * SAMPLE_RATE,
                        help="batch bound: utterances x longest (16 kHz samples)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=150, help="warm-up steps")
    parser.add_argument("--start-steps", type=int, default=300,
                        help="first steps on 8 kHz batches only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1986)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = seed_everything(args.seed)
    train = read_pretrain_set(args.pretrain_dir) + read_librispeech_split(
        args.data / "train-clean-100")
    dev = read_librispeech_split(args.data / "dev-clean")
    hours = sum(len(u.audio) for u in train) / SAMPLE_RATE / 3600
    print(f"pre-training on {len(train)} utterances ({hours:.2f} h), {args.threads} threads")

    model = SeedCTC(seed_config())
    n_params = sum(p.numel() for p in model.encoder.parameters())
    print(f"encoder parameters: {n_params}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    factors = list(FACTOR_MIX)
    weights = [p for p, _ in FACTOR_MIX.values()]

    step, epoch, start, running = 0, 0, time.time(), []
    model.train()
    while step < args.steps:
        epoch += 1
        for batch in make_batches(train, args.max_samples, rng):
            if step == args.steps:
                break
            factor = (START_FACTOR if step < args.start_steps
                      else rng.choices(factors, weights)[0])
            frames_per_frame = FACTOR_MIX[factor][1]
            wav, lengths, targets, target_lengths = collate(batch, factor)
            log_probs, frame_lengths = model(wav, lengths, frames_per_frame)
            loss = ctc(log_probs.transpose(0, 1), targets, frame_lengths, target_lengths)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            running.append(loss.item())
            step += 1
            if step % 100 == 0:
                print(f"step {step} epoch {epoch} loss {sum(running) / len(running):.3f} "
                      f"lr {optimizer.param_groups[0]['lr']:.2e} "
                      f"elapsed {time.time() - start:.0f} s", flush=True)
                running = []
    print(f"trained {step} steps ({epoch} epochs) in {time.time() - start:.0f} s")

    for factor, (_, frames_per_frame) in FACTOR_MIX.items():
        scores = evaluate(model, dev, factor, frames_per_frame)
        print(f"dev-clean at {SAMPLE_RATE / factor:.0f} Hz, throw-away head: "
              f"CER {scores['CER']:.2f} % WER {scores['WER']:.2f} %")

    args.out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(args.out, safe_serialization=True)
    feature_extractor().save_pretrained(args.out)
    for path in args.out.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the folder is meant to be shared
    print(f"saved the encoder (without head) to {args.out}")


if __name__ == "__main__":
    main()
