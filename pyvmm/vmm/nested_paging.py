"""Nested paging: the processor translates guest-physical addresses itself, through a
second set of page tables the VMM owns (Intel's EPT, 2008; AMD's NPT/RVI, 2007).

Under shadow paging the VMM must see every change the guest makes to its page tables. With
nested paging it need not look at them at all: the guest loads CR3, edits its tables and
runs INVLPG at full speed in guest mode, and the processor walks *two* sets of tables:

* the guest's own, guest-linear to guest-physical; every entry it reads is at a
  guest-physical address, so
* each of those addresses, and the page finally found, goes through the nested tables,
  guest-physical to host-physical.

With two-level tables at both levels a TLB miss costs up to 2 x 3 + 2 = 8 memory
references instead of 2 (SDM 29.3; Bhargava et al., ASPLOS 2008, count 24 for four-level
tables): the price of nested paging is paid on TLB misses, not in exits.

The nested tables here are 32-bit and two-level, in the guest's own layout with EPT's
permission bits (bit 0 read, 1 write, 2 execute; bit 7 in a directory entry: a 4 MiB
page). They live in the VMM's 4 MiB at the top of host-physical memory, which they do not
map, so the guest can neither see nor change them. They map exactly the guest's RAM and
its memory-mapped devices, each at the same host-physical address (the machine *is* this
VM's host); any other guest-physical address is an EPT violation (exit 48), which stops
the VM with the address and the access named. Nothing is ever remapped, so the VMM never
needs INVEPT after setting up.
"""
import struct

from .faults import VMMUnsupported

NPT_R, NPT_W, NPT_X, NPT_PS = 0x1, 0x2, 0x4, 0x80
NPT_RWX = NPT_R | NPT_W | NPT_X


class NestedPageTables:
    """Identity nested tables over the guest's RAM and device pages, 4 KiB pages."""

    def __init__(self, cpu, ram_size, mmio_ranges, vmm_base, vmm_size):
        self.cpu = cpu
        self.ram_size = ram_size
        pages = set(range((ram_size + 0xFFF) >> 12))
        for start, end in mmio_ranges:
            pages.update(range(start >> 12, (end + 0xFFF) >> 12))
        if any(p >= vmm_base >> 12 for p in pages):
            raise VMMUnsupported("guest memory overlaps the VMM's own region")
        self.root = vmm_base                    # the nested page directory (VT-x: the EPTP)
        directory = [0] * 1024
        tables = {}
        for page in sorted(pages):
            tables.setdefault(page >> 10, [0] * 1024)[page & 0x3FF] = (page << 12) | NPT_RWX
        next_table = vmm_base + 0x1000
        for index, entries in sorted(tables.items()):
            if next_table + 0x1000 > vmm_base + vmm_size:
                raise VMMUnsupported("the nested page tables do not fit in the VMM's memory")
            cpu.mem_write(next_table, struct.pack("<1024I", *entries))
            directory[index] = next_table | NPT_RWX
            next_table += 0x1000
        cpu.mem_write(self.root, struct.pack("<1024I", *directory))
        self.table_pages = len(tables)
        self.mapped_pages = len(pages)

    def enable(self):
        self.cpu.nested_root = self.root
        self.cpu.nested_paging = True

    @staticmethod
    def describe_violation(cpu):
        """A sentence for an EPT violation's exit information (SDM table 28-7)."""
        q = cpu.exit_qualification
        access = "instruction fetch" if q & 4 else "write" if q & 2 else "read"
        what = "" if q & 0x100 else " of one of its page-table entries"
        return (f"EPT violation: the guest's {access}{what} at guest-physical "
                f"{cpu.guest_physical_address:#010x} (linear {cpu.guest_linear_address:#010x}, "
                f"EIP {cpu.eip:#010x}): no memory of the guest's is there")
