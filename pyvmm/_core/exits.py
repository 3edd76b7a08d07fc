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
    VMEXIT = 10         # guest mode: a VM exit (CPU.exit_reason, numbered as in the Intel SDM)


class VMExitReason(enum.IntEnum):
    """Basic exit reasons, as numbered in the Intel SDM (Vol. 3, appendix C)."""
    EXCEPTION_OR_NMI = 0
    EXTERNAL_INTERRUPT = 1
    TRIPLE_FAULT = 2
    INTERRUPT_WINDOW = 7
    CPUID = 10
    HLT = 12
    INVLPG = 14
    RDTSC = 16
    VMCALL = 18
    CR_ACCESS = 28
    MOV_DR = 29
    IO_INSTRUCTION = 30
    RDMSR = 31
    WRMSR = 32
    EPT_VIOLATION = 48
    EPT_MISCONFIG = 49


class VMControl(enum.IntFlag):
    """Primary processor-based VM-execution controls, at their Intel SDM bit positions
    (Vol. 3, 25.6.2). CPUID and VMCALL exit unconditionally in guest mode."""
    INTERRUPT_WINDOW_EXITING = 1 << 2
    HLT_EXITING = 1 << 7
    INVLPG_EXITING = 1 << 9
    RDTSC_EXITING = 1 << 12
    CR3_LOAD_EXITING = 1 << 15
    CR3_STORE_EXITING = 1 << 16
    MOV_DR_EXITING = 1 << 23
    UNCONDITIONAL_IO_EXITING = 1 << 24
    MSR_EXITING = 1 << 28          # (VT-x decides by MSR bitmaps; here every RDMSR/WRMSR)
