"""The README's command examples are real: every `riskstream ...` line parses against the
CLI as it is (a renamed command or option fails here), and the self-contained ones run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from streams.cli import _register_optional_commands, app

README = Path(__file__).resolve().parent.parent / "README.md"


def _command_lines() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = []
    for block in blocks:
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            # `VAR=value riskstream ...` and chains with && keep only the riskstream part
            for i, word in enumerate(words):
                if word.endswith("riskstream") and "=" not in word:
                    rest = words[i + 1 :]
                    end = rest.index("&&") if "&&" in rest else len(rest)
                    lines.append(rest[:end])
                    break
    return lines


def test_the_readme_shows_the_commands() -> None:
    names = {args[0] for args in _command_lines() if args}
    assert {"demo", "worker", "simulate", "produce", "train", "evaluate"} <= names


@pytest.mark.parametrize("args", _command_lines(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_line_parses(args: list[str]) -> None:
    _register_optional_commands()
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    name, *rest = args
    assert name in commands, f"the README shows `riskstream {name}`, which does not exist"
    commands[name].make_context(name, rest)  # raises on an unknown option or a bad value


@pytest.mark.slow
def test_the_self_contained_readme_commands_run(tmp_path: Path) -> None:
    lines = {args[0]: args for args in _command_lines() if args}
    simulate = [
        a.replace("/tmp/tx.parquet", str(tmp_path / "tx.parquet")) for a in lines["simulate"]
    ]
    for args in (lines["config"], simulate):
        out = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, f"riskstream {' '.join(args)}: {out.stderr[-500:]}"
    assert (tmp_path / "tx.parquet").stat().st_size > 0
