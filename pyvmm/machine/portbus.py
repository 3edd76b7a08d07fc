"""The I/O port space: IN/OUT from the CPU, dispatched to the devices that claim ports.

A port nobody claims reads as all ones and ignores writes, as on a PC (the ISA bus floats
high); each such access is counted so `pyvmm run --verbose` can list them.
"""
from collections import Counter


class PortBus:
    def __init__(self):
        self._devices = {}              # port -> device
        self.unclaimed = Counter()      # (direction, port) -> accesses

    def register(self, device, first, count):
        for port in range(first, first + count):
            other = self._devices.get(port)
            if other is not None:
                raise ValueError(f"port {port:#x} is claimed by both {other.name} and {device.name}")
            self._devices[port] = device

    def device_at(self, port):
        return self._devices.get(port)

    # The CPU calls these two (CPU.io).
    def read(self, port, size):
        device = self._devices.get(port)
        if device is None:
            self.unclaimed["in", port] += 1
            return (1 << (8 * size)) - 1
        if size == 1 or device.io_size >= size:
            return device.io_read(port, size)
        # A wide access to a byte-wide device is split into byte accesses, low port first,
        # as the PC's bus does.
        value = 0
        for i in range(size):
            value |= (self.read((port + i) & 0xFFFF, 1) & 0xFF) << (8 * i)
        return value

    def write(self, port, size, value):
        device = self._devices.get(port)
        if device is None:
            self.unclaimed["out", port] += 1
            return
        if size == 1 or device.io_size >= size:
            device.io_write(port, size, value)
            return
        for i in range(size):
            self.write((port + i) & 0xFFFF, 1, (value >> (8 * i)) & 0xFF)
