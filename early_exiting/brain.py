"""The recipe's Brain for early exit: exit heads trained jointly, early-exit testing and sweeps.

Training sums the CTC losses of every exit (weights configurable); validation
scores the deepest exit; testing and the benchmark run early-exit inference with
the configured criterion, then once per threshold of ``exit_threshold_sweep``.

Usage::

    python early_exiting.py hparams/early_exiting/early_exits.yaml \\
        --data_folder /path/to/LibriSpeech
"""

from pathlib import Path

import speechbrain as sb

from early_exiting.criteria import build_exit_criterion
from ssl_ctc.brain import SSLCTCBrain

# The early-exit interface for SpeechBrain's foreign_class, copied into inference folders.
INFERENCE_INTERFACE = Path(__file__).with_name("inference.py")


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
        """Weighted sum of the exits' CTC losses (plain sum by default, as in the paper).

        With a teacher, every exit head learns from it: each exit's loss mixes its CTC
        loss with its own distillation term (no self-distillation from the deepest exit).
        """
        if "exit_log_probs" not in predictions:
            return super().compute_ctc_loss(predictions, batch)
        weights = self.hparams.exit_loss_weights or {}
        exit_ctc_loss = super().compute_ctc_loss
        lengths = predictions["lengths"]  # the same frames at every exit
        teacher = {key: predictions[key] for key in ("teacher",) if key in predictions}
        return sum(
            weights.get(layer, 1.0)
            * exit_ctc_loss({"log_probs": log_probs, "lengths": lengths, **teacher}, batch)
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
            # the criterion the experiment is configured with, not a point of the sweep
            "configured": criterion is self.modules.early_exit.criterion,
        }

    def inference_keys(self):
        """The base keys and the exits' (criterion and threshold stay keys of the YAML)."""
        return (*super().inference_keys(), "exit_layers", "exit_criterion", "exit_threshold",
                "exit_layer", "exit_decision")

    def inference_modules_yaml(self):
        """The exit heads, the criterion and the early-exit encoder around ``ssl``."""
        heads = self.modules.early_exit.exit_heads
        first_head = heads.heads[str(heads.exit_layers[0])]
        return "".join(line + "\n" for line in [
            "exit_heads: !new:early_exiting.ExitHeads",
            "    exit_layers: !ref <exit_layers>",
            f"    input_size: {heads.input_size}",
            f"    output_size: {heads.output_size}",
            f"    dnn_neurons: {first_head[0].out_features}",
            "criterion: !apply:early_exiting.build_exit_criterion",
            "    name: !ref <exit_criterion>",
            "    threshold: !ref <exit_threshold>",
            "    layer: !ref <exit_layer>",
            "early_exit: !new:early_exiting.EarlyExitEncoder",
            "    encoder: !ref <ssl>",
            "    exit_heads: !ref <exit_heads>",
            "    criterion: !ref <criterion>",
            "    decision: !ref <exit_decision>",
        ])

    def inference_brain_hparams(self):
        """The criterion and exit heads (``sweep_criteria`` and the exits read them)."""
        return ["criterion", "exit_heads"]

    def inference_interface(self):
        """``EarlyExitASR`` (``early_exiting/inference.py``): transcripts with their exit layers."""
        return {
            "source": INFERENCE_INTERFACE,
            "classname": "EarlyExitASR",
            "description": "Early exit, with each utterance's exit layer, at another threshold "
                           "without retraining",
            "overrides": {"exit_threshold": self.hparams.exit_threshold},
            "example": 'text, exit_layer = asr.transcribe_file_with_exit("speech.flac")',
        }

    def inference_card_lines(self):
        """The exit layers and the criterion, threshold and decision the folder starts with."""
        hparams = self.hparams
        return [*super().inference_card_lines(),
                f"- exits after layers {hparams.exit_layers}; criterion "
                f"`{hparams.exit_criterion}`, threshold {hparams.exit_threshold}, exit layer "
                f"{hparams.exit_layer}, decision `{hparams.exit_decision}` (keys "
                "`exit_criterion`, `exit_threshold`, `exit_layer` of hyperparams.yaml)"]
