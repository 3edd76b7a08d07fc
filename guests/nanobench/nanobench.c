/* Nanobench: Adams & Agesen's nanobenchmarks (ASPLOS 2006), bracketed for the machine.
 * Each is one operation repeated in a loop: a system call round trip from ring 3, IN from
 * a device register, CLI/STI, CALL/RET, a page fault, a divide error, and a page-table
 * update with INVLPG.
 *
 * What a hypervisor makes of each operation is the point: a CALL/RET pair costs the same
 * everywhere, but under trap-and-emulate IN and CLI/STI trap, a page fault and a system
 * call pass through the hypervisor before the guest sees them, and a PTE write traps into
 * the shadow page tables. So each loop is bracketed for the machine by the benchmark
 * marker (a 32-bit OUT to port 0x504 of (op << 24) | iterations before it, 0 after it:
 * guests/README.md), and pyvmm counts what happens in between. The guest itself prints
 * only the iteration count and a self-check per operation, never a time, so the output is
 * the same on any correct machine (QEMU ignores the marker port).
 *
 * Paging is on for every operation: 0-4 MiB identity-mapped (user-accessible, for the
 * ring-3 loop), and a window at 1 GiB with a not-present page and a page whose frame the
 * ptemod loop swaps. The loops and handlers are in ops.S; `iterations=K` on the command
 * line overrides ITERATIONS.
 */
#include "kernel.h"
#include "nanobench.h"

#define ITERATIONS 1000
#define MAX_ITERATIONS 0xFFFFFFu        /* the marker has 24 bits for the count */

#define PTE_P  0x001
#define PTE_RW 0x002
#define PTE_US 0x004
#define PTE_A  0x020
#define PTE_D  0x040
#define CR0_PG 0x80000000u

#define WINDOW      0x40000000u         /* PDE 256: the benchmark pages */
#define NOT_PRESENT (WINDOW + 0x0000)   /* pgfault: PTE 0 stays 0 */
#define REMAPPED    (WINDOW + 0x1000)   /* ptemod: PTE 1 alternates between two frames */

static uint32_t page_dir[1024] __attribute__((aligned(4096)));
static uint32_t pt_low[1024] __attribute__((aligned(4096)));
static uint32_t pt_window[1024] __attribute__((aligned(4096)));
static uint32_t frames[2][1024] __attribute__((aligned(4096)));
static struct tss tss;
static uint8_t ring0_stack[4096] __attribute__((aligned(16)));

static uint32_t parse_iterations(const char *cmdline)
{
    const char *p = strstr(cmdline, "iterations=");
    if (!p)
        return ITERATIONS;
    uint32_t n = 0;
    int digits = 0;
    for (p += 11; *p >= '0' && *p <= '9'; p++, digits++)
        if ((n = n * 10 + (uint32_t)(*p - '0')) > MAX_ITERATIONS)
            n = MAX_ITERATIONS + 1;     /* (no overflow, however many digits) */
    if (!digits || n == 0 || n > MAX_ITERATIONS) {
        printf("nanobench: iterations must be 1 to %u; using %u\n", MAX_ITERATIONS, ITERATIONS);
        return ITERATIONS;
    }
    return n;
}

static void gate(int vector, void (*handler)(void), uint8_t type_attr)
{
    idt_set_gate(vector, (uint32_t)handler, KERNEL_CS, type_attr);
}

static void restore_gate(int vector)
{
    idt_set_gate(vector, idt_stub_address(vector), KERNEL_CS, GATE_INT32);
}

/* One line per operation: its name, the iterations and the self-check, then ok or FAIL. */
static void report(const char *op, uint32_t n, int ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(const char *op, uint32_t n, int ok, const char *fmt, ...)
{
    char check[48], line[80];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(check, sizeof check, fmt, ap);
    va_end(ap);
    snprintf(line, sizeof line, "%-8s %7u  %s", op, n, check);
    verdict(line, ok);
}

static void setup(void)
{
    gdt_install();
    gdt_set_entry(3, 0, 0xFFFFF, 0xFA, GDT_FLAT);       /* ring-3 code */
    gdt_set_entry(4, 0, 0xFFFFF, 0xF2, GDT_FLAT);       /* ring-3 data */
    tss_install(TSS_SEL / 8, &tss, (uint32_t)ring0_stack + sizeof ring0_stack);
    idt_install();

    /* 8259As to vectors 0x20-0x2F and every line masked: STI lets nothing in */
    outb(0x20, 0x11); outb(0xA0, 0x11);
    outb(0x21, 0x20); outb(0xA1, 0x28);
    outb(0x21, 0x04); outb(0xA1, 0x02);
    outb(0x21, 0x01); outb(0xA1, 0x01);
    outb(0x21, 0xFF); outb(0xA1, 0xFF);

    for (uint32_t i = 0; i < 1024; i++)
        pt_low[i] = (i << 12) | PTE_P | PTE_RW | PTE_US;
    page_dir[0] = (uint32_t)pt_low | PTE_P | PTE_RW | PTE_US;
    page_dir[WINDOW >> 22] = (uint32_t)pt_window | PTE_P | PTE_RW;
    for (int i = 0; i < 2; i++)
        frames[i][0] = (uint32_t)frames[i] | PTE_P | PTE_RW;   /* each frame: its own PTE */
    pt_window[(REMAPPED >> 12) & 1023] = frames[0][0];
    __asm__ volatile("movl %0, %%cr3" :: "r"(page_dir) : "memory");
    uint32_t cr0;
    __asm__ volatile("movl %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("movl %0, %%cr0" :: "r"(cr0 | CR0_PG) : "memory");
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    serial_init();
    uint32_t n = parse_iterations(multiboot_cmdline(info));
    setup();
    printf("nanobench: Adams & Agesen's nanobenchmarks, paging on, marker port 0x%x\n",
           MARKER_PORT);
    printf("%-8s %7s  %s\n", "op", "iters", "self-check (no timings: count them on the machine)");

    /* syscall: INT 0x80 from ring 3 through a DPL-3 gate, IRET back */
    gate(SYSCALL_VECTOR, op_syscall_handler, 0xEE);
    gate(RETURN_VECTOR, op_syscall_return, 0xEE);
    uint32_t calls = op_syscall(n);
    restore_gate(SYSCALL_VECTOR);
    restore_gate(RETURN_VECTOR);
    report("syscall", n, calls == n, "the ring-0 handler ran %u times", calls);

    /* in: COM1's line status register; the UART is idle, so every read shows THR empty */
    while (!(inb(COM1_LSR) & 0x20)) { }
    uint32_t lsr = op_in(n);
    report("in", n, (lsr & 0x20) != 0, "every LSR read showed THR empty");

    uint32_t f = op_cli_sti(n);
    report("cli/sti", n, (f & 0x200) != 0, "IF is set after the last sti");

    uint32_t ran = op_call_ret(n);
    report("call/ret", n, ran == n, "the callee ran %u times", ran);

    /* pgfault: every load faults (the page stays not present), the handler skips it */
    gate(14, op_pgfault_handler, GATE_INT32);
    uint32_t eax = op_pgfault(n, NOT_PRESENT);
    restore_gate(14);
    uint32_t cr2;
    __asm__ volatile("movl %%cr2, %0" : "=r"(cr2));
    report("pgfault", n, op_pgfaults == n && cr2 == NOT_PRESENT && op_pgfault_error == 0
           && eax == UNTOUCHED, "%u #PF, CR2 = the page, error 0", op_pgfaults);

    gate(0, op_divzero_handler, GATE_INT32);
    eax = op_divzero(n);
    restore_gate(0);
    report("divzero", n, op_divide_errors == n && eax == UNTOUCHED,
           "%u #DE, EAX untouched", op_divide_errors);

    /* ptemod: frame A, B, A, ...; each read through the page must see the frame just set */
    uint32_t *pte = &pt_window[(REMAPPED >> 12) & 1023];
    uint32_t left = op_ptemod(n, pte, REMAPPED, frames[0][0], frames[1][0]);
    uint32_t last = frames[(n - 1) & 1][0];
    int ok = left == 0 && (*pte & ~(uint32_t)(PTE_A | PTE_D)) == last;
    if (ok)
        report("ptemod", n, 1, "every read saw the new frame");
    else
        report("ptemod", n, 0, "a stale frame after %u remaps", n - left);

    printf("nanobench: %d checks, %d failed\n", verdicts, verdicts_failed);
    return verdicts_failed ? 1 : 0;
}
