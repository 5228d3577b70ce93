"""An utterance's output must not depend on the batch it is in, nor on the batch size.

Each strategy's Brain, built from its recipe YAML on a tiny encoder: every
utterance of a padded batch of mixed lengths gets, on its valid frames, the
log-probabilities it gets alone (within 1e-4) and the same number of frames; the
five tests give the same WER, CER and transcripts at every ``batch_size``.
"""

import dataclasses
import os

import pytest
import speechbrain as sb
import torch
from conftest import EMBEDDED_CORPUS, REPO
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataset import DynamicItemDataset

from early_exiting.brain import EarlyExitBrain
from early_exiting.criteria import build_exit_criterion
from librispeech_prepare import prepare_librispeech
from ssl_ctc.benchmarking import five_tests
from ssl_ctc.benchmarking.settings import BenchmarkSettings
from ssl_ctc.ctc import make_tokenizer
from ssl_ctc.data import read_waveform
from ssl_ctc.downsampling import DownsampledBrain
from ssl_ctc.layer_removal import LayerRemovalBrain

LENGTHS = (16000, 11200, 7300, 12801)  # samples; mixed, so three of four are padded
STRATEGIES = {
    "baseline": ("sig_down8000.yaml", DownsampledBrain, {"downsampling_factor": 1}),
    "SD2": ("sig_down8000.yaml", DownsampledBrain, {"downsampling_factor": 2}),
    "SD3": ("sig_down8000.yaml", DownsampledBrain, {"downsampling_factor": 3}),
    "AV3": ("sig_down8000.yaml", DownsampledBrain,
            {"downsampling_technique": "averaging", "downsampling_factor": 3}),
    "CL2": ("sig_down8000.yaml", DownsampledBrain,
            {"downsampling_technique": "convolutional", "downsampling_factor": 2}),
    "2L": ("layer_removal.yaml", LayerRemovalBrain,
           {"considered_layers": 2, "downsampling_factor": 1}),
    "SD2 2L": ("layer_removal.yaml", LayerRemovalBrain,
               {"considered_layers": 2, "downsampling_factor": 2}),
    "EE": ("early_exiting/early_exits.yaml", EarlyExitBrain,
           {"exit_layers": [1, 2, 3], "exit_decision": "utterance"}),
}


def build_brain(name, encoder, tmp_path):
    yaml_name, brain_class, overrides = STRATEGIES[name]
    with open(os.path.join(REPO, "hparams", yaml_name), encoding="utf-8") as yaml_file:
        hparams = load_hyperpyyaml(yaml_file, {
            "data_folder": EMBEDDED_CORPUS, "ssl_hub": encoder, "dnn_neurons": 16,
            "output_folder": str(tmp_path / "out"), **overrides,
        })
    torch.manual_seed(0)
    brain = brain_class(modules=hparams["modules"], hparams=hparams,
                        run_opts={"device": "cpu"}, checkpointer=None)
    brain.tokenizer = make_tokenizer()
    brain.modules.eval()
    if brain_class is EarlyExitBrain:
        split_exit_layers(brain.modules.early_exit)
    return brain


def split_exit_layers(early_exit):
    """Install an entropy threshold that lets some utterances of ``padded_batch`` exit first."""
    wavs, wav_lens = padded_batch()
    with torch.inference_mode():
        first_exit = early_exit(wavs, wav_lens, all_exits=True).log_probs[1]
    entropies = [
        torch.special.entr(first_exit[index, :frames].exp()).sum(-1).mean()
        for index, frames in enumerate(early_exit.encoder.frame_lengths(wavs, wav_lens).tolist())
    ]
    early_exit.criterion = build_exit_criterion("entropy", threshold=float(
        torch.stack(entropies).median()))


def padded_batch(lengths=LENGTHS, seed=0):
    generator = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for index, length in enumerate(lengths):
        wavs[index, :length] = torch.randn(length, generator=generator) * (0.1 + 0.1 * index)
    return wavs, torch.tensor(lengths, dtype=torch.float) / max(lengths)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_utterance_decodes_as_if_alone(tiny_encoders, tmp_path, name):
    brain = build_brain(name, tiny_encoders["wavlm"], tmp_path)
    wavs, wav_lens = padded_batch()
    with torch.inference_mode():
        batched = brain.infer_batch(wavs, wav_lens)
        for index, length in enumerate(LENGTHS):
            alone = brain.infer_batch(wavs[index:index + 1, :length], torch.ones(1))
            frames = int(alone["lengths"][0])
            assert int(batched["lengths"][index]) == frames == alone["log_probs"].shape[1]
            torch.testing.assert_close(batched["log_probs"][index, :frames],
                                       alone["log_probs"][0], atol=1e-4, rtol=0)
            for extra in set(batched) - {"log_probs", "lengths"}:
                assert batched[extra][index] == alone[extra][0]
    if name == "EE":  # the batch really mixes exit layers
        assert len(set(batched["exit_layers"].tolist())) > 1


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_training_forward_uses_the_exact_frame_lengths(tiny_encoders, tmp_path, name):
    """CTC training and validation see each utterance's exact frames, as inference does.

    1200 samples give 3 encoder frames; the relative length times the batch's 49
    frames, rounded, would say 4 (a frame of padding scored by the CTC loss).
    """
    brain = build_brain(name, tiny_encoders["wavlm"], tmp_path)
    wavs, wav_lens = padded_batch(lengths=(16000, 1200))
    batch = PaddedBatch([{"sig": wav[:int(round(float(length) * wavs.shape[1]))]}
                         for wav, length in zip(wavs, wav_lens, strict=True)])
    with torch.inference_mode():
        expected = brain.infer_batch(wavs, wav_lens)["lengths"]
        for stage in (sb.Stage.TRAIN, sb.Stage.VALID):
            assert brain.compute_forward(batch, stage)["lengths"].tolist() == expected.tolist()


@pytest.fixture(scope="module")
def test_clean(tmp_path_factory):
    """The first 8 utterances of the embedded test-clean split, as the recipe reads them."""
    folder = tmp_path_factory.mktemp("prepared")
    csv_paths = prepare_librispeech(EMBEDDED_CORPUS, str(folder), te_splits=["test-clean"])
    dataset = DynamicItemDataset.from_csv(csv_paths["test-clean"],
                                          replacements={"data_root": EMBEDDED_CORPUS})
    dataset = dataset.filtered_sorted(select_n=8)
    dataset.add_dynamic_item(read_waveform, takes="wav", provides="sig")
    dataset.set_output_keys(["id", "sig", "wrd", "duration"])
    return dataset


@pytest.mark.parametrize("name", ["CL2", "EE"])
def test_error_rates_do_not_depend_on_batch_size(tiny_encoders, tmp_path, test_clean, name):
    brain = build_brain(name, tiny_encoders["wavlm"], tmp_path)
    settings = BenchmarkSettings(devices=["cpu"], warmup_batches=0, mac_batches=1,
                                 lm_path=os.path.join(EMBEDDED_CORPUS, "4-gram.arpa"),
                                 lm_beam_width=4, lm_decode_workers=1)
    measured = {}
    for batch_size in (1, 4, 16):
        records = five_tests.run_five_tests(
            brain, {"test-clean": test_clean}, dataclasses.replace(settings, batch_size=batch_size),
            brain.experiment_tags(), tmp_path / f"batch{batch_size}")
        measured[batch_size] = {
            record["test"]: (record["wer"], record["cer"], record["wer_details"])
            for record in records if record["status"] == "ok" and record["test"] != "macs"
        }
    assert set(measured[1]) == {"cpu_greedy", "cpu_lm"}
    assert measured[1] == measured[4] == measured[16]
