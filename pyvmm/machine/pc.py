"""A PC-like machine around the CPU: RAM from address 0, COM1, the debug-exit port, the 0xE9
debug console, and a Multiboot loader. `PC.run()` is the machine's main loop: run the CPU,
and decide what each way of stopping means for the machine."""
import struct
import sys
import time
from dataclasses import dataclass, field

from .. import CPU, ExitReason, GuestFault, UnmappedMemory
from ..trace import Tracer
from .devices import (CMOS, IOAPIC, PIT8254, ATAChannel, BenchMarker, DebugConsole, DebugExit, Disk,
                      KeyboardController, LocalAPIC, PICPair, PortA, UART16550, VGAText)
from .devices.ioapic import BASE as IOAPIC_BASE
from .clock import HostClock, InstructionClock
from .firmware import mp_tables
from .devices.lapic import BASE as LAPIC_BASE
from .multiboot import KernelError, load, read_kernel
from .portbus import PortBus

DEFAULT_MEMORY = 128 << 20
FIRMWARE_STUBS = 0xF0000        # real-mode interrupt stubs (the PC BIOS's segment F000)
FIRMWARE_TRAP_PORT = 0x510      # the stubs report here which service was asked for      # QEMU's default, so mem_upper matches what guests see there

# `pyvmm run` exit statuses. A guest's own status through isa-debug-exit is (v << 1) | 1,
# always odd; the machine's verdicts are even so the two never mix.
STATUS_HALTED = 0
STATUS_BUDGET = 2
STATUS_CRASHED = 4


class FirmwareTrap:
    """Where the boot-time interrupt stubs land: the guest asked for a BIOS service (or took
    a real-mode exception) that pyvmm's firmware does not provide."""
    name = "firmware"
    io_size = 1

    def __init__(self, pc):
        self.pc = pc

    def io_read(self, port, size):
        return 0xFF

    def io_write(self, port, size, value):
        self.pc._stop(f"the boot code asked for INT {value & 0xFF:#04x}, a BIOS service "
                      f"pyvmm's firmware does not provide (there are none: boot code must "
                      f"drive the hardware itself)")


@dataclass
class RunResult:
    reason: str                     # "exit", "halt", "budget", "triple-fault", "unmapped"
    status: int                     # the process exit status for this outcome
    instructions: int
    seconds: float
    message: str = ""
    unclaimed_ports: dict = field(default_factory=dict)

    @property
    def mips(self):
        return self.instructions / self.seconds / 1e6 if self.seconds > 0 else 0.0


class PC:
    def __init__(self, memory=DEFAULT_MEMORY, console=None, console_input=None, debugcon=None,
                 cpu_class=CPU, disks=(), snapshot=False, realtime=False, hypervisor_memory=None):
        if memory < (2 << 20) or memory % 4096:
            raise ValueError("guest memory must be at least 2 MiB and a multiple of 4 KiB")
        self.memory_size = memory
        self.cpu = cpu_class()
        if hypervisor_memory is not None:
            # (base, size) for a software VMM's own memory, mapped first: mapping it after
            # the guest's RAM would copy all of that RAM once more
            self.cpu.mem_map(*hypervisor_memory)
        self.cpu.mem_map(0, memory)
        # Guest time for every device: the instruction count, or the host's clock.
        self.clock = (HostClock if realtime else InstructionClock)(self.cpu)
        self.ports = PortBus()
        self.cpu.io = self.ports
        self.uart = UART16550(console if console is not None else sys.stdout.buffer, console_input)
        self.ports.register(self.uart, 0x3F8, 8)
        self.debug_exit = DebugExit(self._guest_exit)
        self.ports.register(self.debug_exit, 0xF4, 4)
        self.debugcon = DebugConsole(debugcon if debugcon is not None else sys.stderr.buffer)
        self.ports.register(self.debugcon, 0xE9, 1)
        # Interrupt controllers: the local APIC's interrupts first, then the 8259A's.
        self.pic = PICPair(self.update_intr)
        self.lapic = LocalAPIC(self.clock.now, self.update_intr, self.cpu.request_exit)
        self.cpu.mmio_map(LAPIC_BASE, 0x1000, self.lapic)
        self.cpu.intr_acknowledge = self.acknowledge_interrupt
        self.cpu.apic_present = True
        self.ioapic = IOAPIC(self.lapic.accept)
        self.cpu.mmio_map(IOAPIC_BASE, 0x1000, self.ioapic)
        self.ports.register(self.pic.master, 0x20, 2)
        self.ports.register(self.pic.slave, 0xA0, 2)
        # A reprogrammed timer ends the CPU's current run so the next deadline is seen.
        self.pit = PIT8254(self.clock.now, lambda: self.raise_irq(0),
                           self.cpu.request_exit)
        self.ports.register(self.pit, 0x40, 4)
        self.timers = [self.pit, self.lapic]    # devices with events at an instruction count
        self.cmos = CMOS(self.clock.seconds, memory, self.clock.epoch)
        self.ports.register(self.cmos, 0x70, 2)
        self.disks = [Disk(path, snapshot) for path in disks]
        self.ata = ATAChannel(self.disks)
        self.ports.register(self.ata, 0x1F0, 8)
        self.ports.register(self.ata, 0x3F6, 1)
        self.port_a = PortA(lambda: self._stop("the guest reset the machine (port 0x92)"))
        self.ports.register(self.port_a, 0x92, 1)
        self.kbc = KeyboardController(lambda: self._stop("the guest reset the machine "
                                                         "(keyboard controller)"))
        self.ports.register(self.kbc, 0x60, 1)
        self.ports.register(self.kbc, 0x64, 1)
        self.vga = VGAText(self.cpu.mem_read)
        self.ports.register(self.vga, 0x3D4, 2)
        self.firmware_trap = FirmwareTrap(self)
        self.ports.register(self.firmware_trap, FIRMWARE_TRAP_PORT, 1)
        # Benchmark brackets (guests/nanobench): marks with the instruction counts, listeners.
        self.bench_marker = BenchMarker(lambda: self.cpu.icount)
        self.ports.register(self.bench_marker, 0x504, 4)
        self.stop_message = None
        self.exit_status = None
        self.vmm = None                 # a hypervisor between the CPU and the guest, if any

    def mmio_ranges(self):
        """Guest-physical ranges of the memory-mapped devices (beyond RAM)."""
        return [(LAPIC_BASE, LAPIC_BASE + 0x1000), (IOAPIC_BASE, IOAPIC_BASE + 0x1000)]

    def guest_if(self):
        """The guest's interrupt flag (a VMM keeps it virtually)."""
        if self.vmm is not None:
            return self.vmm.interrupts_enabled()
        return bool(self.cpu.reg_read("eflags") & 0x200)

    def _stop(self, message):
        self.stop_message = message
        self.cpu.request_exit()

    def boot_disk(self):
        """Boot as a PC BIOS does: sector 0 of the first disk at 0x7C00, in real mode, CS:IP
        0000:7C00, DL = 0x80. There are no BIOS services: every interrupt vector points at a
        stub that stops the run naming the service the boot code asked for."""
        if not self.disks:
            raise KernelError("no disk to boot from (--disk IMAGE)")
        sector = self.disks[0].read(0)
        if sector[510:512] != b"\x55\xaa":
            raise KernelError(f"{self.disks[0].path}: sector 0 is not bootable (no 55 AA signature)")
        for vector in range(256):
            stub = bytes([0xB0, vector, 0xBA, FIRMWARE_TRAP_PORT & 0xFF, FIRMWARE_TRAP_PORT >> 8,
                          0xEE, 0xF4, 0x90])              # mov al, v; mov dx, port; out; hlt
            self.cpu.mem_write(FIRMWARE_STUBS + vector * 8, stub)
            self.cpu.mem_write(vector * 4, struct.pack("<HH", vector * 8, FIRMWARE_STUBS >> 4))
        self.write_firmware_tables()
        self.cpu.mem_write(0x7C00, sector)
        self.cpu.reset_real_mode(0, 0x7C00)
        self.cpu.reg_write("edx", 0x80)
        self.cpu.reg_write("esp", 0x7C00)

    def _guest_exit(self, status):
        self.exit_status = status
        self.cpu.request_exit()

    def boot_multiboot(self, path, cmdline="", name=None):
        """Load a Multiboot ELF kernel and set the CPU up to enter it (KernelError if not).
        `name` is the kernel's name on its own command line (default: `path`)."""
        kernel = read_kernel(path)
        load(self.cpu, self.memory_size, kernel, cmdline, name)
        self.write_firmware_tables()
        return kernel

    def run(self, max_instructions=None, trace=None):
        """Run until the guest exits, halts for good, crashes or uses up the budget."""
        cpu = self.cpu
        start_count = cpu.icount
        budget = start_count + max_instructions if max_instructions else (1 << 63)
        tracer = Tracer(cpu, trace) if trace is not None else None
        engine = self.vmm if self.vmm is not None else cpu
        t0 = time.perf_counter()
        try:
            while True:
                # Run up to the next device event (a timer interrupt): by default time is
                # the instruction count, so every run sees its interrupts at the same points.
                stop = self.clock.slice_end(self.next_event(), budget)
                reason = tracer.run(stop) if tracer else ExitReason(engine.run(stop))
                self.advance_devices()
                if reason == ExitReason.REQUEST and self.exit_status is not None:
                    return self._result("exit", self.exit_status, t0, start_count)
                if reason == ExitReason.REQUEST and self.stop_message is not None:
                    return self._result("stopped", STATUS_CRASHED, t0, start_count, self.stop_message)
                if reason == ExitReason.HLT:
                    if cpu.intr_line and self.guest_if():
                        continue                        # an interrupt is ready: it wakes the CPU
                    event = self.next_event()
                    # (the budget counts instructions; only deterministic time spends it halted)
                    if not self.guest_if() or event is None or \
                            (not self.clock.realtime and event >= budget):
                        why = "with interrupts disabled" if not self.guest_if() \
                            else "and no device will interrupt it"
                        return self._result("halt", STATUS_HALTED, t0, start_count,
                                            f"the guest halted at EIP={cpu.eip:#010x} {why}")
                    self.clock.wait(event)              # a halted CPU lets time pass
                    self.advance_devices()
                    continue
                if reason == ExitReason.COUNT:
                    if cpu.icount < budget:
                        continue                        # a device event, not the budget
                    return self._result("budget", STATUS_BUDGET, t0, start_count,
                                        f"stopped after {cpu.icount - start_count:,} instructions "
                                        f"(--max-instructions) at EIP={cpu.eip:#010x}")
                if reason == ExitReason.TRIPLE_FAULT:
                    return self._result("triple-fault", STATUS_CRASHED, t0, start_count,
                                        f"triple fault, machine shut down: {cpu.last_exit}")
                if reason == ExitReason.UNSUPPORTED:
                    return self._result("unsupported", STATUS_CRASHED, t0, start_count,
                                        f"stopped: {cpu.last_exit}")
                if reason == ExitReason.UNMAPPED:
                    return self._result("unmapped", STATUS_CRASHED, t0, start_count,
                                        f"stopped: {cpu.last_exit}")
        finally:
            self.uart.sink.flush()

    def raise_irq(self, irq):
        """An ISA interrupt: to the 8259A, and to the I/O APIC pin the MP table names."""
        self.pic.raise_irq(irq)
        self.ioapic.raise_pin(2 if irq == 0 else irq)

    def write_firmware_tables(self):
        """The MP tables a PC BIOS leaves below 1 MiB (one CPU, ISA, the I/O APIC)."""
        for address, data in mp_tables(0x521, 0x0000A33C):
            self.cpu.mem_write(address, data)

    def update_intr(self):
        self.cpu.intr_line = self.lapic.pending() >= 0 or self.pic.pending()

    def acknowledge_interrupt(self):
        """The CPU's INTA cycle: the local APIC's vector if it has one, else the PIC's."""
        if self.lapic.pending() >= 0:
            return self.lapic.acknowledge()
        return self.pic.acknowledge()

    def next_event(self):
        events = [t for t in (timer.next_event() for timer in self.timers) if t is not None]
        return min(events) if events else None

    def advance_devices(self):
        now = self.clock.now()
        for timer in self.timers:
            timer.advance(now)

    def _result(self, reason, status, t0, start_count, message=""):
        return RunResult(reason, status, self.cpu.icount - start_count,
                         time.perf_counter() - t0, message, dict(self.ports.unclaimed))
