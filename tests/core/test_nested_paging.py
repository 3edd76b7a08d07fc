"""Nested paging (EPT-like) in the core: the two-dimensional walk, its memory references,
and EPT violations and misconfigurations as VM exits with the SDM's qualification bits.

The machine: host RAM 0-2 MiB; nested tables at host-physical 0x100000 that map
guest-physical pages 0x00-0xFF to themselves except 0x50-0x5F -> 0x150-0x15F (so a
translation is visibly not the identity), 0x60 read+execute only, 0x61 read+write (no
execute), 0x62 write-only (a misconfiguration) and 0x70 nothing. The guest's own page
directory and table, when it pages, sit at guest-physical 0x58000 and 0x59000, that is at
host-physical 0x158000 and 0x159000."""
import struct

import pytest

import pyvmm
from pyvmm import ExitReason
from pyvmm._core.exits import VMExitReason
from tests.asm import assemble

NPT_ROOT, NPT_TABLE = 0x100000, 0x101000
R, W, X, RWX = 1, 2, 4, 7
GUEST_PD, GUEST_PT = 0x58000, 0x59000          # guest-physical
P, RW, A, D = 0x1, 0x2, 0x20, 0x40
CODE = 0x1000


@pytest.fixture(params=["compiled", "uncompiled"])
def CPU(request):
    return pyvmm.CPU if request.param == "compiled" else pyvmm.load_pure().cpu.CPU


def host_of(gpa):
    page = gpa >> 12
    return ((page + 0x100) << 12 | (gpa & 0xFFF)) if 0x50 <= page <= 0x5F else gpa


def nested_entries():
    entries = [(page << 12) | RWX for page in range(0x100)] + [0] * (1024 - 0x100)
    for page in range(0x50, 0x60):
        entries[page] = ((page + 0x100) << 12) | RWX
    entries[0x60] = (0x60 << 12) | R | X
    entries[0x61] = (0x61 << 12) | R | W
    entries[0x62] = (0x62 << 12) | W
    entries[0x70] = 0
    return entries


def nested_guest(CPU, source, guest_paging=False):
    cpu = CPU()
    cpu.mem_map(0, 2 << 20)
    cpu.mem_write(CODE, assemble(source, CODE))
    cpu.mem_write(NPT_ROOT, struct.pack("<1024I", NPT_TABLE | RWX, *([0] * 1023)))
    cpu.mem_write(NPT_TABLE, struct.pack("<1024I", *nested_entries()))
    if guest_paging:
        # linear 0-4 MiB -> guest-physical, same numbers; linear 4-8 MiB through a guest
        # page table at guest-physical 0x70000, where the guest has no memory
        cpu.mem_write(host_of(GUEST_PD), struct.pack("<1024I", GUEST_PT | P | RW, 0x70000 | P | RW,
                                                     *([0] * 1022)))
        cpu.mem_write(host_of(GUEST_PT), struct.pack("<1024I", *((p << 12) | P | RW for p in range(1024))))
        cpu.reg_write("cr3", GUEST_PD)
        cpu.reg_write("cr0", cpu.reg_read("cr0") | 0x80000000)
    cpu.reg_write("esp", 0x8000)
    cpu.eip = CODE
    cpu.guest_mode = True
    cpu.nested_root = NPT_ROOT
    cpu.nested_paging = True
    return cpu


def run_to_exit(cpu):
    reason = ExitReason(cpu.run(cpu.icount + 100))
    return reason


def test_guest_physical_goes_through_the_nested_tables(CPU):
    cpu = nested_guest(CPU, "mov eax, [0x50010]\n hlt")
    cpu.mem_write(0x150010, struct.pack("<I", 0xCAFEF00D))      # host-physical
    cpu.mem_write(0x050010, struct.pack("<I", 0x11111111))      # not the guest's page 0x50
    assert run_to_exit(cpu) == ExitReason.HLT
    assert cpu.reg_read("eax") == 0xCAFEF00D
    # guest paging off: each page costs one nested walk of two references
    assert (cpu.tlb_misses, cpu.walk_refs) == (2, 4)         # the code page, the data page


def test_two_dimensional_walk_costs_eight_references(CPU):
    cpu = nested_guest(CPU, "mov eax, [0x50010]\n mov ebx, [0x50020]\n mov [0x50030], eax\n hlt",
                       guest_paging=True)
    cpu.mem_write(0x150010, struct.pack("<I", 0x12345678))
    assert run_to_exit(cpu) == ExitReason.HLT
    assert cpu.reg_read("eax") == 0x12345678
    assert cpu.mem_read(0x150030, 4) == struct.pack("<I", 0x12345678)
    # two misses (code, data), each 2 guest entries x (2 nested + 1) + 2 nested for the page;
    # the later accesses hit (the write walks again: the entry was clean, the D bit is set)
    assert cpu.tlb_misses == 3 and cpu.walk_refs == 3 * 8
    assert cpu.tlb_hits >= 1
    # the accessed and dirty bits reached the guest's table, at its host-physical place
    pte = struct.unpack("<I", cpu.mem_read(host_of(GUEST_PT) + 4 * 0x50, 4))[0]
    assert pte & (A | D) == A | D
    assert struct.unpack("<I", cpu.mem_read(host_of(GUEST_PD), 4))[0] & A
    assert cpu.mem_read(GUEST_PT + 4 * 0x50, 4) == bytes(4)   # host page 0x59: untouched


def test_unmapped_guest_physical_is_an_ept_violation(CPU):
    cpu = nested_guest(CPU, "mov eax, 0x11111111\n mov eax, [0x70008]\n hlt")
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert cpu.exit_reason == VMExitReason.EPT_VIOLATION
    # a read (bit 0), nothing allowed (bits 3-5 clear), linear valid (7), final (8)
    assert cpu.exit_qualification == 0x1 | 0x80 | 0x100
    assert (cpu.guest_physical_address, cpu.guest_linear_address) == (0x70008, 0x70008)
    assert cpu.eip == CODE + 5 and cpu.reg_read("eax") == 0x11111111   # not executed
    assert cpu.icount == 1


def test_write_to_a_read_only_nested_page_exits_after_a_read_filled_the_tlb(CPU):
    cpu = nested_guest(CPU, "mov eax, [0x60000]\n mov [0x60000], ebx\n hlt")
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert cpu.exit_reason == VMExitReason.EPT_VIOLATION
    assert cpu.exit_qualification == 0x2 | ((R | X) << 3) | 0x80 | 0x100
    assert cpu.eip == CODE + 5


def test_fetch_from_a_non_executable_nested_page(CPU):
    cpu = nested_guest(CPU, "mov eax, [0x61000]\n jmp 0x61000")
    cpu.mem_write(0x61000, b"\xf4")
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert cpu.exit_qualification == 0x4 | ((R | W) << 3) | 0x80 | 0x100
    assert cpu.eip == 0x61000 and cpu.guest_physical_address == 0x61000


def test_write_only_entry_is_a_misconfiguration(CPU):
    cpu = nested_guest(CPU, "mov eax, [0x62000]\n hlt")
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert cpu.exit_reason == VMExitReason.EPT_MISCONFIG
    assert cpu.guest_physical_address == 0x62000


def test_guest_page_table_in_unmapped_guest_physical(CPU):
    cpu = nested_guest(CPU, "mov eax, [0x400010]\n hlt", guest_paging=True)
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert cpu.exit_reason == VMExitReason.EPT_VIOLATION
    # reading the guest's page-table entry: bit 8 clear
    assert cpu.exit_qualification == 0x1 | 0x80
    assert cpu.guest_physical_address == 0x70000 + ((0x400010 >> 10) & 0xFFC)
    assert cpu.guest_linear_address == 0x400010


def test_invept_drops_what_the_tlb_cached(CPU):
    cpu = nested_guest(CPU, "mov eax, [0x60000]\n mov eax, [0x60004]\n hlt")
    assert ExitReason(cpu.run(cpu.icount + 1)) == ExitReason.COUNT
    cpu.mem_write(NPT_TABLE + 4 * 0x60, bytes(4))          # the VMM unmaps the page
    cpu.invept()
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert cpu.guest_physical_address == 0x60004


def test_exception_delivery_that_meets_a_violation_is_reported(CPU):
    # #DE with the IDT at guest-physical 0x70000, where nothing is: the exit names the
    # event being delivered, so that a VMM can inject it again
    cpu = nested_guest(CPU, "xor ecx, ecx\n div ecx\n hlt")
    cpu.reg_write("idtr_base", 0x70000)
    cpu.reg_write("idtr_limit", 0x7FF)
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert cpu.exit_reason == VMExitReason.EPT_VIOLATION and cpu.idt_vectoring == 0
    assert cpu.eip == CODE + 2
