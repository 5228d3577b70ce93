"""The library's layout: data flows one way (nothing in the library imports a script, no
script imports another, ``ssl_ctc/cpu/`` imports nothing of the library above it), its modules
import each other without a cycle, only a ``__main__`` sets up logging, each concern has its
package (distillation in ``ssl_ctc/distillation/``), every row the recipe runs is defined once,
in the registry, and the CPU kernels are decided in one place, ``ssl_ctc/cpu/decision.py``."""

import ast
import importlib.util
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


# Scripts: the programs at the top level and in tools/ (a module with a ``__main__`` block).
# They import the library, the speed analysis and benchmark.py (the five tests), or a helper
# module of tools/ (no ``__main__``), never another script.
SCRIPTS = sorted(path for path in [*REPO.glob("*.py"), *(REPO / "tools").rglob("*.py")]
                 if 'if __name__ == "__main__":' in path.read_text())
IMPORTABLE_BY_SCRIPTS = {*LIBRARY, DATA_PREPARATION, "speed_analysis", "benchmark"}
NOT_IMPORTABLE_BY_SCRIPTS = ({path.stem for path in SCRIPTS} | {"tools", "tests"}) - (
    IMPORTABLE_BY_SCRIPTS)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: str(path.relative_to(REPO)))
def test_no_script_imports_another_script(path):
    scripts = sorted(set(imported_modules(path)) & NOT_IMPORTABLE_BY_SCRIPTS)
    assert not scripts, (f"{path.relative_to(REPO)} imports the scripts {scripts}: move what "
                         "they share into the library (the registry: ssl_ctc/experiments/)")


def test_the_check_sees_a_script_importing_a_script(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("from tools.run_demo import x\nimport reproduce_paper\nimport benchmark\n")
    assert set(imported_modules(module)) & NOT_IMPORTABLE_BY_SCRIPTS == {"tools",
                                                                          "reproduce_paper"}


REGISTRY = REPO / "ssl_ctc" / "experiments" / "registry.py"
# What runs rows: none of them writes a row or a strategy's override.
ROW_USERS = [REPO / "reproduce_paper.py", REPO / "speed_benchmark.py",
             *(REPO / "tools" / f"{name}.py" for name in ("run_demo", "gpu_check",
                                                          "run_distillation_demo")),
             *sorted((REPO / "speed_analysis").glob("*.py")),
             *sorted((REPO / "ssl_ctc" / "benchmarking").glob("*.py")),
             *sorted((REPO / "ssl_ctc" / "experiments").glob("*.py"))]
STRATEGY_OVERRIDES = ("--downsampling_", "--considered_layers", "--exit_", "--ctc_upsampling")


def code_strings(path):
    """The string constants of ``path`` that are not docstrings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("path", [path for path in ROW_USERS if path != REGISTRY],
                         ids=lambda path: str(path.relative_to(REPO)))
def test_rows_are_written_in_the_registry_only(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    built = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Row"]
    assert not built, f"{path.relative_to(REPO)} builds rows (lines {built}): add them there"
    overrides = [text for text in code_strings(path) if text.startswith(STRATEGY_OVERRIDES)]
    assert not overrides, f"{path.relative_to(REPO)} writes overrides of a row: {overrides}"


def load_script(relative_path):
    """A script of the recipe as a module (its ``__main__`` block not run)."""
    name = relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_runner_takes_its_rows_from_the_registry():
    """The grids, the demo, the speed script's variants, the GPU check and the distillation
    demo run the registry's rows, by name, with the registry's embedded overrides."""
    from speed_analysis import brains
    from ssl_ctc.experiments import registry

    reproduce_paper = load_script("reproduce_paper.py")
    assert reproduce_paper.GRID is registry.GRID
    assert reproduce_paper.EMBEDDED_GRID is registry.EMBEDDED_GRID
    assert reproduce_paper.EMBEDDED_OVERRIDES is registry.EMBEDDED_OVERRIDES
    run_demo = load_script("tools/run_demo.py")
    assert run_demo.DEMO_PARTS is registry.DEMO_PARTS
    for names in registry.DEMO_PARTS.values():
        assert registry.rows_named(registry.EMBEDDED_GRID, names)  # KeyError if one is not
    assert list(brains.VARIANTS.values()) == list(registry.SPEED_VARIANTS)
    gpu_check = load_script("tools/gpu_check.py")
    assert list(gpu_check.VARIANTS.values()) == list(registry.GPU_CHECK)
    distillation_demo = load_script("tools/run_distillation_demo.py")
    assert list(distillation_demo.ROWS.values()) == list(registry.DISTILLATION_STUDENTS)
    assert distillation_demo.EMBEDDED_OVERRIDES is registry.EMBEDDED_OVERRIDES
    assert registry.BASELINE in registry.rows_named(registry.EMBEDDED_GRID,
                                                    registry.DEMO_PARTS["downsampling"])
    for rows in (registry.GRID, registry.EMBEDDED_GRID, registry.SPEED_VARIANTS,
                 registry.GPU_CHECK, registry.DISTILLATION_STUDENTS):
        assert len({row.name for row in rows}) == len(rows)
        assert all((REPO / path).is_file() for row in rows for path in row.recipe)


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


def test_the_embedded_default_is_made_by_tools_embedded_only():
    """embedded/README.md names the programs that make the embedded data; all of them live
    in tools/embedded/ and exist, and every program there is named in that README."""
    named = set(re.findall(r"tools/[\w/]+\.(?:py|sh)", (REPO / "embedded" / "README.md")
                           .read_text()))
    assert named, "embedded/README.md names no program"
    assert all(name.startswith("tools/embedded/") and (REPO / name).is_file()
               for name in named), sorted(named)
    programs = {str(path.relative_to(REPO)) for path in (REPO / "tools" / "embedded").iterdir()
                if path.suffix in (".py", ".sh") and path.name != "synthetic_asr.py"}
    assert programs <= named, sorted(programs - named)


# The CPU package sits below the rest of the library: it may import these leaves of ``ssl_ctc``
# (which import nothing of ours), never a module that could import it back.
CPU_PACKAGE = "ssl_ctc.cpu"
CPU_LEAVES = {"ssl_ctc.precision", "ssl_ctc.imports"}


def in_package(module, package):
    """Whether the dotted ``module`` is ``package`` or one of its modules."""
    return module == package or module.startswith(f"{package}.")


def arrows_out_of(graph, package, leaves):
    """``(module, target)`` of every import from ``package`` to a module outside it, not a leaf
    (nor a package above it, which every import of one of its modules runs anyway)."""
    return sorted((module, target) for module, targets in graph.items()
                  if in_package(module, package) for target in targets
                  if not in_package(target, package) and not in_package(package, target)
                  and target not in leaves)


def test_the_cpu_package_imports_nothing_above_it():
    graph = import_graph(REPO, ["ssl_ctc"])
    arrows = arrows_out_of(graph, CPU_PACKAGE, CPU_LEAVES)
    assert not arrows, f"ssl_ctc/cpu imports the library above it: {arrows}"
    assert all(not graph[leaf] for leaf in CPU_LEAVES), "a CPU leaf imports the library"
    assert not (REPO / "ssl_ctc" / "front_end.py").exists()  # the front end lives in cpu/


def test_the_check_sees_an_arrow_out_of_the_cpu_package(tmp_path):
    (tmp_path / "lib" / "cpu").mkdir(parents=True)
    for name in ("__init__.py", "cpu/__init__.py", "precision.py", "encoder.py"):
        (tmp_path / "lib" / name).write_text("")
    (tmp_path / "lib" / "cpu" / "a.py").write_text(
        "from lib.precision import autocast\nfrom lib.cpu import b\n")
    (tmp_path / "lib" / "cpu" / "b.py").write_text("def f():\n    from lib import encoder\n")
    graph = import_graph(tmp_path, ["lib"])
    assert arrows_out_of(graph, "lib.cpu", {"lib.precision"}) == [("lib.cpu.b", "lib.encoder")]


# What measures a CPU choice (kernels, front end, whole-model path): only the one decision,
# ``decide_cpu_inference``, calls them or builds choices, so that the five tests, transcription
# and the speed script run the same decision. Tests may call them to test them.
CPU_CHOICE_MEASUREMENTS = {"choose_backend", "choose_front_end", "choose_path", "CpuChoices"}
CPU_DECISION = REPO / "ssl_ctc" / "cpu" / "decision.py"
DECIDING_FILES = sorted({*LIBRARY_FILES, *SCRIPTS, *(REPO / "speed_analysis").rglob("*.py"),
                         *(REPO / "tools").rglob("*.py")})


def called_names(path):
    """Names that ``path`` calls (``f()``, ``module.f()``, ``Class.method()``: ``Class``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            function = node.func
            while isinstance(function, ast.Attribute):
                names.add(function.attr)
                function = function.value
            if isinstance(function, ast.Name):
                names.add(function.id)
    return names


@pytest.mark.parametrize("path", [path for path in DECIDING_FILES if path != CPU_DECISION],
                         ids=lambda path: str(path.relative_to(REPO)))
def test_cpu_kernels_are_decided_in_the_decision_only(path):
    measuring = sorted(called_names(path) & CPU_CHOICE_MEASUREMENTS)
    assert not measuring, (f"{path.relative_to(REPO)} calls {measuring}: decide through "
                           "ssl_ctc.cpu.decision.decide_cpu_inference (or cpu_inference)")


def test_the_check_sees_a_cpu_choice_outside_the_decision(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("from ssl_ctc.cpu import kernels\n\n"
                      "def f(linears, modules):\n    kernels.choose_backend(linears)\n"
                      "    return CpuChoices.measured(modules, ['fp32'])\n")
    assert called_names(module) & CPU_CHOICE_MEASUREMENTS == {"choose_backend", "CpuChoices"}
    module.write_text("def f(modules):\n    return decide_cpu_inference(modules, ['fp32'])\n")
    assert not called_names(module) & CPU_CHOICE_MEASUREMENTS
