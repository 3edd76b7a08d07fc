/* IDT setup and the C side of interrupt dispatch. */
#include "idt.h"
#include "gdt.h"
#include "kernel.h"

struct __attribute__((packed)) gate {
    uint16_t offset_lo;
    uint16_t selector;
    uint8_t zero;
    uint8_t type_attr;          /* P, DPL, 0, type (0xE = 32-bit interrupt gate) */
    uint16_t offset_hi;
};

static struct gate idt[256] __attribute__((aligned(8)));
static handler_fn handlers[256];

extern const uint32_t isr_stub_table[256];     /* isr.S */

static const char *const names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
    "#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23",
    "#24", "#25", "#26", "#27", "#28", "#29", "#30", "#31",
};

const char *exception_name(int vector)
{
    return (vector >= 0 && vector < 32) ? names[vector] : "int";
}

void idt_set_gate(int vector, uint32_t offset, uint16_t selector, uint8_t type_attr)
{
    idt[vector].offset_lo = offset & 0xFFFF;
    idt[vector].selector = selector;
    idt[vector].zero = 0;
    idt[vector].type_attr = type_attr;
    idt[vector].offset_hi = offset >> 16;
}

uint32_t idt_base(void)
{
    return (uint32_t)idt;
}

uint32_t idt_stub_address(int vector)
{
    return isr_stub_table[vector];
}

void idt_install(void)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint32_t base;
    } idtr = { sizeof(idt) - 1, (uint32_t)idt };

    for (int v = 0; v < 256; v++)
        idt_set_gate(v, isr_stub_table[v], KERNEL_CS, GATE_INT32);
    __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
}

void set_handler(int vector, handler_fn fn)
{
    handlers[vector & 0xFF] = fn;
}

void dump_frame(const struct frame *f)
{
    printf("vector %u (%s) error %08x at %04x:%08x eflags %08x\n",
           f->vector, exception_name(f->vector), f->error_code, f->cs & 0xFFFF, f->eip,
           f->eflags);
    printf("eax %08x ebx %08x ecx %08x edx %08x\n", f->eax, f->ebx, f->ecx, f->edx);
    printf("esi %08x edi %08x ebp %08x esp %08x\n", f->esi, f->edi, f->ebp, FRAME_ESP(f));
    printf("ds %04x es %04x fs %04x gs %04x\n",
           f->ds & 0xFFFF, f->es & 0xFFFF, f->fs & 0xFFFF, f->gs & 0xFFFF);
}

/* Called by isr_common (isr.S) with interrupts off. */
void isr_dispatch(struct frame *f)
{
    handler_fn fn = handlers[f->vector & 0xFF];
    if (fn) {
        fn(f);
        return;
    }
    printf("unhandled ");
    dump_frame(f);
    exit(EXIT_UNHANDLED);
}
