"""Pre-train the tiny seed WavLM shipped in embedded/seed_wavlm (a stand-in SSL checkpoint).

The recipe's embedded default needs an encoder that, like a real self-supervised one, lets a
fresh CTC head learn quickly. Real checkpoints cannot be downloaded here, so this script trains
a tiny ``transformers.WavLMModel`` (hidden 128, 4 layers, WavLM-Large-style stable layer norm,
50 frames per second at 16 kHz) with *supervised* CTC on the synthetic pre-training sentences
and train-clean-100 (never dev or test), through a throw-away character head that is not saved.

After a start on 8 kHz batches only (``--start-steps``: cheapest, and the quickest way past
CTC's all-blank plateau from random weights), each batch is drawn at 16 kHz, resampled to 8 kHz
or to 16/3 kHz with the weights of ``--factor-mix``, and fed as-is (shorter signals, fewer
frames), so that the encoder also copes with downsampled input. The 16/3 kHz batches have about
as few frames as characters, so their head emits two CTC frames per encoder frame (as the
recipe does for downsampling factors >= 3). ``--init`` continues from an earlier encoder.

Writes ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` to ``--out``.

Usage: python tools/embedded/pretrain_seed_encoder.py [--data embedded/LibriSpeech]
[--pretrain-dir embedded/.cache/pretrain] [--out embedded/seed_wavlm] [--steps 4000]
[--init FOLDER] [--freeze-cnn] [--factor-mix 1:0.5,2:0.3,3:0.2] [--threads 1] [--seed 1986]
"""

import argparse
import csv
import hashlib
import json
import math
import platform
import time
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from synthetic_asr import (
    N_OUTPUTS,
    SAMPLE_RATE,
    ErrorRates,
    collate,
    decode_texts,
    make_batches,
    padding_mask,
    read_librispeech_split,
    read_pretrain_set,
    seed_everything,
)
from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

from ssl_ctc.downsampling import paper_upsampling_factor

FACTORS = (1, 2, 3)  # input downsampling factors: 16, 8 and 16/3 kHz
# Downsampling factor of a batch -> probability (the default of --factor-mix).
FACTOR_MIX = {1: 0.5, 2: 0.3, 3: 0.2}
START_FACTOR = 2  # the only factor during the first --start-steps steps


def parse_factor_mix(text):
    """Parse ``"1:0.5,2:0.3,3:0.2"`` into ``{factor: probability}``.

    Parameters
    ----------
    text : str
        Comma-separated ``factor:probability`` pairs; factors 1, 2 or 3.

    Returns
    -------
    dict
        Factor -> probability (they need not sum to 1: they are relative weights).

    Example
    -------
    >>> parse_factor_mix("1:0.35,2:0.4,3:0.25")
    {1: 0.35, 2: 0.4, 3: 0.25}
    """
    mix = {}
    for pair in text.split(","):
        factor, _, weight = pair.partition(":")
        if int(factor) not in FACTORS or float(weight) < 0:
            raise argparse.ArgumentTypeError(
                f"'{pair}' is not factor:weight with factor 1, 2 or 3")
        mix[int(factor)] = float(weight)
    return mix


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
            for k in sorted({paper_upsampling_factor(f) for f in FACTORS})
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
            rates.append([u.utt_id for u in batch], decode_texts(log_probs, frame_lengths),
                         [u.text for u in batch])
    model.train()
    return rates.summarize()


def command_line(args):
    """Return the command that repeats this run, every option spelled out.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options.

    Returns
    -------
    str
        ``python tools/embedded/pretrain_seed_encoder.py --data ... --steps ...``.
    """
    words = ["python", "tools/embedded/pretrain_seed_encoder.py"]
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value not in (None, False):
            words += [flag, str(value)]
    return " ".join(words)


# Column suffix of each input downsampling factor in dev.csv (16 kHz keeps the plain names).
DEV_RATE_SUFFIXES = {1: "", 2: "_8k", 3: "_5k"}


def evaluate_rates(model, dev):
    """Dev-clean greedy CER/WER of the throw-away head at each input rate, by factor."""
    return {factor: evaluate(model, dev, factor, paper_upsampling_factor(factor))
            for factor in FACTORS}


def write_dev_log(path, rows):
    """Write the periodic dev-clean checks as CSV (step, then CER and WER per input rate)."""
    fields = ["step"] + [f"{metric}{suffix}" for suffix in DEV_RATE_SUFFIXES.values()
                         for metric in ("CER", "WER")]
    with open(path, "w", newline="") as dev_file:
        writer = csv.DictWriter(dev_file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def plot_loss(loss_csv, dev_rows, png):
    """Plot the training loss per input rate and the dev-clean CER against steps.

    Parameters
    ----------
    loss_csv : pathlib.Path
        The ``loss.csv`` written during training.
    dev_rows : list of dict
        The periodic dev-clean checks (``step``, ``CER``, ``WER``).
    png : pathlib.Path
        The output image.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(loss_csv, newline="") as loss_file:
        rows = list(csv.DictReader(loss_file))
    figure, (loss_axes, dev_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for column, label in (("loss", "all batches"), ("loss_16k", "16 kHz"),
                          ("loss_8k", "8 kHz"), ("loss_5k", "5.33 kHz (x2 frames)")):
        points = [(int(r["step"]), float(r[column])) for r in rows if r[column]]
        if points:
            loss_axes.plot(*zip(*points, strict=True), label=label,
                           linewidth=2 if column == "loss" else 1)
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel(f"CTC loss (mean over {loss_csv.name} rows)")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    if dev_rows:
        steps = [r["step"] for r in dev_rows]
        for factor, suffix in DEV_RATE_SUFFIXES.items():
            rate = f"{SAMPLE_RATE / factor / 1000:.3g} kHz"
            dev_axes.plot(steps, [r["CER" + suffix] for r in dev_rows], marker="o",
                          label=f"CER {rate}")
            dev_axes.plot(steps, [r["WER" + suffix] for r in dev_rows], marker="s",
                          linestyle="--", label=f"WER {rate}")
    dev_axes.set_xlabel("step")
    dev_axes.set_ylabel("dev-clean greedy error, throw-away head (%)")
    dev_axes.set_ylim(bottom=0)
    dev_axes.legend()
    dev_axes.grid(alpha=0.3)
    figure.suptitle("Seed encoder: supervised CTC pre-training (not self-supervised)")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


def main():
    """Parse the command line, pre-train, evaluate on dev-clean and save the encoder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("embedded/LibriSpeech"))
    parser.add_argument("--pretrain-dir", type=Path, default=Path("embedded/.cache/pretrain"))
    parser.add_argument("--out", type=Path, default=Path("embedded/seed_wavlm"))
    parser.add_argument("--steps", type=int, default=4000, help="optimiser steps")
    parser.add_argument("--max-samples", type=int, default=8 * 3 * SAMPLE_RATE,
                        help="batch bound: utterances x longest (16 kHz samples)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=150, help="warm-up steps")
    parser.add_argument("--start-steps", type=int, default=300,
                        help="first steps on 8 kHz batches only")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from the encoder in this folder (a save_pretrained folder) "
                             "instead of random weights; the heads always start fresh")
    parser.add_argument("--freeze-cnn", action="store_true",
                        help="freeze the CNN front end (as the recipe's fine-tuning does): about "
                             "2x cheaper steps on CPU")
    parser.add_argument("--factor-mix", type=parse_factor_mix,
                        default=",".join(f"{f}:{p}" for f, p in FACTOR_MIX.items()),
                        help="input downsampling factors and their weights, as "
                             "'1:0.5,2:0.3,3:0.2' (the default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1986)
    parser.add_argument("--log-dir", type=Path, default=Path("embedded/seed_wavlm_pretraining"),
                        help="where loss.csv, dev.csv, loss.png and run.json go")
    parser.add_argument("--log-every", type=int, default=50, help="steps per loss.csv row")
    parser.add_argument("--eval-every", type=int, default=500,
                        help="steps between dev-clean checks at each input rate (and encoder "
                             "snapshots in --pretrain-dir/snapshot)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rng = seed_everything(args.seed)
    train = read_pretrain_set(args.pretrain_dir) + read_librispeech_split(
        args.data / "train-clean-100")
    dev = read_librispeech_split(args.data / "dev-clean")
    hours = sum(len(u.audio) for u in train) / SAMPLE_RATE / 3600
    print(f"pre-training on {len(train)} utterances ({hours:.2f} h), {args.threads} threads")

    model = SeedCTC(seed_config())
    init_sha256 = None
    if args.init is not None:
        weights = args.init / "model.safetensors"
        init_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
        model.encoder.load_state_dict(load_file(weights))
        print(f"encoder initialised from {weights} (sha256 {init_sha256[:12]}...)")
    if args.freeze_cnn:
        model.encoder.feature_extractor._freeze_parameters()  # no backward through the CNN
    n_params = sum(p.numel() for p in model.encoder.parameters())
    trained = [p for p in model.parameters() if p.requires_grad]
    print(f"encoder parameters: {n_params}; trained (with heads): {sum(map(torch.numel, trained))}")
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.01)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    factors = list(args.factor_mix)
    weights = list(args.factor_mix.values())

    args.log_dir.mkdir(parents=True, exist_ok=True)
    loss_file = open(args.log_dir / "loss.csv", "w", newline="")  # noqa: SIM115
    loss_log = csv.writer(loss_file)
    loss_log.writerow(["step", "epoch", "loss", "loss_16k", "loss_8k", "loss_5k", "lr",
                       "elapsed_s"])
    dev_rows = []
    step, epoch, start, running = 0, 0, time.time(), []
    model.train()
    while step < args.steps:
        epoch += 1
        for batch in make_batches(train, args.max_samples, rng):
            if step == args.steps:
                break
            factor = (START_FACTOR if step < args.start_steps
                      else rng.choices(factors, weights)[0])
            frames_per_frame = paper_upsampling_factor(factor)
            wav, lengths, targets, target_lengths = collate(batch, factor)
            log_probs, frame_lengths = model(wav, lengths, frames_per_frame)
            loss = ctc(log_probs.transpose(0, 1), targets, frame_lengths, target_lengths)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 5.0)
            optimizer.step()
            running.append((factor, loss.item()))
            step += 1
            if step % args.log_every == 0:
                mean = sum(value for _, value in running) / len(running)
                by_factor = []
                for f in FACTORS:
                    values = [value for g, value in running if g == f]
                    by_factor.append(f"{sum(values) / len(values):.4f}" if values else "")
                elapsed = time.time() - start
                lr = optimizer.param_groups[0]["lr"]
                loss_log.writerow([step, epoch, f"{mean:.4f}", *by_factor, f"{lr:.3e}",
                                   f"{elapsed:.0f}"])
                loss_file.flush()
                print(f"step {step} epoch {epoch} loss {mean:.3f} lr {lr:.2e} "
                      f"elapsed {elapsed:.0f} s", flush=True)
                running = []
            if step % args.eval_every == 0 or step == args.steps:
                dev_scores = evaluate_rates(model, dev)  # the last one is at step == args.steps
                row = {"step": step}
                for factor, scores in dev_scores.items():
                    suffix = DEV_RATE_SUFFIXES[factor]
                    row[f"CER{suffix}"] = round(scores["CER"], 2)
                    row[f"WER{suffix}"] = round(scores["WER"], 2)
                dev_rows.append(row)
                print(f"step {step}: dev-clean greedy " + ", ".join(
                    f"{SAMPLE_RATE / f:.0f} Hz CER {scores['CER']:.2f} % "
                    f"WER {scores['WER']:.2f} %" for f, scores in dev_scores.items()),
                    flush=True)
                model.encoder.save_pretrained(args.pretrain_dir / "snapshot",
                                              safe_serialization=True)
    train_seconds = time.time() - start
    loss_file.close()
    print(f"trained {step} steps ({epoch} epochs) in {train_seconds:.0f} s")

    if not dev_rows:  # --steps 0: no check ran, score the initial encoder
        dev_scores = evaluate_rates(model, dev)
    final = {}
    for factor, scores in dev_scores.items():  # the check at the last step
        final[f"{SAMPLE_RATE / factor:.0f} Hz"] = {k: round(v, 2) for k, v in scores.items()}
        print(f"dev-clean at {SAMPLE_RATE / factor:.0f} Hz, throw-away head: "
              f"CER {scores['CER']:.2f} % WER {scores['WER']:.2f} %")
    write_dev_log(args.log_dir / "dev.csv", dev_rows)
    run = {
        "command": command_line(args),
        "arguments": {key: str(value) for key, value in vars(args).items()},
        "factor_mix": {str(f): {"probability": round(p / sum(args.factor_mix.values()), 4),
                                "ctc_frames_per_frame": paper_upsampling_factor(f)}
                       for f, p in args.factor_mix.items()},
        "init_model_sha256": init_sha256,
        "utterances": len(train),
        "hours": round(hours, 3),
        "encoder_parameters": n_params,
        "steps": step,
        "epochs": epoch,
        "train_seconds": round(train_seconds),
        "dev_clean_throwaway_head_greedy": final,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "cpu": platform.processor() or platform.machine(),
    }
    (args.log_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    plot_loss(args.log_dir / "loss.csv", dev_rows, args.log_dir / "loss.png")

    args.out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(args.out, safe_serialization=True)
    feature_extractor().save_pretrained(args.out)
    for path in args.out.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the folder is meant to be shared
    print(f"saved the encoder (without head) to {args.out}")


if __name__ == "__main__":
    main()
