"""The public API: every name in labelfix.__all__ resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import labelfix


def test_every_public_name_resolves():
    for name in labelfix.__all__:
        assert getattr(labelfix, name) is not None, name
    assert labelfix.__version__ == "0.1.0"


def test_importing_labelfix_loads_nothing_heavy():
    code = (
        "import sys, labelfix\n"
        "labelfix.preset('voc')\n"
        "bad = [m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
