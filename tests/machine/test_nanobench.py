"""guests/nanobench on pyvmm, and the benchmark marker device it talks to (port 0x504).

The guest brackets each of its seven loops with the marker; pyvmm records the instruction
count at both ends. The loops are in assembly (guests/nanobench/ops.S), so what one
iteration costs can be read off the source: ITERATION below lists, per operation, the
instructions one iteration runs, as pyvmm counts them. An instruction that faults never
completes and is not counted; delivering its exception is one step of guest time
(cpu.py, raise_exception), so a fault appears in the list as its delivery. INT n is one
instruction, whose delivery is part of it.

Two runs with different iteration counts give the exact cost of one iteration (the
difference divided by the difference in iterations), whatever the bracket's fixed part
(the setup before the loop, the way back from ring 3 ...) costs.
"""
import io
import shutil
import subprocess

import pytest

from pyvmm.machine import PC
from pyvmm.machine.devices.bench_marker import OPERATIONS, PORT, BenchMarker

from tests.guest_build import guests_build

ITERATIONS = 1000                       # nanobench.c's ITERATIONS

# op_id: (name, the instructions of one iteration of its loop in ops.S)
ITERATION = {
    1: ("syscall", ["int 0x80", "incl op_syscalls", "iret", "decl", "jnz"]),
    2: ("in", ["inb", "andb", "decl", "jnz"]),
    3: ("cli/sti", ["cli", "sti", "decl", "jnz"]),
    4: ("call/ret", ["call callee", "incl", "ret", "decl", "jnz"]),
    5: ("pgfault", ["#PF delivery (the load)", "incl op_pgfaults", "popl (error code)",
                    "addl (skip the load)", "iret", "decl", "jnz"]),
    6: ("divzero", ["#DE delivery (the div)", "incl op_divide_errors", "addl (skip the div)",
                    "iret", "decl", "jnz"]),
    7: ("ptemod", ["movl (the PTE)", "invlpg", "cmpl (read through it)", "jne", "xchgl",
                   "decl", "jnz"]),
}
# The bracket's fixed part: the opening OUT, register setup, the way out of the loop and
# the instructions before the closing OUT; the longest (syscall: the IRET into ring 3 and
# the INT back) is 20 instructions.
MAX_OVERHEAD = 32


def run_nanobench(opt="O2", cmdline=""):
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO())
    pc.boot_multiboot(str(guests_build.build("nanobench", opt)), cmdline)
    result = pc.run(max_instructions=50_000_000)
    assert result.reason == "exit", result.message
    return pc, out.getvalue().decode().replace("\r\n", "\n"), result.status


@pytest.fixture(scope="module")
def runs():
    """(marks, output, status) per (opt, iterations)."""
    cache = {}

    def get(opt, iterations=ITERATIONS):
        if (opt, iterations) not in cache:
            cmdline = "" if iterations == ITERATIONS else f"iterations={iterations}"
            pc, out, status = run_nanobench(opt, cmdline)
            cache[opt, iterations] = (pc.bench_marker.marks, out, status)
        return cache[opt, iterations]
    return get


def test_nanobench_is_a_bundled_guest_checked_against_qemu():
    from tests.machine.test_qemu_oracle import GUEST_NAMES
    assert "nanobench" in guests_build.guest_names()
    assert "nanobench" in GUEST_NAMES


@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_seven_marks_with_their_ids_and_iterations(runs, opt):
    marks, out, status = runs(opt)
    assert status == 1, out
    assert [m.op_id for m in marks] == list(range(1, 8))
    assert [m.name for m in marks] == [ITERATION[i][0] for i in range(1, 8)]
    assert [m.name for m in marks] == [OPERATIONS[i] for i in range(1, 8)]
    assert all(m.iterations == ITERATIONS for m in marks)
    assert all(m.end is not None and m.end > m.begin for m in marks)
    assert all(a.end <= b.begin for a, b in zip(marks, marks[1:]))


@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_instructions_per_iteration(runs, opt):
    marks, _, _ = runs(opt)
    for m in marks:
        per_iteration = len(ITERATION[m.op_id][1])
        low, high = per_iteration, per_iteration + MAX_OVERHEAD / ITERATIONS
        assert low <= m.per_iteration <= high, (m, per_iteration)


def test_one_iteration_costs_exactly_its_loop(runs):
    """The difference between two runs is the loops' iterations alone."""
    more = 1537                          # odd: the ptemod loop ends on the other frame
    short, _, _ = runs("O2")
    long, out, status = runs("O2", more)
    assert status == 1, out
    assert [m.iterations for m in long] == [more] * 7
    for a, b in zip(short, long):
        per_iteration = len(ITERATION[a.op_id][1])
        assert (b.instructions - a.instructions) == per_iteration * (more - ITERATIONS), a.name
        overhead = a.instructions - per_iteration * ITERATIONS
        assert 0 < overhead <= MAX_OVERHEAD, (a.name, overhead)
        assert b.instructions - per_iteration * more == overhead, a.name


def test_output_names_every_operation_without_timings(runs):
    _, out, _ = runs("O2")
    lines = out.splitlines()
    assert lines[-1] == "nanobench: 7 checks, 0 failed"
    body = [line for line in lines if line.endswith(" ok") or line.endswith(" FAIL")]
    assert len(body) == 7 and all(line.endswith(" ok") for line in body), out
    for (name, _), line in zip(ITERATION.values(), body):
        assert line.split()[:2] == [name, str(ITERATIONS)], line
    # identical at -O0: nothing in it depends on the build (or on the machine's speed)
    assert runs("O0")[1] == out


def test_iterations_on_the_command_line(runs):
    _, out, _ = runs("O2", 1537)
    assert "the ring-0 handler ran 1537 times" in out
    assert "1537 #PF" in out and "1537 #DE" in out
    assert out.splitlines()[-1] == "nanobench: 7 checks, 0 failed"


def test_bad_iterations_fall_back_to_the_default():
    pc, out, status = run_nanobench("O2", "iterations=0")
    assert status == 1 and "iterations must be 1 to 16777215; using 1000" in out
    assert [m.iterations for m in pc.bench_marker.marks] == [ITERATIONS] * 7


QEMU = shutil.which("qemu-system-i386")


@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
def test_iterations_on_the_command_line_as_on_qemu(runs):
    elf = guests_build.build("nanobench", "O2")
    r = subprocess.run([QEMU, "-nodefaults", "-display", "none", "-serial", "stdio",
                        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                        "-kernel", str(elf), "-append", "iterations=1537"],
                       capture_output=True, timeout=120)
    _, out, status = runs("O2", 1537)
    assert r.stdout.decode().replace("\r\n", "\n") == out
    assert r.returncode == status


def test_listeners_see_every_bracket():
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO())
    pc.boot_multiboot(str(guests_build.build("nanobench", "O2")), "iterations=10")
    seen = []
    pc.bench_marker.listeners.append(lambda op, n: seen.append((op, n, pc.cpu.icount)))
    assert pc.run(max_instructions=50_000_000).status == 1
    assert [(op, n) for op, n, _ in seen] == [x for i in range(1, 8) for x in ((i, 10), (0, 0))]
    marks = pc.bench_marker.marks
    assert [c for _, _, c in seen] == [c for m in marks for c in (m.begin, m.end)]


def test_the_marker_device():
    count = [100]
    marker = BenchMarker(lambda: count[0])
    calls = []
    marker.listeners.append(lambda op, n: calls.append((op, n)))
    marker.io_write(PORT, 4, (3 << 24) | 500)
    assert marker.open is not None and marker.marks[0].end is None
    assert marker.marks[0].instructions is None and marker.marks[0].per_iteration is None
    count[0] = 2103
    marker.io_write(PORT, 1, 0)                 # not a 32-bit write: ignored
    marker.io_write(PORT + 1, 4, 0)             # not the marker port itself: ignored
    assert marker.open is not None and calls == [(3, 500)]
    marker.io_write(PORT, 4, 0)
    m = marker.marks[0]
    assert (m.op_id, m.name, m.iterations, m.begin, m.end) == (3, "cli/sti", 500, 100, 2103)
    assert m.instructions == 2003 and m.per_iteration == 2003 / 500
    assert calls == [(3, 500), (0, 0)] and marker.open is None
    marker.io_write(PORT, 4, (42 << 24) | 1)
    assert marker.marks[1].name == "op42"
    assert marker.io_read(PORT, 4) == 0xFFFFFFFF


def test_the_pc_has_the_marker_at_0x504():
    pc = PC(console=io.BytesIO(), debugcon=io.BytesIO())
    assert pc.ports.device_at(0x504) is pc.bench_marker
    assert pc.ports.device_at(0x507) is pc.bench_marker
    assert pc.ports.device_at(0x508) is not pc.bench_marker
    assert pc.bench_marker.marks == [] and pc.bench_marker.listeners == []
