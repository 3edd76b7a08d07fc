"""Multiboot v1 loading: put an ELF32 i386 kernel into guest memory the way GRUB or QEMU
(`-kernel`) would, with the information structure and the machine state the spec promises.

Multiboot Specification 0.6.96, section 3: the header must lie in the first 8192 bytes of the
file, 32-bit aligned, with magic 0x1BADB002 and magic + flags + checksum == 0 (mod 2^32).
"""
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002
SEARCH_LIMIT = 8192
AOUT_KLUDGE = 1 << 16

# Where the loader puts its own structures (low memory, below the 640 KiB line, like QEMU,
# whose Multiboot information structure is at 0x9500).
GDT_ADDRESS = 0x0500
INFO_ADDRESS = 0x9500
MMAP_ADDRESS = 0x9600
CMDLINE_ADDRESS = 0x9800
LOADER_NAME_ADDRESS = 0x9F00
LOW_MEMORY_END = 0x9FC00        # conventional memory: 639 KiB, as a PC BIOS reports
FIRMWARE_RESERVED = 0x20000     # SeaBIOS (QEMU's firmware) keeps the top 128 KiB of RAM

# info.flags bits
INFO_MEMORY = 1 << 0
INFO_CMDLINE = 1 << 2
INFO_MEM_MAP = 1 << 6
INFO_LOADER_NAME = 1 << 9

# Flat code (selector 0x08) and data (0x10) descriptors for the state at entry.
GDT = struct.pack("<QQQ", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)


class KernelError(Exception):
    """The file cannot be booted as a Multiboot kernel; the message says why, in one line."""


@dataclass
class Kernel:
    path: str
    entry: int
    segments: list          # [(physical address, file bytes, memory size)]
    flags: int              # the Multiboot header's flags

    @property
    def extent(self):
        return (min(a for a, _, _ in self.segments),
                max(a + m for a, _, m in self.segments))


def read_kernel(path):
    """Parse and check a Multiboot ELF kernel; raises KernelError with a clear message."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise KernelError(f"{path}: cannot read it ({e.strerror})") from None
    if data[:4] != b"\x7fELF":
        raise KernelError(f"{path}: not an ELF file (a Multiboot kernel is an ELF32 i386 executable)")
    flags, header_offset = _find_header(path, data)
    if flags & AOUT_KLUDGE:
        return _kludge_kernel(path, data, flags, header_offset)
    try:
        import io
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
            raise KernelError(f"{path}: an ELF{elf.elfclass} {elf['e_machine']} file, "
                              f"not an ELF32 i386 kernel")
        if elf["e_type"] != "ET_EXEC":
            raise KernelError(f"{path}: an ELF of type {elf['e_type']}, not an executable (ET_EXEC)")
        segments = []
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            if seg["p_filesz"] > seg["p_memsz"]:
                raise KernelError(f"{path}: a segment has more file bytes than memory size")
            segments.append((seg["p_paddr"], seg.data(), seg["p_memsz"]))
        entry = elf["e_entry"]
    except ELFError as e:
        raise KernelError(f"{path}: a damaged ELF file ({e})") from None
    if not segments:
        raise KernelError(f"{path}: the ELF has nothing to load (no PT_LOAD segment)")
    return Kernel(path, entry, segments, flags)


def _find_header(path, data):
    for off in range(0, min(len(data), SEARCH_LIMIT) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == HEADER_MAGIC:
            if (magic + flags + checksum) & 0xFFFFFFFF:
                raise KernelError(f"{path}: Multiboot header at offset {off:#x} has a bad checksum")
            if flags & 0xFFF8:
                # bits 3..15 are "required" features no loader we know of offers
                raise KernelError(f"{path}: Multiboot header asks for features we do not "
                                  f"provide (flags {flags:#010x})")
            return flags, off
    raise KernelError(f"{path}: no Multiboot header in the first {SEARCH_LIMIT} bytes "
                      f"(magic {HEADER_MAGIC:#x})")


def _kludge_kernel(path, data, flags, off):
    """Flag 16: the header itself says where the file goes (the "a.out kludge")."""
    if off + 32 > len(data):
        raise KernelError(f"{path}: Multiboot header (address fields) is cut short")
    header_addr, load_addr, load_end, bss_end, entry = struct.unpack_from("<IIIII", data, off + 12)
    start = off - (header_addr - load_addr)
    if load_addr > header_addr or start < 0:
        raise KernelError(f"{path}: Multiboot address fields are inconsistent")
    end = len(data) if load_end == 0 else start + (load_end - load_addr)
    image = data[start:end]
    memsz = max(len(image), (bss_end - load_addr) if bss_end else 0)
    return Kernel(path, entry, [(load_addr, image, memsz)], flags)


def load(cpu, memory_size, kernel, cmdline="", name=None):
    """Copy the kernel into guest memory and set the CPU up as the Multiboot spec says:
    (the command line the kernel sees is "<kernel path> <cmdline>", as QEMU and GRUB pass it,
    or "<name> <cmdline>")
    EAX = 0x2BADB002, EBX = the information structure, flat CS/DS/ES/FS/GS/SS, IF = 0,
    paging off, EIP = the entry point."""
    low, high = kernel.extent
    if high > memory_size - FIRMWARE_RESERVED:
        raise KernelError(f"{kernel.path}: the kernel occupies {low:#x}-{high:#x} but guest RAM "
                          f"ends at {memory_size:#x} ({memory_size >> 20} MiB); use --memory")
    if low < 0x100000:
        raise KernelError(f"{kernel.path}: the kernel loads at {low:#x}, below 1 MiB, where the "
                          f"loader's own structures and the PC's reserved areas are")
    for address, data, memsz in kernel.segments:
        cpu.mem_write(address, data)
        if memsz > len(data):
            cpu.mem_write(address + len(data), bytes(memsz - len(data)))      # .bss

    # memory map: conventional memory, the reserved BIOS areas, then extended memory
    top = memory_size - FIRMWARE_RESERVED
    regions = [(0, LOW_MEMORY_END, 1), (LOW_MEMORY_END, 0xA0000 - LOW_MEMORY_END, 2),
               (0xF0000, 0x10000, 2), (0x100000, top - 0x100000, 1), (top, FIRMWARE_RESERVED, 2)]
    mmap = b"".join(struct.pack("<IQQI", 20, base, length, kind) for base, length, kind in regions)
    cpu.mem_write(MMAP_ADDRESS, mmap)
    cmd = f"{kernel.path if name is None else name} {cmdline}".encode() + b"\0"
    if len(cmd) > LOADER_NAME_ADDRESS - CMDLINE_ADDRESS:
        raise KernelError(f"the command line is too long ({len(cmd)} bytes)")
    cpu.mem_write(CMDLINE_ADDRESS, cmd)
    cpu.mem_write(LOADER_NAME_ADDRESS, b"pyvmm\0")
    info = bytearray(88)
    struct.pack_into("<IIII", info, 0, INFO_MEMORY | INFO_CMDLINE | INFO_MEM_MAP | INFO_LOADER_NAME,
                     LOW_MEMORY_END >> 10, (top - 0x100000) >> 10, 0)
    struct.pack_into("<I", info, 16, CMDLINE_ADDRESS)
    struct.pack_into("<II", info, 44, len(mmap), MMAP_ADDRESS)
    struct.pack_into("<I", info, 64, LOADER_NAME_ADDRESS)
    cpu.mem_write(INFO_ADDRESS, bytes(info))

    # A GDT with flat code and data, loaded as a real loader would leave it.
    cpu.mem_write(GDT_ADDRESS, GDT)
    cpu.reg_write("gdtr_base", GDT_ADDRESS)
    cpu.reg_write("gdtr_limit", len(GDT) - 1)
    cpu.reg_write("eip", kernel.entry)
    cpu.reg_write("cs", 0x08)
    for seg in ("ds", "es", "fs", "gs", "ss"):
        cpu.reg_write(seg, 0x10)
    for reg in ("ecx", "edx", "esi", "edi", "ebp", "esp"):
        cpu.reg_write(reg, 0)
    cpu.reg_write("eax", BOOTLOADER_MAGIC)
    cpu.reg_write("ebx", INFO_ADDRESS)
    cpu.reg_write("eflags", 0x2)
