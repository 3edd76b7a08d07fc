"""QEMU's isa-debug-exit device: a write of v ends the run with exit status (v << 1) | 1.

With `-device isa-debug-exit,iobase=0xf4,iosize=0x04` QEMU calls exit((v << 1) | 1), so a
guest can never exit 0 through it: that keeps "the guest said so" apart from "QEMU ended".
"""


class DebugExit:
    name = "isa-debug-exit"
    io_size = 4

    def __init__(self, on_exit, base=0xF4):
        self.base = base
        self.on_exit = on_exit          # called with the exit status

    def io_read(self, port, size):
        return (1 << (8 * size)) - 1

    def io_write(self, port, size, value):
        self.on_exit(((value << 1) | 1) & 0xFF)
