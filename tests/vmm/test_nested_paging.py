"""hw mode's nested paging (pyvmm/vmm/nested_paging.py): the VMM's nested tables map the
guest's RAM and devices only, the guest pays for them in page-walk references, and an
access anywhere else stops the VM with the address named."""
import io
import subprocess
import sys

import pytest

from pyvmm.machine import PC
from pyvmm.vmm import VMMUnsupported, create, hypervisor_memory
from tests.asm import assemble
from tests.guest_build import guests_build


def hw_machine(source, memory=16 << 20):
    """A bare protected-mode program (flat segments, as the Multiboot loader leaves them)
    under hw mode with nested paging."""
    pc = PC(memory=memory, console=io.BytesIO(), debugcon=io.BytesIO(),
            hypervisor_memory=hypervisor_memory("hw"))
    cpu = pc.cpu
    cpu.mem_write(0x10000, assemble(source, 0x10000))
    cpu.reg_write("esp", 0x90000)
    cpu.reg_write("eip", 0x10000)
    vmm = create("hw", pc)
    return pc, vmm


def test_nested_tables_map_the_guests_memory_and_nothing_else():
    pc, vmm = hw_machine("nop")
    nested = vmm.nested
    assert pc.cpu.nested_paging and pc.cpu.nested_root == nested.root
    assert nested.mapped_pages == (16 << 20) // 4096 + 2          # RAM, local APIC, I/O APIC
    assert nested.root >= hypervisor_memory("hw")[0]              # in the VMM's own memory


@pytest.mark.parametrize("source, access, address", [
    ("mov eax, [0x01000000]", "read", 0x01000000),                # just past 16 MiB of RAM
    ("mov dword ptr [0xFFC00010], 1", "write", 0xFFC00010),       # the VMM's own memory
    ("jmp 0x02000000", "instruction fetch", 0x02000000),
])
def test_an_access_outside_the_guest_stops_the_vm_with_its_address(source, access, address):
    pc, vmm = hw_machine(source + "\n hlt")
    before = bytes(pc.cpu.mem_read(hypervisor_memory("hw")[0], 4096))
    result = pc.run(1000)
    assert result.reason == "unsupported"
    assert "EPT violation" in result.message and f"{address:#010x}" in result.message
    assert access in result.message
    assert dict(vmm.stats.count).get("EPT violation (48)") == 1
    assert bytes(pc.cpu.mem_read(hypervisor_memory("hw")[0], 4096)) == before


def test_paging_guest_pays_in_walk_references_not_exits():
    elf = guests_build.build("paging", "O2")
    runs = {}
    for mode in ("emulate", "hw"):
        pc = PC(console=io.BytesIO(), debugcon=io.BytesIO(), hypervisor_memory=hypervisor_memory(mode))
        pc.boot_multiboot(str(elf))
        vmm = create(mode, pc)
        result = pc.run(50_000_000)
        assert result.reason == "exit" and result.status == 1
        runs[mode] = (vmm.memory_stats(), vmm.stats.count)
    emulate, hw = runs["emulate"][0], runs["hw"][0]
    # the same guest sees the same CR3 loads; a miss costs at most 2 references bare, up
    # to 8 nested (2 with the guest's paging still off, where every miss is a nested one)
    assert emulate["CR3 switches"] == hw["CR3 switches"] > 0
    assert emulate["walk refs"] <= 2 * emulate["TLB misses"]
    assert 2 * hw["TLB misses"] < hw["walk refs"] <= 8 * hw["TLB misses"]
    assert hw["walk refs"] > 3 * emulate["walk refs"]
    assert not any("EPT" in reason or "control-register" in reason for reason in runs["hw"][1])


def test_paging_choices_are_checked():
    pc = PC(console=io.BytesIO(), debugcon=io.BytesIO(), hypervisor_memory=hypervisor_memory("trap"))
    with pytest.raises(VMMUnsupported, match="--paging nested is not a choice in trap mode"):
        create("trap", pc, paging="nested")
    r = subprocess.run([sys.executable, "-m", "pyvmm", "run", "hello", "--paging", "nested"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--paging" in r.stderr and "--mode hw" in r.stderr
