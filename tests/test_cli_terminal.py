"""What the terminal shows (issue 14): no TensorFlow start-up noise, `python -m labelfix`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
#: What TensorFlow's native start-up and C++ logging print (absl's prefix, or its preamble).
TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)", re.M)


def labelfix(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labelfix", *args], cwd=cwd, capture_output=True, text=True
    )


@pytest.mark.slow
def test_tensorflow_start_up_lines_stay_off_stderr_unless_verbose(tmp_path: Path):
    pytest.importorskip("tensorflow")
    write = labelfix(
        "to-tfrecord", "--images", str(DATA / "images" / "val"), "--masks",
        str(DATA / "masks" / "val"), "-o", "rec", "--split", "val", "-n", "6", "--ignore", "255",
        cwd=tmp_path,
    )  # fmt: skip
    assert write.returncode == 0, write.stderr
    assert write.stderr == ""
    verify = labelfix("verify", "rec", "--split", "val", cwd=tmp_path)
    assert verify.returncode == 0 and verify.stderr == ""
    assert verify.stdout == "OK: 1 shard(s), 4 record(s), 0 problem(s)\n"
    # train, evaluate and predict import TensorFlow: the CLI hides its start-up unless -v
    (tmp_path / "probe.py").write_text(
        "import sys, click\n"
        "from labelfix._imports import ImportHook\n"
        "@click.command()\n"
        "@click.option('--import-tf', is_flag=True)\n"
        "def probe(import_tf):\n"
        "    hooked = any(isinstance(f, ImportHook) and f.fullname == 'tensorflow'\n"
        "                 for f in sys.meta_path)\n"
        "    print('hooked' if hooked else 'not hooked')\n"
        "    if import_tf:\n"
        "        import tensorflow  # noqa: F401\n"
    )
    run = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import labelfix.cli as cli; "
        "cli.COMMANDS['probe'] = 'probe:probe'; cli.main(sys.argv[1:])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(  # what train, evaluate and predict do: import TensorFlow
        [sys.executable, "-c", run, "probe", "--import-tf"], capture_output=True, text=True, env=env
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "hooked\n" and not TF_LOG.search(quiet.stderr), quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", run, "-v", "probe"], capture_output=True, text=True
    )
    assert loud.stdout == "not hooked\n"  # -v: TensorFlow's lines are shown


def test_python_dash_m_labelfix_is_the_cli(tmp_path: Path):
    help_text = labelfix("--help", cwd=tmp_path)
    assert help_text.returncode == 0
    assert help_text.stdout.startswith("Usage: labelfix [OPTIONS] COMMAND [ARGS]...")
    missing = labelfix("verify", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and "Path 'nowhere' does not exist" in missing.stderr


def test_verify_without_a_manifest_fails_before_importing_tensorflow(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "labelfix", "verify", "empty"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1
    assert "empty/train.labelfix.json: no manifest for split 'train'" in out.stderr
    assert not re.search(r"\| tensorflow$", out.stderr, re.M)


def run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``python -m labelfix ARGS`` with stderr on a pseudo-terminal; (exit code, stderr)."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelfix", *args],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode()


def test_progress_bar_on_a_terminal_and_not_otherwise(tmp_path: Path):
    masks = str(DATA / "masks")
    code, stderr = run_on_a_terminal(["stats", masks, "-n", "6"], tmp_path)
    assert code == 0
    assert "\rstats: 12/12 files [########################]" in stderr
    assert re.search(r"[\d.,]+/s ETA 0:\d\d", stderr)
    piped = labelfix("stats", masks, "-n", "6", cwd=tmp_path)
    assert piped.returncode == 0 and piped.stderr == ""
    forced = labelfix("--progress", "validate", masks, "-n", "6", "--ignore", "255", cwd=tmp_path)
    assert "validate: 12/12 files [" in forced.stderr  # (text mode reads \r as \n)
    off = run_on_a_terminal(["--no-progress", "stats", masks], tmp_path)
    assert off == (0, "")


def test_json_runs_that_fail_still_print_one_json_document(tmp_path: Path):
    import json

    from click.testing import CliRunner

    from labelfix.cli import main

    (tmp_path / "empty").mkdir()
    for command in (["stats"], ["validate", "-n", "3"]):
        result = CliRunner().invoke(main, [*command, str(tmp_path / "empty"), "--json"])
        assert result.exit_code == 1
        document = json.loads(result.stdout)
        assert document["ok"] is False and document["exit_code"] == 1
        assert document["problems"] == [f"no mask files (*.png, *.npy) under {tmp_path / 'empty'}"]
    ok = CliRunner().invoke(main, ["stats", str(DATA / "masks"), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True


def test_ctrl_c_while_a_command_is_set_up_exits_130(monkeypatch):
    """Regression (a hostile-user pass): Ctrl-C in the first fraction of a second (while the
    command's module imports) printed click's "Aborted!" and exited 1, a data problem's code."""
    import labelfix.cli as cli

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.importlib, "import_module", interrupted)
    from click.testing import CliRunner

    result = CliRunner().invoke(cli.main, ["stats", "."])
    assert result.exit_code == 130
    assert result.stderr == "labelfix: interrupted\n"


def _masks_with_a_stray_pixel(root: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    root.mkdir()
    for i in range(count):
        mask = np.zeros((4, 4), np.uint8)
        mask[1, 1] = 9  # stray: `repair -n 3` mends it and prints one line per file
        Image.fromarray(mask).save(root / f"{i:04d}.png")


@pytest.mark.parametrize("stderr_too", [False, True])
def test_a_closed_stdout_does_not_stop_a_writing_command(tmp_path: Path, stderr_too: bool):
    """Regression (issue 21): ``labelfix repair masks -o out | head -1`` stopped after a few of
    200 files with "labelfix: error: Broken pipe", exit 1. A reader that goes away (here it is
    gone before the first line, the surest case) no longer matters: every file is written,
    the exit status is the work's (0), and nothing is printed about the pipe. Also with
    stderr in the same closed pipe (``2>&1 | head -1``)."""
    _masks_with_a_stray_pixel(tmp_path / "masks", 200)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "labelfix", "repair", "masks", "-n", "3", "-o", "out"],
            cwd=tmp_path,
            stdout=write_end,
            stderr=write_end if stderr_too else subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr in (None, b"")
    assert len(list((tmp_path / "out").glob("*.png"))) == 200
    assert labelfix_read(tmp_path / "out" / "0199.png")[1][1] == 0  # mended, not copied


def labelfix_read(path: Path):
    from labelfix.io.masks import read_mask

    return read_mask(path).array.tolist()


def test_ctrl_c_while_the_command_line_imports_exits_130_without_a_traceback(tmp_path: Path):
    """Regression (issue 21): Ctrl-C in the first ~100 ms of ``labelfix stats`` (while
    ``labelfix.cli`` imports click) printed a KeyboardInterrupt traceback. From the first line
    of labelfix.cli on, it ends the start-up at once: exit 130, one line. Here the SIGINT
    arrives while click is being imported, as it would from a terminal."""
    script = (
        "import os, signal, sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'click':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from labelfix.cli import main\n"
        "print('not reached')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "labelfix: interrupted\n")


def test_ctrl_c_during_the_tensorflow_import_ends_the_command(tmp_path: Path):
    """Regression (issue 21): Ctrl-C while ``train`` imported TensorFlow (seconds) was swallowed
    by a bare ``except:`` inside the import (the run went on to its end, exit 0), or left
    TensorFlow half-initialised and the process died of SIGSEGV at exit. The import now ends
    the process at once: exit 130, ``labelfix: interrupted`` on stderr (which the import
    otherwise silences). A stand-in ``tensorflow`` swallows the interrupt as TensorFlow did."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os, signal, time\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except:  # noqa: E722  (what TensorFlow's optional imports do)\n"
        "    pass\n"
    )
    script = (
        "from labelfix.cli._common import quiet_tensorflow\n"
        "quiet_tensorflow()\n"
        "import tensorflow\n"
        "print('swallowed')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "labelfix: interrupted\n")


def test_importing_the_command_line_leaves_ctrl_c_as_it_was():
    """labelfix.cli ends its own start-up on Ctrl-C, but a program that imports it (pytest, a
    script) keeps Python's KeyboardInterrupt; a command's run raises it too."""
    import signal

    import labelfix.cli  # noqa: F401

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
