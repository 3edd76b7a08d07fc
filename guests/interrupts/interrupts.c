/* Interrupts: the 8254 PIT ticking IRQ 0 through the 8259A PICs. Count ticks while halted
 * and while busy, hold a tick off with CLI, block IRQ 0 by not sending EOI, mask it, and
 * read the PIT's counter back; then the local APIC's own timer and a self-IPI. Every check waits on the PIC's own registers rather than on
 * time, so the output is the same on any correct machine, whatever its speed.
 */
#include "kernel.h"

#define PIC1 0x20
#define PIC2 0xA0
#define PIT_RELOAD 1193                 /* ~1 kHz */

static volatile uint32_t ticks, apic_ticks, ipis;
static volatile int send_eoi = 1;

static void timer(struct frame *f)
{
    (void)f;
    ticks++;
    if (send_eoi)
        outb(PIC1, 0x20);               /* non-specific EOI */
}

#define LAPIC 0xFEE00000u
static inline uint32_t apic_read(uint32_t reg) { return *(volatile uint32_t *)(LAPIC + reg); }
static inline void apic_write(uint32_t reg, uint32_t v) { *(volatile uint32_t *)(LAPIC + reg) = v; }
static void apic_timer(struct frame *f) { (void)f; apic_ticks++; apic_write(0xB0, 0); }
static void apic_ipi(struct frame *f) { (void)f; ipis++; apic_write(0xB0, 0); }

static uint8_t pic_irr(void) { outb(PIC1, 0x0A); return inb(PIC1); }   /* OCW3: read IRR */
static uint8_t pic_isr(void) { outb(PIC1, 0x0B); return inb(PIC1); }   /* OCW3: read ISR */
static void wait_irr0(void) { while (!(pic_irr() & 1)) { } }          /* a tick is pending */

/* A pending interrupt is taken at an instruction boundary soon after it is unblocked (QEMU
 * waits for the end of its translation block): give it a few hundred instructions, far
 * less than a tick. */
static void settle(uint32_t until)
{
    for (int i = 0; i < 200 && ticks < until; i++)
        __asm__ volatile("nop");
}
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    serial_init();
    gdt_install();
    idt_install();
    set_handler(0x20, timer);
    printf("interrupts: PIT on IRQ 0 through the 8259A PICs\n");

    /* remap the PICs to vectors 0x20-0x2F, unmask IRQ 0 only */
    outb(PIC1, 0x11); outb(PIC2, 0x11);
    outb(PIC1 + 1, 0x20); outb(PIC2 + 1, 0x28);
    outb(PIC1 + 1, 0x04); outb(PIC2 + 1, 0x02);
    outb(PIC1 + 1, 0x01); outb(PIC2 + 1, 0x01);
    outb(PIC1 + 1, 0xFE); outb(PIC2 + 1, 0xFF);
    verdict("PIC masks read back", inb(PIC1 + 1) == 0xFE && inb(PIC2 + 1) == 0xFF);

    /* PIT channel 0, mode 2 (rate generator), ~1 kHz */
    outb(0x43, 0x34);
    outb(0x40, PIT_RELOAD & 0xFF);
    outb(0x40, PIT_RELOAD >> 8);

    sti();
    while (ticks < 10)
        hlt();                          /* each tick wakes the CPU */
    verdict("10 ticks counted while halting", ticks == 10);
    while (ticks < 20) { }
    verdict("10 more while busy", ticks == 20);

    /* From here on the handler sends no EOI while a check is open: each check then sees
     * exactly the ticks it lets through, however slowly the machine (or QEMU on a loaded
     * host, whose PIT runs in real time) gets to the verdict. */
    /* CLI: a tick that comes in stays pending in IRR until STI */
    send_eoi = 0;
    cli();
    uint32_t t0 = ticks;
    wait_irr0();
    verdict("with IF=0 a tick waits in IRR, not delivered", ticks == t0);
    sti();
    settle(t0 + 1);
    verdict("STI: the pending tick is delivered", ticks == t0 + 1);

    /* no EOI: IRQ 0 stays in service, the next one waits in IRR */
    wait_irr0();
    verdict("without EOI the next tick is held back", ticks == t0 + 1 && (pic_isr() & 1));
    outb(PIC1, 0x20);                   /* EOI for the tick in service */
    settle(t0 + 2);
    verdict("EOI: the held-back tick arrives", ticks == t0 + 2);

    /* the mask: IRR still latches, nothing is delivered until it is unmasked */
    outb(PIC1 + 1, 0xFF);
    outb(PIC1, 0x20);                   /* EOI for the tick in service */
    t0 = ticks;
    wait_irr0();
    verdict("masked: a tick latches in IRR, not delivered", ticks == t0);
    outb(PIC1 + 1, 0xFE);
    settle(t0 + 1);
    verdict("unmasked: it is delivered", ticks == t0 + 1);
    send_eoi = 1;
    outb(PIC1, 0x20);

    /* the counter: latch channel 0 and read it, LSB then MSB */
    outb(0x43, 0x00);
    uint32_t count = inb(0x40);
    count |= (uint32_t)inb(0x40) << 8;
    verdict("a latched count lies within the reload value", count > 0 && count <= PIT_RELOAD);

    /* the local APIC: its own timer and an interrupt sent to itself */
    outb(PIC1 + 1, 0xFF);               /* the PIT rests */
    set_handler(0x40, apic_timer);
    set_handler(0x41, apic_ipi);
    verdict("the local APIC is an integrated one (version 1x)", (apic_read(0x30) & 0xF0) == 0x10);
    apic_write(0xF0, 0x1FF);            /* spurious-vector register: APIC on */
    apic_write(0x300, 0x00044041);      /* ICR: fixed, to self, vector 0x41 */
    for (int i = 0; i < 200 && !ipis; i++)
        __asm__ volatile("nop");
    verdict("a self-IPI is delivered", ipis == 1);
    apic_write(0x3E0, 0x3);             /* divide by 16 */
    apic_write(0x320, 0x20040);         /* LVT timer: periodic, vector 0x40 */
    apic_write(0x380, 20000);
    while (apic_ticks < 5)
        hlt();
    verdict("5 periodic APIC timer ticks", apic_ticks == 5);
    apic_write(0x320, 0x10040);         /* masked */
    verdict("the timer's current count lies within its initial count", apic_read(0x390) <= 20000);

    cli();
    printf("interrupts: %d checks, %d failed\n", verdicts, verdicts_failed);
    exit(verdicts_failed ? 1 : 0);
}
