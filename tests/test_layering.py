"""The house's imports run one way, and only backbones/ touches a model's internals.

Layers, lowest first; a module may import its own layer and the layers below it, never one
above (function-level imports included: a cycle hidden in a function is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import robustft

PACKAGE = Path(robustft.__file__).parent
LAYERS: tuple[tuple[str, ...], ...] = (
    ("robustft", "robustft.resources", "robustft.checkpoints", "robustft.state_dict_fit",
     "robustft.labels"),
    ("robustft.backbones", "robustft.relevance", "robustft.losses", "robustft.baselines"),
    # the generated benchmark sits beside data/: its reader builds on data.eval, whose
    # registry offers that reader by name
    ("robustft.data", "robustft.benchmark"),
    ("robustft.masks",),
    ("robustft.config",),
    ("robustft.training", "robustft.evaluation"),
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


def test_only_backbones_read_model_internals():
    touching = [f"{module}: .{node.attr}" for module, tree in _sources()
                if not module.startswith("robustft.backbones")
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and node.attr in MODEL_INTERNALS]
    assert touching == []


def test_the_method_imports_no_lightning_or_hydra():
    method = ("robustft.relevance", "robustft.losses", "robustft.baselines", "robustft.backbones")
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
