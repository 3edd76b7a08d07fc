"""guests/popek-goldberg on the bare machine: every probe of a sensitive but unprivileged
instruction, and every control, shows what the kernel set (QEMU agrees: the oracle test
compares the whole output). Under a trap-and-emulate hypervisor the first group fails."""
import io
import re

import pytest

from pyvmm.machine import PC

from tests.guest_build import guests_build

SENSITIVE = [
    "pushf after cli shows IF=0",
    "popf can clear IF (after sti)",
    "popf can set IF (after cli)",
    "popf setting IF lets a pending self-IPI in",
    "popf can change IOPL (to 3)",
    "sgdt returns the GDT the kernel loaded",
    "sidt returns the IDT the kernel loaded",
    "sldt returns the LDT selector loaded with lldt",
    "str returns the TSS selector loaded with ltr",
    "smsw shows CR0.TS set by the kernel",
    "push cs shows RPL 0",
    "mov from cs shows RPL 0",
    "mov from ss shows RPL 0",
    "lar shows the kernel code segment's DPL 0",
    "lsl shows the data segment's 4 GiB limit",
    "verr accepts the data segment with RPL 0",
    "verr refuses it through an RPL-1 selector",
    "verw refuses it through an RPL-1 selector",
]
CONTROL = [
    "cli keeps a self-IPI pending",
    "sti lets the pending self-IPI in",
    "mov from cr0 shows CR0.TS set by the kernel",
    "mov cr3 reads back the value written",
    "out/in: COM1's scratch register holds 5a",
    "hlt sleeps until the APIC timer interrupt",
]
LINE = re.compile(r"(?P<what>.+?) +want (?P<want>\S+(?: \S+)?) +saw (?P<saw>\S+(?: \S+)?) +(?P<verdict>ok|FAIL)")


def run(opt):
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO())
    pc.boot_multiboot(str(guests_build.build("popek-goldberg", opt)))
    result = pc.run(max_instructions=50_000_000)
    assert result.reason == "exit", result.message
    return out.getvalue().decode().replace("\r\n", "\n"), result.status


def test_popek_goldberg_is_a_bundled_guest_checked_against_qemu():
    from tests.machine.test_qemu_oracle import GUEST_NAMES
    assert "popek-goldberg" in GUEST_NAMES


@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_every_probe_passes_on_the_bare_machine(opt):
    out, status = run(opt)
    lines = out.splitlines()
    probes = [LINE.fullmatch(line) for line in lines]
    probes = [m for m in probes if m]
    assert [m["what"] for m in probes] == SENSITIVE + CONTROL, out
    for m in probes:
        assert m["verdict"] == "ok" and m["want"] == m["saw"], m.group(0)
    n = len(SENSITIVE) + len(CONTROL)
    assert lines[-1] == f"popek-goldberg: {n} checks, 0 failed"
    assert status == 1
    # the control group comes after its heading, the sensitive probes before it
    heading = next(i for i, line in enumerate(lines) if line.startswith("-- control group"))
    assert lines[heading + 1].startswith(CONTROL[0])
