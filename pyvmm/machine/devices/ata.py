"""ATA disks on the primary IDE channel, programmed I/O (ports 0x1F0-0x1F7 and 0x3F6).

Master and slave, LBA28 READ SECTORS (0x20), WRITE SECTORS (0x30), IDENTIFY DEVICE (0xEC)
and FLUSH CACHE (0xE7); a software reset through the device control register (SRST); the
guest polls the status register (no IRQ 14). Each disk is an image file; with `snapshot`
the file is never written and writes stay in memory, as with QEMU's -snapshot. The data
moves only through the guest's own commands.

Where the ATA standard leaves the device a choice, this one answers as QEMU's IDE disk
does, so a guest sees the same registers on both machines:

* both devices latch every write to the command block (0x1F1-0x1F6) and keep their own
  copy; reads come from the selected device. While it has BSY or DRQ set, those writes
  and any new command are ignored.
* an absent device 1 reads 00 in its status and error registers and ignores commands;
  with no disk at all, every register reads 00.
* the LBA and sector count registers advance as sectors move, so after an error they name
  the first sector that failed. A sector past the end of the disk fails when it is reached
  (a READ that crosses the end delivers the sectors before it; a WRITE takes the data
  first): status DRDY|ERR (0x41), error ABRT (0x04). So does any command not implemented.
* the data port moves 16 or 32 bits at a time (IDENTIFY word 48 says so); read with no
  data to deliver, it gives 0.
"""
import os

SECTOR = 512
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
ABRT = 0x04
NIEN, SRST = 0x02, 0x04                 # device control register (0x3F6) bits

IDENTIFY, READ_SECTORS, WRITE_SECTORS, FLUSH_CACHE = 0xEC, 0x20, 0x30, 0xE7


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
        words[48] = 0x0001                          # 32-bit data transfers
        words[49] = 0x0200                          # LBA supported
        total = min(self.sectors, 0x0FFFFFFF)
        words[60], words[61] = total & 0xFFFF, total >> 16
        # Command sets (valid when bit 14 is 1 and bit 15 is 0): FLUSH CACHE, enabled.
        words[83], words[84] = 0x4000 | 0x1000, 0x4000
        words[86], words[87] = 0x1000, 0x4000
        return b"".join(w.to_bytes(2, "little") for w in words)


class Device:
    """One device's registers: its copy of the command block, status, error, and the
    transfer in progress."""

    def __init__(self, disk):
        self.disk = disk
        self.features = self.count = self.lba_low = self.lba_mid = self.lba_high = 0
        self.device = 0xA0
        self.status = DRDY | DSC if disk is not None else 0
        self.error = 0
        self.buffer = bytearray()
        self.pos = 0
        self.transfer = None            # "in" (device to host) or "out" while DRQ is set
        self.command = None             # READ_SECTORS or WRITE_SECTORS in progress
        self.left = 0                   # sectors still to move, the current one included

    def lba(self):
        return ((self.device & 0x0F) << 24) | (self.lba_high << 16) | (self.lba_mid << 8) | self.lba_low

    def set_lba(self, lba):
        self.device = (self.device & 0xF0) | ((lba >> 24) & 0x0F)
        self.lba_high, self.lba_mid, self.lba_low = (lba >> 16) & 0xFF, (lba >> 8) & 0xFF, lba & 0xFF

    def reset(self):
        """Software reset: the signature of an ATA device (or of none), diagnostic code 01."""
        self.count = self.lba_low = 1
        self.lba_mid = self.lba_high = 0x00 if self.disk is not None else 0xFF
        self.features = 0
        self.device = 0xA0
        self.error = 0x01
        self.status = DRDY | DSC
        self.stop()

    def stop(self):
        self.transfer = self.command = None
        self.buffer = bytearray()
        self.pos = self.left = 0

    def abort(self):
        self.stop()
        self.status = DRDY | ERR
        self.error = ABRT

    def execute(self, cmd):
        self.status = DRDY
        self.error = 0
        if cmd == IDENTIFY:
            self.start("in", bytearray(self.disk.identify()))
        elif cmd in (READ_SECTORS, READ_SECTORS + 1):           # (+1: without retries)
            self.command, self.left = READ_SECTORS, self.count or 256
            self.next_read()
        elif cmd in (WRITE_SECTORS, WRITE_SECTORS + 1):
            self.command, self.left = WRITE_SECTORS, self.count or 256
            self.start("out", bytearray())
        elif cmd == FLUSH_CACHE:
            self.disk.flush()
            self.status = DRDY | DSC
        else:
            self.abort()

    def start(self, direction, buffer):
        self.transfer, self.buffer, self.pos = direction, buffer, 0
        self.status = DRDY | DSC | DRQ

    def done(self):
        self.stop()
        self.status = DRDY | DSC

    def next_read(self):
        lba = self.lba()
        if lba >= self.disk.sectors:
            return self.abort()
        data = self.disk.read(lba)
        self.set_lba(lba + 1)                       # the registers follow the transfer
        self.left -= 1
        self.count = self.left & 0xFF
        self.start("in", bytearray(data))

    def sector_written(self, data):
        lba = self.lba()
        if lba >= self.disk.sectors:
            return self.abort()
        self.disk.write(lba, data)
        self.set_lba(lba + 1)
        self.left -= 1
        self.count = self.left & 0xFF
        if self.left:
            self.buffer, self.pos = bytearray(), 0
            self.status = DRDY | DSC | DRQ
        else:
            self.done()

    def read_data(self, size):
        if self.transfer != "in":
            return 0
        value = int.from_bytes(self.buffer[self.pos:self.pos + size], "little")
        self.pos += size
        if self.pos >= len(self.buffer):
            if self.command == READ_SECTORS and self.left:
                self.next_read()
            else:
                self.done()
        return value

    def write_data(self, size, value):
        if self.transfer != "out":
            return
        self.buffer += (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        if len(self.buffer) >= SECTOR:
            self.sector_written(bytes(self.buffer[:SECTOR]))


class ATAChannel:
    name = "ata-primary"
    io_size = 4                         # the data port moves 16 or 32 bits at a time

    def __init__(self, disks):
        disks = list(disks) + [None] * (2 - len(disks))
        self.devices = [Device(disk) for disk in disks[:2]]          # master, slave
        self.unit = 0                   # the selected device (the DEV bit of 0x1F6)
        self.control = 0                # the device control register (nIEN, SRST)

    @property
    def disks(self):
        return [d.disk for d in self.devices]

    def selected(self):
        return self.devices[self.unit]

    def no_drives(self):
        return all(d.disk is None for d in self.devices)

    # -- ports -----------------------------------------------------------------------------
    def io_read(self, port, size):
        if port == 0x1F0:
            return 0 if self.no_drives() else self.selected().read_data(size)
        value = 0
        for i in range(size):                       # a wide access: one register per byte
            value |= self.read_register(port + i) << (8 * i)
        return value

    def read_register(self, port):
        device = self.selected()
        if self.no_drives():
            return 0 if port in (0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6) else 0xFF
        if port in (0x1F1, 0x1F7, 0x3F6) and device.disk is None:
            return 0                                # an absent device 1: device 0 answers 00
        return {0x1F1: device.error, 0x1F2: device.count, 0x1F3: device.lba_low,
                0x1F4: device.lba_mid, 0x1F5: device.lba_high, 0x1F6: device.device,
                0x1F7: device.status, 0x3F6: device.status}.get(port, 0xFF)

    def io_write(self, port, size, value):
        if port == 0x1F0:
            return self.selected().write_data(size, value)
        for i in range(size):
            self.write_register(port + i, (value >> (8 * i)) & 0xFF)

    def write_register(self, port, value):
        if port == 0x3F6:
            if value & SRST and not self.control & SRST:
                for device in self.devices:
                    device.reset()
            self.control = value
            return
        if port == 0x1F7:
            return self.command(value)
        if self.selected().status & (BSY | DRQ):
            return                                  # busy with a command: ignored
        for device in self.devices:                 # both devices latch the command block
            if port == 0x1F1:
                device.features = value
            elif port == 0x1F2:
                device.count = value
            elif port == 0x1F3:
                device.lba_low = value
            elif port == 0x1F4:
                device.lba_mid = value
            elif port == 0x1F5:
                device.lba_high = value
        if port == 0x1F6:
            self.unit = (value >> 4) & 1
            self.devices[0].device = (value & ~0x10) | 0xA0
            self.devices[1].device = value | 0xB0

    def command(self, cmd):
        device = self.selected()
        if device.disk is None or device.status & (BSY | DRQ):
            return                                  # nobody there, or busy: ignored
        device.execute(cmd)
