"""The library's layout: data flows one way (nothing in the library imports a script), its
modules import each other without a cycle, only a ``__main__`` sets up logging, and each
concern has its package (distillation in ``ssl_ctc/distillation/``)."""

import ast
import re
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


def module_names(root, packages):
    """Dotted name -> file of every module in ``packages`` under ``root``."""
    names = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_names(path, module):
    """Dotted names each import statement of ``path`` (module ``module``) may name, at any
    depth (in functions too): ``from a import b`` names ``a.b`` and ``a``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root, packages):
    """Module -> the modules of ``packages`` it imports (the longest known prefix of a name)."""
    names = module_names(root, packages)
    graph = {}
    for module, path in names.items():
        targets = set()
        for name in imported_names(path, module):
            parts = name.split(".")
            known = next((".".join(parts[:end]) for end in range(len(parts), 0, -1)
                          if ".".join(parts[:end]) in names), None)
            if known is not None and known != module:
                targets.add(known)
        graph[module] = targets
    return graph


def import_cycle(graph):
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None when it is acyclic."""
    state = {}  # module -> "open" while on the path, "done" once every import is explored

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_library_modules_import_each_other_without_a_cycle():
    cycle = import_cycle(import_graph(REPO, LIBRARY))
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_check_sees_an_import_cycle(tmp_path):
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "__init__.py").write_text("")
    (tmp_path / "package" / "a.py").write_text("from package.b import helper\n")
    (tmp_path / "package" / "b.py").write_text(
        "def helper():\n    from package import a  # a function-level import counts\n")
    (tmp_path / "package" / "c.py").write_text("from . import a\n")
    graph = import_graph(tmp_path, ["package"])
    assert graph["package.c"] == {"package", "package.a"}
    assert import_cycle(graph) == ["package.a", "package.b", "package.a"]
    (tmp_path / "package" / "b.py").write_text("def helper():\n    pass\n")
    assert import_cycle(import_graph(tmp_path, ["package"])) is None


def calls_logging_setup(path):
    """Whether ``path`` calls ``logging.basicConfig`` (the process's logging: a CLI's choice)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.Call) and (
        isinstance(node.func, ast.Attribute) and node.func.attr == "basicConfig"
        or isinstance(node.func, ast.Name) and node.func.id == "basicConfig")
        for node in ast.walk(tree))


def test_only_a_command_line_sets_up_logging():
    configuring = [str(path.relative_to(REPO)) for path in LIBRARY_FILES
                   if path.name != "__main__.py" and calls_logging_setup(path)]
    assert not configuring, f"{configuring} call logging.basicConfig: only a __main__.py may"


def test_the_check_sees_a_logging_setup(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import logging\n\ndef main():\n    logging.basicConfig(level=20)\n")
    assert calls_logging_setup(module)
    module.write_text("import logging\nlogger = logging.getLogger(__name__)\n")
    assert not calls_logging_setup(module)


def test_distillation_is_one_package():
    assert (REPO / "ssl_ctc" / "distillation" / "__init__.py").is_file()
    assert not sorted((REPO / "ssl_ctc").glob("distillation*.py"))


def test_pyproject_installs_every_library_package():
    listed = re.search(r"^packages = \[(.*?)\]", (REPO / "pyproject.toml").read_text(),
                       re.MULTILINE | re.DOTALL).group(1)
    packages = {".".join(path.parent.relative_to(REPO).parts)
                for package in LIBRARY for path in (REPO / package).rglob("__init__.py")}
    assert set(re.findall(r'"([^"]+)"', listed)) == packages
