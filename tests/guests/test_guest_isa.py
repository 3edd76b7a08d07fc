"""Every instruction in every guest kernel is one pyvmm's CPU implements.

The guests are compiled C: a new gcc, a new flag or a new guest could slip in an x87, SSE
or other instruction outside pyvmm's integer IA-32 subset, and the guest would then die
with #UD on pyvmm while running fine on QEMU. This disassembles each ELF (objdump) and
looks every opcode up in pyvmm's own instruction table (pyvmm/_core/isa.py). No QEMU
needed: only gcc, as, ld and objdump.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MISSING_TOOLS = [t for t in ("gcc", "as", "ld", "objdump") if not shutil.which(t)]
pytestmark = pytest.mark.skipif(bool(MISSING_TOOLS),
                                reason=f"toolchain missing: {MISSING_TOOLS}")

isa = pytest.importorskip("pyvmm._core.isa")

PREFIXES = {0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65}
X87_SSE = re.compile(r"%(st|mm|xmm|ymm)\d*|\bf[a-z]+\b.*%st")


from tests.guest_build import guests_build  # noqa: E402


def instructions(elf):
    """(address, bytes, text) for every instruction objdump finds in the code sections."""
    out = subprocess.run(["objdump", "-d", "--insn-width=16", str(elf)], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t?(.*)", line)
        if m:
            yield int(m.group(1), 16), bytes.fromhex(m.group(2)), m.group(3)


def lookup(code):
    """pyvmm's table row for the instruction bytes `code`, or None."""
    i = 0
    while i < len(code) and code[i] in PREFIXES:
        i += 1
    if i >= len(code):
        return None
    opcode = code[i]
    if opcode == 0x0F:
        if i + 1 >= len(code):
            return None
        opcode = 0x0F00 | code[i + 1]
        i += 1
    reg = (code[i + 1] >> 3) & 7 if i + 1 < len(code) else None
    return isa.lookup(opcode, reg)


@pytest.mark.parametrize("opt", ["O0", "O2"])
@pytest.mark.parametrize("name", guests_build.guest_names())
def test_only_pyvmm_instructions(name, opt):
    elf = guests_build.build(name, opt)
    bad = []
    count = 0
    for addr, code, text in instructions(elf):
        count += 1
        if "(bad)" in text or X87_SSE.search(text) or lookup(code) is None:
            bad.append(f"{addr:08x}: {code.hex(' ')}  {text}")
    assert count > 50
    assert not bad, f"{name} -{opt}: instructions pyvmm does not implement:\n" + "\n".join(bad)
