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


def _importers_of(layers, modules, forbidden):
    """{module in ``layers``: the ``forbidden`` modules it imports}, for those that import any."""
    found = {m: sorted(t for t in _imports(m, modules[m], modules) if t.startswith(forbidden)) for m in layers}
    return {m: t for m, t in found.items() if t}


def test_the_model_library_imports_neither_export_nor_training():
    """Layering: the model, weights and preprocessing never reach into export/ or training/ (TensorFlow-only);
    only the top layers (keras_evit.benchmarks, and keras_evit.cli above it) bring them together."""
    modules = _modules()
    top = (["keras_evit", "export"], ["keras_evit", "training"], ["keras_evit", "cli"], ["keras_evit", "benchmarks"])
    core = [m for m in modules if m.split(".")[:2] not in top]
    assert "keras_evit.weights.pretrained" in core and "keras_evit.cli.main" not in core
    assert not _importers_of(core, modules, tuple(".".join(t) for t in top))


def test_export_and_training_never_import_the_benchmarks_or_the_command_line():
    modules = _modules()
    lower = [m for m in modules if m.startswith(("keras_evit.export", "keras_evit.training"))]
    benchmarks = [m for m in modules if m.startswith("keras_evit.benchmarks")]
    assert "keras_evit.export.tflite" in lower and "keras_evit.benchmarks.inference" in benchmarks
    assert not _importers_of(lower, modules, ("keras_evit.benchmarks", "keras_evit.cli"))
    # a benchmark's own options use the command line's argument types (which import only the core), nothing
    # else of it
    assert not _importers_of(["keras_evit.cli.args"], modules, ("keras_evit.cli", "keras_evit.benchmarks",
                                                                  "keras_evit.export", "keras_evit.training"))
    found = _importers_of(benchmarks, modules, ("keras_evit.cli",))
    assert not {m: t for m, t in found.items() if t != ["keras_evit.cli.args"]}


def test_setup_declares_every_package_folder():
    """setup.py lists its packages (the layout is declared, not discovered): a package folder it leaves out
    would be missing from a wheel while an editable install still finds it."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    declared = next(ast.literal_eval(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "PACKAGE_DIR" for t in node.targets))
    folders = {os.path.relpath(dirpath, ROOT).replace(os.sep, "/")
               for top in ("keras_evit", "export", "training")
               for dirpath, _, files in os.walk(os.path.join(ROOT, top)) if "__init__.py" in files}
    assert folders == set(declared.values())


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
