"""The layering of docs/architecture.md, checked on the import graph of webui/.

- no two modules import each other, directly or through a loop, counting every import: lazy ones
  inside functions and those under TYPE_CHECKING (a type hint still says which layer knows which);
- webui/engine imports nothing above it (no UI, API, extension loader, gradio or HTTP);
- the Engine and the shared services below the capabilities (core/, models/, samplers/, and the
  engine's own modules: context, registries, settings) import no capability, not even lazily;
- engine capabilities (generation, upscale, ...) do not import each other both ways.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "webui"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph(type_hints_too: bool = False, package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = set() if type_hints_too else _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                # A module's own parent packages run before it whatever it imports: not an edge.
                if target in modules and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert _cycles(import_graph(type_hints_too=True)) == []


def test_no_import_cycles_in_the_training_tools():
    assert _cycles(import_graph(type_hints_too=True, package=ROOT / "tools")) == []


SERVICES = ("core", "models", "samplers")


def test_the_services_import_no_capability():
    engine = PACKAGE / "engine"
    capabilities = {p.name for p in engine.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - set(SERVICES)
    assert {"generation", "upscale", "segment", "video"} <= capabilities
    for module, targets in import_graph(type_hints_too=True).items():
        parts = module.split(".")
        root_file = len(parts) == 3 and (engine / f"{parts[2]}.py").exists()  # context, registries, settings
        low = root_file or (len(parts) > 2 and parts[2] in SERVICES)
        if module.startswith("webui.engine.") and low:
            reached = {t.split(".")[2] for t in targets if t.startswith("webui.engine.") and len(t.split(".")) > 2}
            assert not reached & capabilities, f"{module} imports {sorted(reached & capabilities)}"


def test_every_capability_registers_itself():
    from webui.bootstrap import build_registries

    registries = build_registries()
    assert {"txt2img", "img2img", "txt2video", "vid2vid", "interpolate"} <= set(registries.job_kinds.names())
    assert {"upscaler", "segmenter", "motion", "video"} <= set(registries.loaders)
    # the detailer's variant (it wraps the next), then hires fix
    assert [v.source for v in registries.job_kinds.variants["txt2img"]] == ["built-in", "built-in"]
    assert "clip_skip" in registries.addons.names()


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_the_engine_imports_nothing_above_it():
    above = ("webui.ui", "webui.api", "webui.extensions", "webui.bootstrap", "webui.server", "webui.cli",
             "webui.serve_ray")
    for module, targets in import_graph().items():
        if module.startswith("webui.engine"):
            assert not [t for t in targets if t.startswith(above)], module
    for path in (PACKAGE / "engine").rglob("*.py"):
        text = path.read_text()
        for banned in ("import gradio", "from gradio", "import fastapi", "from fastapi", "import starlette",
                       "import ray", "from ray"):
            assert banned not in text, f"{path} has {banned!r}"


def test_engine_capabilities_do_not_import_each_other_both_ways():
    # Stricter than the cycle check: an import for type hints only still says which layer knows which.
    graph = import_graph(type_hints_too=True)
    engine = PACKAGE / "engine"
    capabilities = [p.name for p in engine.iterdir() if p.is_dir() and (p / "__init__.py").exists()]

    def uses(a: str, b: str) -> bool:
        return any(m.startswith(f"webui.engine.{a}") and any(t.startswith(f"webui.engine.{b}") for t in ts)
                   for m, ts in graph.items())

    both = [(a, b) for a in capabilities for b in capabilities if a < b and uses(a, b) and uses(b, a)]
    assert both == []
