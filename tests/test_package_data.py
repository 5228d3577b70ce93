"""The installed package finds what it reads at run time (issue 33): built as a wheel,
installed outside the checkout, run from elsewhere."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

INSTALLED_PROBE = """
import ssl_ctc
from pathlib import Path
assert not Path(ssl_ctc.__file__).is_relative_to({repo!r}), ssl_ctc.__file__
from ssl_ctc.benchmarking.paper import load_paper_results
from ssl_ctc.inference.onnx_export import CHECK_DATA, ExportError, read_test_split
assert load_paper_results(), "the paper's table is empty"
try:
    read_test_split(CHECK_DATA)
except ExportError as error:
    print(error)
"""


# What pyproject.toml builds the package from (copied: an in-tree build would leave build/).
PACKAGE_SOURCES = ("pyproject.toml", "ssl_ctc", "early_exiting", "librispeech_prepare.py")


def test_the_wheel_ships_and_finds_its_data(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in PACKAGE_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                    "--no-build-isolation", "--quiet", "--wheel-dir", str(tmp_path / "wheel")],
                   check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    assert "ssl_ctc/benchmarking/paper_results.json" in zipfile.ZipFile(wheel).namelist()
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                    str(target), str(wheel)], check=True, cwd=tmp_path)
    environment = {**os.environ, "PYTHONPATH": str(target)}
    probe = subprocess.run([sys.executable, "-c", INSTALLED_PROBE.format(repo=str(REPO))],
                           cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    # the export's check corpus stays in the checkout: the installed package says what to pass
    assert "--check_data" in probe.stdout and "LibriSpeech-layout split" in probe.stdout
