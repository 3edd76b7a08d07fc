"""The PC's A20 controls: System Control Port A (0x92) and the 8042 keyboard controller's
output port (commands 0xD0/0xD1 at 0x64, data at 0x60), enough for a boot loader to turn A20
on and for a kernel to probe the controller and its keyboard without hanging. Memory is not wrapped at 1 MiB: A20 reads
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
    """The 8042: status at 0x64, data at 0x60, the controller commands a kernel uses to probe
    it (read/write the command byte, self and interface tests, port enables), the output port
    (A20, and bit 0 = 0 or command 0xFE resets the machine), and a keyboard that acknowledges
    its commands. No keys are ever pressed, so a guest polling for one simply sees none."""
    name = "i8042"
    io_size = 1

    def __init__(self, on_reset=lambda: None):
        self.output_port = 0x03             # A20 on, no reset
        self.command_byte = 0x45            # IRQ 1 on, system flag, translation on
        self.pending_command = None         # a controller command waiting for its data byte
        self.out = []                       # bytes waiting at port 0x60
        self.on_reset = on_reset

    def io_read(self, port, size):
        if port == 0x64:                    # status: system flag, last write was a command,
            return 0x14 | (1 if self.out else 0)    # output buffer full if data waits
        return self.out.pop(0) if self.out else 0

    def io_write(self, port, size, value):
        value &= 0xFF
        if port == 0x64:
            self.pending_command = None
            if value == 0x20:               # read the command byte
                self.out.append(self.command_byte)
            elif value in (0x60, 0xD1):     # write the command byte / output port: data next
                self.pending_command = value
            elif value == 0xD0:             # read the output port
                self.out.append(self.output_port)
            elif value == 0xAA:             # controller self test: passed
                self.out.append(0x55)
            elif value in (0xAB, 0xA9):     # keyboard / mouse interface test: no error
                self.out.append(0x00)
            elif value in (0xAD, 0xAE):     # disable / enable the keyboard interface
                self.command_byte = self.command_byte & ~0x10 | (0x10 if value == 0xAD else 0)
            elif value in (0xA7, 0xA8):     # disable / enable the mouse interface
                self.command_byte = self.command_byte & ~0x20 | (0x20 if value == 0xA7 else 0)
            elif value == 0xDD:
                self.output_port &= ~0x02   # A20 off
            elif value == 0xDF:
                self.output_port |= 0x02    # A20 on
            elif value & 0xF0 == 0xF0 and not value & 0x01:
                self.on_reset()             # pulse output line 0: CPU reset
        elif self.pending_command == 0x60:
            self.command_byte = value
            self.pending_command = None
        elif self.pending_command == 0xD1:
            self.pending_command = None
            self.output_port = value | 0x01
            if not value & 0x01:
                self.on_reset()
        elif value == 0xFF:                 # keyboard reset: acknowledged, self test passed
            self.out += [0xFA, 0xAA]
        elif value == 0xF2:                 # identify: an MF2 keyboard
            self.out += [0xFA, 0xAB, 0x83]
        elif value == 0xEE:                 # echo
            self.out.append(0xEE)
        else:
            self.out.append(0xFA)           # any other keyboard command: ACK
