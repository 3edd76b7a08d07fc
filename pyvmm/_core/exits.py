"""Why the CPU's run loop returned control to its caller (a harness or a VMM)."""
import enum


class ExitReason(enum.IntEnum):
    COUNT = 1           # the instruction budget is used up
    UNTIL = 2           # EIP reached the harness's `until` address
    HLT = 3             # HLT, and nothing can wake the CPU
    EXCEPTION = 4       # an exception vector the VMM intercepts (CPU.exception_intercept)
    TRIPLE_FAULT = 5    # shutdown: a fault while delivering #DF (details in CPU.last_exit)
    UNMAPPED = 6        # an access to guest-physical memory with nothing behind it
    REQUEST = 7         # a device or the host asked the CPU to stop (CPU.request_exit)
    UNSUPPORTED = 8     # the guest asked for something this CPU does not implement yet
    INTERRUPT = 9       # INTR is up and IF set, with CPU.interrupt_exiting on: the VMM takes it
