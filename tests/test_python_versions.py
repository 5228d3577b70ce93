"""The recipe runs on Python 3.10-3.12 (many CUDA images ship 3.10).

ruff checks the syntax against ``target-version = "py310"`` (pyproject.toml);
this test checks the standard-library names that appeared in 3.11 or later, which
no syntax check sees (``datetime.UTC`` crashed the benchmark after training).
"""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# module -> names it gained in Python 3.11 or later
NEWER_NAMES = {
    "datetime": {"UTC"},
    "enum": {"StrEnum", "ReprEnum", "verify", "EnumCheck"},
    "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type",
               "TypeVarTuple", "Unpack", "Required", "NotRequired", "dataclass_transform",
               "override"},
    "asyncio": {"TaskGroup", "timeout", "Runner"},
    "hashlib": {"file_digest"},
    "operator": {"call"},
    "itertools": {"batched"},
}
NEWER_MODULES = {"tomllib", "wsgiref.types"}


def python_files():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    return [Path(REPO) / name for name in tracked if (Path(REPO) / name).exists()
            and not name.startswith("tests/")]


def newer_uses(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in NEWER_NAMES.get(node.value.id, ()):
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in NEWER_NAMES:
            found += [f"{node.module}.{alias.name}" for alias in node.names
                      if alias.name in NEWER_NAMES[node.module]]
        elif isinstance(node, ast.ImportFrom) and node.module in NEWER_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name in NEWER_MODULES]
        elif isinstance(node, ast.TryStar):
            found.append("except*")
    return found


def test_no_python_311_names_outside_the_tests():
    problems = {str(path.relative_to(REPO)): uses for path in python_files()
                if (uses := newer_uses(path))}
    assert not problems, f"Python 3.11+ only (the recipe supports 3.10): {problems}"


def test_the_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import datetime\nfrom typing import Self\nnow = datetime.datetime.now("
                      "datetime.UTC)\n")
    assert sorted(newer_uses(sample)) == ["datetime.UTC", "typing.Self"]


def test_declared_versions_and_ruff_target():
    lines = (Path(REPO) / "pyproject.toml").read_text().splitlines()  # tomllib is 3.11+
    assert 'requires-python = ">=3.10,<3.13"' in lines
    assert 'target-version = "py310"' in lines
    assert sys.version_info >= (3, 10)
