"""Import contracts of src/spikefed (docs: /DESIGN.md "Layout"), checked on the source with ``ast``.

* no module imports a leading-underscore name from another spikefed module;
* layers point down only: a module imports spikefed modules of its own layer or of a lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "spikefed"

# top to bottom; modules of one tuple are one layer (they may import each other)
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("cli",),
    ("deploy",),
    ("experiment",),
    ("federated",),
    ("hardware",),
    ("interop",),
    ("snn",),
    ("events",),
    ("data",),
    ("seeding", "io", "manifold", "runtime"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

# (file, imported name) pending a change under way elsewhere; each entry must still occur (else delete it)
PENDING_PRIVATE: set[tuple[str, str]] = set()  # (file, private name) pairs allowed while being moved


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` of every spikefed import in ``source`` (the text of ``module``),
    module level or inside functions, relative or absolute."""
    tree = ast.parse(source)
    package = module.split(".")
    if not is_package:
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "spikefed" or target.startswith("spikefed."):
                found.append((node.lineno, target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("spikefed."):
                    found.append((node.lineno, alias.name, []))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations() -> tuple[list[tuple[str, str, str]], list[str]]:
    private: list[tuple[str, str, str]] = []
    upward: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        here = module_name(path)
        mine = layer_of(here)
        for line, target, names in imports(path.read_text(), here, path.name == "__init__.py"):
            where = f"{path.relative_to(SRC.parent)}:{line}"
            for name in names:
                # `from .pkg import _mod` names a submodule; a name from the module itself is private either way
                if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                    if target != here:
                        private.append((str(path.relative_to(SRC.parent)), f"{target}.{name}", where))
            theirs = layer_of(target)
            if theirs is None:  # `from spikefed import x`: x is the layer
                theirs = names[0] if len(names) == 1 else None
                if theirs is None:
                    continue
            if mine is None or theirs not in RANK or mine not in RANK:
                continue
            if RANK[theirs] < RANK[mine]:
                upward.append(f"{where}: {mine} imports {target} ({theirs} is above {mine})")
    return private, upward


def test_every_top_level_module_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert names <= set(RANK), f"modules without a layer in tests/test_layers.py: {sorted(names - set(RANK))}"


def test_no_private_names_imported_across_modules():
    private, _ = violations()
    bad = [f"{where}: {name}" for file, name, where in private if (file, name) not in PENDING_PRIVATE]
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)
    stale = PENDING_PRIVATE - {(file, name) for file, name, _ in private}
    assert not stale, f"PENDING_PRIVATE entries no longer needed, delete them: {sorted(stale)}"


def test_layers_point_down_only():
    _, upward = violations()
    assert not upward, "imports that point up the layer order:\n" + "\n".join(upward)


def test_the_scan_sees_relative_absolute_and_local_imports():
    source = ("from ..federated import x\nimport spikefed.cli\n"
              "def f():\n    from .train import _y\n    from spikefed.data.digits import _z\n")
    found = imports(source, "spikefed.snn.probe")
    assert [(line, target) for line, target, _ in found] == [
        (1, "spikefed.federated"), (2, "spikefed.cli"), (4, "spikefed.snn.train"), (5, "spikefed.data.digits")]
    assert imports("from . import models\n", "spikefed.snn", is_package=True) == [(1, "spikefed.snn", ["models"])]
