"""The shape of the code: layers that import only downwards (converters/ never imports xband),
no import cycles, short functions, and an `import xband` that loads neither torch nor the
converters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONGEST = 60  # lines a function may take

# Each layer, in the order data flows (docs/architecture.md), and the layers it may import;
# converters/ is the bottom layer, which every layer may import.
# Module-level imports only: `Explanation`'s convenience methods (`save`, `verdict`, `figures`)
# reach the report layer through imports inside those methods, listed in FACADE.
FOUNDATION = "foundation"  # xband's own small modules: errors, layout, files, ...
LAYERS = {
    "converters": set(),
    FOUNDATION: set(),
    "xband.demo": {FOUNDATION},
    "xband.data": {FOUNDATION},
    "xband.methods": {FOUNDATION},
    "xband.models": {FOUNDATION, "xband.data"},
    "xband.run": {FOUNDATION, "xband.data", "xband.models", "xband.methods"},
    "xband.checks": {FOUNDATION, "xband.data", "xband.models", "xband.methods", "xband.run"},
    "xband.report": {FOUNDATION, "xband.data", "xband.methods", "xband.run", "xband.checks"},
    "xband.cli": {FOUNDATION, "xband.data", "xband.models", "xband.methods",
                  "xband.run", "xband.checks", "xband.report", "xband.demo"},
}
FACADE = {("xband.run.result", "xband.report")}


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
    """Module-level imports form no cycle (imports inside functions run later, on use)."""
    mods = modules()
    graph = {m: module_level_imports(p, set(mods)) - {m} for m, p in mods.items()}
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


def layer(module: str) -> str:
    """The layer a module belongs to: its folder, or the foundation for xband's own modules."""
    parts = module.split(".")
    if parts[0] == "converters":
        return "converters"
    if len(parts) >= 2 and f"xband.{parts[1]}" in LAYERS:
        return f"xband.{parts[1]}"
    return FOUNDATION


def module_level_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports at module level (TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    top += [n for block in tree.body if isinstance(block, ast.If) for n in block.body
            if isinstance(n, ast.Import | ast.ImportFrom)]
    found = set()
    for node in top:
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            names = [a.name for a in node.names]
        found |= {n for n in names if n in known}
    return found


def test_layers_import_only_the_layers_below():
    mods = modules()
    upward = []
    for name, path in mods.items():
        if name in ("xband", "xband.__main__"):
            continue  # the public API names everything (lazily); `python -m xband` runs the CLI
        for target in imports(path, set(mods)):
            mine, theirs = layer(name), layer(target)
            if theirs == mine or theirs in LAYERS[mine] or theirs == "converters":
                continue
            local = target not in module_level_imports(path, set(mods))
            if local and (name, theirs) in FACADE:
                continue
            upward.append(f"{name} → {target}")
    assert not upward, "imports against the layers: " + "; ".join(sorted(upward))


def test_converters_never_import_xband():
    mods = modules()
    for name, path in mods.items():
        if name.startswith("converters"):
            assert not {m for m in imports(path, set(mods)) if m.startswith("xband")}, name


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
    """`import xband` is quick: torch and the converters load when a model or a run asks for
    them (the converters' stdlib-only file writing is shared with xband.files)."""
    code = ("import sys, xband, xband.files, xband.layout; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'converters', 'onnx2torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.strip() == "['converters', 'converters.files']"
