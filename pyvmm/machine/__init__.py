"""The PC around the CPU: memory map, port bus, devices, and booting a kernel."""
from .pc import PC, RunResult

__all__ = ["PC", "RunResult"]
