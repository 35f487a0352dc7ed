"""The package's import structure: no module imports one that imports it back (directly or through
others), imports sit at the top of each module (none hidden in a function to dodge a cycle), and
every module imports on its own in a fresh interpreter."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "recbole_diffusion"
# compat.py patches third-party modules when the package is imported, one after another: its
# imports inside functions are the patching itself, of modules outside the package
LOCAL_IMPORTS_ALLOWED = {f"{PACKAGE}.compat"}


def package_modules():
    """{module name: path} of every module of the package."""
    modules = {}
    for root, dirs, files in os.walk(os.path.join(REPO, PACKAGE)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


MODULES = package_modules()


def imports_of(path):
    """``[(imported module, whether the import is inside a function)]`` for the package's modules."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, inner))
                # "from package import module" imports the module
                found.extend((f"{child.module}.{alias.name}", inner) for alias in child.names if f"{child.module}.{alias.name}" in MODULES)
            visit(child, inner)

    visit(tree, False)
    return found


def import_graph():
    return {
        name: sorted({target for target, _ in imports_of(path) if target in MODULES and target != name})
        for name, path in MODULES.items()
    }


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def walk(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if nxt == PACKAGE:  # every submodule's import runs the package's __init__ first anyway
                continue
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = walk(nxt, stack + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = walk(start, [start])
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a"]}) is None


def test_imports_are_at_module_level():
    hidden = [
        f"{name}: {target}" for name, path in MODULES.items() if name not in LOCAL_IMPORTS_ALLOWED
        for target, nested in imports_of(path) if nested
    ]
    assert not hidden, "imports inside functions: " + ", ".join(hidden)


# Run in one fresh interpreter: the heavy third-party libraries are imported once; before each
# module every module of this package and RecBole's (which the package patches on import) is
# dropped, so each imports as it would alone: its own imports decide the order.
IMPORT_EACH_ALONE = """
import importlib, sys, traceback
import numpy, pandas, scipy.sparse, torch
failed = {}
for module in sys.argv[1:]:
    for name in [n for n in sys.modules if n.split(".")[0] in ("recbole", "recbole_diffusion")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except BaseException:
        failed[module] = traceback.format_exc()[-3000:]
for module, error in failed.items():
    print(f"{module}:\\n{error}\\n", file=sys.stderr)
sys.exit(1 if failed else 0)
"""


def import_each_alone(modules):
    """The error output of importing each of ``modules`` alone, or None when every one imports."""
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH_ALONE, *modules], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    return None if out.returncode == 0 else out.stderr[-20000:]


def test_every_module_imports_alone():
    error = import_each_alone(sorted(MODULES))
    assert error is None, error


def test_a_module_that_needs_another_imported_first_fails_alone(tmp_path):
    """The check sees an import that works only after another module: ``late`` reads a name that
    exists only once ``early`` has run."""
    package = tmp_path / "recbole_diffusion_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "early.py").write_text("import recbole_diffusion_probe as p\np.READY = True\n")
    (package / "late.py").write_text("import recbole_diffusion_probe as p\nassert p.READY\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    script = IMPORT_EACH_ALONE.replace('("recbole", "recbole_diffusion")', '("recbole_diffusion_probe",)')
    out = subprocess.run([sys.executable, "-c", script, "recbole_diffusion_probe.early", "recbole_diffusion_probe.late"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 1 and "recbole_diffusion_probe.late" in out.stderr and "AttributeError" in out.stderr
