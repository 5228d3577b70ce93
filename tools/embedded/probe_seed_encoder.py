"""Check that the shipped seed encoder lets a fresh CTC head learn quickly.

Loads ``embedded/seed_wavlm`` offline through SpeechBrain's ``WavLM`` wrapper (as the recipe
does), adds a fresh head shaped like the paper's (Linear 128->1024, LeakyReLU, Linear
1024->31), fine-tunes encoder and head with CTC on train-clean-100 (the CNN front-end frozen,
as in the paper) and reports greedy CER and WER on dev-clean after each epoch and on
test-clean at the end, with the wall time of each epoch. ``--factor 2`` feeds the audio
resampled to 8 kHz; ``--random-init`` replaces the weights by a random initialisation of the
same configuration, for comparison.

Usage: HF_HUB_OFFLINE=1 python tools/embedded/probe_seed_encoder.py [--encoder embedded/seed_wavlm]
[--data embedded/LibriSpeech] [--factor 1] [--epochs 4] [--batch-size 8] [--lr 5e-4]
[--threads 2] [--seed 1986] [--random-init]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from speechbrain.integrations.huggingface.wavlm import WavLM
from synthetic_asr import (
    N_OUTPUTS,
    ErrorRates,
    collate,
    decode_texts,
    read_librispeech_split,
    seed_everything,
)
from transformers import AutoConfig, AutoFeatureExtractor, WavLMModel

HEAD_OUTPUTS = N_OUTPUTS  # the recipe's 31 labels: blank, bos, eos (never targets), 28 characters


def load_encoder(source, save_path, random_init):
    """Load the encoder through SpeechBrain's wrapper, optionally re-initialised.

    Parameters
    ----------
    source : pathlib.Path
        The local model folder.
    save_path : str
        The wrapper's cache folder; also holds the random model when ``random_init``.
    random_init : bool
        Load a randomly initialised model of the same configuration instead.

    Returns
    -------
    speechbrain.integrations.huggingface.wavlm.WavLM
        The wrapper, CNN front-end frozen, SpecAugment off.
    """
    if random_init:
        random_dir = Path(save_path) / "random_init"
        WavLMModel(AutoConfig.from_pretrained(source)).save_pretrained(random_dir)
        AutoFeatureExtractor.from_pretrained(source).save_pretrained(random_dir)
        source = random_dir
    return WavLM(source=str(source), save_path=save_path, freeze=False,
                 freeze_feature_extractor=True)


def run_batch(encoder, head, batch, factor):
    """Forward a batch; return log-probs, frame counts, targets and target lengths."""
    wav, lengths, targets, target_lengths = collate(batch, factor, normalize=False)
    hidden = encoder(wav, lengths / wav.shape[1])
    log_probs = head(hidden).log_softmax(-1)
    frame_lengths = encoder.model._get_feat_extract_output_lengths(lengths)
    return log_probs, frame_lengths, targets, target_lengths


def evaluate(encoder, head, utterances, factor):
    """Greedy CER/WER in % on ``utterances``, in batches of 8 sorted by duration."""
    encoder.eval()
    head.eval()
    rates = ErrorRates()
    ordered = sorted(utterances, key=lambda u: len(u.audio))
    with torch.no_grad():
        for start in range(0, len(ordered), 8):
            batch = ordered[start:start + 8]
            log_probs, frame_lengths, _, _ = run_batch(encoder, head, batch, factor)
            rates.append([u.utt_id for u in batch], decode_texts(log_probs, frame_lengths),
                         [u.text for u in batch])
    encoder.train()
    head.train()
    return rates.summarize()


def main():
    """Parse the command line, fine-tune and report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", type=Path, default=Path("embedded/seed_wavlm"))
    parser.add_argument("--data", type=Path, default=Path("embedded/LibriSpeech"))
    parser.add_argument("--factor", type=int, default=1,
                        help="input downsampling factor (2: 8 kHz)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--random-init", action="store_true",
                        help="start from random weights of the same configuration")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = seed_everything(args.seed)
    train = read_librispeech_split(args.data / "train-clean-100")
    dev = read_librispeech_split(args.data / "dev-clean")
    test = read_librispeech_split(args.data / "test-clean")

    with tempfile.TemporaryDirectory() as save_path:
        encoder = load_encoder(args.encoder, save_path, args.random_init)
    head = torch.nn.Sequential(
        torch.nn.Linear(encoder.model.config.hidden_size, 1024),
        torch.nn.LeakyReLU(),
        torch.nn.Linear(1024, HEAD_OUTPUTS),
    )
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=args.lr)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    print(f"probe: {args.encoder}{' (random init)' if args.random_init else ''}, "
          f"{16000 / args.factor:.0f} Hz input, batch {args.batch_size}, Adam lr {args.lr}, "
          f"{args.threads} threads, {HEAD_OUTPUTS} outputs")

    total = 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.time()
        order = list(train)
        rng.shuffle(order)
        losses = []
        for i in range(0, len(order), args.batch_size):
            log_probs, frame_lengths, targets, target_lengths = run_batch(
                encoder, head, order[i:i + args.batch_size], args.factor)
            loss = ctc(log_probs.transpose(0, 1), targets, frame_lengths, target_lengths)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            losses.append(loss.item())
        epoch_time = time.time() - start
        total += epoch_time
        scores = evaluate(encoder, head, dev, args.factor)
        print(f"epoch {epoch}: train loss {sum(losses) / len(losses):.3f}, "
              f"{epoch_time:.1f} s (total {total:.0f} s), dev-clean CER {scores['CER']:.2f} % "
              f"WER {scores['WER']:.2f} %", flush=True)

    scores = evaluate(encoder, head, test, args.factor)
    print(f"test-clean after {args.epochs} epochs ({total:.0f} s of training): "
          f"CER {scores['CER']:.2f} % WER {scores['WER']:.2f} %")


if __name__ == "__main__":
    main()
