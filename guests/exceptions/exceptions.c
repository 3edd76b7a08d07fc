/*
 * Exception delivery: provoke one exception after another (triggers.S), handle each one
 * through the IDT, print what the CPU reported (vector, error code, saved EIP relative
 * to the instruction that caused it) and carry on past it.
 */
#include "kernel.h"

#define CASE(name, vec) { #name, vec, trigger_##name, name##_site, name##_resume }
#define DECLARE(name) \
    extern void trigger_##name(void); \
    extern const char name##_site[], name##_resume[]

DECLARE(de); DECLARE(de_overflow); DECLARE(db); DECLARE(bp); DECLARE(of); DECLARE(ud);
DECLARE(np); DECLARE(gp_selector); DECLARE(gp_null_ss); DECLARE(np_gate); DECLARE(soft);

struct test_case {
    const char *name;
    uint32_t vector;            /* what we expect the CPU to raise */
    void (*trigger)(void);
    const char *site, *resume;
};

static const struct test_case cases[] = {
    CASE(de, 0),
    CASE(de_overflow, 0),
    CASE(db, 1),
    CASE(bp, 3),
    CASE(of, 4),
    CASE(ud, 6),
    CASE(np, 11),
    CASE(gp_selector, 13),
    CASE(gp_null_ss, 13),
    CASE(np_gate, 11),
    CASE(soft, 0x30),
};
#define NCASES (int)(sizeof(cases) / sizeof(cases[0]))

static const struct test_case *current;
static int raised;              /* times the handler ran for the current case */
static int wrong;               /* cases that did not go as expected */

static void handler(struct frame *f)
{
    raised++;
    int32_t offset = (int32_t)(f->eip - (uint32_t)current->site);
    printf("%-12s %s vector=%u error=%08x eip=%s_site%+d\n", current->name,
           exception_name(f->vector), f->vector, f->error_code, current->name, (int)offset);
    if (f->vector != current->vector) {
        printf("  expected vector %u\n", current->vector);
        wrong++;
    }
    f->eflags &= ~0x100u;       /* TF off (the single-step case) */
    /* Continue after the instruction: for faults (EIP at the site) this skips it, e.g.
       ud2's 2 bytes; for traps (EIP already past it) it changes nothing. */
    f->eip = (uint32_t)current->resume;
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    serial_init();
    gdt_install();
    gdt_set_entry(3, 0, 0xFFFFF, GDT_DATA & 0x7F, GDT_FLAT);   /* data segment, P = 0 */
    idt_install();
    for (int v = 0; v < 256; v++)
        set_handler(v, handler);
    idt_set_gate(0x31, idt_stub_address(0x31), KERNEL_CS, GATE_INT32 & 0x7F);  /* P = 0 */

    printf("exceptions: %d cases\n", NCASES);
    for (int i = 0; i < NCASES; i++) {
        current = &cases[i];
        raised = 0;
        current->trigger();
        if (raised != 1) {
            printf("%-12s raised %d times, expected once\n", current->name, raised);
            wrong++;
        }
    }
    printf("exceptions: %d handled, %d wrong\n", NCASES - wrong, wrong);
    exit(wrong ? 1 : 0);
}
