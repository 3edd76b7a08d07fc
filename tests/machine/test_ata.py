"""The ATA channel's registers, driven through the port bus as a guest drives them. The
answers are QEMU's (hw/ide) where the ATA standard leaves a choice; the `disk` guest checks
the rest on both machines (tests/machine/test_disk_guest.py)."""
import pytest

from pyvmm.machine.devices import ATAChannel, Disk
from pyvmm.machine.portbus import PortBus

DATA, ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS, CONTROL = \
    0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6


def channel(tmp_path, *sizes):
    disks = []
    for i, sectors in enumerate(sizes):
        path = tmp_path / f"d{i}.img"
        path.write_bytes(b"".join(bytes([lba & 0xFF, i]) * 256 for lba in range(sectors)))
        disks.append(Disk(str(path)))
    bus = PortBus()
    ata = ATAChannel(disks)
    bus.register(ata, 0x1F0, 8)
    bus.register(ata, 0x3F6, 1)
    return bus


def command(bus, cmd, lba=0, count=1, drive=0):
    bus.write(DEVICE, 1, 0xE0 | drive << 4 | (lba >> 24))
    for port, value in ((COUNT, count), (LBA_LOW, lba), (LBA_MID, lba >> 8), (LBA_HIGH, lba >> 16)):
        bus.write(port, 1, value & 0xFF)
    bus.write(STATUS, 1, cmd)
    return bus.read(STATUS, 1)


def test_32_bit_data_transfers(tmp_path):
    bus = channel(tmp_path, 8)
    assert command(bus, 0x20, lba=5) == 0x58
    words = [bus.read(DATA, 4) for _ in range(128)]
    assert words == [0x00050005] * 128 and bus.read(STATUS, 1) == 0x50
    assert command(bus, 0xEC) == 0x58
    identify = b"".join(bus.read(DATA, 2).to_bytes(2, "little") for _ in range(256))
    assert identify[96] & 1                                  # word 48: 32-bit I/O
    assert bus.read(DATA, 2) == 0                            # no data left: 0


def test_no_disk_reads_zero_everywhere(tmp_path):
    bus = channel(tmp_path)
    bus.write(COUNT, 1, 0x55)
    assert [bus.read(p, 1) for p in (ERROR, COUNT, LBA_LOW, DEVICE, STATUS, CONTROL)] == [0] * 6
    assert bus.read(DATA, 2) == 0


def test_absent_slave_is_silent_and_leaves_the_master_alone(tmp_path):
    bus = channel(tmp_path, 8)
    assert command(bus, 0xEC, drive=1) == 0x00 and bus.read(ERROR, 1) == 0x00
    assert bus.read(COUNT, 1) == 1                           # it latches the registers
    bus.write(DEVICE, 1, 0xE0)
    assert bus.read(STATUS, 1) == 0x50 and bus.read(ERROR, 1) == 0x00


def test_registers_follow_the_transfer_and_name_the_failing_sector(tmp_path):
    bus = channel(tmp_path, 8)
    assert command(bus, 0x20, lba=7, count=2) == 0x58        # the last sector comes ...
    assert (bus.read(LBA_LOW, 1), bus.read(COUNT, 1)) == (8, 1)
    for _ in range(256):
        bus.read(DATA, 2)
    assert bus.read(STATUS, 1) == 0x41 and bus.read(ERROR, 1) == 0x04   # ... then ABRT
    assert bus.read(LBA_LOW, 1) == 8


def test_write_past_the_end_takes_the_data_then_fails(tmp_path):
    bus = channel(tmp_path, 8)
    before = (tmp_path / "d0.img").read_bytes()
    assert command(bus, 0x30, lba=8) == 0x58
    for _ in range(256):
        bus.write(DATA, 2, 0xFFFF)
    assert bus.read(STATUS, 1) == 0x41 and bus.read(ERROR, 1) == 0x04
    assert (tmp_path / "d0.img").read_bytes() == before


def test_busy_device_ignores_registers_and_commands(tmp_path):
    bus = channel(tmp_path, 8, 8)
    assert command(bus, 0x20, lba=3) == 0x58
    bus.write(DEVICE, 1, 0xF0)                               # ignored while DRQ is up
    bus.write(STATUS, 1, 0xEC)                               # ignored too
    assert bus.read(DEVICE, 1) == 0xE0 and bus.read(DATA, 2) == 0x0003


@pytest.mark.parametrize("drives", [1, 2])
def test_software_reset_signature(tmp_path, drives):
    bus = channel(tmp_path, *[8] * drives)
    command(bus, 0x20, lba=3)                                # a transfer in progress
    bus.write(CONTROL, 1, 0x06)                              # SRST (and nIEN)
    bus.write(CONTROL, 1, 0x02)
    regs = lambda: [bus.read(p, 1) for p in (STATUS, ERROR, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE)]
    assert regs() == [0x50, 0x01, 1, 1, 0, 0, 0xA0]
    bus.write(DEVICE, 1, 0xB0)
    assert regs() == ([0x50, 0x01, 1, 1, 0, 0, 0xB0] if drives == 2 else [0, 0, 1, 1, 0xFF, 0xFF, 0xB0])


def test_unknown_command_and_nop_abort(tmp_path):
    bus = channel(tmp_path, 8)
    for cmd in (0x00, 0x50, 0xFF):
        assert command(bus, cmd) == 0x41 and bus.read(ERROR, 1) == 0x04
