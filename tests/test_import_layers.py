"""Imports flow one way (issue 17, ``../shared/DESIGN.md``): utilities -> config / data / model ->
Lightning (the module and the top-level ``callbacks/``) -> run orchestration -> CLI; analysis and viz
depend only on utilities, the data schema and the run-directory schema (their own package).

Plain ``ast`` over the package sources: every import counts, also one inside a function (a lazy
import hides a cycle, it does not remove it). A module may import its own layer or a lower one. A
violation not in :data:`ALLOWED` fails the test; an entry of :data:`ALLOWED` that no longer occurs
fails it too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dvis_attn_pl", "callbacks")

UTILITIES, DOMAIN, LIGHTNING, ORCHESTRATION, CLI = range(5)
ANALYSIS = "analysis"  # beside DOMAIN for the layers above it; its own rule for what it imports

# module (or package) -> layer; the longest matching prefix wins
LAYERS: dict[str, int | str] = {
    "dvis_attn_pl": UTILITIES,  # the package root: __version__ (its public API re-exports are lazy)
    "dvis_attn_pl.utils": UTILITIES,  # errors, io_utils, compat, arrays, run_layout
    "dvis_attn_pl.config": DOMAIN,
    "dvis_attn_pl.data": DOMAIN,
    "dvis_attn_pl.model": DOMAIN,
    "dvis_attn_pl.metrics": DOMAIN,
    "dvis_attn_pl.results": DOMAIN,
    "dvis_attn_pl.capture_presets": DOMAIN,
    "dvis_attn_pl.weights": DOMAIN,
    "dvis_attn_pl.interventions": DOMAIN,  # altered datasets and model hooks, below the Lightning loops
    "dvis_attn_pl.analysis": ANALYSIS,
    "dvis_attn_pl.viz": ANALYSIS,
    "dvis_attn_pl.lightning_module": LIGHTNING,
    "callbacks": LIGHTNING,
    "dvis_attn_pl.run": ORCHESTRATION,  # runner, options, preflight, resume, summary, ddp_guard
    "dvis_attn_pl.training": ORCHESTRATION,  # the fit command: its stages, Lightning module and run
    "dvis_attn_pl.cli": CLI,
    "dvis_attn_pl.__main__": CLI,
    "dvis_attn_pl.commands": CLI,
}

# What analysis and viz may import besides themselves: utilities (the run-directory schema is
# utils/run_layout), the data schema, and the YTVIS evaluator of result files (decision timing's AP).
ANALYSIS_MAY_IMPORT = ("dvis_attn_pl.data", "dvis_attn_pl.metrics.ytvis_eval")

# Imports that break the layering, each with the reason it is still there; remove an entry when its
# import is gone (the test fails on an entry that no longer occurs).
ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """Every package module ``name`` imports (``from x import y`` counts as ``x.y``: y may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return found


def _layer(module: str) -> int | str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module}: no layer in LAYERS (add its package)")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violates(importer: str, imported: str) -> bool:
    src, dst = _layer(importer), _layer(imported)
    if src == ANALYSIS:
        return not (dst in (UTILITIES, ANALYSIS) or _within(imported, ANALYSIS_MAY_IMPORT))
    if dst == ANALYSIS:  # analysis is read by the layers above the domain, never by the domain
        return src in (UTILITIES, DOMAIN)
    return dst > src


def _violations() -> set[tuple[str, str]]:
    bad = set()
    for name, path in _sources().items():
        if name == "dvis_attn_pl":  # the root's lazy public API (``from dvis_attn_pl import build_model``)
            continue
        for target in _imports(name, path):
            if _violates(name, target):
                bad.add((name, target.rpartition(".")[0] if target not in _sources() else target))
    return bad


def test_every_module_has_a_layer():
    for name in _sources():
        _layer(name)


def test_imports_flow_one_way():
    found = _violations()
    new = sorted(found - set(ALLOWED))
    assert not new, "imports against the layering (see the module docstring):\n" + "\n".join(
        f"  {a} -> {b}" for a, b in new
    )
    gone = sorted(set(ALLOWED) - found)
    assert not gone, f"fixed: remove from ALLOWED: {gone}"


def test_the_check_sees_a_violation():
    assert _violates("dvis_attn_pl.model.meta_arch", "dvis_attn_pl.analysis.decision")
    assert _violates("callbacks.attention_capture", "dvis_attn_pl.run.runner")
    assert _violates("dvis_attn_pl.analysis.run_dir", "dvis_attn_pl.model.capture")
    assert not _violates("dvis_attn_pl.run.runner", "callbacks.progress")
    assert not _violates("dvis_attn_pl.analysis.video_inputs", "dvis_attn_pl.data.rle")


def test_each_layer_is_a_folder():
    """The package root holds only the layers' folders and a few single-purpose modules (issue 17
    point 3): the run orchestration lives in ``run/``, the utilities in ``utils/``."""
    root = ROOT / "dvis_attn_pl"
    modules = sorted(p.stem for p in root.glob("*.py"))
    assert modules == ["__init__", "__main__", "capture_presets", "cli", "lightning_module", "results"], modules


def _import_graph() -> dict[str, set[str]]:
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        targets = {t if t in sources else t.rpartition(".")[0] for t in _imports(name, path)}
        graph[name] = {t for t in targets if t in sources and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a path that comes back to its start), None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_back():
    """No two-way imports, also within a layer and through lazy imports (e.g. the capture and the
    rollout, the analysis pipeline and its stages)."""
    found = _cycle(_import_graph())
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_the_cycle_check_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_internals_names_every_module():
    """``docs/internals.md`` describes every module (issue 17): each file's name appears in it as a
    word (``base.py``, ``base``), not inside another word."""
    import re

    text = (ROOT / "docs" / "internals.md").read_text()
    unnamed = [
        str(path.relative_to(ROOT))
        for pkg in PACKAGES
        for path in sorted((ROOT / pkg).rglob("*.py"))
        if path.name != "__init__.py" and not re.search(rf"(?<![\w-]){re.escape(path.stem)}(?![\w-])", text)
    ]
    assert not unnamed, f"modules docs/internals.md does not name: {unnamed}"
