"""The shape of the code (issue 22): what makes it easy to change stays true as it grows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "labelfix"
#: The most parameters a library function takes; beyond, options travel as a frozen dataclass.
MAX_PARAMETERS = 10
#: Modules stay under this many lines (split them along their concerns).
MAX_LINES = 650


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path.read_text()


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def test_no_library_function_takes_more_than_ten_parameters():
    """Options that cross layers travel as one frozen dataclass (TrainConfig, RemapOptions,
    RepairSpec, WriteSpec), not as a copied keyword list. The command-line functions (cli/)
    take one parameter per option, as click calls them."""
    found = []
    for name, source in _modules():
        if name.startswith("cli/"):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = len(_parameters(node))
                if count > MAX_PARAMETERS:
                    found.append(f"labelfix/{name}:{node.lineno} {node.name}: {count} parameters")
    assert found == []


def test_modules_stay_small():
    found = [
        f"labelfix/{name}: {source.count(chr(10))} lines"
        for name, source in _modules()
        if source.count("\n") > MAX_LINES
    ]
    assert found == []


#: Words of a history note: why a line exists belongs in the code, how it came to be in the
#: commit message and the test that pins it.
HISTORY = re.compile(
    r"hostile|\bissue \d+|\bregression\b|\bused to\b|\d+ tries? in \d+|found by (a|an) ",
    re.IGNORECASE,
)


def test_comments_say_why_not_history():
    found = [
        f"labelfix/{name}:{number}: {line.strip()}"
        for name, source in _modules()
        for number, line in enumerate(source.splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert found == []
