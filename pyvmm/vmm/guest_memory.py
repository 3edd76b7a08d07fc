"""The guest's memory as the VMM reaches it: guest-linear addresses are translated by
walking the guest's own page tables in software (as every VMM does to emulate an
instruction or push an exception frame), and guest-physical addresses are checked against
the guest's RAM, so an emulated access can never touch memory outside the guest."""
import struct

from .faults import VirtualFault

PF = 14
PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80


class GuestMemory:
    def __init__(self, cpu, ram_size, vcpu, mmio=()):
        self.cpu = cpu
        self.ram_size = ram_size
        self.vcpu = vcpu              # the virtual CR0/CR3/CR4/CPL the walk uses
        self.mmio = mmio              # (start, end) ranges of the guest's memory-mapped devices

    # -- guest-physical --------------------------------------------------------------------
    def _phys_ok(self, gpa, size):
        if gpa + size <= self.ram_size:
            return True
        return any(start <= gpa and gpa + size <= end for start, end in self.mmio)

    def read_phys(self, gpa, size):
        if gpa + size <= self.ram_size:
            return self.cpu.mem_read(gpa, size)
        if not self._phys_ok(gpa, size):
            raise GuestPhysicalError(gpa, size)
        out = bytearray()
        for at, n, device in self._device_pieces(gpa, size):
            out += (device.mmio_read(at, n) & ((1 << 8 * n) - 1)).to_bytes(n, "little")
        return bytes(out)

    def write_phys(self, gpa, data):
        if gpa + len(data) <= self.ram_size:
            self.cpu.mem_write(gpa, bytes(data))
            return
        if not self._phys_ok(gpa, len(data)):
            raise GuestPhysicalError(gpa, len(data))
        for at, n, device in self._device_pieces(gpa, len(data)):
            device.mmio_write(at, n, int.from_bytes(data[at - gpa:at - gpa + n], "little"))

    def _device_pieces(self, gpa, size):
        """A memory-mapped device's registers, reached as the processor reaches them (the
        CPU's own memory API holds RAM only): in aligned pieces of at most a dword."""
        device = self.cpu.mem.mmio[gpa >> 12]
        at, end = gpa, gpa + size
        while at < end:
            n = min(4 - (at & 3), end - at)
            yield at, n, device
            at += n

    # -- guest-linear ------------------------------------------------------------------------
    def walk(self, lin):
        """The guest's translation of `lin`, without side effects: (guest-physical page
        address, effective R/W and U/S rights, address of the entry that maps it (PTE or
        4 MiB PDE), address of the PDE), or None with the level that was not present."""
        v = self.vcpu
        pde_addr = (v.cr3 & 0xFFFFF000) | ((lin >> 22) << 2)
        pde = self._u32(pde_addr)
        if not pde & PTE_P:
            return None
        if pde & PTE_PS and v.cr4 & 0x10:
            return (pde & 0xFFC00000) | (lin & 0x3FF000), pde & (PTE_RW | PTE_US), pde_addr, pde_addr
        pte_addr = (pde & 0xFFFFF000) | (((lin >> 12) & 0x3FF) << 2)
        pte = self._u32(pte_addr)
        if not pte & PTE_P:
            return None
        return pte & 0xFFFFF000, pde & pte & (PTE_RW | PTE_US), pte_addr, pde_addr

    def translate(self, lin, write=False, user=None):
        """Guest-physical address of guest-linear `lin`, walking the guest's page tables and
        setting their accessed and dirty bits as the processor would (SDM 4.8); a
        translation the guest's tables refuse raises the guest's #PF (the VMM sets CR2
        when it reflects it)."""
        v = self.vcpu
        lin &= 0xFFFFFFFF
        if not v.cr0 & 0x80000000:
            return lin
        if user is None:
            user = v.cpl == 3
        err = (2 if write else 0) | (4 if user else 0)
        found = self.walk(lin)
        if found is None:
            raise GuestPageFault(lin, err)
        page, rights, entry_addr, pde_addr = found
        if not self._allowed(rights, write, user):
            raise GuestPageFault(lin, err | 1)
        if entry_addr != pde_addr:
            pde = self._u32(pde_addr)
            if not pde & PTE_A:
                self._w32(pde_addr, pde | PTE_A)
        entry = self._u32(entry_addr)
        new = entry | PTE_A | (PTE_D if write else 0)
        if new != entry:
            self._w32(entry_addr, new)
        return page | (lin & 0xFFF)

    def _allowed(self, rights, write, user):
        if user:
            return rights & PTE_US and (not write or rights & PTE_RW)
        return not write or rights & PTE_RW or not self.vcpu.cr0 & 0x10000

    def _u32(self, gpa):
        return struct.unpack("<I", self.read_phys(gpa, 4))[0]

    def _w32(self, gpa, value):
        self.write_phys(gpa, struct.pack("<I", value & 0xFFFFFFFF))

    def read(self, lin, size, user=None):
        out = bytearray()
        while size:
            chunk = min(size, 0x1000 - (lin & 0xFFF))
            out += self.read_phys(self.translate(lin, False, user), chunk)
            lin = (lin + chunk) & 0xFFFFFFFF
            size -= chunk
        return bytes(out)

    def fetch(self, lin, size, user=None):
        """Instruction bytes, as the processor fetches them: from RAM only (a device's
        registers are not code; the core stops on a fetch from them)."""
        out = bytearray()
        while size:
            chunk = min(size, 0x1000 - (lin & 0xFFF))
            gpa = self.translate(lin, False, user)
            if gpa + chunk > self.ram_size:
                raise GuestPhysicalError(gpa, chunk)
            out += self.cpu.mem_read(gpa, chunk)
            lin = (lin + chunk) & 0xFFFFFFFF
            size -= chunk
        return bytes(out)

    def write(self, lin, data, user=None):
        data = bytes(data)
        # translate every page first, so a fault leaves memory untouched
        pieces, at = [], 0
        while at < len(data):
            chunk = min(len(data) - at, 0x1000 - ((lin + at) & 0xFFF))
            pieces.append((self.translate((lin + at) & 0xFFFFFFFF, True, user), data[at:at + chunk]))
            at += chunk
        for gpa, piece in pieces:
            self.write_phys(gpa, piece)

    def read_u32(self, lin, user=None):
        return struct.unpack("<I", self.read(lin, 4, user))[0]

    def read_u16(self, lin, user=None):
        return struct.unpack("<H", self.read(lin, 2, user))[0]


class GuestPageFault(VirtualFault):
    """A page fault the guest's own tables give: the VMM reflects it into the guest."""
    def __init__(self, lin, error_code):
        super().__init__(PF, error_code)
        self.lin = lin


class GuestPhysicalError(Exception):
    """An emulated access to guest-physical memory the guest does not have."""
    def __init__(self, gpa, size):
        super().__init__(f"the guest reached for guest-physical {gpa:#010x} (+{size}), "
                         f"outside its memory")
        self.gpa = gpa
