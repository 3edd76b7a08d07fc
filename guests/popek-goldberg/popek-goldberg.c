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
 *
 * Under pyvmm's --mode pv, whose paravirtual ABI the kernel finds at boot, it takes another
 * path for the first group (below the native probes), as a kernel ported to the hypervisor
 * would: it executes none of those instructions, and checks the paravirtual contract where
 * they checked ring 0.
 */
#include "kernel.h"
#include "pyvmm_hypercall.h"

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

/* For the paravirtual path: whether pyvmm's ABI was found at boot; the shared info page,
   whose events_enabled is the kernel's interrupt flag there; the trap table, with the
   handlers the IDT holds on the native path (the exceptions, the IPI and the timer, each
   with events off on entry, as through an interrupt gate) and a zero entry to end it.
   (Defined first: gcc -O2 places them after the other variables, so that they do not move
   the addresses the native path prints.) */
static int paravirt;
static union {
    struct pyvmm_shared_info info;
    uint8_t page[4096];
} shared_page __attribute__((aligned(4096)));
#define shared (&shared_page.info)
static struct pyvmm_trap_info trap_table[20 + 2 + 1];
static volatile uint32_t events_in_handler;     /* events_enabled as the IPI handler saw it */

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

/* On the paravirtual path the hypervisor has acknowledged the APIC itself before passing
   an interrupt on as an event (docs/hypercall-abi.md, "Events"): no EOI then. */
static void eoi(void)
{
    if (!paravirt)
        apic_write(0xB0, 0);
}

static void ipi_handler(struct frame *f)
{
    (void)f;
    ipis++;
    if (paravirt)
        events_in_handler = shared->events_enabled;
    eoi();
}

static void timer_handler(struct frame *f) { (void)f; timer_ticks++; eoi(); }

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
static void setup_segments(void)
{
    gdt_install();                                      /* 0x08 code, 0x10 data: DPL 0 */
    gdt_set_entry(3, 0, 0xFFFFF, 0xFA, GDT_FLAT);       /* ring-3 code */
    gdt_set_entry(4, 0, 0xFFFFF, 0xF2, GDT_FLAT);       /* ring-3 data */
    ldt[1] = gdt_get_entry(4);                          /* the LDT: a ring-3 data segment */
    gdt_set_entry(6, (uint32_t)ldt, sizeof ldt - 1, 0x82, 0);     /* LDT, DPL 0 */
    __asm__ volatile("lldt %w0" :: "r"(LDT_SEL) : "memory");
}

static void setup_interrupt_controllers(void)
{
    /* 8259As to vectors 0x20-0x2F, every line masked: only the local APIC interrupts */
    outb(PIC1, 0x11); outb(PIC2, 0x11);
    outb(PIC1 + 1, 0x20); outb(PIC2 + 1, 0x28);
    outb(PIC1 + 1, 0x04); outb(PIC2 + 1, 0x02);
    outb(PIC1 + 1, 0x01); outb(PIC2 + 1, 0x01);
    outb(PIC1 + 1, 0xFF); outb(PIC2 + 1, 0xFF);
    apic_write(0xF0, 0x100 | 0xFF);                     /* spurious-vector register: on */
    apic_write(0x320, 0x10000 | TIMER_VECTOR);          /* LVT timer: masked */
}

static void setup(void)
{
    setup_segments();
    tss_install(TSS_SEL / 8, &tss, (uint32_t)ring0_stack + sizeof ring0_stack);
    idt_install();
    set_handler(IPI_VECTOR, ipi_handler);
    set_handler(TIMER_VECTOR, timer_handler);
    setup_interrupt_controllers();
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

static uint32_t push_cs(void)
{
    uint32_t sel;
    __asm__ volatile("pushl %%cs\n\tpopl %0" : "=r"(sel) :: "memory");
    return sel;
}

static uint32_t mov_from_cs(void)
{
    uint32_t sel;
    __asm__ volatile("movl %%cs, %0" : "=r"(sel));
    return sel;
}

static uint32_t mov_from_ss(void)
{
    uint32_t sel;
    __asm__ volatile("movl %%ss, %0" : "=r"(sel));
    return sel;
}

/* One line for a selector's RPL. */
static void probe_rpl(const char *what, uint32_t sel, uint32_t want)
{
    char w[16], s[16];
    show_rpl(w, want);
    show_rpl(s, sel);
    probe(what, (sel & 3) == want, w, s);
}

static void probe_push_cs(void) { probe_rpl("push cs shows RPL 0", push_cs(), 0); }
static void probe_mov_cs(void) { probe_rpl("mov from cs shows RPL 0", mov_from_cs(), 0); }
static void probe_mov_ss(void) { probe_rpl("mov from ss shows RPL 0", mov_from_ss(), 0); }

/* LAR: access rights (bits 8-15: type, S, DPL, P) of a descriptor; ZF=1 if visible. */
static int lar(uint32_t sel, uint32_t *rights)
{
    uint8_t zf;
    __asm__ volatile("larl %w2, %0\n\tsetz %1" : "=r"(*rights), "=q"(zf) : "r"(sel), "0"(0));
    return zf;
}

/* LSL: the limit in bytes (a G=1 segment's in pages, scaled); ZF=1 if visible. */
static int lsl(uint32_t sel, uint32_t *limit)
{
    uint8_t zf;
    __asm__ volatile("lsll %w2, %0\n\tsetz %1" : "=r"(*limit), "=q"(zf) : "r"(sel), "0"(0));
    return zf;
}

static void show_dpl(char *buf, int zf, uint32_t rights)
{
    if (zf)
        snprintf(buf, 16, "DPL %u", (rights >> 13) & 3);
    else
        snprintf(buf, 16, "ZF=0");
}

static void probe_lar(void)
{
    uint32_t rights = 0;
    int zf = lar(KERNEL_CS, &rights);
    char s[16];
    show_dpl(s, zf, rights);
    probe("lar shows the kernel code segment's DPL 0", zf && ((rights >> 13) & 3) == 0, "DPL 0", s);
}

/* A flat G=1 segment's limit 0xFFFFF pages is 0xFFFFFFFF bytes. */
static void probe_lsl_limit(const char *what, uint32_t want)
{
    uint32_t limit = 0;
    int zf = lsl(KERNEL_DS, &limit);
    char w[16], s[16];
    snprintf(w, sizeof w, "%08x", want);
    if (zf)
        snprintf(s, sizeof s, "%08x", limit);
    else
        snprintf(s, sizeof s, "ZF=0");
    probe(what, zf && limit == want, w, s);
}

static void probe_lsl(void)
{
    probe_lsl_limit("lsl shows the data segment's 4 GiB limit", 0xFFFFFFFFu);
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

/* One VERR (write 0) or VERW (write 1) of the kernel's data segment through an RPL-`rpl`
   selector, which must set ZF (accept) or not (refuse). */
static void probe_verify(const char *what, int write, uint32_t rpl, int accept)
{
    int zf = verify(write, KERNEL_DS | rpl);
    probe(what, zf == accept, accept ? "ZF=1" : "ZF=0", zf ? "ZF=1" : "ZF=0");
}

static void probe_verr_verw(void)
{
    probe_verify("verr accepts the data segment with RPL 0", 0, 0, 1);
    probe_verify("verr refuses it through an RPL-1 selector", 0, 1, 0);
    probe_verify("verw refuses it through an RPL-1 selector", 1, 1, 0);
}

/* ---- the paravirtual path ----------------------------------------------------------------
 * Under pyvmm's --mode pv this kernel takes the other path, as a kernel ported to the
 * hypervisor does (Xen's PV Linux; guests/pvkernel's pvops_pyvmm.c in this tree): it knows
 * it runs at ring 1 and does not execute the sensitive but unprivileged instructions at
 * all. Its interrupt flag is a byte in the shared info page; its handlers are a trap table
 * given to the hypervisor; it does not read back its own system registers. What it still
 * checks is the paravirtual contract (docs/hypercall-abi.md) where ring 0 was expected
 * before: the events machinery, RPL 1 in its selectors, the descriptors as the hypervisor
 * installs them.
 */

static void pv_console_write(const char *s, unsigned int n)
{
    HYPERVISOR_console_write(s, n);
}

static void pv_must(const char *hypercall, int32_t result)
{
    if (result >= 0)
        return;
    printf("popek-goldberg: %s failed: %d\n", hypercall, (int)result);
    HYPERVISOR_shutdown(4);
}

static void pv_add_trap(int *n, int vector)
{
    struct pyvmm_trap_info *t = &trap_table[(*n)++];
    t->vector = vector;
    t->flags = PYVMM_TRAP_EVENTS_OFF | PYVMM_TRAP_DPL(0);
    t->cs = KERNEL_CS;
    t->address = idt_stub_address(vector);
}

/* What the kernel does at boot on this path. The console and the shutdown are hypercalls,
   as a ported kernel's are (Xen: console_io; guests/pvkernel): one VMM entry a line instead
   of two a character (the control group's OUT/IN to COM1's scratch register still trap, as
   a privileged instruction should). ABI version 1 has no hypercall for the GDT or the LDT:
   LGDT, the segment loads and LLDT trap and are emulated, as in pvkernel's gdt_install.
   The interrupt controllers are programmed as on the native path (trapped OUTs, the APIC's
   MMIO): the APIC's self-IPI is the interrupt that the event probes and the control group
   wait for, and the hypervisor passes it on as an event. */
static void pv_setup(void)
{
    console_write = pv_console_write;               /* printf's output, verdict()'s too */
    shared->events_enabled = 0;                     /* as IF is at the Multiboot entry */
    pv_must("set_shared_info", HYPERVISOR_set_shared_info((uint32_t)&shared_page));  /* identity */

    setup_segments();
    /* no TSS: the ring-0 stack for entries from ring 3 goes to the hypervisor */
    pv_must("stack_switch",
            HYPERVISOR_stack_switch(KERNEL_DS, (uint32_t)ring0_stack + sizeof ring0_stack));

    int n = 0;
    for (int v = 0; v < 20; v++)
        pv_add_trap(&n, v);
    pv_add_trap(&n, IPI_VECTOR);
    pv_add_trap(&n, TIMER_VECTOR);
    pv_must("set_trap_table", HYPERVISOR_set_trap_table(trap_table));   /* instead of LIDT */
    set_handler(IPI_VECTOR, ipi_handler);
    set_handler(TIMER_VECTOR, timer_handler);
    setup_interrupt_controllers();
}

/* The kernel's interrupt flag on this path (pvkernel's irq_disable/irq_enable): a store,
   no VMM entry; an event that came while it was off waits until a hypercall. */
static void pv_events_off(void)
{
    shared->events_enabled = 0;
    __asm__ volatile("" ::: "memory");
}

static void pv_events_on(void)
{
    shared->events_enabled = 1;
    __asm__ volatile("" ::: "memory");
    if (shared->event_pending)
        HYPERVISOR_nop();                           /* delivers what waits */
}

static void show_events(char *buf, uint32_t enabled)
{
    snprintf(buf, 16, "events=%u", enabled);
}

/* PUSHF/POPF and IF replaced: the self-IPI of probe_popf_lets_interrupt_in, with the
   shared info page's flag instead of POPF. */
static void pv_probe_events(void)
{
    char s[16];
    ipis = 0;
    events_in_handler = 0xFF;
    pv_events_off();
    self_ipi();
    settle();
    uint32_t early = ipis;
    /* marked pending, and the hypervisor's entry for it left the kernel's flag alone */
    int pending = shared->event_pending, still_off = !shared->events_enabled;
    uint32_t vector = shared->pending_vector;
    probe("pv: events off: a self-IPI waits", !early && pending && still_off, "pending",
          early ? "delivered" : !pending ? "not pending" : !still_off ? "events on" : "pending");
    snprintf(s, sizeof s, "%02x", vector);
    probe("pv: pending_vector names it", pending && vector == IPI_VECTOR, "41", s);

    pv_events_on();
    settle();
    snprintf(s, sizeof s, "%u IPI%s", ipis, ipis == 1 ? "" : "s");
    probe("pv: events on + nop let it in exactly once", ipis == 1, "1 IPI", s);
    probe("pv: the delivery cleared event_pending", !shared->event_pending, "0",
          shared->event_pending ? "1" : "0");
    show_events(s, events_in_handler);
    probe("pv: its handler ran with events off", events_in_handler == 0, "events=0", s);
    show_events(s, shared->events_enabled);
    probe("pv: its return turned events back on", shared->events_enabled == 1, "events=1", s);
    pv_events_off();
}

/* Nothing to check: what the kernel would have read is its own record, or the hypervisor
   holds it. */
static void pv_avoided(const char *instruction, const char *instead)
{
    printf("pv: %s avoided: %s\n", instruction, instead);
}

static void pv_avoid_system_registers(void)
{
    pv_avoided("popf to IOPL 3", "its IN/OUT trap (Xen: physdev_op set_iopl)");
    pv_avoided("sgdt", "its own record of its GDT (Xen: set_gdt)");
    pv_avoided("sidt", "its handlers are the trap table given to set_trap_table");
    pv_avoided("sldt", "its own record of its LDT (Xen: mmuext_op set_ldt)");
    pv_avoided("str", "no TSS: its ring-0 stack went to stack_switch");
    pv_avoided("smsw", "its own record of CR0, whose writes trap (Xen: fpu_taskswitch)");
}

/* The kernel's ring is 1: its selectors carry RPL 1, and the descriptors the processor
   reads are the hypervisor's copies of its GDT (docs/hypercall-abi.md, "Segments"): data
   segments at DPL 1 ending below the hypervisor's 4 MiB, no code segment (the hypervisor
   loads CS itself). */
static void pv_probe_ring(void)
{
    probe_rpl("pv: push cs shows RPL 1", push_cs(), 1);
    probe_rpl("pv: mov from cs shows RPL 1", mov_from_cs(), 1);
    probe_rpl("pv: mov from ss shows RPL 1", mov_from_ss(), 1);

    uint32_t rights = 0;
    char s[16];
    int zf = lar(KERNEL_CS, &rights);
    show_dpl(s, zf, rights);
    probe("pv: lar finds no code descriptor (CS traps)", !zf, "ZF=0", s);
    zf = lar(KERNEL_DS, &rights);
    show_dpl(s, zf, rights);
    probe("pv: lar shows the data segment's DPL 1", zf && ((rights >> 13) & 3) == 1, "DPL 1", s);
    probe_lsl_limit("pv: lsl shows the limit below the hypervisor", 0xFFBFFFFFu);

    /* DPL 1: the kernel's own RPL passes, an outer ring's does not */
    probe_verify("pv: verr accepts the data segment with RPL 1", 0, 1, 1);
    probe_verify("pv: verr refuses it through an RPL-2 selector", 0, 2, 0);
    probe_verify("pv: verw refuses it through an RPL-2 selector", 1, 2, 0);
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

static void native_probes(void)
{
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
}

static void paravirtual_probes(void)
{
    printf("-- paravirtual: the interrupt flag is events_enabled in the shared info page\n");
    pv_probe_events();
    printf("-- paravirtual: not read by the kernel, and what it uses instead\n");
    pv_avoid_system_registers();
    printf("-- paravirtual: ring 1, on the hypervisor's descriptors\n");
    pv_probe_ring();
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    /* pyvmm's paravirtual ABI, version 1 or later (--mode hw shows the signature with
       version 0: no hypercalls; elsewhere there is no signature): the paravirtual path. */
    uint32_t abi = pyvmm_abi_version();
    paravirt = abi >= 1;
    if (paravirt) {
        pv_setup();
    } else {
        serial_init();
        setup();
    }
    printf("popek-goldberg: sensitive but unprivileged x86 instructions at ring 0\n");
    printf("(Robin & Irvine 2000; each probe checks a value this kernel set)\n");
    if (paravirt) {
        printf("popek-goldberg: the paravirtual path (PyVMM ABI %u), at ring 1\n", abi);
        paravirtual_probes();
    } else {
        native_probes();
    }

    /* The same on both paths: on the paravirtual one they trap and are emulated too, CLI
       and STI acting on events_enabled (a ported kernel would not execute them, but they
       are what this group shows). */
    printf("-- control group: privileged, they trap when deprivileged\n");
    control_cli_sti();
    control_mov_cr0();
    control_mov_cr3();
    control_in_out();
    control_hlt();

    cli();
    printf("popek-goldberg: %d checks, %d failed\n", verdicts, verdicts_failed);
    if (paravirt)
        HYPERVISOR_shutdown(verdicts_failed ? 1 : 0);
    exit(verdicts_failed ? 1 : 0);
}
