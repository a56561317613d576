"""The house's imports run one way, and only backbones/ touches a model's internals or
knows a model family's name.

Layers, lowest first; a module may import its own layer and the layers below it, never one
above (function-level imports included: a cycle hidden in a function is still a cycle).
Within a layer, the module-level imports form no circle (a package's modules do not import
each other round; an import inside a function, which runs when it is called, is how a
module loads something lazily, e.g. a family's ``open_clip``, and is allowed there).
Outside ``backbones/`` no code tests a family's name (``family == "hf"``): it asks the
family's record (``robustft.backbones.registry.Family``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import robustft
from robustft.backbones import FAMILIES

PACKAGE = Path(robustft.__file__).parent
LAYERS: tuple[tuple[str, ...], ...] = (
    ("robustft", "robustft.resources", "robustft.checkpoints", "robustft.state_dict_fit",
     "robustft.labels"),
    ("robustft.backbones", "robustft.relevance", "robustft.losses", "robustft.baselines",
     "robustft.swaps"),
    # the generated benchmark sits beside data/: its reader builds on data.eval, whose
    # registry offers that reader by name
    ("robustft.data", "robustft.synth"),
    ("robustft.masks",),
    ("robustft.schemas",),
    ("robustft.training", "robustft.evaluation"),
    # the demo and the comparison: training and evaluation put together on the generated
    # benchmarks
    ("robustft.demo",),
    ("robustft.cli",),
)
# what only a backbone family may read from a model
MODEL_INTERNALS = {"blocks", "patch_embed", "fused_attn", "attn_drop", "cls_token", "qkv",
                   "forward_features", "reg_token", "dist_token"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    matches = [(len(name), index) for index, names in enumerate(LAYERS) for name in names
               if module == name or module.startswith(name + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name == "robustft" or name.startswith("robustft.")]


def _sources() -> list[tuple[str, ast.AST]]:
    return [(_module_name(path), ast.parse(path.read_text()))
            for path in sorted(PACKAGE.rglob("*.py"))]


def _is_package(module: str, modules: set[str]) -> bool:
    return any(other.startswith(module + ".") for other in modules)


def _module_level_nodes(tree: ast.AST, *, functions: bool = False):
    """The statements that run when the module is imported: everything but function bodies
    (unless ``functions``) and ``if TYPE_CHECKING:`` blocks (class bodies run, so they
    count)."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if not functions and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += node.orelse
            continue
        yield node
        stack += ast.iter_child_nodes(node)


def _import_graph(sources: list[tuple[str, ast.AST]], *,
                  functions: bool = False) -> dict[str, set[str]]:
    """module -> the robustft modules its module-level imports load. ``from P import x``
    is an edge to ``P.x`` when that is a module, else to ``P`` (whose ``__init__`` must
    then have run); the parents a dotted import initialises first are not edges (a package
    whose ``__init__`` imports a submodule that imports a sibling is no circle)."""
    modules = {module for module, _tree in sources}
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, tree in sources:
        package = module if _is_package(module, modules) else module.rpartition(".")[0]
        for node in _module_level_nodes(tree, functions=functions):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            graph[module] |= {target for target in targets if target in modules}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected set of more than one module (or a module importing itself),
    as one circle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1 or node in graph[node]:
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _family_tests(tree: ast.AST) -> list[str]:
    """Comparisons (and ``match`` cases) that test a model family's name: a string equal
    to a registered family's name, or ``family`` itself, as an operand."""

    def names_a_family(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str) and node.value in FAMILIES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_a_family(element) for element in node.elts)
        if isinstance(node, ast.Name):
            return node.id == "family"
        if isinstance(node, ast.Attribute):
            return node.attr == "family"
        if isinstance(node, ast.Subscript):
            return names_a_family(node.slice) or (isinstance(node.slice, ast.Constant)
                                                  and node.slice.value == "family")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            return node.func.attr == "get" and any(
                isinstance(arg, ast.Constant) and arg.value == "family" for arg in node.args)
        return False

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
                isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops) and any(
                names_a_family(operand) for operand in (node.left, *node.comparators)):
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Match) and (names_a_family(node.subject) or any(
                isinstance(case.pattern, ast.MatchValue) and names_a_family(case.pattern.value)
                for case in node.cases)):
            found.append(ast.unparse(node.subject))
    return found


def test_every_module_is_in_a_layer():
    for module, _tree in _sources():
        _layer(module)


def test_no_module_imports_a_higher_layer():
    upward = [f"{module} imports {name}" for module, tree in _sources()
              for name in _imports(tree) if _layer(name) > _layer(module)]
    assert upward == []


def test_the_check_sees_an_upward_import():
    tree = ast.parse("def f():\n    from robustft.evaluation.runner import evaluate_models\n")
    assert [name for name in _imports(tree) if _layer(name) > _layer("robustft.data.generic")]


def test_no_import_circle():
    assert _circles(_import_graph(_sources())) == []


def test_backbones_import_no_circle_even_inside_functions():
    """The families' records load their modules lazily (``Family.adapters``, ``lazy``), so
    nothing in backbones/ needs a lazy import back into a module that imports it: a family
    imports ``backbones.base`` / ``.registry`` / ``.heads``, never the package's ``__init__``
    or ``spec``."""
    backbones = [(module, tree) for module, tree in _sources()
                 if module.startswith("robustft.backbones")]
    assert _circles(_import_graph(backbones, functions=True)) == []


def test_the_check_sees_an_import_circle_and_allows_lazy_imports():
    def parse(text: str) -> ast.AST:
        return ast.parse(text)

    circle = [("robustft.backbones", parse("from robustft.backbones.spec import ModelSpec\n")),
              ("robustft.backbones.spec", parse("from robustft.backbones.timm import make\n")),
              ("robustft.backbones.timm", parse("from robustft.backbones import Backbone\n"))]
    assert _circles(_import_graph(circle)) == [
        ["robustft.backbones", "robustft.backbones.spec", "robustft.backbones.timm"]]
    lazy = [circle[0], circle[1], ("robustft.backbones.timm", parse(
        "import typing\nif typing.TYPE_CHECKING:\n    from robustft.backbones import Backbone\n"
        "def make():\n    from robustft.backbones import Backbone\n"))]
    assert _circles(_import_graph(lazy)) == []
    # a package's __init__ importing a submodule that imports its sibling is no circle
    siblings = [("robustft.backbones", parse("from robustft.backbones import timm\n")),
                ("robustft.backbones.timm", parse("from robustft.backbones.registry import F\n")),
                ("robustft.backbones.registry", parse("x = 1\n"))]
    assert _circles(_import_graph(siblings)) == []


def test_no_family_name_is_tested_outside_backbones():
    tests = [f"{module}: {found}" for module, tree in _sources()
             if not module.startswith("robustft.backbones")
             for found in _family_tests(tree)]
    assert tests == []


def test_the_check_sees_a_family_test():
    assert sorted(FAMILIES) == ["hf", "open_clip", "timm"]
    for code in ['if entry.get("family", "timm") == "timm": pass',
                 "if spec.family == other: pass", 'ok = kind in ("hf", "open_clip")',
                 'match name:\n    case "hf":\n        pass']:
        assert _family_tests(ast.parse(code)), code
    assert _family_tests(ast.parse('version = {"timm": 1}\nok = name == "vit"\n'
                                   'known = family is not None')) == []


def test_only_backbones_read_model_internals():
    touching = [f"{module}: .{node.attr}" for module, tree in _sources()
                if not module.startswith("robustft.backbones")
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and node.attr in MODEL_INTERNALS]
    assert touching == []


def test_the_method_imports_no_lightning_or_hydra():
    method = ("robustft.relevance", "robustft.losses", "robustft.baselines", "robustft.backbones",
              "robustft.swaps")
    leaks = []
    for module, tree in _sources():
        if module.startswith(method):
            for node in ast.walk(tree):
                names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                         [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                leaks += [f"{module} imports {n}" for n in names
                          if n.split(".")[0] in ("pytorch_lightning", "lightning", "hydra",
                                                 "omegaconf")]
    assert leaks == []


# what an entry point may import from robustft.cli: the shared start-up and error reporting
CLI_SHARED = {"robustft.cli", "robustft.cli.common", "robustft.cli.errors"}


def test_entry_points_import_no_other_entry_point():
    """Each ``cli/*.py`` is a thin entry point: the work it starts lives in the package
    (robustft-compare's in ``demo/``, not in ``cli/demo.py``)."""
    crossing = [f"{module} imports {name}" for module, tree in _sources()
                if module.startswith("robustft.cli.") and module not in CLI_SHARED
                for name in _imports(tree)
                if name.startswith("robustft.cli") and name not in CLI_SHARED]
    assert crossing == []
