"""The package layout: no import cycles, Django only in the Django app, everything packaged.

The import graph is read from the code's own ``import`` statements with
:mod:`ast` (no import is executed), so a cycle hidden behind a
function-local import is found too. docs/architecture.md draws the same
rules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
#: Import name -> source folder of the packages the distribution installs.
SOURCES = {"celery_durable": ROOT / "celery_durable", "celery_durable_django": ROOT / "django_app"}
#: Modules of celery_durable that may import the Django app, behind a function-local
#: import that defers an optional dependency.
MAY_LOAD_THE_DJANGO_APP = {"celery_durable.stores.selection"}


def _modules() -> Iterator[tuple[str, Path]]:
    for name, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            if "migrations" in rel:
                continue
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            yield ".".join((name, *parts)), path


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import in ``path``.

    ``from package import submodule`` names the submodule only (Python imports a
    module's parent packages first in any case).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function = {id(n) for node in ast.walk(tree)
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(node)}
    known = {name for name, _ in _modules()}
    # TYPE_CHECKING blocks are not imports at run time.
    typing_only = {id(n) for node in tree.body if isinstance(node, ast.If)
                   and ast.unparse(node.test).endswith("TYPE_CHECKING") for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        top = id(node) not in in_function
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, top
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            submodules = [f"{target}.{a.name}" for a in node.names
                          if f"{target}.{a.name}" in known]
            if len(submodules) < len(node.names):
                yield target, node.lineno, top
            for submodule in submodules:
                yield submodule, node.lineno, top


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports (at any depth in the file)."""
    modules = dict(_modules())
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, _ in _imports(name, path):
            if target in modules and target != name:
                edges[name].add(target)
    return edges


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle(graph: dict[str, set[str]]) -> None:
    """No module of celery_durable or its Django app imports itself through others."""
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a three-module cycle is reported."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def _layer(module: str) -> str:
    """The layer a module belongs to (docs/architecture.md draws them)."""
    parts = module.split(".")
    if parts[0] == "celery_durable_django":
        return "django app"
    if len(parts) == 1 or parts[1] in ("task", "testing"):
        return "top"
    if parts[1] in ("stores", "engine", "controls", "ops"):
        return parts[1]
    return "bottom"


#: Which layers each layer may import, lowest first.
MAY_IMPORT = {
    "bottom": {"bottom"},
    "stores": {"bottom", "stores"},
    "engine": {"bottom", "stores", "engine"},
    "controls": {"bottom", "stores", "engine", "controls"},
    "ops": {"bottom", "stores", "engine", "controls", "ops"},
    "top": {"bottom", "stores", "engine", "controls", "ops", "top"},
    "django app": {"bottom", "stores", "top", "django app"},
}
#: Imports against the layers, each with its reason (keep this short).
EXCEPTIONS = {
    # building the Django store when the app's result backend is django-celery-results
    ("celery_durable.stores.selection", "celery_durable_django.store"),
    # a child run must be a registered DurableTask
    ("celery_durable.controls.children", "celery_durable.task"),
    # the admin's replay form lists the steps a replay keeps, as replay_run decides them
    ("celery_durable_django.admin.replay_view", "celery_durable.ops.replay"),
    # the run page reads a wait's checkpoint as get_run does
    ("celery_durable_django.admin.run_steps", "celery_durable.ops.inspection"),
}


def test_each_layer_imports_only_the_layers_below_it(graph: dict[str, set[str]]) -> None:
    """bottom < stores < engine < controls < ops < top; the Django app sees the bottom, the
    stores and the public face only."""
    wrong = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                   if _layer(b) not in MAY_IMPORT[_layer(a)] and (a, b) not in EXCEPTIONS)
    assert wrong == []
    unused = sorted(e for e in EXCEPTIONS if e[1] not in graph.get(e[0], set()))
    assert unused == []


def test_only_the_django_app_imports_django() -> None:
    """The engine never imports Django; it loads the Django app only to build its store."""
    offenders = []
    for name, path in _modules():
        if name.startswith("celery_durable_django"):
            continue
        for target, line, _ in _imports(name, path):
            root = target.split(".")[0]
            if root == "django" or (root == "celery_durable_django"
                                    and name not in MAY_LOAD_THE_DJANGO_APP):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert offenders == []


def test_nothing_imports_a_top_level_django_app_module() -> None:
    """The Django app is imported as celery_durable_django, never as ``django_app``."""
    offenders = []
    for folder in ("celery_durable", "django_app", "tests", "bench", "example_project",
                   "examples", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom)
                         and not node.level else [])
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                              if n.split(".")[0] == "django_app"]
    assert offenders == []


def test_function_local_imports_only_defer_optional_dependencies() -> None:
    """A function-local import of our own code would hide a cycle; only optional
    dependencies (redis-py, the Django app, opentelemetry, pytest, SQLAlchemy through the SQL
    store's modules) are imported late."""
    optional = {"redis", "hiredis", "celery_durable_django", "opentelemetry", "pytest",
                "django", "sqlalchemy"}
    defers_sqlalchemy = "celery_durable.stores.sql."  # the SQL store's modules import it
    offenders = []
    for name, path in _modules():
        if name.startswith("celery_durable_django"):
            continue  # Django's app loading needs late imports of models and settings
        for target, line, top in _imports(name, path):
            if top or target.split(".")[0] in optional or target.startswith(defers_sqlalchemy):
                continue
            if target.split(".")[0] in ("celery_durable", "celery_durable_django"):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert offenders == []


def test_pyproject_packages_every_package_and_no_other() -> None:
    """``[tool.setuptools] packages`` names every package folder of both sources."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in SOURCES.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found.add(".".join((name, *parts)))
    assert set(config["packages"]) == found
    assert config["package-dir"] == {"celery_durable_django": "django_app"}


def test_every_module_stays_readable() -> None:
    """No module of the package grows past ~500 lines."""
    long = [f"{path.relative_to(ROOT)}: {n}" for _, path in _modules()
            if (n := len(path.read_text().splitlines())) > 500]
    assert long == []
