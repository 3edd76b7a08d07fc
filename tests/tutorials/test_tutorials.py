"""Every command shown in tutorials/*.md runs, and prints what the tutorial says it prints.

In a tutorial, a ```console block holds commands (lines starting with "$ ") each followed by
its expected output (stdout and stderr together). In expected output a line "..." stands
for any number of lines, and "[...]" inside a line for any text (timings, say). Commands run
with bash, one block after another, in a scratch folder that has the repository's guests/
and tutorials/ (symlinked) and `pyvmm` on the PATH.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "tutorials").glob("*.md"))


def console_blocks(text):
    """[(first line number, [(command, [expected lines])])] for each ```console block."""
    blocks, current, start, heredoc = [], None, 0, None
    for number, line in enumerate(text.splitlines(), 1):
        if current is None:
            if line.strip() == "```console":
                current, start = [], number
            continue
        if heredoc is not None:                 # the body of a "<<'EOF'" belongs to the command
            command, expected = current[-1]
            current[-1] = (command + "\n" + line, expected)
            if line == heredoc:
                heredoc = None
            continue
        if line.strip() == "```":
            blocks.append((start, current))
            current = None
        elif line.startswith("$ "):
            current.append((line[2:], []))
            m = re.search(r"<<\s*'?(\w+)'?", line)
            heredoc = m.group(1) if m else None
        elif current:
            current[-1][1].append(line)
    return blocks


def matches(expected, actual):
    """Line-by-line match with "..." (any lines) and "[...]" (any text within a line)."""
    def line_ok(pattern, line):
        parts = [re.escape(p) for p in pattern.rstrip().split("[...]")]
        return re.fullmatch(".*".join(parts), line.rstrip()) is not None

    def walk(i, j):
        if i == len(expected):
            return j == len(actual)
        if expected[i].strip() == "...":
            return any(walk(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and line_ok(expected[i], actual[j]) and walk(i + 1, j + 1)
    return walk(0, 0)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("tutorial")
    (d / "guests").symlink_to(ROOT / "guests")
    (d / "tutorials").symlink_to(ROOT / "tutorials")
    bin_dir = d / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "pyvmm"
    shim.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m pyvmm \"$@\"\n")
    shim.chmod(0o755)
    return d


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_tutorial_commands(chapter, scratch):
    env = dict(os.environ, PATH=f"{scratch / '.bin'}:{os.environ['PATH']}", COLUMNS="100")
    blocks = console_blocks(chapter.read_text())
    assert blocks, f"{chapter.name} shows no commands"
    for line_number, commands in blocks:
        for command, expected in commands:
            r = subprocess.run(["bash", "-c", "{ " + command + "\n} 2>&1"], cwd=scratch, env=env,
                               capture_output=True, text=True, timeout=600)
            actual = r.stdout.splitlines()
            assert matches(expected, actual), (
                f"{chapter.name}:{line_number}: `{command}` printed\n" + r.stdout +
                "\nbut the tutorial shows\n" + "\n".join(expected))


def test_heredoc_is_part_of_the_command():
    blocks = console_blocks("```console\n$ cat > f <<'EOF'\nline\nEOF\n$ cat f\nline\n```\n")
    assert blocks[0][1] == [("cat > f <<'EOF'\nline\nEOF", []), ("cat f", ["line"])]


def test_matcher():
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert matches(["x [...] y"], ["x 12.5 y"])
    assert not matches(["a"], ["a", "b"])
    assert not matches(["x [...] y"], ["x 1 z"])
