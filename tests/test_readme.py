"""README's set-up commands stay true: CI runs exactly README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_two_setup_commands():
    install_and_run, install_and_test = readme_commands()
    assert "pip install -e '.[tf,viz]'" in install_and_run
    assert "examples/run_example.sh" in install_and_run
    assert "pip install -e '.[test]'" in install_and_test
    assert (ROOT / "examples" / "run_example.sh").exists()


def test_ci_runs_readmes_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci
