"""No import cycles between keras_evit modules, counting imports inside functions too (a late import
that only holds a cycle apart is still a cycle): checked from the source with the ast module."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# installed name -> folder, as setup.py declares the layout
PACKAGES = {"keras_evit": "keras_evit", "keras_evit.export": "export", "keras_evit.training": "training"}


def _modules():
    found = {}
    for package, folder in PACKAGES.items():
        base = os.path.join(ROOT, folder)
        for dirpath, _, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            if rel != "." and (not rel.replace(os.sep, ".").isidentifier() or rel.startswith(("export", "training"))):
                continue
            prefix = package if rel == "." else f"{package}.{rel.replace(os.sep, '.')}"
            for f in files:
                if f.endswith(".py"):
                    name = prefix if f == "__init__.py" else f"{prefix}.{f[:-3]}"
                    found[name] = os.path.join(dirpath, f)
    return found


def _imports(name, path, modules):
    is_package = path.endswith("__init__.py")
    package = name if is_package else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            submodules = {f"{module}.{alias.name}" for alias in node.names} & set(modules)
            # "from . import layers" imports the submodule; "from .models import x" the module itself
            targets.update(submodules if len(submodules) == len(node.names) else {module})
    return {t for t in targets if t in modules and t != name}


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return result


def test_no_import_cycles():
    modules = _modules()
    assert {"keras_evit.models.builders", "keras_evit.weights.checkpoint", "keras_evit.cli.export",
            "keras_evit.training.loop"} <= set(modules)
    # a package's __init__ re-exports its modules: importing the package means importing them
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def test_the_model_library_imports_neither_export_nor_training():
    """Layering: the model, weights and preprocessing never reach into export/ or training/ (TensorFlow-only);
    only the command line (keras_evit.cli), the top layer, brings them together."""
    modules = _modules()
    core = [m for m in modules if m.split(".")[:2] not in (["keras_evit", "export"], ["keras_evit", "training"],
                                                           ["keras_evit", "cli"])]
    assert "keras_evit.weights.pretrained" in core and "keras_evit.cli.main" not in core
    upward = {m: sorted(t for t in _imports(m, modules[m], modules)
                        if t.startswith(("keras_evit.export", "keras_evit.training", "keras_evit.cli")))
              for m in core}
    assert not {m: t for m, t in upward.items() if t}


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
