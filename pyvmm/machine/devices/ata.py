"""ATA disks on the primary IDE channel, programmed I/O (ports 0x1F0-0x1F7 and 0x3F6).

Master and slave, LBA28 READ SECTORS (0x20), WRITE SECTORS (0x30), IDENTIFY DEVICE (0xEC)
and FLUSH CACHE (0xE7); the guest polls the status register (no IRQ 14). Each disk is an
image file; with `snapshot` the file is never written and writes stay in memory, as with
QEMU's -snapshot. The data moves only through the guest's own commands.
"""
import os

SECTOR = 512
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
ABRT = 0x04


class Disk:
    def __init__(self, path, snapshot=False):
        self.path = path
        self.snapshot = snapshot
        self.file = open(path, "rb" if snapshot else "r+b")
        self.sectors = os.fstat(self.file.fileno()).st_size // SECTOR
        self.overlay = {}               # lba -> bytes written under --snapshot

    def read(self, lba):
        if lba in self.overlay:
            return self.overlay[lba]
        self.file.seek(lba * SECTOR)
        return self.file.read(SECTOR).ljust(SECTOR, b"\0")

    def write(self, lba, data):
        if self.snapshot:
            self.overlay[lba] = bytes(data)
        else:
            self.file.seek(lba * SECTOR)
            self.file.write(data)

    def flush(self):
        if not self.snapshot:
            self.file.flush()

    def identify(self):
        words = [0] * 256
        words[0] = 0x0040                           # fixed disk
        words[1], words[3], words[6] = 16383, 16, 63
        model = "pyvmm ATA disk".ljust(40)
        for i in range(20):                         # byte-swapped ASCII, as ATA strings are
            words[27 + i] = (ord(model[2 * i]) << 8) | ord(model[2 * i + 1])
        words[47] = 0x8001
        words[49] = 0x0200                          # LBA supported
        total = min(self.sectors, 0x0FFFFFFF)
        words[60], words[61] = total & 0xFFFF, total >> 16
        return b"".join(w.to_bytes(2, "little") for w in words)


class ATAChannel:
    name = "ata-primary"
    io_size = 2                         # the data port moves 16 bits at a time

    def __init__(self, disks):
        self.disks = list(disks) + [None] * (2 - len(disks))      # master, slave
        self.features = self.count = self.lba_low = self.lba_mid = self.lba_high = 0
        self.drive_head = 0xA0
        self.status = DRDY | DSC
        self.error = 0
        self.buffer = bytearray()
        self.pos = 0
        self.writing = None             # (lba, sectors left) while the guest sends data
        self.reading = None             # (lba, sectors left) while the guest takes data

    def disk(self):
        return self.disks[(self.drive_head >> 4) & 1]

    def lba(self):
        return ((self.drive_head & 0x0F) << 24) | (self.lba_high << 16) | (self.lba_mid << 8) | self.lba_low

    # -- ports -----------------------------------------------------------------------------
    def io_read(self, port, size):
        if port == 0x1F0:
            return self.read_data(size)
        if self.disk() is None and port in (0x1F7, 0x3F6):
            return 0                                    # no drive: nothing drives the bus
        return {0x1F1: self.error, 0x1F2: self.count, 0x1F3: self.lba_low,
                0x1F4: self.lba_mid, 0x1F5: self.lba_high, 0x1F6: self.drive_head,
                0x1F7: self.status, 0x3F6: self.status}.get(port, 0xFF)

    def io_write(self, port, size, value):
        if port == 0x1F0:
            return self.write_data(size, value)
        value &= 0xFF
        if port == 0x1F1:
            self.features = value
        elif port == 0x1F2:
            self.count = value
        elif port == 0x1F3:
            self.lba_low = value
        elif port == 0x1F4:
            self.lba_mid = value
        elif port == 0x1F5:
            self.lba_high = value
        elif port == 0x1F6:
            self.drive_head = value | 0xA0
        elif port == 0x1F7:
            self.command(value)
        # 0x3F6 (device control: nIEN, SRST) has nothing to do here

    def fail(self):
        self.error = ABRT
        self.status = DRDY | DSC | ERR
        self.reading = self.writing = None

    def command(self, cmd):
        disk = self.disk()
        self.error = 0
        if disk is None:
            return self.fail()
        count = self.count or 256
        if cmd == 0xEC:                                 # IDENTIFY DEVICE
            self.buffer = bytearray(disk.identify())
            self.pos = 0
            self.reading = (0, 0)
            self.status = DRDY | DSC | DRQ
        elif cmd in (0x20, 0x21):                       # READ SECTORS
            if self.lba() + count > disk.sectors:
                return self.fail()
            self.reading = (self.lba(), count)
            self.next_read_sector()
        elif cmd in (0x30, 0x31):                       # WRITE SECTORS
            if self.lba() + count > disk.sectors:
                return self.fail()
            self.writing = (self.lba(), count)
            self.buffer = bytearray()
            self.status = DRDY | DSC | DRQ
        elif cmd == 0xE7:                               # FLUSH CACHE
            disk.flush()
            self.status = DRDY | DSC
        else:
            self.fail()

    def next_read_sector(self):
        lba, left = self.reading
        self.buffer = bytearray(self.disk().read(lba))
        self.pos = 0
        self.reading = (lba + 1, left - 1)
        self.status = DRDY | DSC | DRQ

    def read_data(self, size):
        if not self.status & DRQ or self.reading is None:
            return 0xFFFF if size == 2 else 0xFF
        value = int.from_bytes(self.buffer[self.pos:self.pos + size], "little")
        self.pos += size
        if self.pos >= len(self.buffer):
            if self.reading[1] > 0:
                self.next_read_sector()
            else:
                self.reading = None
                self.status = DRDY | DSC
        return value

    def write_data(self, size, value):
        if not self.status & DRQ or self.writing is None:
            return
        self.buffer += (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        if len(self.buffer) >= SECTOR:
            lba, left = self.writing
            self.disk().write(lba, bytes(self.buffer[:SECTOR]))
            self.buffer = self.buffer[SECTOR:]
            left -= 1
            self.writing = (lba + 1, left) if left else None
            self.status = DRDY | DSC | (DRQ if left else 0)
