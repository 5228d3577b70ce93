"""The recipe's Brain for early exit: exit heads trained jointly, early-exit testing and sweeps.

Training sums the CTC losses of every exit (weights configurable); validation
scores the deepest exit; testing and the benchmark run early-exit inference with
the configured criterion, then once per threshold of ``exit_threshold_sweep``.

Usage::

    python early_exiting.py hparams/early_exiting/early_exits.yaml \\
        --data_folder /path/to/LibriSpeech
"""

import speechbrain as sb

from early_exiting.criteria import build_exit_criterion
from ssl_ctc.brain import SSLCTCBrain


class EarlyExitBrain(SSLCTCBrain):
    """Trains every exit head jointly; infers with early exit (``modules.early_exit``)."""

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
        return {
            "log_probs": output.log_probs[max(output.log_probs)],
            "lengths": output.frame_lengths,  # exact, as at inference
            "exit_log_probs": output.log_probs,
        }

    def compute_ctc_loss(self, predictions, batch):
        """Weighted sum of the exits' CTC losses (plain sum by default, as in the paper)."""
        if "exit_log_probs" not in predictions:
            return super().compute_ctc_loss(predictions, batch)
        weights = self.hparams.exit_loss_weights or {}
        exit_ctc_loss = super().compute_ctc_loss
        lengths = predictions["lengths"]  # the same frames at every exit
        return sum(
            weights.get(layer, 1.0)
            * exit_ctc_loss({"log_probs": log_probs, "lengths": lengths}, batch)
            for layer, log_probs in predictions["exit_log_probs"].items()
        )

    def sweep_criteria(self):
        """The configured criterion, then one per further ``exit_threshold_sweep`` threshold."""
        configured = self.modules.early_exit.criterion
        if configured.threshold_value is None:  # the fixed layer has no threshold to sweep
            return [configured]
        return [configured] + [
            build_exit_criterion(configured.name, threshold=threshold)
            for threshold in self.hparams.exit_threshold_sweep
            if threshold != configured.threshold_value
        ]

    def benchmark_configurations(self):
        """One configuration per criterion of ``sweep_criteria`` (installed during its tests)."""
        for criterion in self.sweep_criteria():
            yield self.experiment_tags(criterion), self.modules.early_exit.using_criterion(
                criterion)

    def experiment_tags(self, criterion=None):
        """Tags naming the criterion and threshold, e.g. ``EE H<0.05``.

        Arguments
        ---------
        criterion : early_exiting.criteria.ExitCriterion, optional
            The criterion the records were measured with; default: the installed one.
        """
        criterion = criterion or self.modules.early_exit.criterion
        return {
            **super().experiment_tags(),
            "name": f"EE {criterion.label}",
            "strategy": f"early_exit_{criterion.name}",
            "exit_criterion": criterion.name,
            "exit_threshold": criterion.threshold_value,
            "exit_decision": self.hparams.exit_decision,
            "exit_layers_available": self.hparams.exit_layers,
            "label": criterion.label,
            "baseline": False,
        }
