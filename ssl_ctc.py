"""The shared core of the recipe: SSL encoder + DNN + CTC fine-tuning on LibriSpeech.

Every strategy script (``downsampled_train.py``, ``layer_removal.py``,
``early_exiting.py``) is a thin ``SSLCTCBrain`` subclass plus a call to
``run_recipe``, which runs SpeechBrain's usual sequence: parse the command
line, load the YAML, prepare the data on the main process, fine-tune, evaluate
the best checkpoint on each test set and run the five benchmark tests.

Usage (from a strategy script)::

    from ssl_ctc import SSLCTCBrain, run_recipe

    if __name__ == "__main__":
        run_recipe(SSLCTCBrain)

Authors
 * Recipe team 2026
"""

import contextlib
import csv
import json
import logging
import os
import string
import sys
import tempfile
import zipfile

import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, PARAMFILE_EXT, Checkpointer
from speechbrain.utils.distributed import if_main_process, run_on_main

import benchmark
from front_end import use_matmul_front_end
from librispeech_prepare import check_layout, prepare_librispeech

logger = logging.getLogger(__name__)

# 26 letters, the apostrophe and the word separator: LibriSpeech's characters.
ALPHABET = list(string.ascii_uppercase) + ["'", " "]
MERGED_TRAIN_CSV = "train.csv"
# Row names of the paper's table: SD2, AV3, CL4...
TECHNIQUE_ABBREVIATIONS = {"signal_downsampling": "SD", "averaging": "AV", "convolutional": "CL"}
# Hugging Face model types the recipe fine-tunes (config.json "model_type").
SSL_MODEL_TYPES = ("hubert", "wav2vec2", "wavlm")
# Manifest columns the recipe reads (librispeech_prepare also writes spk_id).
REQUIRED_CSV_COLUMNS = ("ID", "duration", "wav", "wrd")
# Subfolder of save_folder where checkpoints that cannot be loaded are moved.
BROKEN_CHECKPOINTS_FOLDER = "broken_checkpoints"
# First bytes of a torch.save archive (a zip file whose directory is written last).
ZIP_SIGNATURE = b"PK\x03\x04"


class ConfigurationError(ValueError):
    """Raised for a YAML key or command-line override with an impossible value."""


# ------------------------------------------------------------------ building blocks


def load_ssl_encoder(source, save_path, considered_layers=None, matmul_front_end=True,
                     **wrapper_options):
    """Load a WavLM, wav2vec 2.0 or HuBERT encoder through SpeechBrain's wrapper.

    The wrapper uses ``AutoModel``, so one class serves all three architectures,
    from a hub id (``microsoft/wavlm-large``) or a local folder holding
    ``config.json``, the weights and ``preprocessor_config.json``.

    Arguments
    ---------
    source : str
        Hub id or local folder (the YAML key ``ssl_hub``).
    save_path : str
        Cache folder for downloaded files.
    considered_layers : int, optional
        Keep only the first N transformer layers (layer removal); None keeps all.
    matmul_front_end : bool
        Run the CNN front end as channels-last matrix products on CPU (see ``front_end``).
    **wrapper_options
        Passed to ``speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2``
        (``freeze``, ``freeze_feature_extractor``, ``output_norm``...).

    Returns
    -------
    SSLEncoder
        The wrapped encoder; ``.model`` is the Hugging Face model.

    Example
    -------
    >>> load_ssl_encoder("/nonexistent/encoder", "/tmp/ssl_cache")
    Traceback (most recent call last):
    ...
    ssl_ctc.ConfigurationError: ssl_hub '/nonexistent/encoder' cannot be loaded ...
    """
    local_config = os.path.join(str(source), "config.json")
    if os.path.isfile(local_config):  # types unknown to transformers fail before override_config
        with open(local_config, encoding="utf-8") as config_file:
            check_ssl_architecture(source, json.load(config_file).get("model_type"))
    try:
        return SSLEncoder(source, save_path, considered_layers=considered_layers,
                          matmul_front_end=matmul_front_end, **wrapper_options)
    except (OSError, ValueError) as error:
        if isinstance(error, ConfigurationError):
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "the hub is switched off (HF_HUB_OFFLINE=1): give a local folder with "
            "config.json, the weights and preprocessor_config.json"
            if offline
            else "give a hub id such as microsoft/wavlm-large or a local folder with "
            "config.json, the weights and preprocessor_config.json"
        )
        raise ConfigurationError(
            f"ssl_hub '{source}' cannot be loaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}); {hint}"
        ) from error


class SSLEncoder(Wav2Vec2):
    """SpeechBrain's Hugging Face SSL wrapper that can keep only the first N layers.

    The depth is cut in the configuration before the weights are loaded, so the
    removed layers never take memory, the final encoder LayerNorm stays, and
    layers go from the top only (WavLM's layer 0 owns the relative position
    bias). Checkpoints of a truncated encoder therefore restore into the same
    shapes, whether training resumes or ``--test_only`` runs.

    Arguments
    ---------
    source : str
        Hub id or local folder.
    save_path : str
        Cache folder for downloaded files.
    considered_layers : int, optional
        Number of transformer layers to keep, 1 to the encoder's depth; None keeps all.
    matmul_front_end : bool
        Run the CNN front end as channels-last matrix products on CPU
        (``front_end.MatmulFeatureEncoder``: same weights and outputs, faster).
    **wrapper_options
        Passed to ``speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2``.
    """

    def __init__(self, source, save_path, considered_layers=None, matmul_front_end=True,
                 **wrapper_options):
        # Read by override_config, which the parent constructor calls before loading.
        self.considered_layers = considered_layers
        super().__init__(source=source, save_path=save_path, **wrapper_options)
        if matmul_front_end:
            use_matmul_front_end(self.model)
        if self.freeze_feature_extractor:
            # Hugging Face's own freezing also stops the CNN from marking its input as
            # requiring grad, which fails when a learned downsampler produced that input.
            self.model.feature_extractor._freeze_parameters()

    def override_config(self, config):
        """Check the architecture and set the depth to ``considered_layers`` (before loading)."""
        check_ssl_architecture(config.name_or_path, config.model_type)
        if self.considered_layers is None:
            return config
        depth = config.num_hidden_layers
        layers = self.considered_layers
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= depth:
            raise ConfigurationError(
                f"considered_layers must be between 1 and the encoder's depth {depth}, "
                f"got {layers!r}"
            )
        config.num_hidden_layers = layers
        return config


def check_ssl_architecture(source, model_type):
    """Refuse an encoder that is not WavLM, wav2vec 2.0 or HuBERT, naming its model type.

    Arguments
    ---------
    source : str
        Hub id or local folder (the YAML key ``ssl_hub``), for the message.
    model_type : str
        ``model_type`` of the encoder's ``config.json``.

    Example
    -------
    >>> check_ssl_architecture("microsoft/wavlm-large", "wavlm")
    >>> check_ssl_architecture("bert-base-uncased", "bert")
    Traceback (most recent call last):
    ...
    ssl_ctc.ConfigurationError: ssl_hub 'bert-base-uncased' holds a 'bert' model ...
    """
    if model_type not in SSL_MODEL_TYPES:
        raise ConfigurationError(
            f"ssl_hub '{source}' holds a '{model_type}' model (model_type in its config.json); "
            f"supported SSL architectures: {', '.join(SSL_MODEL_TYPES)}"
        )


def encoder_hidden_size(ssl_encoder):
    """Return the width of the encoder's output frames (1024 for WavLM Large).

    Arguments
    ---------
    ssl_encoder : speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        The wrapped encoder.

    Returns
    -------
    int
        ``config.hidden_size`` of the Hugging Face model.
    """
    return ssl_encoder.model.config.hidden_size


def build_downsampler(techniques, technique, factor):
    """Pick and build the downsampler named on the command line.

    Arguments
    ---------
    techniques : dict
        Technique name -> partial constructor taking ``downsampling_factor``
        (the YAML ``downsampling_techniques``: classes of
        ``speechbrain.lobes.downsampling``).
    technique : str
        Key of ``techniques`` (the YAML ``downsampling_technique``).
    factor : int
        Downsampling factor; 1 means no downsampling (the baseline).

    Returns
    -------
    torch.nn.Module
        The downsampler, or ``torch.nn.Identity`` for factor 1.

    Example
    -------
    >>> from speechbrain.lobes.downsampling import PoolingDownsampler
    >>> from functools import partial
    >>> techniques = {"averaging": partial(PoolingDownsampler, kernel_size=21)}
    >>> build_downsampler(techniques, "averaging", 2)(torch.rand(1, 16000)).shape
    torch.Size([1, 7990])
    >>> build_downsampler(techniques, "resampling", 2)
    Traceback (most recent call last):
    ...
    ssl_ctc.ConfigurationError: unknown downsampling_technique 'resampling'; valid: averaging
    """
    if technique not in techniques:
        raise ConfigurationError(
            f"unknown downsampling_technique '{technique}'; valid: {', '.join(sorted(techniques))}"
        )
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigurationError(
            f"downsampling_factor must be an integer >= 1 (1 = no downsampling), got {factor!r}"
        )
    if factor == 1:
        return torch.nn.Identity()
    return techniques[technique](downsampling_factor=factor)


def ctc_output_size(output_neurons, upsampling_factor):
    """Width of the CTC linear layer: ``upsampling_factor`` frames of ``output_neurons``.

    Arguments
    ---------
    output_neurons : int
        Vocabulary size including blank (31 for LibriSpeech characters).
    upsampling_factor : int
        CTC frames emitted per encoder frame (1 = no upsampling).

    Returns
    -------
    int
        ``output_neurons * upsampling_factor``.

    Example
    -------
    >>> ctc_output_size(31, 2)
    62
    >>> ctc_output_size(31, 0)
    Traceback (most recent call last):
    ...
    ssl_ctc.ConfigurationError: ctc_upsampling_factor must be an integer >= 1, got 0
    """
    if isinstance(upsampling_factor, bool) or not isinstance(upsampling_factor, int) or (
        upsampling_factor < 1
    ):
        raise ConfigurationError(
            f"ctc_upsampling_factor must be an integer >= 1, got {upsampling_factor!r}"
        )
    return output_neurons * upsampling_factor


def paper_upsampling_factor(downsampling_factor):
    """CTC output upsampling the paper used: 2 for factors >= 3, none below.

    Arguments
    ---------
    downsampling_factor : int
        Input downsampling factor.

    Returns
    -------
    int
        Upsampling factor of the CTC output.

    Example
    -------
    >>> [paper_upsampling_factor(k) for k in (1, 2, 3, 4)]
    [1, 1, 2, 2]
    """
    return 2 if downsampling_factor >= 3 else 1


def upsample_ctc_frames(logits, upsampling_factor):
    """Reshape [B, T, k*V] logits into [B, k*T, V] (k CTC frames per encoder frame).

    Arguments
    ---------
    logits : torch.Tensor
        Output of the CTC linear layer, last dimension ``k * V``.
    upsampling_factor : int
        ``k``.

    Returns
    -------
    torch.Tensor
        Logits with ``k`` times more frames.

    Example
    -------
    >>> upsample_ctc_frames(torch.zeros(2, 5, 62), 2).shape
    torch.Size([2, 10, 31])
    """
    batch, frames, values = logits.shape
    return logits.reshape(batch, frames * upsampling_factor, values // upsampling_factor)


def make_tokenizer():
    """Build the character encoder: blank, bos, eos, then LibriSpeech's 28 characters.

    Returns
    -------
    speechbrain.dataio.encoder.CTCTextEncoder
        31 labels, ``<blank>`` at index 0 (the paper's output size).

    Example
    -------
    >>> tokenizer = make_tokenizer()
    >>> len(tokenizer), tokenizer.lab2ind["<blank>"], tokenizer.encode_sequence(list("HI"))
    (31, 0, [10, 11])
    """
    tokenizer = CTCTextEncoder()
    tokenizer.insert_blank(index=0)
    tokenizer.insert_bos_eos(bos_label="<bos>", eos_label="<eos>", bos_index=1, eos_index=2)
    tokenizer.update_from_iterable(ALPHABET, sequence_input=False)
    tokenizer.expect_len(len(ALPHABET) + 3)
    return tokenizer


def encoder_frames(ssl_encoder, num_samples):
    """Number of frames the encoder's CNN front end makes from ``num_samples`` samples.

    Arguments
    ---------
    ssl_encoder : speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        The wrapped encoder.
    num_samples : int
        Input length in samples (after any downsampling).

    Returns
    -------
    int
        Output frames (0 when the input is shorter than the receptive field).
    """
    if num_samples < 400:
        return 0
    lengths = ssl_encoder.model._get_feat_extract_output_lengths(torch.tensor([num_samples]))
    return int(lengths.item())


# ------------------------------------------------------------------ the Brain


class SSLCTCBrain(sb.Brain):
    """Fine-tunes an SSL encoder with a DNN + CTC head; optional input downsampler.

    ``infer_batch`` is the single inference path, used by training, validation,
    testing and the benchmark. Strategies override ``encode`` (what runs
    between the waveform and the head) and ``experiment_tags``.
    """

    def encode(self, wavs, wav_lens):
        """Run the downsampler and the SSL encoder; return ``[B, T, H]`` features."""
        wavs = self.modules.downsampler(wavs)
        return self.modules.ssl(wavs, wav_lens)

    def classify(self, features):
        """Run the DNN block and the CTC layer; return ``[B, k*T, V]`` log-probs."""
        logits = self.modules.ctc_lin(self.modules.enc(features))
        logits = upsample_ctc_frames(logits, self.hparams.ctc_upsampling_factor)
        return self.hparams.log_softmax(logits)

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
        lengths = torch.round(wav_lens * log_probs.shape[1]).long().clamp(min=1)
        return {"log_probs": log_probs, "lengths": lengths}

    def compute_forward(self, batch, stage):
        """Forward a batch; see ``infer_batch``."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        return self.infer_batch(wavs, wav_lens)

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; greedy decoding and error rates outside training."""
        loss = self.compute_ctc_loss(predictions, batch)
        if stage != sb.Stage.TRAIN:
            _, wav_lens = batch.sig
            hypotheses = self.greedy_transcripts(predictions["log_probs"], wav_lens)
            references = [words.split(" ") for words in batch.wrd]
            self.wer_metric.append(batch.id, hypotheses, references)
            self.cer_metric.append(batch.id, hypotheses, references)
        return loss

    def compute_ctc_loss(self, predictions, batch):
        """CTC loss of ``predictions["log_probs"]`` against the batch's characters."""
        _, wav_lens = batch.sig
        tokens, token_lens = batch.tokens
        return self.hparams.ctc_cost(predictions["log_probs"], tokens, wav_lens, token_lens)

    def greedy_transcripts(self, log_probs, wav_lens):
        """Greedy CTC decoding to lists of words."""
        sequences = sb.decoders.ctc_greedy_decode(
            log_probs, wav_lens, blank_id=self.tokenizer.get_blank_index()
        )
        characters = self.tokenizer.decode_ndim(sequences)
        return ["".join(chars).split() for chars in characters]

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
        """Adam for the SSL encoder, Adadelta for the head and learned downsampler."""
        self.model_optimizer = self.hparams.model_opt_class(self.hparams.model.parameters())
        self.optimizers_dict = {"model_optimizer": self.model_optimizer}
        self.ssl_optimizer = None
        if not self.hparams.freeze_ssl:
            self.ssl_optimizer = self.hparams.ssl_opt_class(self.hparams.ssl.parameters())
            self.optimizers_dict["ssl_optimizer"] = self.ssl_optimizer
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("model_optimizer", self.model_optimizer)
            if self.ssl_optimizer is not None:
                self.checkpointer.add_recoverable("ssl_optimizer", self.ssl_optimizer)

    def run_benchmark(self, test_datasets, settings):
        """The five tests on every test set with the loaded (best) checkpoint; returns records."""
        return benchmark.run_five_tests(
            self, test_datasets, settings, self.experiment_tags(), self.hparams.output_folder
        )

    def experiment_tags(self):
        """Fields copied into every benchmark record: name, strategy, factor, layers.

        Downsampling and layer removal compose, so the name does too: ``SD2``,
        ``18L``, ``SD2 18L`` or ``No downsampling``.
        """
        factor = self.hparams.downsampling_factor
        technique = self.hparams.downsampling_technique
        truncated = self.hparams.considered_layers is not None
        layers = self.hparams.ssl.model.config.num_hidden_layers
        strategies = ([technique] if factor > 1 else []) + (["layer_removal"] if truncated else [])
        abbreviation = TECHNIQUE_ABBREVIATIONS.get(technique, technique)
        names = ([f"{abbreviation}{factor}"] if factor > 1 else []) + (
            [f"{layers}L"] if truncated else []
        )
        labels = ([f"x{factor}"] if factor > 1 else []) + ([f"{layers} L"] if truncated else [])
        return {
            "name": " ".join(names) or "No downsampling",
            "strategy": "+".join(strategies) or "baseline",
            "technique": technique if factor > 1 else None,
            "factor": factor,
            "layers": layers,
            "ctc_upsampling_factor": self.hparams.ctc_upsampling_factor,
            "label": " ".join(labels) or "x1",
            "baseline": factor == 1 and not truncated,
        }


# ------------------------------------------------------------------ data


def dataio_prepare(hparams, csv_paths, tokenizer):
    """Build the train, valid and test datasets from the prepared CSV files.

    Arguments
    ---------
    hparams : dict
        Loaded YAML (``data_folder``, ``dev_splits``, ``test_splits``, ``sorting``,
        dataloader options).
    csv_paths : dict
        Split name (and ``train.csv`` for the merged training splits) -> CSV path,
        as returned by ``prepare_librispeech``.
    tokenizer : speechbrain.dataio.encoder.CTCTextEncoder
        Character encoder (see ``make_tokenizer``).

    Returns
    -------
    tuple
        ``(train_data, valid_data, test_datasets)``, the last a dict split -> dataset.
    """
    data_folder = hparams["data_folder"]

    def load(csv_path):
        check_manifest_columns(csv_path)
        return sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_path, replacements={"data_root": data_folder}
        )

    train_data = load(csv_paths[MERGED_TRAIN_CSV])
    if hparams["sorting"] in ("ascending", "descending"):
        train_data = train_data.filtered_sorted(
            sort_key="duration", reverse=hparams["sorting"] == "descending"
        )
        hparams["train_dataloader_opts"]["shuffle"] = False
    elif hparams["sorting"] != "random":
        raise ConfigurationError(
            f"sorting must be ascending, descending or random, got '{hparams['sorting']}'"
        )
    if len(hparams["dev_splits"]) != 1:
        raise ConfigurationError(
            f"dev_splits must name exactly one validation split, got {hparams['dev_splits']}"
        )
    valid_data = load(csv_paths[hparams["dev_splits"][0]]).filtered_sorted(sort_key="duration")
    test_datasets = {
        split: load(csv_paths[split]).filtered_sorted(sort_key="duration")
        for split in hparams["test_splits"]
    }
    datasets = [train_data, valid_data, *test_datasets.values()]
    check_characters(datasets)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_waveform(wav)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "char_list", "tokens")
    def text_pipeline(wrd):
        yield wrd
        char_list = list(wrd)
        yield char_list
        yield torch.LongTensor(tokenizer.encode_sequence(char_list))

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens", "duration"])
    return train_data, valid_data, test_datasets


def check_manifest_columns(csv_path):
    """Raise naming the file when a manifest is missing or lacks a column the recipe reads.

    Arguments
    ---------
    csv_path : str
        A split's CSV (written by ``prepare_librispeech``, or by hand with ``skip_prep: True``).

    Example
    -------
    >>> check_manifest_columns("/nonexistent/dev-clean.csv")
    Traceback (most recent call last):
    ...
    ssl_ctc.ConfigurationError: CSV file '/nonexistent/dev-clean.csv' not found ...
    """
    if not os.path.isfile(csv_path):
        raise ConfigurationError(
            f"CSV file '{csv_path}' not found (with skip_prep: True, prepare_folder must hold "
            "one CSV per split and the merged train.csv)"
        )
    with open(csv_path, newline="", encoding="utf-8") as csv_file:
        header = next(csv.reader(csv_file), [])
    missing = [column for column in REQUIRED_CSV_COLUMNS if column not in header]
    if missing:
        raise ConfigurationError(
            f"CSV file '{csv_path}' has no column {', '.join(missing)} (its columns: "
            f"{', '.join(header) or 'none'}; needed: {', '.join(REQUIRED_CSV_COLUMNS)})"
        )


def read_waveform(path):
    """Read an audio file as a 1-D float tensor, naming the file when it fails.

    Arguments
    ---------
    path : str
        Audio file path.

    Returns
    -------
    torch.Tensor
        The waveform.
    """
    try:
        waveform = sb.dataio.dataio.read_audio(path)
    except Exception as error:
        raise RuntimeError(f"cannot read audio file '{path}': {error}") from error
    if waveform.numel() == 0:
        raise RuntimeError(f"audio file '{path}' is empty")
    return waveform


def check_characters(datasets):
    """Raise if a transcript holds a character outside LibriSpeech's alphabet."""
    allowed = set(ALPHABET)
    for dataset in datasets:
        with dataset.output_keys_as(["id", "wrd"]):
            for item in dataset:
                unknown = set(item["wrd"]) - allowed
                if unknown:
                    raise ConfigurationError(
                        f"utterance {item['id']} has characters outside A-Z, apostrophe and "
                        f"space: {''.join(sorted(unknown))!r}"
                    )


def count_ctc_shortfalls(dataset, ssl_encoder, downsampling_factor, upsampling_factor,
                         sample_rate):
    """Count utterances with more characters than CTC output frames.

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        Dataset with ``duration`` and ``wrd``.
    ssl_encoder : speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        Encoder whose CNN front end decides the frame rate.
    downsampling_factor : int
        Input downsampling factor.
    upsampling_factor : int
        CTC output upsampling factor.
    sample_rate : int
        Input sampling rate.

    Returns
    -------
    tuple
        ``(shortfalls, total)``.
    """
    shortfalls = total = 0
    with dataset.output_keys_as(["duration", "wrd"]):
        for item in dataset:
            samples = int(float(item["duration"]) * sample_rate / downsampling_factor)
            frames = encoder_frames(ssl_encoder, samples) * upsampling_factor
            total += 1
            shortfalls += len(item["wrd"]) > frames
    return shortfalls, total


# ------------------------------------------------------------------ resuming and processes


class FallbackCheckpointer(Checkpointer):
    """SpeechBrain's Checkpointer that recovers from the newest checkpoint that loads.

    A run killed while saving leaves a checkpoint folder with an unreadable
    ``CKPT.yaml`` or a missing, empty or truncated parameter file. SpeechBrain
    would pick that folder (it is the newest) and fail; here every recovery first
    moves such folders to ``<save_folder>/broken_checkpoints/`` (never deleting
    them) with a warning, so the previous good checkpoint is used. The save
    folder is also checked to be writable when the YAML is loaded.

    Arguments
    ---------
    checkpoints_dir : str
        The YAML's ``save_folder``.
    recoverables : dict, optional
        Name -> object to save and recover.
    **options
        Passed to ``speechbrain.utils.checkpoints.Checkpointer``.
    """

    def __init__(self, checkpoints_dir, recoverables=None, **options):
        check_writable_folder(checkpoints_dir, "save_folder")
        super().__init__(checkpoints_dir, recoverables, **options)

    def recover_if_possible(self, *args, **kwargs):
        """Set broken checkpoints aside (on the main process), then recover as SpeechBrain does."""
        run_on_main(set_aside_broken_checkpoints, args=[self])
        return super().recover_if_possible(*args, **kwargs)


def set_aside_broken_checkpoints(checkpointer):
    """Move the checkpoint folders that cannot be loaded out of the checkpointer's sight.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        Its registered recoverables say which files a checkpoint must hold.

    Returns
    -------
    list of pathlib.Path
        The new places of the folders that were moved.
    """
    required = [
        name
        for name in checkpointer.recoverables
        if not (checkpointer.allow_partial_load or checkpointer.optional_recoverables.get(name)
                or "dataloader" in name)  # SpeechBrain loads these without their file
    ]
    broken_folder = checkpointer.checkpoints_dir / BROKEN_CHECKPOINTS_FOLDER
    moved = []
    for folder in sorted(checkpointer.checkpoints_dir.glob(f"{CKPT_PREFIX}*")):
        if not (folder / METAFNAME).is_file():
            continue  # SpeechBrain ignores a folder without CKPT.yaml
        problem = checkpoint_problem(folder, checkpointer.recoverables, required)
        if problem is None:
            continue
        broken_folder.mkdir(exist_ok=True)
        target = broken_folder / folder.name
        while target.exists():
            target = target.with_name(target.name + "+again")
        folder.rename(target)
        logger.warning(
            f"checkpoint '{folder}' cannot be loaded ({problem}): moved to '{target}'; "
            "recovering from the previous good checkpoint instead"
        )
        moved.append(target)
    return moved


def checkpoint_problem(folder, recoverable_names, required_names):
    """Why a checkpoint folder cannot be loaded, or None when it looks intact.

    Checks what a process killed while saving leaves behind: ``CKPT.yaml``
    unreadable or without its fields, a required file missing, a file empty,
    or a ``torch.save`` archive truncated (its zip directory is written last).

    Arguments
    ---------
    folder : pathlib.Path
        A ``CKPT+...`` folder.
    recoverable_names : iterable of str
        Names whose ``<name>.ckpt`` file is checked when present.
    required_names : iterable of str
        Names whose file must be present.

    Returns
    -------
    str or None
        The problem, naming the file.
    """
    try:
        meta = yaml.safe_load((folder / METAFNAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return f"{METAFNAME} cannot be read: {error}"
    if not isinstance(meta, dict) or "end-of-epoch" not in meta:
        return f"{METAFNAME} is incomplete"
    for name in recoverable_names:
        path = folder / f"{name}{PARAMFILE_EXT}"
        if not path.is_file():
            if name in required_names:
                return f"{path.name} is missing"
            continue
        if path.stat().st_size == 0:
            return f"{path.name} is empty"
        with open(path, "rb") as parameter_file:
            is_archive = parameter_file.read(len(ZIP_SIGNATURE)) == ZIP_SIGNATURE
        if is_archive:
            try:
                with zipfile.ZipFile(path):
                    pass
            except zipfile.BadZipFile as error:
                return f"{path.name} is truncated or corrupt: {error}"
    return None


def check_writable_folder(folder, key):
    """Create ``folder`` if needed and make sure a file can be written in it.

    Arguments
    ---------
    folder : str
        Folder the run writes to.
    key : str
        YAML key that sets it, for the message.

    Example
    -------
    >>> check_writable_folder("/dev/null/results", "output_folder")
    Traceback (most recent call last):
    ...
    ssl_ctc.ConfigurationError: output_folder '/dev/null/results' cannot be written ...
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigurationError(
            f"{key} '{folder}' cannot be written ({error.strerror}: '{error.filename}'); "
            "give --output_folder a folder you can write to"
        ) from error


@contextlib.contextmanager
def unwrapped_modules(brain):
    """Run a block with the Brain's modules taken out of their DDP or DataParallel wrappers.

    Under torchrun the benchmark runs on the main process only: a forward through
    a ``DistributedDataParallel`` wrapper there may wait for the other processes
    (buffer broadcast), and attributes set on a wrapper would miss the module.

    Arguments
    ---------
    brain : speechbrain.Brain
        Its ``modules`` entries are swapped for the wrapped modules, then restored.

    Yields
    ------
    torch.nn.ModuleDict
        ``brain.modules``, unwrapped.
    """
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    wrapped = {
        name: module for name, module in brain.modules.items() if isinstance(module, wrappers)
    }
    for name, wrapper in wrapped.items():
        brain.modules[name] = wrapper.module
    try:
        yield brain.modules
    finally:
        for name, wrapper in wrapped.items():
            brain.modules[name] = wrapper


# ------------------------------------------------------------------ the recipe sequence


def load_recipe_hparams(argv):
    """Parse the command line and load the YAML with its overrides.

    Arguments
    ---------
    argv : list of str
        Command-line arguments without the program name.

    Returns
    -------
    tuple
        ``(hparams_file, run_opts, overrides, hparams)``.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    check_device(run_opts.get("device", "cpu"))
    with open(hparams_file, encoding="utf-8") as yaml_file:
        hparams = load_hyperpyyaml(yaml_file, overrides)
    return hparams_file, run_opts, overrides, hparams


def check_device(device):
    """Fail fast when ``--device cuda`` is asked for on a machine without CUDA.

    Example
    -------
    >>> check_device("cpu")
    """
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(
            f"--device {device} was given but no CUDA device is available; use --device cpu"
        )


def run_recipe(brain_class, argv=None):
    """The common ``__main__`` of every strategy script, in SpeechBrain's recipe order.

    Arguments
    ---------
    brain_class : type
        ``SSLCTCBrain`` or a subclass.
    argv : list of str, optional
        Command line (defaults to ``sys.argv[1:]``).

    Returns
    -------
    SSLCTCBrain
        The trained (or recovered) brain, with ``benchmark_records`` set on the main process.
    """
    hparams_file, run_opts, overrides, hparams = load_recipe_hparams(
        sys.argv[1:] if argv is None else argv
    )
    if not hparams["skip_prep"]:  # a wrong data_folder is named before its missing LM file
        check_layout(hparams["data_folder"], hparams["train_splits"] + hparams["dev_splits"]
                     + hparams["test_splits"])
    benchmark_settings = benchmark.BenchmarkSettings.from_hparams(hparams)
    benchmark_settings.validate()
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    prepare_options = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["prepare_folder"],
        "tr_splits": hparams["train_splits"],
        "dev_splits": hparams["dev_splits"],
        "te_splits": hparams["test_splits"],
        "merge_lst": hparams["train_splits"],
        "merge_name": MERGED_TRAIN_CSV,
    }
    run_on_main(prepare_librispeech, kwargs={**prepare_options, "skip_prep": hparams["skip_prep"]})
    csv_paths = prepare_librispeech(**prepare_options, skip_prep=True)
    tokenizer = make_tokenizer()
    train_data, valid_data, test_datasets = dataio_prepare(hparams, csv_paths, tokenizer)

    brain = brain_class(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.tokenizer = tokenizer
    warn_ctc_shortfalls(brain, train_data)

    if not brain.test_only:
        brain.fit(
            brain.hparams.epoch_counter,
            train_data,
            valid_data,
            train_loader_kwargs=hparams["train_dataloader_opts"],
            valid_loader_kwargs=hparams["valid_dataloader_opts"],
        )
    for split, test_data in test_datasets.items():
        brain.test_wer_file = os.path.join(hparams["output_folder"], f"wer_{split}.txt")
        brain.evaluate(
            test_data, min_key="WER", test_loader_kwargs=hparams["test_dataloader_opts"]
        )
    brain.benchmark_records = []
    if if_main_process():
        with unwrapped_modules(brain):
            brain.benchmark_records = brain.run_benchmark(test_datasets, benchmark_settings)
    return brain


def warn_ctc_shortfalls(brain, train_data):
    """Log a warning when downsampling leaves CTC fewer frames than characters."""
    shortfalls, total = count_ctc_shortfalls(
        train_data,
        brain.hparams.ssl,
        brain.hparams.downsampling_factor,
        brain.hparams.ctc_upsampling_factor,
        brain.hparams.sample_rate,
    )
    if shortfalls:
        logger.warning(
            f"{shortfalls} of {total} training utterances have more characters than CTC "
            f"output frames after downsampling by {brain.hparams.downsampling_factor} "
            f"(x{brain.hparams.ctc_upsampling_factor} upsampling); CTC cannot emit them. "
            "Raise --ctc_upsampling_factor (the paper used 2 for factors >= 3)."
        )
    return shortfalls

