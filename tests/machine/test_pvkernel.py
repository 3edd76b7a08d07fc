"""guests/pvkernel: one kernel with paravirt operations. On a bare machine it takes the native
path (QEMU agrees: tests/machine/test_qemu_oracle.py compares the whole output), and so it
does under trap (which hides the hypervisor) and hw (which reports one without hypercalls),
with the same output; under pv it makes hypercalls instead, and its output differs only in
the second line, which says which path it took."""
import io
import re
import shutil
import subprocess

import pytest

from pyvmm.machine import PC
from pyvmm.vmm import create, hypervisor_memory

from tests.guest_build import guests_build

NATIVE = "pvkernel: native (no PyVMM hypercalls)"
PARAVIRTUAL = "pvkernel: paravirtual (PyVMM ABI 1)"
CHECKS = 11
VERDICT = re.compile(r"(?P<what>.+?) +(?P<verdict>ok|FAIL)")


def run(opt, mode="emulate"):
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO(), hypervisor_memory=hypervisor_memory(mode))
    pc.boot_multiboot(str(guests_build.build("pvkernel", opt)))
    vmm = create(mode, pc)
    result = pc.run(max_instructions=200_000_000)
    assert result.reason == "exit", result.message
    return out.getvalue().decode().replace("\r\n", "\n"), result.status, vmm


def test_pvkernel_is_a_bundled_guest_checked_against_qemu():
    from tests.machine.test_qemu_oracle import GUEST_NAMES
    assert "pvkernel" in GUEST_NAMES


@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_the_native_path_passes_every_check(opt):
    out, status, _ = run(opt)
    lines = out.splitlines()
    assert lines[1] == NATIVE, out
    verdicts = [m for m in map(VERDICT.fullmatch, lines) if m]
    assert len(verdicts) == CHECKS and all(m["verdict"] == "ok" for m in verdicts), out
    assert lines[-1] == f"pvkernel: {CHECKS} checks, 0 failed"
    assert status == 1


@pytest.mark.parametrize("mode", ["trap", "hw"])
def test_trap_and_hw_take_the_native_path_with_the_same_output(mode):
    bare, bare_status, _ = run("O2")
    out, status, _ = run("O2", mode)
    assert out == bare and status == bare_status


@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_the_paravirtual_path_differs_only_in_the_line_that_says_so(opt):
    bare, _, _ = run(opt)
    out, status, vmm = run(opt, "pv")
    lines, bare_lines = out.splitlines(), bare.splitlines()
    assert lines[1] == PARAVIRTUAL, out
    assert lines[:1] + lines[2:] == bare_lines[:1] + bare_lines[2:]
    assert status == 1
    counts = vmm.stats.count
    # what the kernel's structure fixes (the rest depends on how many ticks there were)
    assert counts["hypercall console_write"] == len(lines)             # one printf, one call
    for name in ("set_trap_table", "stack_switch", "set_shared_info", "multicall", "shutdown"):
        assert counts[f"hypercall {name}"] == 1, name
    assert counts["hypercall mmu_update"] == 5 + 3      # 1033 entries by 256, 3 demand faults
    ticks = counts["event (delivered)"]
    assert counts["hypercall set_timer"] == ticks + 1
    # every return from a trap: the ticks, the system calls but the last exit, the page
    # faults, and the first entry into ring 3
    assert counts["hypercall iret"] == ticks + (12 - 1) + 3 + 1
    assert counts["hypercall block"] >= 1
    # no port I/O, no CLI/STI/HLT/IRET/INVLPG/LIDT/LTR trapped: all of it went by hypercall
    trapped = {reason for reason in counts if not reason.startswith("hypercall")}
    assert trapped <= {"cpuid", "cli", "lgdt", "ljmp", "mov", "int", "event (delivered)",
                       "exception #PF (reflected)"}, trapped


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump is not installed")
@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_the_tasks_code_stays_in_user_text(opt):
    """Ring 3 may read and run only the user_text and user_rodata pages: a call or jump
    from the tasks into kernel code (a memcpy the compiler added, say) would fault."""
    elf = guests_build.build("pvkernel", opt)
    text = subprocess.run(["objdump", "-d", "-j", "user_text", str(elf)], check=True,
                          capture_output=True, text=True).stdout
    symbols = subprocess.run(["nm", str(elf)], check=True, capture_output=True, text=True).stdout
    address = {name: int(value, 16)
               for value, name in re.findall(r"^([0-9a-f]+) \w (\S+)$", symbols, re.M)}
    start, stop = address["__start_user_text"], address["__stop_user_text"]
    targets = [int(m[1], 16) for m in re.finditer(r"\t(?:call|j[a-z]+)\s+([0-9a-f]+) <", text)]
    assert targets, text
    outside = [hex(t) for t in targets if not start <= t < stop]
    assert not outside, f"user_text branches out of itself: {outside}"
