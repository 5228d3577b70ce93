"""The base Brain: SSL encoder + DNN + CTC fine-tuning, with no strategy in it.

Usage::

    class MyStrategyBrain(SSLCTCBrain):
        def encode(self, wavs, wav_lens): ...
"""




import contextlib
import functools
import gc
import math

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from ssl_ctc.ctc import greedy_decode
from ssl_ctc.encoder import encoder_frame_lengths, sample_lengths_of
from ssl_ctc.imports import importable_class_name


class SSLCTCBrain(sb.Brain):
    """Fine-tunes an SSL encoder with a DNN + CTC head.

    ``infer_batch`` is the single inference path, used by training, validation,
    testing and the benchmark. A strategy's Brain overrides what differs: what
    runs before the head (``encode``), the head's frames (``ctc_logits``), the
    number of CTC frames per input (``ctc_frames``), and the fields naming the
    experiment (``experiment_tags``). With a teacher (``use_teacher``), training adds
    its distillation term to the CTC loss.
    """

    distiller = None  # an ssl_ctc.distillation.teacher.Distiller, set by use_teacher

    def use_teacher(self, distiller):
        """Distil from a teacher: its term in the training loss, its identity in the records.

        ``experiment_tags`` (whatever the strategy's) then returns the strategy's tags
        with the teacher's (``Distiller.tags``), for the benchmark and the inference folder.

        Arguments
        ---------
        distiller : ssl_ctc.distillation.teacher.Distiller
            Prepared before the first epoch (``on_fit_start``).
        """
        self.distiller = distiller
        strategy_tags = self.experiment_tags
        self.experiment_tags = functools.wraps(strategy_tags)(
            lambda *args, **kwargs: distiller.tags(strategy_tags(*args, **kwargs)))

    def on_fit_start(self):
        """SpeechBrain's (optimisers, checkpoint recovered), then the teacher if training runs."""
        super().on_fit_start()
        counter = self.hparams.epoch_counter
        if self.distiller is not None and counter.current < counter.limit:
            self.distiller.prepare(self)

    def encode(self, wavs, wav_lens):
        """Run the SSL encoder; return ``[B, T, H]`` features."""
        return self.modules.ssl(wavs, wav_lens)

    def ctc_logits(self, features):
        """Run the DNN block and the CTC layer; return ``[B, T, V]`` logits."""
        return self.modules.ctc_lin(self.modules.enc(features))

    def classify(self, features):
        """CTC log-probabilities of encoder features."""
        return self.hparams.log_softmax(self.ctc_logits(features))

    def ctc_frames(self, sample_lengths):
        """CTC output frames of each utterance from its valid input samples (``[B]`` tensors).

        Exact, so that an utterance decodes the same frames alone and in any padded batch.
        """
        return encoder_frame_lengths(self.hparams.ssl.model, sample_lengths)

    def frame_grid(self):
        """Input samples (16 kHz) per encoder frame and per CTC frame: the model's frame grid.

        Windows of a long file start on the encoder's grid (``transcribe.py``), so that
        their CTC frames fall on the whole file's.
        """
        stride = math.prod(self.hparams.ssl.model.config.conv_stride)
        return stride, stride

    def infer_batch(self, wavs, wav_lens):
        """Waveforms to CTC log-probs and each utterance's true number of frames.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` waveforms at 16 kHz.
        wav_lens : torch.Tensor
            Relative lengths in (0, 1].

        Returns
        -------
        dict
            ``log_probs`` ``[B, T, V]`` and ``lengths`` (LongTensor ``[B]``).
        """
        log_probs = self.classify(self.encode(wavs, wav_lens))
        lengths = self.ctc_frames(sample_lengths_of(wavs, wav_lens))
        return {"log_probs": log_probs, "lengths": lengths.clamp(1, log_probs.shape[1])}

    def compute_forward(self, batch, stage):
        """Forward a batch; see ``infer_batch``."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        return self.infer_batch(wavs, wav_lens)

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss (with the teacher's term in training); greedy decoding and error rates
        outside training (validation scores plain CTC, comparable with a plain run's)."""
        if stage == sb.Stage.TRAIN and self.distiller is not None:
            predictions = {**predictions, "teacher": self.distiller.teacher_outputs(batch)}
        loss = self.compute_ctc_loss(predictions, batch)
        if stage != sb.Stage.TRAIN:
            hypotheses = greedy_decode(
                predictions["log_probs"], predictions["lengths"], self.tokenizer
            )
            references = [words.split(" ") for words in batch.wrd]
            self.wer_metric.append(batch.id, hypotheses, references)
            self.cer_metric.append(batch.id, hypotheses, references)
        return loss

    def compute_ctc_loss(self, predictions, batch):
        """CTC loss of ``predictions["log_probs"]`` over their valid frames (``lengths``).

        With the batch's ``teacher`` outputs in ``predictions``, mixed with the
        distillation term: ``(1 - w) * CTC + w * T^2 * KL`` (``Distiller.mix``).
        """
        log_probs = predictions["log_probs"]
        tokens, token_lens = batch.tokens
        frame_lens = predictions["lengths"].to(log_probs.dtype) / log_probs.shape[1]
        loss = self.hparams.ctc_cost(log_probs, tokens, frame_lens, token_lens)
        if "teacher" not in predictions:
            return loss
        return self.distiller.mix(loss, predictions, self.frame_grid()[1])

    def on_stage_start(self, stage, epoch=None):
        """Reset the error-rate trackers before validation and test."""
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, anneal the learning rates, checkpoint on validation WER, write test WERs."""
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            return
        stage_stats["WER"] = self.wer_metric.summarize("error_rate")
        stage_stats["CER"] = self.cer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            old_lr_model, new_lr_model = self.hparams.lr_annealing_model(stage_stats["loss"])
            old_lr_ssl, new_lr_ssl = self.hparams.lr_annealing_ssl(stage_stats["loss"])
            sb.nnet.schedulers.update_learning_rate(self.model_optimizer, new_lr_model)
            if self.ssl_optimizer is not None:
                sb.nnet.schedulers.update_learning_rate(self.ssl_optimizer, new_lr_ssl)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr_model": old_lr_model, "lr_ssl": old_lr_ssl},
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stage_stats["WER"]}, min_keys=["WER"]
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stage_stats,
            )
            if if_main_process():
                with open(self.test_wer_file, "w", encoding="utf-8") as wer_file:
                    self.wer_metric.write_stats(wer_file)
            self.test_stats = stage_stats

    def init_optimizers(self):
        """The YAML's optimisers: ``ssl_opt_class`` for the encoder, ``model_opt_class`` for the
        rest (head and, where a strategy has one, its learned downsampler).

        Their learning rates are ``lr`` and ``lr_ssl``, also when a class is overridden on
        the command line (``--model_opt_class=!name:torch.optim.Adam`` has no ``lr`` of its
        own, and NewBob would apply ``lr`` only after the first epoch).
        """
        self.model_optimizer = self.hparams.model_opt_class(
            self.hparams.model.parameters(), lr=self.hparams.lr
        )
        self.optimizers_dict = {"model_optimizer": self.model_optimizer}
        self.ssl_optimizer = None
        if not self.hparams.freeze_ssl:
            self.ssl_optimizer = self.hparams.ssl_opt_class(
                self.hparams.ssl.parameters(), lr=self.hparams.lr_ssl
            )
            self.optimizers_dict["ssl_optimizer"] = self.ssl_optimizer
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("model_optimizer", self.model_optimizer)
            if self.ssl_optimizer is not None:
                self.checkpointer.add_recoverable("ssl_optimizer", self.ssl_optimizer)

    def release_training_state(self):
        """Free the optimisers (Adam moments: 2.5 GB for WavLM Large) before the benchmark.

        Inference needs none of it, and GPU tests would count it in their peak memory.
        """
        for name in list(self.optimizers_dict or {}):
            if self.checkpointer is not None:
                self.checkpointer.recoverables.pop(name, None)
        self.optimizers_dict = {}
        self.model_optimizer = self.ssl_optimizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def benchmark_configurations(self):
        """What the five tests measure: ``(tags, context)`` per configuration of this model.

        The benchmark (``ssl_ctc.benchmarking.five_tests``) runs its tests inside each
        context and tags their records; the base Brain has one configuration, as trained.
        """
        yield self.experiment_tags(), contextlib.nullcontext()

    def experiment_tags(self):
        """Fields copied into every benchmark record: name, strategy, factor, layers, label.

        A strategy's Brain extends these; the base is the full encoder on the raw input.
        """
        return {
            "name": "baseline",
            "strategy": "baseline",
            "brain_class": importable_class_name(type(self)),
            "technique": None,
            "factor": 1,
            "layers": self.hparams.ssl.model.config.num_hidden_layers,
            "ctc_upsampling_factor": 1,
            "label": "x1",
            "baseline": True,
        }

    def inference_keys(self):
        """The hparams keys ``infer_batch`` reads: keys of the inference folder's YAML.

        A strategy's Brain adds its own (``ssl_ctc.inference.hparams_yaml`` writes them).
        """
        return ("sample_rate", "blank_index", "output_neurons", "considered_layers")

    def inference_modules_yaml(self):
        """YAML of the modules ``infer_batch`` runs after ``ssl``, for the inference folder.

        The DNN block and the CTC layer, rebuilt from the trained modules' shapes, and
        the log-softmax; a strategy's Brain adds its modules or replaces these.
        """
        enc_modules = list(self.modules.enc.modules())
        activation = next(module for module in enc_modules
                          if type(module).__module__.startswith("torch.nn.modules.activation"))
        linear_layers = [module for module in enc_modules if isinstance(module, torch.nn.Linear)]
        ctc_linear = next(module for module in self.modules.ctc_lin.modules()
                          if isinstance(module, torch.nn.Linear))
        return "".join(line + "\n" for line in [
            "enc: !new:speechbrain.lobes.models.VanillaNN.VanillaNN",
            f"    input_shape: [null, null, {linear_layers[0].in_features}]",
            f"    activation: !name:{importable_class_name(type(activation))}",
            f"    dnn_blocks: {len(linear_layers)}",
            f"    dnn_neurons: {linear_layers[-1].out_features}",
            "ctc_lin: !new:speechbrain.nnet.linear.Linear",
            f"    input_size: {ctc_linear.in_features}",
            f"    n_neurons: {ctc_linear.out_features}",
            "log_softmax: !new:speechbrain.nnet.activations.Softmax",
            "    apply_log: True",
        ])

    def inference_brain_hparams(self):
        """Names of the YAML's objects, besides the modules, that ``infer_batch`` reads."""
        return ["log_softmax"]

    def inference_interface(self):
        """The strategy's own interface for SpeechBrain's ``foreign_class``, if it has one.

        Returns
        -------
        dict or None
            None: ``EncoderASR`` is the interface. Else ``source`` (the file copied
            into the inference folder as ``custom_interface.py``), ``classname``, and
            for the model card a ``description``, example ``overrides`` and an
            ``example`` line of Python.
        """
        return None

    def inference_card_lines(self):
        """The strategy's lines (Markdown items) in the model card's "What was trained".

        The base gives the teacher's line of a distilled model.
        """
        return [] if self.distiller is None else self.distiller.card_lines()
