/* Interrupts and exceptions: an IDT of 32-bit interrupt gates, one assembly stub per
   vector (isr.S) and a registry of C handlers. */
#ifndef GUEST_IDT_H
#define GUEST_IDT_H

#include <stdint.h>

/* What the stubs leave on the stack, lowest address first: a handler may change any
   field and the change takes effect at IRET (e.g. advance eip past a faulting insn). */
struct frame {
    uint32_t gs, fs, es, ds;            /* pushed by the common stub (low 16 bits valid) */
    uint32_t edi, esi, ebp, esp_pushad; /* PUSHAD; esp_pushad is not restored by POPAD */
    uint32_t ebx, edx, ecx, eax;
    uint32_t vector;                    /* pushed by the per-vector stub */
    uint32_t error_code;                /* pushed by the CPU, or a dummy 0 by the stub */
    uint32_t eip, cs, eflags;           /* pushed by the CPU (no SS:ESP: ring 0 to ring 0) */
};

/* The interrupted code's ESP: just above the frame the CPU pushed. */
#define FRAME_ESP(f) ((uint32_t)&(f)->eflags + 4)

typedef void (*handler_fn)(struct frame *f);

/* Gate types (present, DPL 0). An interrupt gate clears IF on entry, a trap gate does not. */
#define GATE_INT32  0x8E
#define GATE_TRAP32 0x8F

void idt_install(void);                         /* all 256 vectors -> stubs, LIDT */
uint32_t idt_base(void);                        /* the table's address (limit 256 * 8 - 1) */
void set_handler(int vector, handler_fn fn);    /* fn == 0: back to the default */
void idt_set_gate(int vector, uint32_t offset, uint16_t selector, uint8_t type_attr);
uint32_t idt_stub_address(int vector);          /* the stub idt_install put in a gate */
const char *exception_name(int vector);         /* "#DE", "#GP", ... or "int" */

/* The default handler: prints the frame and exits with EXIT_UNHANDLED. */
#define EXIT_UNHANDLED 3
void dump_frame(const struct frame *f);

#endif
