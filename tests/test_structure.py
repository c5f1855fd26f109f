"""The shape of the code: no import cycles, converters/ leaning only on xband's torch-free leaf
modules, short functions, and an `import xband` that loads neither torch nor the converters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEAVES = {"xband.errors", "xband.files", "xband.layout"}  # torch-free, import no other module
LONGEST = 60  # lines a function may take


def modules() -> dict[str, Path]:
    found = {}
    for path in [*ROOT.glob("xband/**/*.py"), *ROOT.glob("converters/**/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, TYPE_CHECKING blocks included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known}
    return out


def test_no_import_cycles():
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        assert module not in trail, "import cycle: " + " → ".join([*trail, module])
        if module in done:
            return
        for target in graph[module]:
            visit(target, [*trail, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def test_converters_use_only_xband_leaf_modules():
    mods = modules()
    for name, path in mods.items():
        used = {m for m in imports(path, set(mods)) if m.startswith("xband")}
        if name.startswith("converters"):
            assert used <= LEAVES, (name, used - LEAVES)
        if name in LEAVES:
            assert used <= {"xband.errors"}, (name, used)


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST:
                    long.append(f"{name}:{node.name} ({lines} lines)")
    assert not long


def test_import_xband_loads_neither_torch_nor_the_converters():
    code = ("import sys, xband, xband.files, xband.layout; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'converters', 'onnx2torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
