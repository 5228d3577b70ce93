"""The Brain is a key of the recipe's YAML, and each strategy's Brain says what its folder holds."""

import os

import pytest

from early_exiting.brain import EarlyExitBrain
from ssl_ctc.brain import SSLCTCBrain
from ssl_ctc.downsampling import DownsampledBrain
from ssl_ctc.errors import ConfigurationError
from ssl_ctc.layer_removal import LayerRemovalBrain
from ssl_ctc.recipe import run_recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_yaml_run_by_another_strategy_script_is_refused(tiny_encoders, tmp_path):
    output_folder = tmp_path / "experiment"
    argv = [os.path.join(REPO, "hparams", "sig_down8000.yaml"),
            "--data_folder", os.path.join(REPO, "embedded", "LibriSpeech"),
            "--output_folder", str(output_folder), "--ssl_hub", tiny_encoders["wavlm"]]
    with pytest.raises(ConfigurationError, match=r"brain_class of .*sig_down8000\.yaml is "
                       r"ssl_ctc\.downsampling\.DownsampledBrain.*EarlyExitBrain"):
        run_recipe(EarlyExitBrain, argv)
    # refused before anything was written (loading the YAML makes the empty save/ folder)
    assert not [path for path in output_folder.rglob("*") if path.is_file()]


def test_inference_keys_add_up_along_the_strategy_classes():
    base = SSLCTCBrain.inference_keys(None)
    downsampling = DownsampledBrain.inference_keys(DownsampledBrain.__new__(DownsampledBrain))
    assert downsampling[:len(base)] == base
    assert {"downsampling_factor", "ctc_upsampling_factor"} <= set(downsampling)
    assert LayerRemovalBrain.inference_keys is DownsampledBrain.inference_keys
    early_exit = EarlyExitBrain.inference_keys(EarlyExitBrain.__new__(EarlyExitBrain))
    assert early_exit[:len(base)] == base and "exit_threshold" in early_exit


def test_only_early_exit_brings_its_own_interface():
    assert SSLCTCBrain.inference_interface(None) is None
    brain = EarlyExitBrain.__new__(EarlyExitBrain)
    brain.hparams = type("Hparams", (), {"exit_threshold": 0.1})
    interface = brain.inference_interface()
    assert interface["overrides"] == {"exit_threshold": 0.1}
    assert f"class {interface['classname']}(" in interface["source"].read_text()
