"""The ``README.md`` model card of an inference folder: what was trained, its numbers, its use.

The Brain adds its strategy's lines (``inference_card_lines``) and, when it has its
own interface for SpeechBrain's ``foreign_class`` (``inference_interface``), how to
call it; the benchmark's numbers come from the experiment's ``benchmark.json``. Exporting
the folder to ONNX (``python -m ssl_ctc.inference export``) adds a section listing the
graphs and their checks (``exported_graphs_section``).

Usage::

    text = model_card(brain, brain.experiment_tags(), records, "CKPT+...", "results/SD2/inference")
    text = with_section(text, exported_graphs_section(manifest["onnx"], "results/SD2/inference"))
"""

import json

from ssl_ctc.benchmarking.records import latest_records
from ssl_ctc.imports import PACKAGE_NAME, importable_class_name
from ssl_ctc.inference.loading import (
    CUSTOM_INTERFACE_FILE,
    INFERENCE_FORMAT_VERSION,
    SSL_CONFIG_FOLDER,
    TOKENIZER_FILE,
)


def format_number(value, digits=3):
    """A number for the model card, ``-`` when missing.

    Example
    -------
    >>> format_number(None), format_number(1.23456, 2), format_number(4)
    ('-', '1.23', '4')
    """
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def benchmark_table(records, name):
    """Rows of the card's benchmark table: the latest measured record of each test, per test set.

    Example
    -------
    >>> benchmark_table([], "SD2")
    '| (no benchmark records) | | | | | | | | |'
    """
    latest = {key: record for key, record in latest_records(
        [record for record in records if record.get("name") == name]).items()
        if record["status"] == "ok"}
    rows = []
    for test_set in sorted({test_set for test_set, _ in latest}):
        def field(test, key, digits=3, test_set=test_set):
            record = latest.get((test_set, test))
            return format_number(record.get(key) if record else None, digits)

        cells = [test_set, field("cpu_greedy", "wer", 2), field("cpu_greedy", "cer", 2),
                 field("cpu_lm", "wer", 2), field("gpu_greedy", "total_time_s"),
                 field("cpu_greedy", "total_time_s"), field("cpu_lm", "total_time_s"),
                 field("macs", "gmacs_per_batch"), field("cpu_greedy", "real_time_factor")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) or "| (no benchmark records) | | | | | | | | |"


def interface_usage(interface, folder_name, savedir):
    """The card's section on a strategy's own interface (``Brain.inference_interface``)."""
    if interface is None:
        return ""
    return f"""
{interface['description']}; with SpeechBrain's `foreign_class` and the interface
`{CUSTOM_INTERFACE_FILE}` of this folder:

```python
from speechbrain.inference.interfaces import foreign_class
asr = foreign_class(source="{folder_name}", savedir="{savedir}",
                    pymodule_file="{CUSTOM_INTERFACE_FILE}", classname="{interface['classname']}",
                    overrides={json.dumps(interface['overrides'])})
{interface['example']}
```
"""


def model_card(brain, tags, records, checkpoint, folder_name):
    """The README.md of an inference folder: what was trained, its numbers, how to use it.

    Arguments
    ---------
    brain : ssl_ctc.brain.SSLCTCBrain
        The trained Brain (its hparams, ``inference_card_lines``, ``inference_interface``).
    tags : dict
        Its ``experiment_tags()``.
    records : list of dict
        The experiment's benchmark records (``benchmark.json``).
    checkpoint : str or None
        Name of the checkpoint the weights come from.
    folder_name : str
        The folder as the usage examples name it.

    Returns
    -------
    str
    """
    hparams = brain.hparams
    config = hparams.ssl.model.config
    savedir = "pretrained/" + tags["name"].replace(" ", "_")
    trained = [
        f"- strategy `{tags['strategy']}` (`{importable_class_name(type(brain))}`), "
        f"label `{tags['label']}`",
        f"- encoder: {config.model_type}, {config.num_hidden_layers} transformer layers kept, "
        f"hidden size {config.hidden_size}; SSL source `{hparams.ssl_hub}`",
        *brain.inference_card_lines(),
        f"- data: `{hparams.data_folder}`, train {hparams.train_splits}, "
        f"valid {hparams.dev_splits}",
        f"- weights: checkpoint `{checkpoint}` (best validation WER), after epoch "
        f"{getattr(hparams.epoch_counter, 'current', None)} of {hparams.number_of_epochs}",
    ]
    trained_lines = "\n".join(trained)
    batch_size = getattr(hparams, "benchmark_batch_size", 4)
    return f"""# {tags['name']}: {config.model_type} + CTC, fine-tuned with this recipe

Character CTC recogniser (LibriSpeech's 28 characters) from a fine-tuned {config.model_type}
encoder, written by `ssl_ctc.inference` (inference format {INFERENCE_FORMAT_VERSION}).

## What was trained

{trained_lines}

## Benchmark (from the experiment's benchmark.json)

| test set | WER | CER | WER-LM | GPU s | CPU s | CPU-LM s | GMACs per batch | CPU RTF |
|---|---|---|---|---|---|---|---|---|
{benchmark_table(records, tags['name'])}

Whole-split wall times of the five tests (batches of {batch_size}); `-`: a test that was
skipped (no GPU, no LM).

## Use it

The modules are the recipe's own (`ssl_ctc`, `early_exiting`): install its package
(`pip install <path or URL of the recipe>`, named `{PACKAGE_NAME}`) or run from a
checkout of it; the folder can live anywhere. Nothing is downloaded: the encoder is built
from the configuration
in `hyperparams.yaml` (the same as `{SSL_CONFIG_FOLDER}/config.json` and
`{SSL_CONFIG_FOLDER}/preprocessor_config.json`) and loads the weights in this folder.

```bash
python transcribe.py {folder_name} audio.flac more.wav   # "<file>\\t<TRANSCRIPT>" per input
python transcribe.py {folder_name} audio_folder/ --lm 4-gram.arpa --batch_size 8
```

```python
from speechbrain.inference.ASR import EncoderASR
asr = EncoderASR.from_hparams(source="{folder_name}", savedir="{savedir}")
asr.transcribe_file("speech.flac")
# the benchmark's LM beam search: overrides={{"lm_path": "/path/to/4-gram.arpa"}}
```
{interface_usage(brain.inference_interface(), folder_name, savedir)}
Push to the Hugging Face hub (not run here):

```bash
huggingface-cli upload <user>/<model-name> {folder_name} .
```

## Files

- `hyperparams.yaml`: the modules and decoding for `EncoderASR`; `inference.json`: format
  version, interface, the files it needs
- `*.ckpt`: weights of each module (`{TOKENIZER_FILE}`: the label encoder, text)
- `{SSL_CONFIG_FOLDER}/`: the SSL encoder's Hugging Face `config.json`, `preprocessor_config.json`
"""


EXPORTED_GRAPHS_HEADING = "## Exported graphs (ONNX)"


def describe_check(precision, check):
    """One line on an exported graph's check against the PyTorch model (``onnx_export``).

    Example
    -------
    >>> print(describe_check("fp32", {"utterances": 45, "lengths_equal": True,
    ...     "tolerance": 1e-3, "max_abs_log_prob_diff": 2e-6, "transcripts_differing": 0,
    ...     "wer": 21.7, "wer_torch": 21.7}))
    log-probs within 2.0e-06 of PyTorch on valid frames (tolerance 1.0e-03), exact lengths,
    0 of 45 greedy transcripts differ; WER 21.70 (PyTorch 21.70)
    """
    lengths = "exact lengths" if check["lengths_equal"] else "LENGTHS DIFFER"
    differing = (f"{check['transcripts_differing']} of {check['utterances']} greedy transcripts "
                 "differ")
    if precision == "fp32":
        return (f"log-probs within {check['max_abs_log_prob_diff']:.1e} of PyTorch on valid "
                f"frames (tolerance {check['tolerance']:.1e}), {lengths}, {differing}; "
                f"WER {check['wer']:.2f} (PyTorch {check['wer_torch']:.2f})")
    increase = check["wer"] - check["wer_torch"]
    return (f"WER {check['wer']:.2f} vs {check['wer_torch']:.2f} in PyTorch fp32 "
            f"({increase:+.2f}, bound +{check['max_wer_increase']:.2f}), {differing}, "
            f"{lengths}, largest log-prob difference {check['max_abs_log_prob_diff']:.2f}")


def exported_graphs_section(entry, folder_name):
    """The card's section on the exported graphs: files, checks, how to run them.

    Arguments
    ---------
    entry : dict
        The ``onnx`` entry of ``inference.json``.
    folder_name : str
        The folder as the usage examples name it.

    Returns
    -------
    str
    """
    rows = "\n".join(
        f"| `{entry[precision]}` | {precision} | {describe_check(precision, check)} |"
        for precision, check in entry["check"].items())
    check = entry["check"]["fp32"]
    int8, int8_usage = "", ""
    if "int8" in entry:
        int8 = f" int8: {entry['int8_quantization']}."
        int8_usage = (f"\npython transcribe.py {folder_name} audio.flac --runtime openvino "
                      "--precision int8")
    return f"""{EXPORTED_GRAPHS_HEADING}

The whole acoustic model (every module above, CTC log-probs and exact frame lengths) as ONNX
(opset {entry['opset']}; inputs `wavs` [batch, samples] and `wav_lens` (relative lengths),
outputs `log_probs` and `lengths`; dynamic batch and time axes), written by
`python -m ssl_ctc.inference export` and checked against the PyTorch model on {check['data']}
({check['utterances']} utterances, padded batches of {check['batch_size']}).{int8}

| file | precision | check |
|---|---|---|
{rows}

```bash
python transcribe.py {folder_name} audio.flac --runtime onnxruntime   # or openvino{int8_usage}
```
"""


def with_section(card, section):
    """The card with its exported-graphs section replaced by ``section`` (added at the end).

    Example
    -------
    >>> card = with_section("# SD2\\n", EXPORTED_GRAPHS_HEADING + "\\nold\\n")
    >>> with_section(card, EXPORTED_GRAPHS_HEADING + "\\nnew\\n")
    '# SD2\\n\\n## Exported graphs (ONNX)\\nnew\\n'
    """
    head = card.split("\n" + EXPORTED_GRAPHS_HEADING)[0].rstrip("\n")
    return f"{head}\n\n{section}"
