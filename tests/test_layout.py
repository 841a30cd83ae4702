"""The package layout's rules: the model users load never imports training, evaluation or publishing code, and
the remote-code export carries exactly the model's own top-level files.
"""

from __future__ import annotations

import ast
from pathlib import Path

from med_hf.publishing import hub

PACKAGE = Path(__file__).resolve().parents[1] / "med_hf"
SUBPACKAGES = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
# What `from_pretrained` with remote code and the pipeline load: the modules the export must carry.
MODEL_ENTRY_POINTS = ("configuration_med.py", "modeling_med.py", "pipeline_med.py")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative ones spelt from the package root (e.g. `training.data`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.parent.relative_to(PACKAGE.parent).parts  # ("med_hf",) or ("med_hf", "training")
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                modules.add(".".join([*base, *([node.module] if node.module else [])]))
            else:
                modules.add(node.module or "")
    return modules


def test_there_are_subpackages_to_guard():
    assert {"training", "evaluation", "publishing"} <= SUBPACKAGES


def test_top_level_modules_never_import_a_subpackage():
    offenders = {
        path.name: sorted(m for m in imported_modules(path) if m.split(".")[:2] in [["med_hf", s] for s in SUBPACKAGES])
        for path in PACKAGE.glob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def _relative_closure(entry_points: tuple[str, ...]) -> set[str]:
    """The top-level files reachable from `entry_points` through imports of med_hf modules."""
    found, pending = set(), list(entry_points)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        for module in imported_modules(PACKAGE / name):
            parts = module.split(".")
            if parts[0] == "med_hf" and len(parts) == 2:
                pending.append(f"{parts[1]}.py")
    return found


def test_remote_code_export_is_exactly_the_model_files():
    closure = _relative_closure(MODEL_ENTRY_POINTS)
    assert set(hub.REMOTE_CODE_FILES) == closure
    assert all((PACKAGE / name).is_file() for name in hub.REMOTE_CODE_FILES)


def test_model_files_import_each_other_relatively_only():
    """Shipped flat next to the weights, `import med_hf...` inside them would fail where med-hf is absent."""
    for name in hub.REMOTE_CODE_FILES:
        tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
        absolute = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0)
            for alias in node.names
        ]
        assert not [module for module in absolute if module and module.startswith("med_hf")], name
