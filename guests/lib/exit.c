/* Leaving the machine. QEMU's isa-debug-exit device (and pyvmm's equivalent) at port 0xF4
   ends the emulator with process status (code << 1) | 1: exit(0) -> status 1. */
#include "kernel.h"
#include "io.h"

#define DEBUG_EXIT_PORT 0xF4

void exit(int code)
{
    outb(DEBUG_EXIT_PORT, (uint8_t)code);
    /* No exit device (real hardware, or a machine without it): stop here for good.
       With interrupts off, HLT never resumes; the loop covers an NMI. */
    for (;;) {
        cli();
        hlt();
    }
}
