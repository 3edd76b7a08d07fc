"""The 0xE9 debug console of Bochs and QEMU: bytes written there go to the host at once.

Reading the port returns 0xE9, which is how guests detect that it is present."""


class DebugConsole:
    name = "debugcon"
    io_size = 1

    def __init__(self, sink):
        self.sink = sink                # a binary file

    def io_read(self, port, size):
        return 0xE9

    def io_write(self, port, size, value):
        self.sink.write(bytes([value & 0xFF]))
        self.sink.flush()
