"""Exceptions inside the VMM's emulation of guest instructions."""


class VirtualFault(Exception):
    """The emulated instruction faults *in the guest*: the VMM delivers `vector` (with
    `error_code`, or -1 for none) through the guest's IDT, as the processor would have."""

    def __init__(self, vector, error_code=-1):
        super().__init__(vector, error_code)
        self.vector = vector
        self.error_code = error_code


class GuestTripleFault(Exception):
    """The virtual CPU shut down: a fault while delivering a double fault."""


class VMMUnsupported(Exception):
    """The guest did something this VMM mode does not virtualize (yet): the VM stops with
    this message rather than running on wrongly."""
