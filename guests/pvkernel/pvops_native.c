/* The native paravirt operations: what a kernel on a bare machine does, with the privileged
 * instructions themselves. Also what runs under QEMU, under pyvmm's emulate, under trap
 * (the VMM traps and emulates these) and under hw (it reports a hypervisor, but one
 * without hypercalls).
 */
#include "kernel.h"
#include "paravirt.h"

#define TSS_INDEX 5                     /* GDT entries 3 and 4: the ring-3 segments */
#define CR0_PG 0x80000000u
#define CR0_WP 0x00010000u
#define PIT_HZ 1193182u

/* ---- console: COM1, polled ------------------------------------------------------------- */
static void native_console_write(const char *s, unsigned int n)
{
    while (n--) {
        while (!(inb(COM1 + 5) & 0x20))     /* LSR: transmitter ready */
            ;
        outb(COM1, (uint8_t)*s++);
    }
}

/* ---- processor ------------------------------------------------------------------------- */
struct __attribute__((packed)) gate {
    uint16_t offset_lo, selector;
    uint8_t zero, type_attr;
    uint16_t offset_hi;
};

static struct gate idt[256] __attribute__((aligned(8)));   /* absent gates: #NP */
static struct tss tss;
static int tss_loaded;

/* Each trap-table entry becomes a gate: flag EVENTS_OFF an interrupt gate, else a trap
   gate; the DPL from the flags. */
static void native_load_trap_table(const trap_info_t *t)
{
    for (; t->address; t++) {
        uint8_t type = (t->flags & PYVMM_TRAP_EVENTS_OFF) ? 0xE : 0xF;
        idt[t->vector].offset_lo = t->address & 0xFFFF;
        idt[t->vector].selector = t->cs;
        idt[t->vector].zero = 0;
        idt[t->vector].type_attr = 0x80 | (PYVMM_TRAP_DPL(t->flags) << 5) | type;
        idt[t->vector].offset_hi = t->address >> 16;
    }
    struct __attribute__((packed)) {
        uint16_t limit;
        uint32_t base;
    } idtr = { sizeof idt - 1, (uint32_t)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");
}

/* TSS.SS0:ESP0, the stack the processor switches to on an entry from ring 3. */
static void native_set_kernel_stack(uint32_t ss, uint32_t esp)
{
    if (!tss_loaded) {
        tss_install(TSS_INDEX, &tss, esp);      /* GDT entry, LTR */
        tss_loaded = 1;
    }
    tss.ss0 = ss;
    tss.esp0 = esp;
}

static void native_shutdown(int code)
{
    exit(code);                                 /* isa-debug-exit, port 0xF4 */
}

/* ---- interrupts: IF -------------------------------------------------------------------- */
static uint32_t native_save_fl(void)
{
    return read_eflags();                       /* pushf; pop */
}

static void native_restore_fl(uint32_t flags)
{
    __asm__ volatile("pushl %0; popfl" : : "g"(flags) : "memory", "cc");
}

static void native_irq_disable(void)
{
    __asm__ volatile("cli" : : : "memory");
}

static void native_irq_enable(void)
{
    __asm__ volatile("sti" : : : "memory");
}

/* STI's one-instruction shadow: no interrupt can slip in between the two, so the HLT
   cannot miss the one it waits for. */
static void native_safe_halt(void)
{
    __asm__ volatile("sti; hlt" : : : "memory");
}

/* ---- the tick: the 8254 PIT's channel 0 on IRQ 0 of the 8259A -------------------------- */
static void native_timer_start(uint32_t period_us, int vector)
{
    outb(0x20, 0x11); outb(0xA0, 0x11);         /* ICW1: edge, cascade, ICW4 */
    outb(0x21, vector); outb(0xA1, vector + 8); /* ICW2: vectors */
    outb(0x21, 0x04); outb(0xA1, 0x02);         /* ICW3: slave on IRQ 2 */
    outb(0x21, 0x01); outb(0xA1, 0x01);         /* ICW4: 8086 mode */
    outb(0x21, 0xFE); outb(0xA1, 0xFF);         /* only IRQ 0 */
    uint32_t divisor = period_us * (PIT_HZ / 1000) / 1000;
    outb(0x43, 0x34);                           /* channel 0, lo/hi, rate generator */
    outb(0x40, divisor & 0xFF);
    outb(0x40, divisor >> 8);
}

static void native_timer_ack(void)
{
    outb(0x20, 0x20);                           /* EOI to the master 8259A */
}

/* ---- memory management: the tables are the processor's, written in place -------------- */
static int paging_on;

static void native_lazy_mmu(void)
{
}

/* The kernel maps its page-table pages read-only (the direct-paging rule of the
   paravirtual path) and writes them anyway: CR0.WP stays clear, so ring 0 may. */
static void native_set_pte(uint32_t *entry, uint32_t value)
{
    *(volatile uint32_t *)entry = value;
    ptes_written++;
}

static void native_flush_tlb_one(uint32_t va)
{
    __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
}

static void native_load_cr3(uint32_t pgdir)
{
    __asm__ volatile("mov %0, %%cr3" : : "r"(pgdir) : "memory");
    if (!paging_on) {
        uint32_t cr0;
        __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
        __asm__ volatile("mov %0, %%cr0" : : "r"((cr0 | CR0_PG) & ~CR0_WP) : "memory");
        paging_on = 1;
    }
}

static uint32_t native_read_cr2(void)
{
    uint32_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    return cr2;
}

const struct pv_ops native_ops = {
    .iret = native_iret,
    .console_write = native_console_write,
    .load_trap_table = native_load_trap_table,
    .set_kernel_stack = native_set_kernel_stack,
    .shutdown = native_shutdown,
    .save_fl = native_save_fl,
    .restore_fl = native_restore_fl,
    .irq_disable = native_irq_disable,
    .irq_enable = native_irq_enable,
    .safe_halt = native_safe_halt,
    .timer_start = native_timer_start,
    .timer_ack = native_timer_ack,
    .lazy_mmu_begin = native_lazy_mmu,
    .lazy_mmu_end = native_lazy_mmu,
    .set_pte = native_set_pte,
    .flush_tlb_one = native_flush_tlb_one,
    .load_cr3 = native_load_cr3,
    .read_cr2 = native_read_cr2,
};
