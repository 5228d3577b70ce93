"""The library's layout: data flows one way (nothing in the library imports a script)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIBRARY = ("ssl_ctc", "early_exiting")
# SpeechBrain's data-preparation script: a leaf below the library (it imports nothing of ours).
DATA_PREPARATION = "librispeech_prepare"
# Top-level scripts and the speed analysis: they use the library, never the reverse.
ABOVE_THE_LIBRARY = {path.stem for path in REPO.glob("*.py")} - {"early_exiting",
                                                                  DATA_PREPARATION} | {
    "speed_analysis", "tools", "tests"}


def imported_modules(path):
    """Top-level names of every module that ``path`` imports (absolute imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


LIBRARY_FILES = sorted(path for package in LIBRARY for path in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_library_imports_no_script(path):
    upward = sorted(set(imported_modules(path)) & ABOVE_THE_LIBRARY)
    assert not upward, f"{path.relative_to(REPO)} imports {upward}, which sit above the library"


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import benchmark\nfrom speed_analysis.report import x\n")
    assert set(imported_modules(module)) & ABOVE_THE_LIBRARY == {"benchmark", "speed_analysis"}


def test_data_preparation_is_a_leaf():
    ours = set(LIBRARY) | ABOVE_THE_LIBRARY
    assert not set(imported_modules(REPO / f"{DATA_PREPARATION}.py")) & ours
