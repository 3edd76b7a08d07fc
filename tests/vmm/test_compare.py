"""`pyvmm compare`: one guest under every mode, in a table or as JSON."""
import json
import subprocess
import sys
from pathlib import Path

from pyvmm.compare import compare
from tests.guest_build import guests_build

ROOT = Path(__file__).resolve().parents[2]


def test_compare_runs_every_mode_on_the_same_guest():
    runs = compare(guests_build.build("interrupts", "O2"))
    assert [r.mode for r in runs] == ["emulate", "trap", "bt", "pv", "hw"]
    emulate, trap, bt, pv, hw = runs
    assert bt.output_matches and bt.exits["bt: chain"] > 0
    assert emulate.vmm_entries == 0 and emulate.slowdown == 1.0
    assert trap.output_matches and trap.instructions == emulate.instructions
    assert trap.vmm_entries == sum(trap.exits.values()) > 0
    assert trap.exits["interrupt (injected)"] > 0
    assert hw.output_matches and hw.instructions == emulate.instructions
    assert pv.output_matches and pv.exits == trap.exits   # no hypercalls: trapped as under trap
    assert hw.exits["interrupt injection (VM entry)"] == trap.exits["interrupt (injected)"]


def test_compare_json_from_the_command_line():
    r = subprocess.run([sys.executable, "-m", "pyvmm", "compare", "hello", "--json"], cwd=ROOT,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["mode"] for row in rows] == ["emulate", "trap", "bt", "pv", "hw"]
    assert all(row["output_matches"] and row["outcome"] == "exit" for row in rows)
    assert rows[1]["exits"]["out"] > 0


def test_compare_draws_a_plot(tmp_path):
    pytest = __import__("pytest")
    pytest.importorskip("matplotlib")
    out = tmp_path / "hello.png"
    r = subprocess.run([sys.executable, "-m", "pyvmm", "compare", "hello", "--mode", "trap",
                        "--plot", str(out)], cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
