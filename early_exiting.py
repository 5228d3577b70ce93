#!/usr/bin/env python3
"""Fine-tune an SSL encoder with CTC exit heads on intermediate layers, then benchmark early exit.

Training sums the CTC losses of every exit (weights configurable); validation
scores the deepest exit; testing and the benchmark run early-exit inference with
the configured criterion, and again for each threshold of ``exit_threshold_sweep``
(each its own benchmark record), without retraining when run with ``--test_only``.

The implementation is the package ``early_exiting/`` beside this file: for
``import early_exiting`` Python takes a package directory before a module file of
the same name, so the import below always reaches the package (this script runs
as ``__main__``).

Usage::

    python early_exiting.py hparams/early_exiting/early_exits.yaml \
        --data_folder /path/to/LibriSpeech
    python early_exiting.py hparams/early_exiting/early_exits.yaml \
        --data_folder /path/to/LibriSpeech --test_only \
        --exit_threshold_sweep "[0.01, 0.02, 0.05, 0.1]"

Authors
 * Recipe team 2026
"""

import speechbrain as sb

from early_exiting import build_exit_criterion
from ssl_ctc import SSLCTCBrain, run_recipe

CRITERION_SYMBOLS = {"entropy": "H<", "similarity": "S>"}


class EarlyExitBrain(SSLCTCBrain):
    """Trains every exit head jointly; infers with early exit."""

    def infer_batch(self, wavs, wav_lens):
        """Early-exit inference: log-probs, frame lengths and each utterance's exit layer."""
        output = self.modules.early_exit(wavs, wav_lens)
        return {
            "log_probs": output.log_probs,
            "lengths": output.frame_lengths,
            "exit_layers": output.exit_layers,
        }

    def compute_forward(self, batch, stage):
        """All exits for training and validation (scored on the deepest); early exit for test."""
        if stage == sb.Stage.TEST:
            return super().compute_forward(batch, stage)
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        output = self.modules.early_exit(wavs, wav_lens, all_exits=True)
        deepest = max(output.log_probs)
        return {"log_probs": output.log_probs[deepest], "exit_log_probs": output.log_probs}

    def compute_ctc_loss(self, predictions, batch):
        """Weighted sum of the exits' CTC losses (plain sum by default, as in the paper)."""
        if "exit_log_probs" not in predictions:
            return super().compute_ctc_loss(predictions, batch)
        weights = self.hparams.exit_loss_weights or {}
        exit_ctc_loss = super().compute_ctc_loss
        return sum(
            weights.get(layer, 1.0) * exit_ctc_loss({"log_probs": log_probs}, batch)
            for layer, log_probs in predictions["exit_log_probs"].items()
        )

    def run_benchmark(self, test_datasets, settings):
        """The five tests for the configured criterion, then for each sweep threshold."""
        thresholds = [self.hparams.exit_threshold] + [
            threshold
            for threshold in self.hparams.exit_threshold_sweep
            if threshold != self.hparams.exit_threshold
        ]
        if self.hparams.exit_criterion == "fixed":
            thresholds = thresholds[:1]
        early_exit = self.modules.early_exit
        records = []
        for threshold in thresholds:
            early_exit.criterion = build_exit_criterion(
                self.hparams.exit_criterion, threshold=threshold, layer=self.hparams.exit_layer
            )
            self.exit_threshold = threshold
            records += super().run_benchmark(test_datasets, settings)
        return records

    def experiment_tags(self):
        """Tags naming the criterion and threshold, e.g. ``EE H<0.05``."""
        criterion = self.hparams.exit_criterion
        threshold = getattr(self, "exit_threshold", self.hparams.exit_threshold)
        label = (
            f"L{self.hparams.exit_layer}"
            if criterion == "fixed"
            else f"{CRITERION_SYMBOLS[criterion]}{threshold:g}"
        )
        return {
            **super().experiment_tags(),
            "name": f"EE {label}",
            "strategy": f"early_exit_{criterion}",
            "exit_criterion": criterion,
            "exit_threshold": None if criterion == "fixed" else threshold,
            "exit_decision": self.hparams.exit_decision,
            "exit_layers_available": self.hparams.exit_layers,
            "label": label,
            "baseline": False,
        }


if __name__ == "__main__":
    run_recipe(EarlyExitBrain)
