"""Early-exit ASR interface for SpeechBrain's ``foreign_class``: transcripts and exit layers.

``ssl_ctc.inference.writer`` copies this file into an early-exit experiment's inference
folder as ``custom_interface.py`` (``EarlyExitBrain.inference_interface``). The exit
criterion and threshold stay keys of the folder's ``hyperparams.yaml``
(``exit_criterion``, ``exit_threshold``, ``exit_layer``, ``exit_decision``), so another
threshold needs no retraining.

Usage::

    from speechbrain.inference.interfaces import foreign_class
    asr = foreign_class(source="results/early_exit/inference", savedir="pretrained/ee",
                        pymodule_file="custom_interface.py", classname="EarlyExitASR",
                        overrides={"exit_threshold": 0.1})
    text, exit_layer = asr.transcribe_file_with_exit("speech.flac")
"""

import torch
from speechbrain.inference.ASR import EncoderASR


class EarlyExitASR(EncoderASR):
    """``EncoderASR`` for an early-exit model, also telling after which layer each utterance left.

    ``transcribe_file`` and ``transcribe_batch`` are ``EncoderASR``'s (the encoder
    module runs early exit); the ``*_with_exit(s)`` methods add the exit layers,
    and ``set_exit_criterion`` installs another criterion or threshold.
    """

    HPARAMS_NEEDED = ["tokenizer", "decoding_function", "exit_criterion", "exit_threshold"]
    MODULES_NEEDED = ["encoder"]

    @property
    def early_exit(self):
        """The ``early_exiting.EarlyExitEncoder`` the encoder runs."""
        return self.mods.encoder.recipe_modules["early_exit"]

    def set_exit_criterion(self, name, threshold=None, layer=None):
        """Install an exit criterion (``entropy``, ``similarity`` or ``fixed``) and threshold."""
        from early_exiting import build_exit_criterion

        self.early_exit.criterion = build_exit_criterion(name, threshold=threshold, layer=layer)

    def transcribe_batch_with_exits(self, wavs, wav_lens):
        """Transcripts and the exit layer (1-based) of each utterance of a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, samples]`` waveforms at 16 kHz.
        wav_lens : torch.Tensor
            ``[B]`` relative lengths.

        Returns
        -------
        tuple
            ``(texts, exit_layers)``: a list of str, a ``[B]`` LongTensor.
        """
        from ssl_ctc.inference.runtime import blank_padding

        with torch.no_grad():
            wavs, wav_lens = wavs.float().to(self.device), wav_lens.to(self.device)
            output = self.mods.encoder.infer_batch(wavs, wav_lens)
            log_probs = blank_padding(output["log_probs"].float(), output["lengths"],
                                      self.mods.encoder.blank_index)
            tokens = self.decoding_function(log_probs, wav_lens)
        texts = ["".join(self.tokenizer.decode_ndim(sequence)) for sequence in tokens]
        return texts, output["exit_layers"].cpu()

    def transcribe_file_with_exit(self, path, **kwargs):
        """Transcript of an audio file and the layer it exited after."""
        waveform = self.load_audio(path, **kwargs)
        texts, exit_layers = self.transcribe_batch_with_exits(
            waveform.unsqueeze(0), torch.tensor([1.0])
        )
        return texts[0], int(exit_layers[0])
