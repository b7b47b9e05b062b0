"""The CLI's contract: user errors are one line on stderr with exit 2, never a traceback; --help explains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medtrain.cli import build_parser
from medtrain.errors import UserError


def medtrain(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medtrain.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_user_error_formats_location_on_one_line() -> None:
    assert UserError("bad\nthing", "a.yaml", 3).format() == "a.yaml:3: bad thing"
    assert UserError("bad", "a.yaml").format() == "a.yaml: bad"
    assert UserError("bad").format() == "bad"


def test_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "prep.yaml"
    config.write_text("tokenizer: tok\nseq_len: 128\noutput_dir: out\nsequence_len: 3\ncorpora: []\n")
    result = medtrain("prepare", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {config}:4:")
    assert "did you mean seq_len" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_exits_2(tmp_path: Path) -> None:
    result = medtrain("prepare", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "config file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_subcommand_has_help_text() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert subparsers.choices, "no sub-commands registered"
    for name, sub in subparsers.choices.items():
        assert sub.description and len(sub.description.split()) > 5, f"{name} lacks a description"
        result = medtrain(name, "--help")
        assert result.returncode == 0 and "usage: medtrain" in result.stdout, name
    top = medtrain("--help")
    assert top.returncode == 0
    for name in subparsers.choices:
        assert name in top.stdout


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["no-such-command"]])
def test_argument_errors_exit_2(argv: list[str]) -> None:
    result = medtrain(*argv)
    assert result.returncode == 2 and "Traceback" not in result.stderr
