"""What a PC's firmware leaves in memory for the OS: the Intel MultiProcessor Specification
1.4 tables (a floating pointer and a configuration table: one CPU, the ISA bus, the I/O APIC
and where every ISA IRQ arrives on it), in the BIOS area below 1 MiB."""
import struct

MP_FLOATING = 0xF7FF0           # the floating pointer ("_MP_"), 16-byte aligned, F0000-FFFFF
MP_TABLE = 0xF8000              # the configuration table ("PCMP")


def checksum(data):
    return (-sum(data)) & 0xFF


def mp_tables(cpu_signature, cpu_features, lapic=0xFEE00000, ioapic=0xFEC00000):
    """(address, bytes) pairs for the MP floating pointer and configuration table."""
    entries = [
        # processor: LAPIC id 0, version 0x14, enabled + bootstrap processor
        struct.pack("<BBBBII8x", 0, 0, 0x14, 0x03, cpu_signature, cpu_features),
        struct.pack("<BB6s", 1, 0, b"ISA   "),                    # bus 0: ISA
        struct.pack("<BBBBI", 2, 1, 0x11, 0x01, ioapic),           # I/O APIC id 1, enabled
    ]
    for irq in range(16):                                          # ISA IRQs -> I/O APIC pins
        if irq == 2:
            continue                                               # the PIC cascade
        pin = 2 if irq == 0 else irq
        entries.append(struct.pack("<BBHBBBB", 3, 0, 0, 0, irq, 1, pin))
    entries.append(struct.pack("<BBHBBBB", 4, 3, 0, 0, 0, 0xFF, 0))    # ExtINT -> LINT0
    entries.append(struct.pack("<BBHBBBB", 4, 1, 0, 0, 0, 0xFF, 1))    # NMI -> LINT1
    body = b"".join(entries)
    header = bytearray(struct.pack("<4sHBB8s12sIHHIHBx", b"PCMP", 44 + len(body), 4, 0,
                                   b"PYVMM   ", b"PC          ", 0, 0, len(entries), lapic, 0, 0))
    table = bytearray(header + body)
    table[7] = checksum(table)
    floating = bytearray(struct.pack("<4sIBBBB4x", b"_MP_", MP_TABLE, 1, 4, 0, 0))
    floating[10] = checksum(floating)
    return [(MP_FLOATING, bytes(floating)), (MP_TABLE, bytes(table))]
