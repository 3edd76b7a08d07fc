"""A 16550A UART (the PC's COM1 at 0x3F8): enough for guests that poll it.

Transmission is instantaneous, so the line-status register always reports the transmitter
empty (THRE and TEMT); the receive side reports Data Ready while host input is waiting.
Registers (offset from the base port; DLAB is bit 7 of the line-control register):
    0  RBR (read) / THR (write)      DLL when DLAB=1
    1  IER                           DLM when DLAB=1
    2  IIR (read) / FCR (write)
    3  LCR   4 MCR   5 LSR   6 MSR   7 SCR
Interrupts towards a PIC arrive with the interrupt controllers; IER is kept but not raised.
"""
import os
import select

LSR_DR = 0x01       # data ready
LSR_THRE = 0x20     # transmit holding register empty
LSR_TEMT = 0x40     # transmitter empty
MCR_LOOP = 0x10


class UART16550:
    name = "uart16550"
    io_size = 1

    def __init__(self, sink, source=None, base=0x3F8):
        self.base = base
        self.sink = sink                # binary file the guest's output goes to
        self.source = source            # binary file (or None) the guest's input comes from
        self.pending = bytearray()      # received, not yet read by the guest
        self.ier = self.lcr = self.mcr = self.scr = 0
        self.dll, self.dlm = 0x0C, 0    # 9600 baud, as after a BIOS
        self.fifo = False
        self.output = bytearray()       # everything transmitted (for tests and reports)

    # -- host side -------------------------------------------------------------------------
    def feed(self, data):
        """Queue bytes for the guest to receive."""
        self.pending += data

    def _poll_source(self):
        if self.pending or self.source is None:
            return
        try:
            fd = self.source.fileno()
            ready, _, _ = select.select([fd], [], [], 0)
            if ready:
                data = os.read(fd, 4096)
                if data:
                    self.pending += data
                else:
                    self.source = None          # end of input
        except (OSError, ValueError):
            self.source = None

    # -- guest side ------------------------------------------------------------------------
    def io_read(self, port, size):
        reg = port - self.base
        dlab = self.lcr & 0x80
        if reg == 0:
            if dlab:
                return self.dll
            self._poll_source()
            if self.pending:
                byte = self.pending[0]
                del self.pending[0]
                return byte
            return 0
        if reg == 1:
            return self.dlm if dlab else self.ier
        if reg == 2:
            return 0xC1 if self.fifo else 0x01          # no interrupt pending
        if reg == 3:
            return self.lcr
        if reg == 4:
            return self.mcr
        if reg == 5:
            self._poll_source()
            return LSR_THRE | LSR_TEMT | (LSR_DR if self.pending else 0)
        if reg == 6:
            if self.mcr & MCR_LOOP:                     # loopback: MCR outputs -> inputs
                m = self.mcr
                return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            return 0xB0                                 # CTS, DSR, DCD asserted
        return self.scr

    def io_write(self, port, size, value):
        reg = port - self.base
        value &= 0xFF
        dlab = self.lcr & 0x80
        if reg == 0:
            if dlab:
                self.dll = value
            elif self.mcr & MCR_LOOP:
                self.pending.append(value)              # loopback: what is sent is received
            else:
                self.output.append(value)
                self.sink.write(bytes([value]))
        elif reg == 1:
            if dlab:
                self.dlm = value
            else:
                self.ier = value & 0x0F
        elif reg == 2:
            self.fifo = bool(value & 1)
        elif reg == 3:
            self.lcr = value
        elif reg == 4:
            self.mcr = value & 0x1F
        elif reg == 7:
            self.scr = value
