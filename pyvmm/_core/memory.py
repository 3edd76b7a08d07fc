"""Guest-physical memory: RAM frames mapped at page granularity.

A guest-physical address is split into a page number and an offset. `frame_of_page[page]`
names the 4 KiB frame of `backing` that holds the page, or -1 when nothing is mapped
there. This is the level that a later MMIO region or a per-page dirty log hooks into, and
the level the CPU's linear-to-physical step (paging) translates to.

Mapping is sparse, so a harness may map, say, 4 KiB at 0x1000 and 1 MiB at 0xC0000000
(as with Unicorn's `mem_map`) without allocating the space between them.
"""
from array import array

import cython

from .faults import UnmappedMemory

PAGE_SHIFT = 12
PAGE_MASK = 0xFFF
PAGE_SIZE = 4096
ADDRESS_SPACE = 1 << 32


class PhysicalMemory:
    def __init__(self):
        self.backing = bytearray()
        self.ram = self.backing
        self._frame_table = array("i", [-1]) * (ADDRESS_SPACE >> PAGE_SHIFT)
        self.frame_of_page = self._frame_table
        # Self-modifying code: CPUs cache decoded instructions. code_chunks[page] has bit i
        # set when bytes 64*i..64*i+63 of the page hold a decoded instruction; a write there
        # bumps the page's generation, which invalidates every decode taken from the page.
        # Writes to the data parts of a page that also holds code stay cheap.
        self._gen_table = array("I", [0]) * (ADDRESS_SPACE >> PAGE_SHIFT)
        self.page_gen = self._gen_table
        self._code_table = array("Q", [0]) * (ADDRESS_SPACE >> PAGE_SHIFT)
        self.code_chunks = self._code_table
        self.frames = 0
        self.regions = []
        self.mmio = {}

    # -- mapping -------------------------------------------------------------------------
    def map(self, address, size):
        """Map zero-filled RAM at [address, address+size); both must be page aligned.

        Pages already mapped keep their contents (mapping twice is harmless)."""
        if address & PAGE_MASK or size & PAGE_MASK or size <= 0:
            raise ValueError(f"mem_map({address:#x}, {size:#x}): address and size must be "
                             f"non-zero multiples of {PAGE_SIZE:#x}")
        if address < 0 or address + size > ADDRESS_SPACE:
            raise ValueError(f"mem_map({address:#x}, {size:#x}): beyond the 4 GiB physical space")
        first = address >> PAGE_SHIFT
        count = size >> PAGE_SHIFT
        new = [p for p in range(first, first + count) if self._frame_table[p] < 0]
        if new:
            # Growing a bytearray that a typed view points into is not allowed: drop the
            # views, grow, then take them again.
            self.ram = None
            grown = bytearray((self.frames + len(new)) << PAGE_SHIFT)   # zeroed lazily by the OS
            grown[:len(self.backing)] = self.backing
            self.backing = grown
            for p in new:
                self._frame_table[p] = self.frames
                self.frames += 1
            self.ram = self.backing
        self.regions.append((address, size))

    def map_mmio(self, address, size, device):
        """Route guest-physical [address, address+size) to `device` (memory-mapped I/O): the
        CPU calls device.mmio_read(address, size) and device.mmio_write(address, size, value)
        for every access there. The pages must not be RAM."""
        if address & PAGE_MASK or size & PAGE_MASK or size <= 0:
            raise ValueError("MMIO regions are whole pages")
        for page in range(address >> PAGE_SHIFT, (address + size) >> PAGE_SHIFT):
            if self._frame_table[page] >= 0 or page in self.mmio:
                raise ValueError(f"page {page << PAGE_SHIFT:#x} is already RAM or MMIO")
            self.mmio[page] = device

    def code_written(self, page):
        """A page with decoded instructions was written: their decodes are stale now."""
        self.page_gen[page] = (self.page_gen[page] + 1) & 0xFFFFFFFF
        self.code_chunks[page] = 0

    def is_mapped(self, address):
        if address >= ADDRESS_SPACE:
            return False
        return self.frame_of_page[address >> PAGE_SHIFT] >= 0

    # -- bulk access from the host (loader, harness) ----------------------------------------
    def read(self, address, size):
        """Bytes at guest-physical [address, address+size); raises UnmappedMemory."""
        out = bytearray(size)
        done = 0
        while done < size:
            a = address + done
            frame = self._frame(a, size, "read")
            off = a & PAGE_MASK
            n = min(size - done, PAGE_SIZE - off)
            base = (frame << PAGE_SHIFT) + off
            out[done:done + n] = self.backing[base:base + n]
            done += n
        return bytes(out)

    def write(self, address, data):
        """Copy `data` to guest-physical memory at `address`; raises UnmappedMemory and
        then writes nothing at all."""
        data = bytes(data)
        size = len(data)
        for a in range(address & ~PAGE_MASK, address + size, PAGE_SIZE):
            self._frame(max(a, address), size, "write")
        for page in range(address >> PAGE_SHIFT, (address + size + PAGE_MASK) >> PAGE_SHIFT):
            if self.code_chunks[page]:
                self.code_written(page)
        done = 0
        while done < size:
            a = address + done
            frame = self._frame(a, size, "write")
            off = a & PAGE_MASK
            n = min(size - done, PAGE_SIZE - off)
            base = (frame << PAGE_SHIFT) + off
            self.backing[base:base + n] = data[done:done + n]
            done += n

    def _frame(self, address, size, kind):
        if address < 0 or address >= ADDRESS_SPACE:
            raise UnmappedMemory(address, size, kind)
        frame = self._frame_table[address >> PAGE_SHIFT]
        if frame < 0:
            raise UnmappedMemory(address, size, kind)
        return frame
