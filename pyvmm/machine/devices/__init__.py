"""Device models. Each has `name`, `io_size` (widest access it takes in one piece) and
`io_read(port, size)` / `io_write(port, size, value)`; the PC maps them on the port bus."""
from .ata import ATAChannel, Disk
from .bench_marker import BenchMarker
from .cmos import CMOS
from .debug_console import DebugConsole
from .debug_exit import DebugExit
from .ioapic import IOAPIC
from .lapic import LocalAPIC
from .pic8259 import PIC8259, PICPair
from .pit8254 import PIT8254
from .system_ports import KeyboardController, PortA
from .uart16550 import UART16550
from .vga_text import VGAText

__all__ = ["ATAChannel", "BenchMarker", "Disk", "KeyboardController", "PortA", "CMOS", "DebugConsole", "DebugExit", "IOAPIC", "LocalAPIC", "PIC8259", "PICPair", "PIT8254", "UART16550", "VGAText"]
