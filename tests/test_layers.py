"""Imports point down (DESIGN.md section 3, ../shared/architecture.json's "never" list): read every module's
imports with ast (top-level and inside functions) and check no package reaches one it must not."""

import ast
from pathlib import Path

import pytest

import samdistill

SRC = Path(samdistill.__file__).resolve().parent
JOBS = {"distill", "search", "api"}
FACE = {"cli", "__main__"}

# part -> parts it must never import ("face" is cli/__main__, "jobs" the distill/search/api modules)
NEVER = {
    "models": {"train", "methods", "eval", "deploy", "face", "jobs"},
    "data": {"train", "methods", "eval", "deploy", "face", "jobs"},
    "losses": {"train", "methods", "eval", "deploy", "face", "jobs"},
    "train": {"methods", "face", "jobs"},
    "methods": {"eval", "face", "jobs"},
    "eval": {"train", "methods", "face", "jobs"},
    "deploy": {"train", "methods", "eval", "face", "jobs"},
    "viz": {"train", "methods", "eval", "deploy", "face", "jobs"},
}


def part_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "samdistill" or len(parts) < 2:
        return None
    head = parts[1]
    return "face" if head in FACE else "jobs" if head in JOBS else head


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("samdistill.")}


def test_the_checker_sees_an_import_inside_a_function(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from samdistill.eval.metrics import dice\n")
    assert part_of(next(iter(m for m in imports(f) if m.endswith("metrics")))) == "eval"


@pytest.mark.parametrize("part", sorted(NEVER))
def test_no_import_runs_against_the_layers(part):
    bad = []
    for path in sorted((SRC / part).rglob("*.py")):
        for mod in sorted(imports(path)):
            target = part_of(mod)
            if target in NEVER[part]:
                bad.append(f"{path.relative_to(SRC)} -> {mod}")
    assert not bad, f"{part} must not import {sorted(NEVER[part])}: " + "; ".join(bad)


def test_jobs_import_nothing_from_each_other():
    for a in ("distill", "search"):
        other = {"distill", "search"} - {a}
        mods = imports(SRC / f"{a}.py")
        assert not {m for m in mods if m.split(".")[1] in other}, f"{a}.py imports {other}"


def test_there_is_one_dice():
    from samdistill import dice as one
    from samdistill.eval import metrics

    assert metrics.dice is one.dice and metrics.batch_dice is one.batch_dice
    defs = [p.relative_to(SRC) for p in SRC.rglob("*.py")
            if any(isinstance(n, ast.FunctionDef) and n.name in {"dice", "_dice", "np_dice", "dice_score"}
                   for n in ast.walk(ast.parse(p.read_text())))]
    assert [str(p) for p in defs] == ["dice.py"]


def test_config_sits_on_the_base_only():
    """config.py (recipes, validation) is below every job and method: the methods hand it their run configs."""
    base = {"errors", "devices", "registry", "atomic", "_version"}
    above = sorted(m for m in imports(SRC / "config.py") if m.split(".")[1] not in base)
    assert not above, f"config.py imports {above}"
