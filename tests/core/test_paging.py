"""32-bit paging (SDM Vol. 3 ch. 4): translation through the page directory and tables,
4 MiB pages, access rights by CPL and CR0.WP, accessed/dirty bits, #PF error codes and CR2,
and the TLB's INVLPG / CR3-reload semantics."""
import struct

import pytest

import pyvmm
from tests.core import test_system
from tests.core.test_system import CODE, gate, machine

PD = 0x10000            # page directory
PT = 0x11000            # page table for 0-4 MiB
P, RW, US, A, D, PS, G = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80, 0x100
HANDLER = 0x3000


@pytest.fixture(autouse=True, params=["compiled", "uncompiled"])
def core(request, monkeypatch):
    """Every test here runs on the compiled core and on the same source uncompiled."""
    cls = pyvmm.CPU if request.param == "compiled" else pyvmm.load_pure().cpu.CPU
    monkeypatch.setattr(test_system, "CPU", cls)
    return request.param


def paged_machine(source, extra_ptes=(), pde_flags=P | RW | US, wp=False, pse=False, pge=False):
    """Identity-map the first 4 MiB (except what extra_ptes overrides), then run `source`
    with paging on. A #PF handler at HANDLER records CR2 in EDI and the error code in ESI
    and halts."""
    enable = f"""
        mov eax, {PD}
        mov cr3, eax
        mov eax, cr4
        or eax, {(0x10 if pse else 0) | (0x80 if pge else 0)}
        mov cr4, eax
        mov eax, cr0
        or eax, {0x80000000 | (0x10000 if wp else 0)}
        mov cr0, eax
        jmp 1f
    1:
    """
    idt = [gate(0x08, HANDLER)] * 32
    cpu = machine(enable + source + "\n hlt", idt=idt)
    cpu.mem_map(0x20000, 0x60000)                  # RAM up to 512 KiB for the tests' pages
    cpu.mem_write(HANDLER, bytes.fromhex("0f20d7") + bytes.fromhex("5e") + b"\xf4")  # mov edi,cr2; pop esi; hlt
    cpu.mem_write(PD, struct.pack("<I", PT | pde_flags))
    ptes = {page: (page << 12) | P | RW | US for page in range(1024)}
    ptes.update(extra_ptes)
    cpu.mem_write(PT, b"".join(struct.pack("<I", ptes[page]) for page in range(1024)))
    return cpu


def pte(page):
    return PT + 4 * page


def test_paging_translates_through_the_tables():
    # linear page 0x50 -> physical page 0x60
    cpu = paged_machine("mov dword ptr [0x50010], 0xCAFE\n mov eax, [0x50010]",
                        {0x50: 0x60000 | P | RW | US})
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("eax") == 0xCAFE
    assert cpu.mem_read(0x60010, 4) == struct.pack("<I", 0xCAFE)      # physical
    assert cpu.mem_read(0x50010, 4) == bytes(4)                       # untouched
    # accessed and dirty bits were set in the PTE, accessed in the PDE
    assert struct.unpack("<I", cpu.mem_read(pte(0x50), 4))[0] & (A | D) == A | D
    assert struct.unpack("<I", cpu.mem_read(PD, 4))[0] & A


@pytest.mark.parametrize("source, error", [
    ("mov eax, [0x50000]", 0),          # read, not present
    ("mov dword ptr [0x50000], 1", 2),  # write, not present
])
def test_not_present_page_faults_with_cr2(source, error):
    cpu = paged_machine(source, {0x50: 0})
    cpu.emu_start(CODE, 0)
    assert cpu.eip == HANDLER + 5
    assert cpu.reg_read("edi") == 0x50000 and cpu.reg_read("esi") == error
    assert cpu.reg_read("cr2") == 0x50000


def test_read_only_page_is_writable_at_cpl0_unless_wp():
    ro = {0x50: 0x50000 | P | US}
    cpu = paged_machine("mov dword ptr [0x50000], 7\n mov eax, [0x50000]", ro)
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("eax") == 7 and cpu.eip != HANDLER + 5
    cpu = paged_machine("mov dword ptr [0x50000], 7", ro, wp=True)
    cpu.emu_start(CODE, 0)
    assert cpu.eip == HANDLER + 5 and cpu.reg_read("esi") == 3      # present | write


def test_read_only_in_the_directory_is_read_only_for_the_whole_table():
    # PDE 1 maps 4-8 MiB through the same table, read-only: 0x450000 -> physical 0x50000
    cpu = paged_machine("mov eax, [0x450000]\n mov dword ptr [0x450000], 7", wp=True)
    cpu.mem_write(PD + 4, struct.pack("<I", PT | P | US))
    cpu.emu_start(CODE, 0)
    assert cpu.eip == HANDLER + 5 and cpu.reg_read("esi") == 3


def test_four_mib_pages_with_pse():
    cpu = paged_machine("mov dword ptr [0x400010], 0x1234\n mov eax, [0x400010]", pse=True)
    # PDE 1: a 4 MiB page at physical 0 (so linear 4 MiB + x -> physical x)
    cpu.mem_write(PD + 4, struct.pack("<I", 0x0 | P | RW | PS))
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("eax") == 0x1234
    assert cpu.mem_read(0x10, 4) == struct.pack("<I", 0x1234)
    assert struct.unpack("<I", cpu.mem_read(PD + 4, 4))[0] & (A | D) == A | D


def test_reserved_bits_in_a_4mib_pde_fault_with_rsvd():
    cpu = paged_machine("mov eax, [0x400010]", pse=True)
    cpu.mem_write(PD + 4, struct.pack("<I", 0x2000 | P | RW | PS))       # bit 13 reserved
    cpu.emu_start(CODE, 0)
    assert cpu.eip == HANDLER + 5 and cpu.reg_read("esi") == 0x9          # P | RSVD


def test_invlpg_makes_a_changed_entry_take_effect():
    cpu = paged_machine(f"""
        mov eax, [0x50000]                      /* loads the TLB entry 0x50 -> 0x50 */
        mov dword ptr [{pte(0x50)}], {0x61000 | P | RW}
        invlpg [0x50000]
        mov ebx, [0x50000]                      /* now 0x50 -> 0x61 */
    """)
    cpu.mem_write(0x61000, struct.pack("<I", 0xBEEF))
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("ebx") == 0xBEEF


def test_cr3_reload_makes_a_changed_entry_take_effect():
    cpu = paged_machine(f"""
        mov eax, [0x50000]
        mov dword ptr [{pte(0x50)}], {0x61000 | P | RW}
        mov eax, cr3
        mov cr3, eax
        mov ebx, [0x50000]
    """)
    cpu.mem_write(0x61000, struct.pack("<I", 0xBEEF))
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("ebx") == 0xBEEF


def test_access_crossing_into_a_missing_page_faults_on_that_page_and_writes_nothing():
    cpu = paged_machine("mov dword ptr [0x50ffe], 0x11223344", {0x51: 0})
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("edi") == 0x51000 and cpu.reg_read("esi") == 2
    assert cpu.mem_read(0x50ffe, 2) == b"\0\0"


def test_fetch_from_a_missing_page_faults():
    cpu = paged_machine("mov eax, 0x50000\n jmp eax", {0x50: 0})
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("edi") == 0x50000 and cpu.reg_read("esi") == 0


def test_code_on_a_remapped_page_is_fetched_from_the_new_frame():
    # the same linear page holds different code after the mapping changes
    cpu = paged_machine(f"""
        mov eax, 0x50000
        call eax                                 /* returns 1 in ecx */
        mov dword ptr [{pte(0x50)}], {0x61000 | P | RW}
        invlpg [0x50000]
        mov eax, 0x50000
        call eax                                 /* returns 2 in edx */
    """)
    cpu.mem_write(0x50000, bytes.fromhex("b901000000c3"))      # mov ecx, 1; ret
    cpu.mem_write(0x61000, bytes.fromhex("ba02000000c3"))      # mov edx, 2; ret
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("ecx") == 1 and cpu.reg_read("edx") == 2


@pytest.mark.parametrize("source", [
    "mov eax, 0x80000000\n mov cr0, eax",          # PG without PE
    "mov eax, 0x20\n mov cr4, eax",                # PAE: not offered by this CPU
])
def test_invalid_control_register_loads_are_gp(source):
    cpu = machine(source + "\n hlt", idt=[gate(0x08, HANDLER)] * 32)
    cpu.mem_write(HANDLER, b"\xf4")
    cpu.emu_start(CODE, 0)
    assert cpu.eip == HANDLER + 1
    assert struct.unpack("<I", cpu.mem_read(cpu.reg_read("esp"), 4))[0] == 0      # #GP(0)


def test_control_registers_read_back():
    cpu = machine("mov eax, 0x12345000\n mov cr3, eax\n mov ebx, cr3\n mov ecx, cr0\n"
                  "mov eax, 0x90\n mov cr4, eax\n mov edx, cr4\n hlt")
    cpu.emu_start(CODE, 0)
    assert cpu.reg_read("ebx") == 0x12345000
    assert cpu.reg_read("ecx") == 0x11                                  # PE | ET
    assert cpu.reg_read("edx") == 0x90
