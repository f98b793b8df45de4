"""The import graph keeps its layers (docs/architecture.md): a module imports only from its own layer
or below, nothing imports the CLI, and no two modules import each other, directly or in a ring.

Every `import` counts, also the ones inside functions: a lazy import is still a dependency."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "advlab"

# Low to high. The longest matching prefix decides a module's layer.
LAYERS = {
    "advlab.version": 0, "advlab.errors": 0, "advlab.parsing": 0, "advlab.io": 0, "advlab.rng": 0,
    "advlab.progress": 0, "advlab.heap": 0, "advlab.device": 0, "advlab.passes": 0, "advlab.oom": 0,
    "advlab.profiling": 0, "advlab.predict": 0, "advlab.distributed": 0, "advlab.threat": 0,
    "advlab.precision": 0, "advlab.graphs": 0,
    "advlab.plotting": 0, "advlab.rundir": 0, "advlab.records": 0,
    "advlab.data": 1, "advlab.models": 1,
    "advlab.attacks": 2, "advlab.runs": 2,
    "advlab.evaluate": 3, "advlab.defenses": 3, "advlab.analysis": 3, "advlab.metric": 3,
    "advlab.generative": 3, "advlab.certify": 3, "advlab.subject": 3,
    "advlab.report": 4, "advlab.artifacts": 4,
    "advlab.demo": 5, "advlab.reproduce": 5,
    "advlab.cli": 6, "advlab.__main__": 6,
    "advlab": 7,  # the package's public face re-exports from below; nothing inside imports it
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every advlab module `path` imports, resolving relative imports. `from pkg import x` depends on
    the module pkg.x when there is one, else on pkg itself (pkg's __init__ defines x)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "advlab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "advlab":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in modules else target)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: (imports_of(path, name, modules) & modules) - {name} for name, path in files.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS and to docs/architecture.md")


def is_package_init(module: str, target: str) -> bool:
    """A package's __init__ gathers its own submodules: that edge points down by construction."""
    return target.startswith(module + ".")


EDGES = graph()


def test_every_module_has_a_layer():
    for module in EDGES:
        layer(module)


def test_no_module_imports_from_a_higher_layer():
    upward = sorted(f"{m} ({layer(m)}) -> {t} ({layer(t)})" for m, targets in EDGES.items() for t in targets
                    if layer(t) > layer(m) and not is_package_init(m, t))
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_nothing_imports_the_cli():
    users = sorted(m for m, targets in EDGES.items() if not m.startswith(("advlab.cli", "advlab.__main__"))
                   and any(t == "advlab.cli" or t.startswith("advlab.cli.") for t in targets))
    assert not users, f"only advlab.__main__ may import advlab.cli; these do too: {users}"


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the rings of modules that import each other."""
    index, low, on_stack, stack, rings, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                ring = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    ring.append(member)
                    if member == node:
                        break
                if len(ring) > 1:
                    rings.append(sorted(ring))
    return rings


def test_no_import_cycles():
    rings = strongly_connected(EDGES)
    assert not rings, "modules that import each other:\n" + "\n".join(" <-> ".join(r) for r in rings)


@pytest.mark.parametrize("edges, rings", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_rings_and_only_rings(edges, rings):
    assert strongly_connected(edges) == rings


def test_the_graph_sees_relative_lazy_and_from_package_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from ..errors import AdvlabError\n"
                      "def f():\n    from ..attacks import pgd\n    import advlab.io\n")
    modules = {"advlab", "advlab.errors", "advlab.attacks", "advlab.attacks.pgd", "advlab.io", "advlab.cli"}
    assert imports_of(source, "advlab.cli.mod", modules) == {"advlab.errors", "advlab.attacks.pgd", "advlab.io"}
    source.write_text("from .. import __version__, errors\n")
    assert imports_of(source, "advlab.cli.mod", modules) == {"advlab", "advlab.errors"}


def test_run_directory_names_live_in_the_bottom_layer_only():
    """advlab.rundir imports nothing from advlab, so every layer can take its names from it; and no other
    module spells one of its file names as a literal (a renamed file then changes in one line)."""
    assert not EDGES["advlab.rundir"], f"advlab.rundir imports {sorted(EDGES['advlab.rundir'])}"
    import advlab.rundir as rundir
    file_names = {v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str) and "." in v}
    spelled = sorted(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value!r}"
                     for path in PACKAGE.rglob("*.py") if path.name != "rundir.py"
                     for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.Constant) and node.value in file_names)
    assert not spelled, "run-directory file names spelled outside advlab.rundir:\n" + "\n".join(spelled)
