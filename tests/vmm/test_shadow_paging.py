"""Shadow page tables cached across CR3 switches (pyvmm/vmm/shadow_paging.py) stay true
to the guest's tables: what the guest changes in an address space that is not current, in
the one that is (then INVLPG), or in a page directory, is what it sees afterwards, exactly
as on the bare machine, under every mode that shadows (trap, bt, pv for a kernel without
hypercalls, and hw with --paging shadow)."""
import io
import struct

import pytest

from pyvmm.machine import PC
from pyvmm.vmm import create, hypervisor_memory
from tests.asm import assemble
from tests.guest_build import guests_build

CODE = 0x10000
PD_A, PD_B, PT_LOW, PT_X, PT_Y = 0x20000, 0x21000, 0x22000, 0x23000, 0x24000
F1, F2, F3 = 0x30000, 0x31000, 0x32000        # data frames holding 0x1111, 0x2222, 0x3333
P_RW = 0x3

# Both address spaces map 0-4 MiB through one shared table (identity) and 4-8 MiB through
# PT_X, whose entry 0 maps F1. Results go to EBX, ECX, EDX, ESI, EDI.
PROGRAM = f"""
    mov eax, {PD_A}
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    mov ebx, [0x400000]  # A: F1 (0x1111), the shadow of A is filled
    mov eax, {PD_B}
    mov cr3, eax
    mov eax, [0x400000]  # B: the same, its own shadow filled
    mov dword ptr [{PT_X}], {F2 | P_RW}  # in B, remap the page A and B share: no INVLPG
    mov eax, {PD_A}
    mov cr3, eax  # back to A: its cached shadow must not show F1
    mov ecx, [0x400000]  # 0x2222
    mov dword ptr [{PT_X}], {F3 | P_RW}  # in A itself, then INVLPG
    invlpg [0x400000]
    mov edx, [0x400000]  # 0x3333
    mov eax, {PD_B}
    mov cr3, eax
    mov dword ptr [{PD_A + 4}], {PT_Y | P_RW}  # in B, A's directory entry 1 -> PT_Y (F1)
    mov eax, {PD_A}
    mov cr3, eax
    mov esi, [0x400000]  # 0x1111 through the new directory entry
    mov dword ptr [{PT_Y}], 0  # unmap it, INVLPG, and touch it: a true #PF
    invlpg [0x400000]
    mov edi, 0x5A5A
    mov edi, [0x400000]
    hlt
pf_handler:
    mov edi, 0xDEAD  # the guest own #PF handler saw it
    hlt
"""


def machine(label):
    mode, _, paging = label.partition(":")
    pc = PC(memory=16 << 20, console=io.BytesIO(), debugcon=io.BytesIO(),
            hypervisor_memory=hypervisor_memory(mode) if mode != "emulate" else None)
    cpu = pc.cpu
    code = assemble(PROGRAM, CODE)
    cpu.mem_write(CODE, code)
    handler = CODE + code.index(b"\xbf\xad\xde\x00\x00")   # mov edi, 0xDEAD
    idt = bytearray(8 * 32)
    struct.pack_into("<HHHH", idt, 8 * 14, handler & 0xFFFF, 0x08, 0x8E00, handler >> 16)
    cpu.mem_write(0x9000, bytes(idt))
    cpu.reg_write("idtr_base", 0x9000)
    cpu.reg_write("idtr_limit", len(idt) - 1)
    from pyvmm.machine.multiboot import GDT, GDT_ADDRESS
    cpu.mem_write(GDT_ADDRESS, GDT)
    cpu.reg_write("gdtr_base", GDT_ADDRESS)
    cpu.reg_write("gdtr_limit", len(GDT) - 1)
    cpu.reg_write("cs", 0x08)
    for seg in ("ds", "es", "ss"):
        cpu.reg_write(seg, 0x10)
    cpu.reg_write("esp", 0x90000)
    for pd in (PD_A, PD_B):
        cpu.mem_write(pd, struct.pack("<2I", PT_LOW | P_RW, PT_X | P_RW))
    cpu.mem_write(PT_LOW, struct.pack("<1024I", *((i << 12) | P_RW for i in range(1024))))
    cpu.mem_write(PT_X, struct.pack("<I", F1 | P_RW))
    cpu.mem_write(PT_Y, struct.pack("<I", F1 | P_RW))
    for frame, value in ((F1, 0x1111), (F2, 0x2222), (F3, 0x3333)):
        cpu.mem_write(frame, struct.pack("<I", value))
    cpu.reg_write("eip", CODE)
    vmm = create(mode, pc, paging=paging or None) if mode != "emulate" else None
    return pc, vmm


@pytest.mark.parametrize("mode", ["emulate", "trap", "bt", "pv", "hw:shadow"])
def test_cached_shadows_follow_every_change_the_guest_makes(mode):
    pc, vmm = machine(mode)
    result = pc.run(10_000)
    assert result.reason == "halt", result.message
    cpu = pc.cpu
    seen = [cpu.reg_read(r) for r in ("ebx", "ecx", "edx", "esi", "edi")]
    assert seen == [0x1111, 0x2222, 0x3333, 0x1111, 0xDEAD]
    if vmm is not None:
        shadow = vmm.shadow
        memory = vmm.memory_stats()
        assert memory["CR3 switches"] == 5 and shadow.reuses >= 3
        assert shadow.pt_write_traps >= 2          # PT_X written in B, then in A
        assert memory["true faults"] == 1


GUESTS = ["hello", "exceptions", "interrupts", "paging", "usermode", "nanobench",
          "popek-goldberg", "ptemod", "pagefault", "tlbstress"]


def boot(name, mode, paging=None):
    out = io.BytesIO()
    pc = PC(console=out, debugcon=io.BytesIO(), hypervisor_memory=hypervisor_memory(mode))
    pc.boot_multiboot(str(guests_build.build(name, "O2")))
    vmm = create(mode, pc, paging=paging)
    return out.getvalue(), pc.run(200_000_000), vmm


@pytest.mark.parametrize("name", GUESTS)
def test_hw_with_shadow_paging_runs_every_guest_as_the_bare_machine(name):
    bare, bare_result, _ = boot(name, "emulate")
    out, result, vmm = boot(name, "hw", paging="shadow")
    assert out == bare
    assert (result.reason, result.status) == (bare_result.reason, bare_result.status)
    if name != "popek-goldberg":             # (it reads the hypervisor's CPUID leaves)
        assert result.instructions == bare_result.instructions
    exits = vmm.stats.count
    assert not any("EPT" in reason for reason in exits)
    if name in ("paging", "ptemod", "pagefault"):
        # what nested paging never sees: the guest's CR3 loads and INVLPGs, and the
        # shadow's own page faults, with the guest's true ones injected
        assert exits["control-register access (28)"] > 0 and exits["INVLPG (14)"] > 0
        assert exits["page fault (hidden)"] > 0 and exits["exception #PF (injected)"] > 0
        _, _, nested = boot(name, "hw", paging="nested")
        assert set(nested.stats.count) <= {"I/O instruction (30)", "CPUID (10)"}


def test_hw_shadow_keeps_the_vmm_out_of_the_guests_address_space():
    """The guest runs at ring 0 under hw: the shadows must not map the VMM's own memory
    (trap and bt map it supervisor-only and keep the guest out with segment limits)."""
    _, result, vmm = boot("paging", "hw", paging="shadow")
    base, size = hypervisor_memory("hw")
    for root in vmm.shadow.roots.values():
        pd = struct.unpack("<1024I", bytes(vmm.cpu.mem_read(root.pd, 4096)))
        assert pd[base >> 22] == 0
        for table in root.tables.values():
            entries = struct.unpack("<1024I", bytes(vmm.cpu.mem_read(table.addr, 4096)))
            assert not any(e & 1 and base <= (e & ~0xFFF) < base + size for e in entries)


@pytest.mark.parametrize("mode", ["trap", "hw:shadow"])
def test_a_mapping_beyond_ram_stops_the_vm_and_is_not_counted_hidden(mode):
    """A guest PTE pointing past the end of its 16 MiB: the shadow cannot map it, the VM
    stops saying where, and the exit counts agree with the memory counters (the stopping
    fault is not a hidden one: nothing was filled)."""
    pc, vmm = machine(mode)
    cpu = pc.cpu
    beyond = 16 << 20
    cpu.mem_write(PT_X, struct.pack("<I", beyond | P_RW))
    result = pc.run(10_000)
    assert result.reason == "unsupported", result.message
    assert f"{beyond:#010x}" in result.message
    exits = vmm.stats.count
    assert exits["page fault (VM stopped)"] == 1
    assert exits["page fault (hidden)"] == vmm.memory_stats()["hidden faults"]
