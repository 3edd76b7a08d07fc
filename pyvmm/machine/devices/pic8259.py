"""The PC's two 8259A programmable interrupt controllers, cascaded (slave on master IRQ 2).

Enough of the 8259A for PC operating systems: the ICW1-ICW4 initialisation sequence, the
interrupt mask (OCW1), non-specific and specific EOI (OCW2), reading IRR or ISR (OCW3),
edge-triggered inputs with fixed priority (IRQ 0 highest), automatic EOI. The CPU sees one
INTR line (CPU.intr_line) and asks for the vector with an acknowledge cycle (CPU.intr_acknowledge).
"""


class PIC8259:
    """One 8259A."""
    io_size = 1

    def __init__(self, name, base, vector_base, on_change):
        self.name = name
        self.base = base
        self.vector_base = vector_base
        self.on_change = on_change      # called when the output may have changed
        self.irr = 0                    # interrupt request register
        self.isr = 0                    # in-service register
        self.imr = 0xFF                 # everything masked until the guest programs it
        self.lines = 0                  # input levels, for edge detection
        self.init_step = 0              # 0: operating; 2, 3, 4: expecting ICW2, ICW3, ICW4
        self.needs_icw4 = False
        self.single = False
        self.auto_eoi = False
        self.read_isr = False

    # -- the inputs ------------------------------------------------------------------------
    def set_line(self, irq, level):
        bit = 1 << irq
        if level and not self.lines & bit:
            self.irr |= bit                 # a rising edge latches a request
        self.lines = (self.lines | bit) if level else (self.lines & ~bit)
        self.on_change()

    def highest_request(self):
        """The IRQ the 8259A would present now, or -1: the highest-priority unmasked request
        above everything in service."""
        pending = self.irr & ~self.imr & 0xFF
        for irq in range(8):
            bit = 1 << irq
            if self.isr & bit:
                return -1                   # something of higher priority is in service
            if pending & bit:
                return irq
        return -1

    def acknowledge(self, irq):
        bit = 1 << irq
        self.irr &= ~bit
        if not self.auto_eoi:
            self.isr |= bit
        return (self.vector_base + irq) & 0xFF

    # -- the ports ---------------------------------------------------------------------------
    def io_read(self, port, size):
        if port == self.base:
            return self.isr if self.read_isr else self.irr
        return self.imr

    def io_write(self, port, size, value):
        value &= 0xFF
        if port == self.base:
            if value & 0x10:                        # ICW1: start the initialisation
                self.needs_icw4 = bool(value & 0x01)
                self.single = bool(value & 0x02)
                self.imr = self.isr = self.irr = 0
                self.auto_eoi = False
                self.read_isr = False
                self.init_step = 2
            elif value & 0x08:                      # OCW3
                if value & 0x02:
                    self.read_isr = bool(value & 0x01)
            else:                                   # OCW2: end of interrupt
                command = value >> 5
                if command in (1, 5):               # non-specific EOI (and rotate)
                    for irq in range(8):
                        if self.isr & (1 << irq):
                            self.isr &= ~(1 << irq)
                            break
                elif command in (3, 7):             # specific EOI (and rotate)
                    self.isr &= ~(1 << (value & 7))
        else:
            if self.init_step == 2:                 # ICW2: the vector base
                self.vector_base = value & 0xF8
                self.init_step = 0 if self.single and not self.needs_icw4 else (4 if self.single else 3)
            elif self.init_step == 3:               # ICW3: cascade wiring (fixed on a PC)
                self.init_step = 4 if self.needs_icw4 else 0
            elif self.init_step == 4:               # ICW4: 8086 mode, automatic EOI
                self.auto_eoi = bool(value & 0x02)
                self.init_step = 0
            else:                                   # OCW1: the mask
                self.imr = value
        self.on_change()


class PICPair:
    """Master (0x20) and slave (0xA0); the slave's output drives the master's IRQ 2."""

    def __init__(self, on_change):
        self.on_change = on_change      # called when INTR may have changed
        self.master = PIC8259("pic-master", 0x20, 0x08, self.update)
        self.slave = PIC8259("pic-slave", 0xA0, 0x70, self.update)

    def raise_irq(self, irq):
        """A pulse on an IRQ line (edge-triggered ISA interrupt), 0-15."""
        self.set_irq(irq, True)
        self.set_irq(irq, False)

    def set_irq(self, irq, level):
        if irq < 8:
            self.master.set_line(irq, level)
        else:
            self.slave.set_line(irq - 8, level)

    def update(self):
        # cascade: the slave's INT output is the master's IRQ 2 input (as a level)
        slave_wants = self.slave.highest_request() >= 0
        bit = 1 << 2
        if slave_wants and not self.master.lines & bit:
            self.master.irr |= bit
        self.master.lines = (self.master.lines | bit) if slave_wants else (self.master.lines & ~bit)
        if not slave_wants:
            self.master.irr &= ~bit
        self.on_change()

    def pending(self):
        """INTR: the master presents an interrupt."""
        return self.master.highest_request() >= 0

    def acknowledge(self):
        irq = self.master.highest_request()
        if irq < 0:
            vector = self.master.vector_base + 7            # spurious IRQ 7
        elif irq == 2:
            self.master.acknowledge(2)
            sirq = self.slave.highest_request()
            vector = self.slave.acknowledge(sirq) if sirq >= 0 else self.slave.vector_base + 7
        else:
            vector = self.master.acknowledge(irq)
        self.update()
        return vector
