"""The README is a validation document: every test it cites exists, and every LABSYS_ setting
the code reads is in its configuration table."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_test_the_readme_cites_exists():
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", README)
    assert len(cited) >= 30, "the validation tables cite the tests that prove each clause"
    missing = []
    for file, name in cited:
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
        elif name and name not in _test_names(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"README cites tests that do not exist: {missing}"


def test_every_labsys_setting_is_in_the_configuration_table():
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "labsys").rglob("*.py"))
    names = set(re.findall(r"\bLABSYS_[A-Z0-9_]+", source))
    names |= {f"LABSYS_{n}" for n in re.findall(r"_env(?:_\w+)?\(\"([A-Z0-9_]+)\"", source)}
    assert names, "the settings are read somewhere"
    undocumented = sorted(n for n in names if f"`{n}`" not in README)
    assert not undocumented, f"settings missing from the README's configuration table: {undocumented}"
