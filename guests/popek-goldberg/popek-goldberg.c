/* Popek-goldberg: probes of IA-32's sensitive but unprivileged instructions at ring 0.
 * The instructions are those Robin & Irvine list (USENIX Security 2000); after them comes a
 * control group of privileged ones.
 *
 * Popek and Goldberg (1974): a machine can be virtualized by trap-and-emulate if every
 * *sensitive* instruction (one that reads or changes the machine's control state) is
 * *privileged* (traps when run outside the most privileged mode). IA-32 is not such a
 * machine. Deprivilege this kernel to ring 1 and the instructions below neither trap nor
 * behave as at ring 0: PUSHF shows the real IF, POPF silently ignores IF and IOPL,
 * SGDT/SIDT/SLDT/STR/SMSW read the real registers (the hypervisor's), CS and SS carry
 * RPL 1, and LAR/LSL/VERR/VERW see the hypervisor's descriptors (DPL 0 compressed to 1,
 * limits cut short below the hypervisor).
 *
 * The kernel sets up its own GDT (kernel code and data, user code and data, a TSS, an LDT),
 * IDT and TSS, loads them, and every probe compares what an instruction shows with a value
 * the kernel itself established, printing what it wanted and what it saw. On a bare
 * machine (pyvmm, QEMU) every line is "ok"; under a trap-and-emulate hypervisor the first
 * group fails, while the control group (instructions that fault at ring 1, so that the
 * hypervisor can emulate them) passes everywhere. Each probe restores what it changed.
 */
#include "kernel.h"

#define USER_CS 0x1B                    /* GDT entry 3, RPL 3 */
#define USER_DS 0x23                    /* GDT entry 4, RPL 3 */
#define TSS_SEL 0x28                    /* GDT entry 5 */
#define LDT_SEL 0x30                    /* GDT entry 6 */

#define F_IF   0x00000200u
#define F_IOPL 0x00003000u
#define CR0_TS 0x00000008u

#define PIC1 0x20
#define PIC2 0xA0
#define LAPIC 0xFEE00000u
#define IPI_VECTOR 0x41
#define TIMER_VECTOR 0x40

struct __attribute__((packed)) dtr {    /* the operand of LGDT/SGDT and LIDT/SIDT */
    uint16_t limit;
    uint32_t base;
};

static struct tss tss;
static uint8_t ring0_stack[4096] __attribute__((aligned(16)));
static uint64_t ldt[2] __attribute__((aligned(8)));
static uint32_t spare_page_dir[1024] __attribute__((aligned(4096)));   /* a CR3 value */

static volatile uint32_t ipis, timer_ticks;

/* One probe line: what is checked, what ring 0 must show, what was seen, ok or FAIL. */
static void probe(const char *what, int ok, const char *want, const char *saw)
{
    char line[128];
    snprintf(line, sizeof line, "%-46s want %-13s saw %-13s", what, want, saw);
    verdict(line, ok);
}

static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }

static inline uint32_t apic_read(uint32_t reg) { return *(volatile uint32_t *)(LAPIC + reg); }
static inline void apic_write(uint32_t reg, uint32_t v) { *(volatile uint32_t *)(LAPIC + reg) = v; }
static void ipi_handler(struct frame *f) { (void)f; ipis++; apic_write(0xB0, 0); }
static void timer_handler(struct frame *f) { (void)f; timer_ticks++; apic_write(0xB0, 0); }

/* Send vector IPI_VECTOR to this CPU: it waits in the APIC until IF lets it in. */
static void self_ipi(void) { apic_write(0x300, 0x00044000 | IPI_VECTOR); }

/* A pending interrupt is taken at an instruction boundary soon after IF allows it (QEMU
 * at the end of its translation block): give it a few hundred instructions. */
static void settle(void)
{
    for (int i = 0; i < 200 && !ipis; i++)
        __asm__ volatile("nop");
}

/* ---- setup ------------------------------------------------------------------------- */
static void setup(void)
{
    gdt_install();                                      /* 0x08 code, 0x10 data: DPL 0 */
    gdt_set_entry(3, 0, 0xFFFFF, 0xFA, GDT_FLAT);       /* ring-3 code */
    gdt_set_entry(4, 0, 0xFFFFF, 0xF2, GDT_FLAT);       /* ring-3 data */
    ldt[1] = gdt_get_entry(4);                          /* the LDT: a ring-3 data segment */
    gdt_set_entry(6, (uint32_t)ldt, sizeof ldt - 1, 0x82, 0);     /* LDT, DPL 0 */
    tss_install(TSS_SEL / 8, &tss, (uint32_t)ring0_stack + sizeof ring0_stack);
    __asm__ volatile("lldt %w0" :: "r"(LDT_SEL) : "memory");

    idt_install();
    set_handler(IPI_VECTOR, ipi_handler);
    set_handler(TIMER_VECTOR, timer_handler);

    /* 8259As to vectors 0x20-0x2F, every line masked: only the local APIC interrupts */
    outb(PIC1, 0x11); outb(PIC2, 0x11);
    outb(PIC1 + 1, 0x20); outb(PIC2 + 1, 0x28);
    outb(PIC1 + 1, 0x04); outb(PIC2 + 1, 0x02);
    outb(PIC1 + 1, 0x01); outb(PIC2 + 1, 0x01);
    outb(PIC1 + 1, 0xFF); outb(PIC2 + 1, 0xFF);
    apic_write(0xF0, 0x100 | 0xFF);                     /* spurious-vector register: on */
    apic_write(0x320, 0x10000 | TIMER_VECTOR);          /* LVT timer: masked */
}

/* ---- sensitive, not privileged -------------------------------------------------------- */

/* PUSHF at ring 1 shows the real IF, which a hypervisor keeps set; CLI (which traps) only
   cleared the guest's virtual IF. */
static void probe_pushf_cli(void)
{
    uint32_t f;
    __asm__ volatile("sti\n\tcli\n\tpushfl\n\tpopl %0" : "=r"(f) :: "memory");
    probe("pushf after cli shows IF=0", !(f & F_IF), "IF=0", f & F_IF ? "IF=1" : "IF=0");
}

/* POPF at CPL > IOPL leaves IF alone without a fault. */
static void probe_popf_clears_if(void)
{
    uint32_t f;
    __asm__ volatile("sti\n\t"
                     "pushfl\n\t"
                     "andl $~0x200, (%%esp)\n\t"
                     "popfl\n\t"
                     "pushfl\n\t"
                     "popl %0\n\t"
                     "cli" : "=r"(f) :: "memory");
    probe("popf can clear IF (after sti)", !(f & F_IF), "IF=0", f & F_IF ? "IF=1" : "IF=0");
}

/* Seen through PUSHF this one passes under a hypervisor too (the real IF is set anyway);
   the next probe shows what is lost: the hypervisor never learns that IF went up. */
static void probe_popf_sets_if(void)
{
    uint32_t f;
    __asm__ volatile("cli\n\t"
                     "pushfl\n\t"
                     "orl $0x200, (%%esp)\n\t"
                     "popfl\n\t"
                     "pushfl\n\t"
                     "popl %0\n\t"
                     "cli" : "=r"(f) :: "memory");
    probe("popf can set IF (after cli)", (f & F_IF) != 0, "IF=1", f & F_IF ? "IF=1" : "IF=0");
}

static void probe_popf_lets_interrupt_in(void)
{
    ipis = 0;
    cli();
    self_ipi();
    settle();
    uint32_t before = ipis;
    __asm__ volatile("pushfl\n\t"
                     "orl $0x200, (%%esp)\n\t"
                     "popfl" ::: "memory");
    settle();
    cli();
    const char *saw = before ? "before popf" : ipis ? "after popf" : "never";
    probe("popf setting IF lets a pending self-IPI in", !before && ipis == 1, "after popf", saw);
}

/* Only CPL 0 may change IOPL; elsewhere POPF keeps the old value, silently. */
static void probe_popf_iopl(void)
{
    uint32_t f;
    __asm__ volatile("pushfl\n\t"
                     "orl $0x3000, (%%esp)\n\t"
                     "popfl\n\t"
                     "pushfl\n\t"
                     "popl %0\n\t"
                     "pushfl\n\t"
                     "andl $~0x3000, (%%esp)\n\t"
                     "popfl" : "=r"(f) :: "memory");
    char saw[16];
    snprintf(saw, sizeof saw, "IOPL=%u", (f & F_IOPL) >> 12);
    probe("popf can change IOPL (to 3)", (f & F_IOPL) == F_IOPL, "IOPL=3", saw);
}

static void show_dtr(char *buf, const struct dtr *d)
{
    snprintf(buf, 16, "%08x/%04x", d->base, d->limit);
}

/* LGDT traps at ring 1; SGDT does not, and shows the hypervisor's table. */
static void probe_sgdt(void)
{
    struct dtr want = { 8 * GDT_ENTRIES - 1, gdt_base() }, seen = { 0, 0 };
    __asm__ volatile("lgdt %1\n\tsgdt %0" : "=m"(seen) : "m"(want) : "memory");
    char w[16], s[16];
    show_dtr(w, &want);
    show_dtr(s, &seen);
    probe("sgdt returns the GDT the kernel loaded", seen.base == want.base && seen.limit == want.limit,
          w, s);
}

static void probe_sidt(void)
{
    struct dtr want = { 8 * 256 - 1, idt_base() }, seen = { 0, 0 };
    __asm__ volatile("lidt %1\n\tsidt %0" : "=m"(seen) : "m"(want) : "memory");
    char w[16], s[16];
    show_dtr(w, &want);
    show_dtr(s, &seen);
    probe("sidt returns the IDT the kernel loaded", seen.base == want.base && seen.limit == want.limit,
          w, s);
}

/* The selector-reading instructions write 16 bits of selector; the upper half of a 32-bit
   register destination is cleared on P6 and later, but only the selector is compared. */
static void probe_sldt(void)
{
    uint32_t sel = 0;
    __asm__ volatile("lldt %w1\n\tsldt %0" : "=r"(sel) : "r"(LDT_SEL) : "memory");
    sel &= 0xFFFF;
    char s[16];
    snprintf(s, sizeof s, "%04x", sel);
    probe("sldt returns the LDT selector loaded with lldt", sel == LDT_SEL, "0030", s);
}

static void probe_str(void)
{
    uint32_t sel = 0;
    __asm__ volatile("str %0" : "=r"(sel) :: "memory");     /* LTR TSS_SEL: in setup() */
    sel &= 0xFFFF;
    char s[16];
    snprintf(s, sizeof s, "%04x", sel);
    probe("str returns the TSS selector loaded with ltr", sel == TSS_SEL, "0028", s);
}

/* MOV to CR0 traps at ring 1 and CLTS too; SMSW reads the real CR0's low 16 bits. */
static void probe_smsw(void)
{
    uint32_t msw = 0;
    __asm__ volatile("movl %%cr0, %%eax\n\t"
                     "orl $8, %%eax\n\t"
                     "movl %%eax, %%cr0\n\t"
                     "smsw %0\n\t"
                     "clts" : "=r"(msw) :: "eax", "memory");
    probe("smsw shows CR0.TS set by the kernel", (msw & CR0_TS) != 0, "TS=1",
          msw & CR0_TS ? "TS=1" : "TS=0");
}

static void show_rpl(char *buf, uint32_t sel)
{
    snprintf(buf, 16, "RPL %u", sel & 3);
}

static void probe_push_cs(void)
{
    uint32_t sel;
    __asm__ volatile("pushl %%cs\n\tpopl %0" : "=r"(sel) :: "memory");
    char s[16];
    show_rpl(s, sel);
    probe("push cs shows RPL 0", (sel & 3) == 0, "RPL 0", s);
}

static void probe_mov_cs(void)
{
    uint32_t sel;
    __asm__ volatile("movl %%cs, %0" : "=r"(sel));
    char s[16];
    show_rpl(s, sel);
    probe("mov from cs shows RPL 0", (sel & 3) == 0, "RPL 0", s);
}

static void probe_mov_ss(void)
{
    uint32_t sel;
    __asm__ volatile("movl %%ss, %0" : "=r"(sel));
    char s[16];
    show_rpl(s, sel);
    probe("mov from ss shows RPL 0", (sel & 3) == 0, "RPL 0", s);
}

/* LAR: access rights (bits 8-15: type, S, DPL, P) of a descriptor, ZF=1 if visible. */
static void probe_lar(void)
{
    uint32_t rights = 0;
    uint8_t zf;
    __asm__ volatile("larl %w2, %0\n\tsetz %1" : "=r"(rights), "=q"(zf) : "r"(KERNEL_CS), "0"(0));
    char s[16];
    if (zf)
        snprintf(s, sizeof s, "DPL %u", (rights >> 13) & 3);
    else
        snprintf(s, sizeof s, "ZF=0");
    probe("lar shows the kernel code segment's DPL 0", zf && ((rights >> 13) & 3) == 0, "DPL 0", s);
}

/* LSL: the limit in bytes; a flat G=1 segment's limit 0xFFFFF pages is 0xFFFFFFFF. */
static void probe_lsl(void)
{
    uint32_t limit = 0;
    uint8_t zf;
    __asm__ volatile("lsll %w2, %0\n\tsetz %1" : "=r"(limit), "=q"(zf) : "r"(KERNEL_DS), "0"(0));
    char s[16];
    if (zf)
        snprintf(s, sizeof s, "%08x", limit);
    else
        snprintf(s, sizeof s, "ZF=0");
    probe("lsl shows the data segment's 4 GiB limit", zf && limit == 0xFFFFFFFFu, "ffffffff", s);
}

/* VERR/VERW set ZF if the segment is readable/writable at max(CPL, RPL) <= DPL. At CPL 0
   an RPL-1 selector for a DPL-0 segment is refused; at ring 1 with DPL compressed to 1 it
   is accepted. */
static int verify(int write, uint32_t sel)
{
    uint8_t zf;
    if (write)
        __asm__ volatile("verw %w1\n\tsetz %0" : "=q"(zf) : "r"(sel) : "cc");
    else
        __asm__ volatile("verr %w1\n\tsetz %0" : "=q"(zf) : "r"(sel) : "cc");
    return zf;
}

static void probe_verr_verw(void)
{
    int zf = verify(0, KERNEL_DS | 0);
    probe("verr accepts the data segment with RPL 0", zf, "ZF=1", zf ? "ZF=1" : "ZF=0");
    zf = verify(0, KERNEL_DS | 1);
    probe("verr refuses it through an RPL-1 selector", !zf, "ZF=0", zf ? "ZF=1" : "ZF=0");
    zf = verify(1, KERNEL_DS | 1);
    probe("verw refuses it through an RPL-1 selector", !zf, "ZF=0", zf ? "ZF=1" : "ZF=0");
}

/* ---- privileged: they fault at ring 1, so a hypervisor can emulate them ---------------- */

static void control_cli_sti(void)
{
    ipis = 0;
    cli();
    self_ipi();
    settle();
    uint32_t held = ipis;
    probe("cli keeps a self-IPI pending", held == 0, "pending", held ? "delivered" : "pending");
    sti();
    settle();
    cli();
    probe("sti lets the pending self-IPI in", ipis == 1, "delivered", ipis == 1 ? "delivered" : "pending");
}

static void control_mov_cr0(void)
{
    uint32_t cr0;
    __asm__ volatile("movl %%cr0, %%eax\n\t"
                     "orl $8, %%eax\n\t"
                     "movl %%eax, %%cr0\n\t"
                     "movl %%cr0, %0\n\t"
                     "clts" : "=r"(cr0) :: "eax", "memory");
    probe("mov from cr0 shows CR0.TS set by the kernel", (cr0 & CR0_TS) != 0, "TS=1",
          cr0 & CR0_TS ? "TS=1" : "TS=0");
}

static void control_mov_cr3(void)
{
    uint32_t old, seen;
    uint32_t want = (uint32_t)spare_page_dir;           /* paging is off: CR3 is only held */
    __asm__ volatile("movl %%cr3, %0" : "=r"(old));
    __asm__ volatile("movl %1, %%cr3\n\tmovl %%cr3, %0" : "=r"(seen) : "r"(want) : "memory");
    __asm__ volatile("movl %0, %%cr3" :: "r"(old) : "memory");
    char w[16], s[16];
    snprintf(w, sizeof w, "%08x", want);
    snprintf(s, sizeof s, "%08x", seen);
    probe("mov cr3 reads back the value written", seen == want, w, s);
}

/* The I/O-sensitive pair (IOPL 0 < CPL 1: they fault): COM1's scratch register. */
static void control_in_out(void)
{
    outb(0x3FF, 0x5A);
    uint8_t v = inb(0x3FF);
    char s[16];
    snprintf(s, sizeof s, "%02x", v);
    probe("out/in: COM1's scratch register holds 5a", v == 0x5A, "5a", s);
}

static void control_hlt(void)
{
    timer_ticks = 0;
    apic_write(0x3E0, 0x3);                             /* divide by 16 */
    apic_write(0x320, TIMER_VECTOR);                    /* LVT timer: one-shot, unmasked */
    apic_write(0x380, 5000);                            /* go */
    for (int i = 0; i < 10 && !timer_ticks; i++)
        __asm__ volatile("sti\n\thlt\n\tcli" ::: "memory");     /* STI's shadow covers HLT */
    apic_write(0x320, 0x10000 | TIMER_VECTOR);          /* masked again */
    char s[16];
    snprintf(s, sizeof s, "%u tick%s", timer_ticks, timer_ticks == 1 ? "" : "s");
    probe("hlt sleeps until the APIC timer interrupt", timer_ticks == 1, "1 tick", s);
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    serial_init();
    setup();
    printf("popek-goldberg: sensitive but unprivileged x86 instructions at ring 0\n");
    printf("(Robin & Irvine 2000; each probe checks a value this kernel set)\n");

    printf("-- sensitive, not privileged: they must show what the kernel set\n");
    probe_pushf_cli();
    probe_popf_clears_if();
    probe_popf_sets_if();
    probe_popf_lets_interrupt_in();
    probe_popf_iopl();
    probe_sgdt();
    probe_sidt();
    probe_sldt();
    probe_str();
    probe_smsw();
    probe_push_cs();
    probe_mov_cs();
    probe_mov_ss();
    probe_lar();
    probe_lsl();
    probe_verr_verw();

    printf("-- control group: privileged, they trap when deprivileged\n");
    control_cli_sti();
    control_mov_cr0();
    control_mov_cr3();
    control_in_out();
    control_hlt();

    cli();
    printf("popek-goldberg: %d checks, %d failed\n", verdicts, verdicts_failed);
    exit(verdicts_failed ? 1 : 0);
}
