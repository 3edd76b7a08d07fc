"""The PC's A20 controls: System Control Port A (0x92) and the 8042 keyboard controller's
output port (commands 0xD0/0xD1 at 0x64, data at 0x60), enough for a boot loader to turn A20
on and to probe the controller without hanging. Memory is not wrapped at 1 MiB: A20 reads
back as the guest set it, and addresses above 1 MiB always reach memory."""


class PortA:
    name = "port-92"
    io_size = 1

    def __init__(self, on_reset):
        self.value = 0x02                   # A20 on, as the firmware leaves it
        self.on_reset = on_reset

    def io_read(self, port, size):
        return self.value

    def io_write(self, port, size, value):
        if value & 1:
            self.on_reset()                 # "fast reset"
        self.value = value & 0x02


class KeyboardController:
    name = "i8042"
    io_size = 1

    def __init__(self):
        self.output_port = 0x03             # A20 on, no reset
        self.pending_command = None
        self.out = []                       # bytes waiting at port 0x60

    def io_read(self, port, size):
        if port == 0x64:                    # status: system flag; output full if data waits
            return 0x14 | (1 if self.out else 0)
        return self.out.pop(0) if self.out else 0

    def io_write(self, port, size, value):
        value &= 0xFF
        if port == 0x64:
            if value == 0xD0:               # read the output port
                self.out.append(self.output_port)
            elif value == 0xD1:             # write the output port: next byte at 0x60
                self.pending_command = 0xD1
            elif value == 0xAA:             # self test
                self.out.append(0x55)
            elif value == 0xDD:
                self.output_port &= ~0x02   # A20 off
            elif value == 0xDF:
                self.output_port |= 0x02    # A20 on
        elif self.pending_command == 0xD1:
            self.output_port = value | 0x01
            self.pending_command = None
        elif value == 0xFF:                 # keyboard reset: acknowledged, passed
            self.out += [0xFA, 0xAA]
        else:
            self.out.append(0xFA)           # any other keyboard command: ACK
