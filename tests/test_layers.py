"""The layer order of docs/architecture.md, checked on the source: no module imports upward.

    core (config, errors, fileio, checkpoint, artefact, data, model, assets, testing)
      <- kernels  <- train, export (neither imports the other)  <- engine
      <- cli, bench, serve, eval, and the package root (its lazy `Engine`)

Every import counts, at module level or inside a function, `import a.b` or `from a import b`.
A module that no layer claims fails the test, so a new package has to be placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# source folder -> package name (pyproject's package-dir)
SOURCES = {"s2i_fast": "s2i_fast", "kernels": "s2i_fast.kernels", "train": "s2i_fast.train",
           "export": "s2i_fast.export"}
LAYERS: list[tuple[str, tuple[str, ...]]] = [  # lowest first; a module may import its own and lower
    ("core", ("s2i_fast.errors", "s2i_fast.config", "s2i_fast.fileio", "s2i_fast.checkpoint",
              "s2i_fast.artefact", "s2i_fast.data", "s2i_fast.model", "s2i_fast.assets",
              "s2i_fast.testing")),
    ("kernels", ("s2i_fast.kernels",)),
    ("stage", ("s2i_fast.train", "s2i_fast.export")),
    ("engine", ("s2i_fast.engine",)),
    ("app", ("s2i_fast.cli", "s2i_fast.bench", "s2i_fast.serve", "s2i_fast.eval",
             "s2i_fast.__main__", "s2i_fast")),
]
SIBLINGS_APART = ("s2i_fast.train", "s2i_fast.export")  # one layer, no imports between them


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in SOURCES.items():
        root = REPO / folder
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "s2i_fast" and parts and parts[0] in ("kernels", "train", "export"):
                continue  # not there: those install from the top-level folders
            out[".".join([package, *parts])] = path
    return out


def _claim(module: str) -> tuple[int, str] | None:
    """(layer index, the prefix that claims it): the longest matching prefix wins."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (i, prefix)
    return best


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    # the bare root package runs only its trivial __init__; `from s2i_fast import Engine`
    # still counts, as s2i_fast.Engine (the root's lazy attribute, app layer)
    return {m for m in found if m.startswith("s2i_fast.")}


MODULES = _modules()


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in MODULES if _claim(m) is None)
    assert not unplaced, f"modules no layer claims (add them to LAYERS): {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    own_layer, own_prefix = _claim(module)
    path = MODULES[module]
    upward = []
    for target in sorted(_imports(path, module, path.name == "__init__.py")):
        layer, prefix = _claim(target)
        if layer > own_layer:
            upward.append(f"{target} ({LAYERS[layer][0]})")
        elif (layer == own_layer and prefix != own_prefix and prefix in SIBLINGS_APART
              and own_prefix in SIBLINGS_APART):
            upward.append(f"{target} (sibling stage)")
    assert not upward, (f"{module} ({LAYERS[own_layer][0]}) imports upward: "
                        + ", ".join(upward))


def test_the_check_sees_an_upward_import(tmp_path):
    """The walker finds function-local and `from` imports (so the test above can fail)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from s2i_fast.engine import Engine\n"
                   "import s2i_fast.cli.train\nfrom s2i_fast import kernels\n")
    got = _imports(src, "s2i_fast.model.m", is_package=False)
    assert {"s2i_fast.engine", "s2i_fast.cli.train", "s2i_fast.kernels"} <= got
    assert _claim("s2i_fast.engine.engine")[0] > _claim("s2i_fast.model.ops")[0]
