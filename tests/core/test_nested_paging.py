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


# -- the CR0/CR4 guest/host masks and read shadows, and #PF exits (shadow paging's tools) --
def masked_guest(CPU, source):
    cpu = CPU()
    cpu.mem_map(0, 1 << 20)
    cpu.mem_write(CODE, assemble(source, CODE))
    cpu.reg_write("esp", 0x8000)
    cpu.eip = CODE
    cpu.guest_mode = True
    cpu.cr0_mask, cpu.cr0_read_shadow = 0x80010001, 0x00000011   # PG, WP, PE: the VMM's
    cpu.cr4_mask, cpu.cr4_read_shadow = 0x90, 0x10                # PGE, PSE
    return cpu


def test_reads_of_owned_bits_come_from_the_read_shadows(CPU):
    cpu = masked_guest(CPU, "mov eax, cr0\n smsw ebx\n mov ecx, cr4\n hlt")
    cpu.reg_write("cr0", 0x00010031)          # real: WP on (owned), NE on (the guest's)
    assert run_to_exit(cpu) == ExitReason.HLT
    assert cpu.reg_read("eax") == 0x00000031 and cpu.reg_read("ebx") == 0x00000031
    assert cpu.reg_read("ecx") == 0x10


def test_changing_an_owned_bit_exits_and_other_bits_change_in_place(CPU):
    cpu = masked_guest(CPU, "mov eax, 0x19\n mov cr0, eax\n mov eax, 0x80000011\n mov cr0, eax\n hlt")
    cpu.reg_write("cr0", 0x00010011)
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    # the first write only sets TS (not owned): done, WP (owned, clear in the shadow)
    # kept; the second sets PG, which the read shadow says is clear: a CR-access exit,
    # MOV to CR0 from EAX
    assert cpu.cr0 == 0x00010019
    assert cpu.exit_reason == VMExitReason.CR_ACCESS and cpu.exit_qualification == 0
    assert cpu.eip == CODE + 13 and cpu.exit_instruction_length == 3


def test_lmsw_and_clts_on_owned_bits(CPU):
    # LMSW cannot clear PE, so 0 changes no owned bit; TS is not owned: no exits
    cpu = masked_guest(CPU, "mov ax, 0x0\n lmsw ax\n mov ax, 0x9\n lmsw ax\n hlt")
    assert run_to_exit(cpu) == ExitReason.HLT and cpu.cr0 & 0x9 == 0x9
    cpu = masked_guest(CPU, "clts\n hlt")
    cpu.cr0_mask |= 0x8
    cpu.cr0_read_shadow |= 0x8                         # the guest thinks TS is set
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert (cpu.exit_reason, cpu.exit_qualification) == (VMExitReason.CR_ACCESS, 0x20)


def test_lmsw_setting_an_owned_bit_exits_with_its_operand(CPU):
    cpu = masked_guest(CPU, "mov ax, 0x8\n lmsw ax\n hlt")
    cpu.cr0_mask |= 0x8                                # TS owned, shadow clear
    assert run_to_exit(cpu) == ExitReason.VMEXIT
    assert (cpu.exit_reason, cpu.exit_qualification) == (VMExitReason.CR_ACCESS, 0x30 | (0x8 << 16))


def test_an_intercepted_page_fault_leaves_cr2_alone(CPU):
    cpu = masked_guest(CPU, "mov eax, [0x400000]\n hlt")
    # 0-1 MiB identity mapped, 4 MiB up not present
    cpu.mem_write(0x10000, struct.pack("<2I", 0x11000 | 3, 0))
    cpu.mem_write(0x11000, struct.pack("<256I", *((i << 12) | 3 for i in range(256))))
    cpu.reg_write("cr3", 0x10000)
    cpu.reg_write("cr0", 0x80010011)
    cpu.cr2 = 0x1234                                   # the guest's CR2
    cpu.exception_intercept = 1 << 14
    assert run_to_exit(cpu) == ExitReason.EXCEPTION
    assert cpu.last_exit.vector == 14 and cpu.last_exit.error_code == 0
    assert cpu.exit_qualification == 0x400000 and cpu.cr2 == 0x1234
    cpu.guest_mode = False                             # outside guest mode, CR2 as always
    assert run_to_exit(cpu) == ExitReason.EXCEPTION and cpu.cr2 == 0x400000
