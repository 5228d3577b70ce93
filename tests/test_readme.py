"""Every command and code block of the README runs as written, on the embedded default.

The commands run from a working folder that holds the repository's files (linked), so
that their relative paths (``hparams/...``, ``results/...``) are the README's. What
the README points at that a test machine lacks is substituted, and only that:

- ``/path/to/LibriSpeech`` is a few utterances of the embedded corpus, with its 4-gram LM;
- ``python`` is this interpreter; ``make demo`` and ``make test`` are not run (the
  demo takes minutes, and this suite is ``make test``);
- the strategy scripts get a tiny encoder and a short real run (``TINY_RUN``: one
  epoch, small batches, CPU tests only, a narrow beam); depths beyond the tiny
  encoder's 3 layers become ones it has (``LAYERS``, ``--considered_layers``, the
  exit layers);
- the speed script runs ``--quick`` (tiny shapes) into the working folder;
- ``tools/clock_check.py`` runs one round on ``results/demo/SD2`` alone;
- ``audio.flac``, ``more.wav``, ``speech.flac`` and ``audio_folder/`` are test-clean
  utterances of the embedded corpus;
- ``results/demo/SD2`` (what ``make demo`` writes) is the experiment of the README's
  first downsampling command (SD2, the YAML's default).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import soundfile
from conftest import FEW_UTTERANCES, REPO

README = Path(REPO) / "README.md"
DEMO_SD2 = Path("results", "demo", "SD2")
SD2_OUTPUT = Path("results", "signal_downsampling_x2", "1986")  # the YAML's default folder
NOT_RUN = {("make", "demo"): "make demo is the demo itself (minutes)",
           ("make", "test"): "make test is this suite"}
STRATEGY_SCRIPTS = ("downsampled_train.py", "layer_removal.py", "early_exiting.py")
TINY_RUN = {"--test_splits": "[test-clean]", "--dnn_neurons": "32", "--number_of_epochs": "1",
            "--batch_size": "2", "--num_workers": "0", "--lm_beam_width": "4",
            "--benchmark_devices": "[cpu]", "--benchmark_warmup_batches": "0",
            "--benchmark_mac_batches": "1"}  # where the README's command sets none
TINY_DEPTHS = {"--considered_layers": {"18": "2"}, "LAYERS": {"24 22 20 18 16 14 12": "2",
                                                              "18 12": "2 1"}}
TINY_EXITS = "--exit_layers=[2, 3]"


def readme_blocks(language):
    """The fenced code blocks of the README in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)


def readme_commands():
    """Each shell command of the README: ``(environment, arguments)``, continuations joined."""
    commands = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            environment = {}
            while words and re.match(r"^[A-Z_]+=", words[0]):
                name, _, value = words.pop(0).partition("=")
                environment[name] = value
            if words:
                commands.append((environment, words))
    return commands


def substituted(environment, words, corpus, encoder):
    """The command as this machine runs it (see the module's docstring), or None if not run."""
    if tuple(words[:2]) in NOT_RUN:
        return None
    words = [corpus if word == "/path/to/LibriSpeech" else word for word in words]
    if words[0] == "python":
        words[0] = sys.executable
    for option, replacements in TINY_DEPTHS.items():
        if option in environment:
            environment[option] = replacements.get(environment[option], environment[option])
        if option in words:
            index = words.index(option) + 1
            words[index] = replacements.get(words[index], words[index])
    script = words[1] if len(words) > 1 else ""
    if script in STRATEGY_SCRIPTS or script == "layer_removal.sh":
        given = {word.split("=")[0] for word in words if word.startswith("--")}
        words += ["--ssl_hub", encoder, *(f"{option}={value}" for option, value in
                                           TINY_RUN.items() if option not in given)]
        if script == "early_exiting.py":
            words.append(TINY_EXITS)
        if script == "layer_removal.sh":
            environment.setdefault("LAYERS", TINY_DEPTHS["LAYERS"]["24 22 20 18 16 14 12"])
            environment["PYTHON"] = sys.executable
    if script == "speed_benchmark.py":
        words = [*words[:2], "--quick", "--output_folder", "results/speed"]
    if script == "tools/clock_check.py":
        words = [*words[:2], str(DEMO_SD2), "--rounds", "1"]
    return environment, words


def working_folder(tmp_path, test_clean_folder):
    """A folder holding the repository's files (linked) and the README's audio files."""
    folder = tmp_path / "recipe"
    folder.mkdir()
    for entry in Path(REPO).iterdir():
        if entry.name not in (".git", "results", ".venv"):
            (folder / entry.name).symlink_to(entry)
    audio = sorted(Path(test_clean_folder).rglob("*.flac"))
    samples, rate = soundfile.read(audio[0])
    soundfile.write(folder / "audio.flac", samples, rate)
    soundfile.write(folder / "speech.flac", samples, rate)
    soundfile.write(folder / "more.wav", *soundfile.read(audio[1]))
    (folder / "audio_folder").mkdir()
    soundfile.write(folder / "audio_folder" / "one.flac", samples, rate)
    return folder


def test_the_readme_has_commands_for_every_script():
    scripts = {words[1] for _, words in readme_commands() if len(words) > 1}
    assert {*STRATEGY_SCRIPTS, "layer_removal.sh", "benchmark.py", "transcribe.py",
            "speed_benchmark.py"} <= scripts


def test_every_readme_command_and_code_block_runs(tiny_encoders, embedded_corpus, tmp_path):
    from librispeech_prepare import copy_first_utterances

    corpus = tmp_path / "LibriSpeech"
    copy_first_utterances(embedded_corpus, corpus, FEW_UTTERANCES)
    shutil.copy(Path(embedded_corpus) / "4-gram.arpa", corpus)
    folder = working_folder(tmp_path, corpus / "test-clean")
    ran, seen = [], set()
    for environment, words in readme_commands():
        command = substituted(dict(environment), list(words), str(corpus),
                              tiny_encoders["wavlm"])
        if command is None or repr(command) in seen:
            continue
        seen.add(repr(command))
        run = subprocess.run(command[1], cwd=folder, capture_output=True, text=True,
                             timeout=600, env={**os.environ, **command[0]})
        assert run.returncode == 0, f"{shlex.join(words)}\n{run.stderr[-3000:]}"
        ran.append(words[1] if len(words) > 1 else words[0])
        if (folder / SD2_OUTPUT).is_dir() and not (folder / DEMO_SD2).exists():
            (folder / DEMO_SD2).parent.mkdir(parents=True)
            (folder / DEMO_SD2).symlink_to(folder / SD2_OUTPUT)
    assert "transcribe.py" in ran and "benchmark.py" in ran
    for block in readme_blocks("python"):
        run = subprocess.run([sys.executable, "-c", block], cwd=folder, capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, f"{block}\n{run.stderr[-3000:]}"
