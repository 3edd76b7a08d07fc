"""Shadow page tables: the page tables the hardware really walks while a guest that turned
paging on runs under a VMM that has no nested paging.

The guest's own tables map guest-linear to guest-physical addresses and are never loaded
into CR3; the VMM builds *shadow* tables (guest-linear to host-physical) in its own memory
and fills them lazily:

* a page fault the hardware takes is *hidden* when the guest's tables do map the address
  with the rights asked for: the VMM walks the guest's tables, sets their accessed (and on
  a write, dirty) bits as the processor would, installs the shadow entry and resumes the
  guest, which never sees the fault; otherwise it is a *true* fault, reflected into the
  guest with its own error code and CR2;
* a shadow entry is writable only once the guest's entry is dirty, so the first write to a
  clean page faults (hidden) and sets the guest's D bit.

Shadows are kept per guest address space (per guest page directory, up to MAX_ROOTS of
them, least recently used dropped first), so a CR3 switch back to an address space finds
its shadow already filled. That is only correct if the VMM learns of every change the
guest makes to its page tables meanwhile, so the guest's page-table pages are
*write-protected*: every shadow entry that maps one is read-only. What happens on a write
is the classic choice (KVM made it in 2008, "unsync" shadow pages):

* trap and emulate every write: exact, but a kernel building a page table (fork) pays an
  exit for every entry; or
* let the first write through and mark the shadow tables built from that page *unsynced*:
  the page becomes writable, and its shadows are brought up to date where the
  architecture says a stale translation must end: an INVLPG drops the one entry it names,
  and the next CR3 load compares the whole table with the guest's (entries that differ
  are dropped) and write-protects the page again.

pyvmm does the second: one *page-table-write trap* per page-table page per CR3 epoch, and
no instruction emulator is needed (the write itself runs on the hardware). The guest's
page directories are not write-protected at all: each shadow table remembers the
directory entry it was built from, checked at the same two points (SDM 4.10.4 lets a
processor cache directory entries until then).

The VMM's own pages (the shadow GDT/IDT and these tables, at the top 4 MiB) are mapped
supervisor-only in every shadow; the guest's truncated segments keep it out. Shadows use
4 KiB pages only: a guest 4 MiB page becomes 1024 shadow entries, filled one at a time.
"""
import struct
from collections import OrderedDict

from .faults import VMMUnsupported

PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
MAX_ROOTS = 8
PHYSICAL = "physical"           # the key of the shadow for a guest with paging off
# The exit count's name for a page fault that stopped the VM (a mapping of memory the
# guest does not have): neither hidden nor the guest's own
STOPPING_FAULT = "page fault (VM stopped)"


class ShadowRoot:
    """The shadow of one guest address space: a directory and its tables."""

    def __init__(self, key, pd):
        self.key = key
        self.pd = pd
        self.tables = {}            # directory index -> ShadowTable


class ShadowTable:
    """A shadow page table, built for one guest directory entry."""
    __slots__ = ("addr", "index", "root", "guest_pde", "source", "filled", "unsynced")

    def __init__(self, addr, index, root, guest_pde, source):
        self.addr = addr            # host-physical address of the shadow table
        self.index = index
        self.root = root
        self.guest_pde = guest_pde  # the guest's directory entry it was built from
        self.source = source        # the guest page table's frame (None: a 4 MiB page)
        self.filled = {}            # slot -> the guest PTE each shadow entry came from
        self.unsynced = False


class ShadowPageTables:
    def __init__(self, cpu, guest_memory, vmm_base, vmm_size, first_free_page, stats,
                 pool_end=None, map_vmm=True):
        self.cpu = cpu
        self.mem = guest_memory
        self.stats = stats
        self.vmm_base = vmm_base
        # a software VMM's own region (its GDT, IDT, these tables) is mapped, supervisor
        # only, at the top of every shadow; a hardware-assisted guest runs at ring 0 and
        # must not see it at all (map_vmm False), and may use those linear addresses
        self.map_vmm = map_vmm
        self.vmm_pt = vmm_base + (first_free_page << 12)         # maps the VMM's 4 MiB
        self.pool_start = self.vmm_pt + 0x1000
        self.pool_end = pool_end or vmm_base + vmm_size
        # guest-physical pages kept read-only in the shadow whatever the guest allows (a
        # binary translator's code pages): a write calls on_protected_write(page) first
        self.protected = set()
        self.on_protected_write = None
        # the VMM's region, mapped supervisor read/write at the top of every shadow
        vmm_pages = vmm_size >> 12
        cpu.mem_write(self.vmm_pt, struct.pack(f"<{vmm_pages}I", *(
            (vmm_base + (i << 12)) | PTE_P | PTE_RW for i in range(vmm_pages))))
        self.roots = OrderedDict()      # key -> ShadowRoot, least recently used first
        self.current = None
        self.watched = {}               # guest page-table frame -> {ShadowTable built from it}
        self.rmap = {}                  # guest frame -> {host address of a shadow entry mapping it}
        self.hidden_faults = 0
        self.true_faults = 0
        self.pt_write_traps = 0
        self.flushes = 0
        self.reuses = 0                 # CR3 loads that found their shadow cached
        self.next_free = self.pool_start
        self.free = []
        self.last_fault = None          # "hidden" or "page-table write", for the exit count

    # -- the shadows ---------------------------------------------------------------------------
    @property
    def root(self):
        return self.current.pd

    @property
    def pages_in_use(self):
        """Shadow page-table pages now built: every cached directory and its tables."""
        return sum(1 + len(r.tables) for r in self.roots.values())

    def _page(self):
        """A zeroed page from the pool (None when it is used up)."""
        if self.free:
            page = self.free.pop()
        elif self.next_free < self.pool_end:
            page = self.next_free
            self.next_free += 0x1000
        else:
            return None
        self.cpu.mem_write(page, bytes(4096))
        return page

    def _release(self, root):
        for table in root.tables.values():
            self._unlink(table)
            self.free.append(table.addr)
        root.tables.clear()
        self.free.append(root.pd)

    def _unlink(self, table):
        if table.source is not None:
            users = self.watched.get(table.source)
            if users is not None:
                users.discard(table)

    def switch(self, guest_cr3):
        """The guest loaded CR3 (or changed paging mode): make the shadow of that address
        space current, reusing a cached one after bringing it up to date."""
        key = PHYSICAL if guest_cr3 is PHYSICAL else guest_cr3 & 0xFFFFF000
        root = self.roots.get(key)
        if root is not None:
            self.reuses += 1
            self.roots.move_to_end(key)
            self._resync_root(root)
        else:
            if len(self.roots) >= MAX_ROOTS:
                _, old = self.roots.popitem(last=False)
                self._release(old)
            pd = self._page()
            if pd is None:
                self._drop_all()
                pd = self._page()
            root = ShadowRoot(key, pd)
            if self.map_vmm:
                self.cpu.mem_write(pd + (self.vmm_base >> 22) * 4,
                                   struct.pack("<I", self.vmm_pt | PTE_P | PTE_RW))
            self.roots[key] = root
        self.current = root
        self.cpu.reg_write("cr3", root.pd)          # (and the hardware TLB is flushed)

    def _drop_all(self):
        for root in self.roots.values():
            self._release(root)
        self.roots.clear()
        self.watched.clear()
        self.rmap.clear()
        self.free.clear()
        self.next_free = self.pool_start
        self.flushes += 1

    def flush(self):
        """Drop every shadow (new WP, PSE or PGE rights change what every entry means) and
        start the current address space afresh."""
        key = self.current.key if self.current is not None else PHYSICAL
        self._drop_all()
        self.current = None
        self.switch(key)

    # -- keeping shadows in step with the guest's tables ---------------------------------------
    def _guest_pde(self, root, index):
        """The guest's directory entry, less the accessed and dirty bits (which the VMM
        itself sets as it fills; they do not change what the shadow table holds)."""
        if root.key is PHYSICAL:
            return None
        return self.mem._u32(root.key | (index << 2)) & ~(PTE_A | PTE_D)

    def _drop_table(self, root, table):
        self.cpu.mem_write(root.pd + table.index * 4, b"\0\0\0\0")
        del root.tables[table.index]
        self._unlink(table)
        self.free.append(table.addr)
        if root is self.current:
            self.cpu.reg_write("cr3", self.cpu.cr3)     # its 4 MiB may be in the TLB

    def _resync_table(self, table):
        """Compare a shadow table with the guest's: drop the entries whose guest entry
        changed. Returns False when the directory entry itself changed (the table is
        dropped)."""
        root = table.root
        if self._guest_pde(root, table.index) != table.guest_pde:
            self._drop_table(root, table)
            return False
        if table.unsynced and table.source is not None:
            guest = struct.unpack("<1024I", self.mem.read_phys(table.source << 12, 4096))
            for slot, was in list(table.filled.items()):
                if guest[slot] != was:
                    self.cpu.mem_write(table.addr + slot * 4, b"\0\0\0\0")
                    del table.filled[slot]
            table.unsynced = False
            self._watch(table.source, table)
        return True

    def _resync_root(self, root):
        for table in list(root.tables.values()):
            self._resync_table(table)

    def _watch(self, frame, table):
        """Write-protect guest page-table page `frame`: every shadow entry mapping it
        loses its R/W bit."""
        users = self.watched.setdefault(frame, set())
        first = not users
        users.add(table)
        if first:
            changed = False
            for addr in self.rmap.get(frame, ()):
                entry = struct.unpack("<I", self.cpu.mem_read(addr, 4))[0]
                if entry & PTE_P and entry & PTE_RW and entry >> 12 == frame:
                    self.cpu.mem_write(addr, struct.pack("<I", entry & ~PTE_RW))
                    changed = True
            if changed:
                self.cpu.reg_write("cr3", self.cpu.cr3)     # no writable translation left

    def _page_table_written(self, frame):
        """The guest's first write to a watched page-table page since it was protected:
        its shadows go out of sync, the page becomes writable."""
        self.pt_write_traps += 1
        for table in self.watched.pop(frame, ()):
            table.unsynced = True

    def invalidate(self, lin):
        """INVLPG: the guest may have changed the entries that map `lin`. A changed
        directory entry drops its shadow table; in a table that is out of sync (or shadows
        a 4 MiB page) the entry for `lin` is dropped, to be filled afresh if still mapped.
        (The table stays out of sync, its page writable, until the next CR3 load.)"""
        root = self.current
        table = root.tables.get(lin >> 22)
        if table is not None:
            if self._guest_pde(root, table.index) != table.guest_pde:
                self._drop_table(root, table)
            elif table.unsynced or table.source is None:
                slot = (lin >> 12) & 0x3FF
                self.cpu.mem_write(table.addr + slot * 4, b"\0\0\0\0")
                table.filled.pop(slot, None)
        self.cpu.tlb_invalidate(lin)

    # -- filling -------------------------------------------------------------------------------
    def _table_for(self, index, guest_pde, source):
        root = self.current
        table = root.tables.get(index)
        if table is not None and table.guest_pde != guest_pde:
            self._drop_table(root, table)       # the directory entry changed meanwhile
            table = None
        if table is None:
            addr = self._page()
            if addr is None:
                self.flush()                     # out of shadow pages: start over
                return self._table_for(index, guest_pde, source)
            table = ShadowTable(addr, index, root, guest_pde, source)
            root.tables[index] = table
            self.cpu.mem_write(root.pd + index * 4, struct.pack("<I", addr | PTE_P | PTE_RW | PTE_US))
            if source is not None:
                self._watch(source, table)
        return table

    def _install(self, table, lin, frame, shadow, guest_entry):
        slot = (lin >> 12) & 0x3FF
        addr = table.addr + slot * 4
        old = struct.unpack("<I", self.cpu.mem_read(addr, 4))[0]
        self.cpu.mem_write(addr, struct.pack("<I", shadow))
        table.filled[slot] = guest_entry
        self.rmap.setdefault(frame, set()).add(addr)
        if old & PTE_P:
            # the hardware TLB may hold the old entry (it never holds a missing one)
            self.cpu.tlb_invalidate(lin)

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
        for addr in self.rmap.get(frame, ()):
            entry = struct.unpack("<I", self.cpu.mem_read(addr, 4))[0]
            if entry & PTE_P and entry & PTE_RW and entry >> 12 == frame:
                self.cpu.mem_write(addr, struct.pack("<I", entry & ~PTE_RW))
        self.cpu.reg_write("cr3", self.cpu.cr3)

    def _writable(self, page, shadow, write):
        """The R/W bit the shadow entry for guest page `page` may have: none while the page
        holds a watched page table (a write to it is the page-table-write trap) or a
        protected code page."""
        frame = page >> 12
        if shadow & PTE_RW and frame in self.watched:
            if not write:
                return shadow & ~PTE_RW
            self._page_table_written(frame)
            self.last_fault = "page-table write"
        return self.apply_protection(page, shadow, write)

    def physical_mode_fault(self, lin, write):
        """The guest has paging off, but the hardware keeps it on (so that pages can be
        protected): guest-linear is guest-physical, every page readable and writable."""
        page = lin & 0xFFFFF000
        if self.map_vmm and (lin >> 22) == (self.vmm_base >> 22):
            raise VMMUnsupported(f"the guest reached {lin:#010x}, inside the VMM's 4 MiB")
        if not self.mem._phys_ok(page, 0x1000):
            self.mem.read_phys(page, 0x1000)             # raises GuestPhysicalError
        entry = page | PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D
        table = self._table_for(lin >> 22, None, None)
        shadow = self._writable(page, entry, write)
        self._install(table, lin, page >> 12, shadow, entry)
        self.hidden_faults += 1
        return None

    def page_fault(self, lin, error_code, user):
        """A #PF the hardware took on the shadow. Returns None when it was hidden (the
        shadow now maps the page; retry the instruction), or the error code of the guest's
        own #PF when its tables refuse the access (reflect it). Raises GuestPhysicalError
        for a mapping of guest-physical memory the guest does not have."""
        write = bool(error_code & 2)
        mem, v = self.mem, self.mem.vcpu
        self.last_fault = "hidden"
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
        if self.map_vmm and (lin >> 22) == (self.vmm_base >> 22):
            raise VMMUnsupported(f"the guest maps {lin:#010x}, inside the VMM's 4 MiB at the "
                                 f"top of the address space")
        mem.translate(lin, write, user)      # the guest's A (and D) bits, as the CPU sets them
        entry = mem._u32(entry_addr)
        pde = mem._u32(pde_addr)
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
        large = entry_addr == pde_addr
        # (the table first: making it may write-protect the very page being mapped)
        table = self._table_for(lin >> 22, pde & ~(PTE_A | PTE_D), None if large else pde >> 12)
        shadow = self._writable(page, shadow, write)
        self._install(table, lin, page >> 12, shadow, entry)
        self.hidden_faults += 1
        return None
