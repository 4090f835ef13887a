"""The layers of the house (DESIGN.md): orchestration (the command line, the API, sweeps,
reports) drives the stages (training, distillation, evaluation); the stages never import one
another, and the core (model, data, run folders, students, ...) imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "attnless"
# stage -> its modules (the hybrid is evaluation's: ``evaluate`` and ``translate`` build it)
STAGES = {
    "train": ("attnless.train",),
    "distill": ("attnless.distill",),
    "evaluate": ("attnless.evaluate", "attnless.hybrid"),
}
ORCHESTRATION = (
    "attnless.__main__",
    "attnless.cli",
    "attnless.api",
    "attnless.sweep",
    "attnless.report",
)


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The attnless modules ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("attnless")}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _stage_of(name: str) -> str | None:
    return next((stage for stage, mods in STAGES.items() if _within(name, mods)), None)


def test_stages_import_only_the_core() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        if module == "attnless" or _within(module, ORCHESTRATION):
            continue  # the package's entry (the API) and the orchestration may import anything
        mine = _stage_of(module)
        for name in sorted(_imports(path)):
            stage = _stage_of(name)
            if _within(name, ORCHESTRATION) or (stage is not None and stage != mine):
                wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)
