"""Shadow page tables: the page tables the hardware really walks while a guest that turned
paging on runs under a software VMM.

The guest's own tables map guest-linear to guest-physical addresses and are never loaded
into CR3; the VMM builds *shadow* tables (guest-linear to host-physical) in its own memory
and fills them lazily. This version treats the shadow as a very large TLB (a "virtual
TLB", the design of the first software VMMs and of early KVM):

* a page fault the hardware takes is *hidden* when the guest's tables do map the address
  with the rights asked for: the VMM walks the guest's tables, sets their accessed (and on
  a write, dirty) bits as the processor would, installs the shadow entry and resumes the
  guest, which never sees the fault; otherwise it is a *true* fault, reflected into the
  guest with its own error code and CR2;
* a shadow entry is writable only once the guest's entry is dirty, so the first write to a
  clean page faults (hidden) and sets the guest's D bit;
* like a TLB, the shadow may go stale when the guest edits its tables: the architecture
  already obliges the guest to INVLPG a changed entry or reload CR3, and those trap, so
  the VMM drops the entry (INVLPG) or the whole shadow (MOV CR3) there;
* the VMM's own pages (the shadow GDT/IDT and these tables, at the top 4 MiB) are mapped
  supervisor-only in every shadow; the guest's truncated segments keep it out.

The shadow uses 4 KiB pages only: a guest 4 MiB page becomes 1024 shadow entries, filled
one at a time as they are touched.
"""
import struct

PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D = 0x1, 0x2, 0x4, 0x20, 0x40


class ShadowPageTables:
    def __init__(self, cpu, guest_memory, vmm_base, vmm_size, first_free_page, stats,
                 pool_end=None):
        self.cpu = cpu
        self.mem = guest_memory
        self.stats = stats
        self.vmm_base = vmm_base
        self.vmm_pt = vmm_base + (first_free_page << 12)         # maps the VMM's 4 MiB
        self.pd = self.vmm_pt + 0x1000                             # the shadow directory
        self.pool_start = self.pd + 0x1000
        self.pool_end = pool_end or vmm_base + vmm_size
        # guest-physical pages kept read-only in the shadow whatever the guest allows (a
        # binary translator's code pages): a write calls on_protected_write(page) first
        self.protected = set()
        self.on_protected_write = None
        # the VMM's region, mapped supervisor read/write at the top of every shadow
        vmm_pages = vmm_size >> 12
        cpu.mem_write(self.vmm_pt, struct.pack(f"<{vmm_pages}I", *(
            (vmm_base + (i << 12)) | PTE_P | PTE_RW for i in range(vmm_pages))))
        self.tables = {}                # guest directory index -> shadow table address
        self.hidden_faults = 0
        self.true_faults = 0
        self.flushes = 0
        self.flush()

    @property
    def root(self):
        return self.pd

    @property
    def pages_in_use(self):
        """Shadow page-table pages now built: the directory and its tables."""
        return 1 + len(self.tables)

    def flush(self):
        """Drop every shadow entry (a guest CR3 load, or the pool running out)."""
        pd = bytearray(4096)
        pd[(self.vmm_base >> 22) * 4:(self.vmm_base >> 22) * 4 + 4] = \
            struct.pack("<I", self.vmm_pt | PTE_P | PTE_RW)
        self.cpu.mem_write(self.pd, bytes(pd))
        self.tables.clear()
        self.next_free = self.pool_start
        self.free = []
        self.cpu.reg_write("cr3", self.cpu.cr3)     # and the hardware TLB
        self.flushes += 1

    def invalidate(self, lin):
        """INVLPG: drop the shadow of the page at `lin` (of its whole 4 MiB if the guest
        maps it with a large page: all 1024 entries came from that one PDE)."""
        index = lin >> 22
        table = self.tables.get(index)
        if table is not None:
            self.cpu.mem_write(table + ((lin >> 12) & 0x3FF) * 4, b"\0\0\0\0")
        self.cpu.reg_write("cr3", self.cpu.cr3)

    def physical_mode_fault(self, lin, write):
        """The guest has paging off, but the hardware keeps it on (so that pages can be
        protected): guest-linear is guest-physical, every page readable and writable."""
        page = lin & 0xFFFFF000
        if (lin >> 22) == (self.vmm_base >> 22):
            from .faults import VMMUnsupported
            raise VMMUnsupported(f"the guest reached {lin:#010x}, inside the VMM's 4 MiB")
        if not self.mem._phys_ok(page, 0x1000):
            self.mem.read_phys(page, 0x1000)             # raises GuestPhysicalError
        shadow = self.apply_protection(page, page | PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D, write)
        table = self._table_for(lin >> 22)
        self.cpu.mem_write(table + ((lin >> 12) & 0x3FF) * 4, struct.pack("<I", shadow))
        self.cpu.reg_write("cr3", self.cpu.cr3)
        self.hidden_faults += 1
        return None

    def apply_protection(self, page, shadow, write):
        if page >> 12 in self.protected and shadow & PTE_RW:
            if write and self.on_protected_write is not None:
                self.on_protected_write(page >> 12)       # (it unprotects the page)
            if page >> 12 in self.protected:
                shadow &= ~PTE_RW
        return shadow

    def protect(self, frame):
        """Keep guest-physical page `frame` read-only from now on (the shadow entries that
        map it lose their R/W bit)."""
        if frame in self.protected:
            return
        self.protected.add(frame)
        want = frame << 12
        for table in self.tables.values():
            entries = struct.unpack("<1024I", self.cpu.mem_read(table, 4096))
            for i, e in enumerate(entries):
                if e & PTE_P and e & PTE_RW and (e & 0xFFFFF000) == want:
                    self.cpu.mem_write(table + 4 * i, struct.pack("<I", e & ~PTE_RW))
        self.cpu.reg_write("cr3", self.cpu.cr3)

    def _table_for(self, index):
        table = self.tables.get(index)
        if table is None:
            if self.free:
                table = self.free.pop()
            elif self.next_free < self.pool_end:
                table = self.next_free
                self.next_free += 0x1000
            else:
                self.flush()                         # out of shadow tables: start over
                return self._table_for(index)
            self.cpu.mem_write(table, bytes(4096))
            self.cpu.mem_write(self.pd + index * 4, struct.pack("<I", table | PTE_P | PTE_RW | PTE_US))
            self.tables[index] = table
        return table

    def page_fault(self, lin, error_code, user):
        """A #PF the hardware took on the shadow. Returns None when it was hidden (the
        shadow now maps the page; retry the instruction), or the error code of the guest's
        own #PF when its tables refuse the access (reflect it). Raises GuestPhysicalError
        for a mapping of guest-physical memory the guest does not have."""
        write = bool(error_code & 2)
        mem, v = self.mem, self.mem.vcpu
        guest_error = (2 if write else 0) | (4 if user else 0)
        if not v.cr0 & 0x80000000:
            return self.physical_mode_fault(lin, write)
        found = mem.walk(lin)
        if found is None:
            self.true_faults += 1
            return guest_error
        page, rights, entry_addr, pde_addr = found
        wp = v.cr0 & 0x10000
        if user:
            allowed = rights & PTE_US and (not write or rights & PTE_RW)
        else:
            allowed = not write or rights & PTE_RW or not wp
        if not allowed:
            self.true_faults += 1
            return guest_error | 1
        if (lin >> 22) == (self.vmm_base >> 22):
            from .faults import VMMUnsupported
            raise VMMUnsupported(f"the guest maps {lin:#010x}, inside the VMM's 4 MiB at the "
                                 f"top of the address space")
        mem.translate(lin, write, user)      # the guest's A (and D) bits, as the CPU sets them
        entry = struct.unpack("<I", mem.read_phys(entry_addr, 4))[0]
        if not mem._phys_ok(page, 0x1000):
            mem.read_phys(page, 0x1000)      # raises GuestPhysicalError with the address
        shadow = page | PTE_P | PTE_A
        dirty = entry & PTE_D
        if rights & PTE_US:
            shadow |= PTE_US
        if dirty and rights & PTE_RW:
            shadow |= PTE_RW | PTE_D
        if dirty and not rights & PTE_RW and not user and write and not wp:
            # CR0.WP=0 lets the guest kernel write a read-only page: writable in the
            # shadow, but then supervisor-only (a user access refaults and restores it)
            shadow = (shadow | PTE_RW | PTE_D) & ~PTE_US
        shadow = self.apply_protection(page, shadow, write)
        table = self._table_for(lin >> 22)
        self.cpu.mem_write(table + ((lin >> 12) & 0x3FF) * 4, struct.pack("<I", shadow))
        self.cpu.reg_write("cr3", self.cpu.cr3)     # the hardware TLB may hold the old entry
        self.hidden_faults += 1
        return None
