/* Paging: build page tables, map and unmap, take and repair page faults (demand paging), use
 * 4 MiB pages, INVLPG, CR0.WP, and switch CR3 between two address spaces. Every step checks
 * itself and prints a verdict; the output is the same on any correct machine.
 */
#include "kernel.h"

#define PTE_P  0x001
#define PTE_RW 0x002
#define PTE_US 0x004
#define PTE_A  0x020
#define PTE_D  0x040
#define PDE_PS 0x080
#define CR0_PG 0x80000000u
#define CR0_WP 0x00010000u
#define CR4_PSE 0x10u

#define WINDOW  0x40000000u            /* a 4 MiB window of linear space: PDE 256 */
#define BIG     0x80000000u            /* a 4 MiB page mapping physical 0 */

static uint32_t pd_a[1024] __attribute__((aligned(4096)));
static uint32_t pd_b[1024] __attribute__((aligned(4096)));
static uint32_t pt_low[1024] __attribute__((aligned(4096)));   /* identity, 0-4 MiB */
static uint32_t pt_win_a[1024] __attribute__((aligned(4096)));
static uint32_t pt_win_b[1024] __attribute__((aligned(4096)));
static uint8_t frames[12][4096] __attribute__((aligned(4096)));

static volatile uint32_t faults, fault_cr2, fault_err;
static volatile int demand;            /* the #PF handler maps what is missing */
static int next_frame = 8;

/* probe_read/probe_write: one memory access that may fault; the #PF handler resumes after
 * it and the probe returns -1 (read) or 0 (write) with probe_faulted set. */
extern char probe_read_site[], probe_read_resume[], probe_write_site[], probe_write_resume[];
uint32_t probe_read(uint32_t address);
int probe_write(uint32_t address, uint32_t value);
static volatile int probe_faulted;
__asm__(
    ".text\n"
    ".global probe_read, probe_read_site, probe_read_resume\n"
    "probe_read:\n"
    "    movl 4(%esp), %ecx\n"
    "probe_read_site:\n"
    "    movl (%ecx), %eax\n"
    "probe_read_resume:\n"
    "    ret\n"
    ".global probe_write, probe_write_site, probe_write_resume\n"
    "probe_write:\n"
    "    movl 4(%esp), %ecx\n"
    "    movl 8(%esp), %edx\n"
    "    movl $1, %eax\n"
    "probe_write_site:\n"
    "    movl %edx, (%ecx)\n"
    "probe_write_resume:\n"
    "    ret\n");

/* The frames are also reached through other linear addresses, which the compiler cannot
 * see: read them with volatile accesses. */
static uint32_t peek(const void *p) { return *(const volatile uint32_t *)p; }

#include "paging.h"

static uint32_t *pte_for(uint32_t *pt, uint32_t linear) { return &pt[(linear >> 12) & 1023]; }

static void page_fault(struct frame *f)
{
    uint32_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    faults++;
    fault_cr2 = cr2;
    fault_err = f->error_code;
    if (demand && (cr2 & 0xFFC00000u) == WINDOW) {
        /* demand paging: give the page a frame, then the access is retried */
        *pte_for(pt_win_a, cr2) = (uint32_t)frames[next_frame++] | PTE_P | PTE_RW;
        return;
    }
    if (f->eip == (uint32_t)probe_read_site) {
        f->eip = (uint32_t)probe_read_resume;
        f->eax = 0xFFFFFFFFu;
        probe_faulted = 1;
    } else if (f->eip == (uint32_t)probe_write_site) {
        f->eip = (uint32_t)probe_write_resume;
        f->eax = 0;
        probe_faulted = 1;
    } else {
        printf("unexpected #PF at eip=%08x cr2=%08x err=%x\n", f->eip, cr2, f->error_code);
        exit(2);
    }
}

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    serial_init();
    gdt_install();
    idt_install();
    set_handler(14, page_fault);
    printf("paging: page tables, faults, 4 MiB pages, INVLPG, WP, CR3 switches\n");

    for (uint32_t i = 0; i < 1024; i++)
        pt_low[i] = (i << 12) | PTE_P | PTE_RW;
    pd_a[0] = (uint32_t)pt_low | PTE_P | PTE_RW;
    pd_b[0] = (uint32_t)pt_low | PTE_P | PTE_RW;
    pd_a[WINDOW >> 22] = (uint32_t)pt_win_a | PTE_P | PTE_RW;
    pd_b[WINDOW >> 22] = (uint32_t)pt_win_b | PTE_P | PTE_RW;
    write_cr3((uint32_t)pd_a);
    write_cr0(read_cr0() | CR0_PG);
    static volatile uint32_t marker = 0x12345678;
    verdict("paging on, identity map: kernel data reads back", marker == 0x12345678);

    /* map a frame into the window, write through it, read it back directly */
    *pte_for(pt_win_a, WINDOW) = (uint32_t)frames[0] | PTE_P | PTE_RW;
    *(volatile uint32_t *)WINDOW = 0xCAFEF00D;
    verdict("a store through a mapping lands in its frame", peek(frames[0]) == 0xCAFEF00D);
    verdict("the PTE is now accessed and dirty",
          (*pte_for(pt_win_a, WINDOW) & (PTE_A | PTE_D)) == (PTE_A | PTE_D));
    verdict("the PDE is now accessed", (pd_a[WINDOW >> 22] & PTE_A) != 0);

    /* unmap it: reads and writes fault, with the error code and CR2 the SDM gives */
    *pte_for(pt_win_a, WINDOW) = 0;
    invlpg(WINDOW);
    probe_faulted = 0;
    uint32_t v = probe_read(WINDOW + 0x10);
    verdict("a read of an unmapped page faults", probe_faulted && v == 0xFFFFFFFFu);
    verdict("... with CR2 = the address and error code 0", fault_cr2 == WINDOW + 0x10 && fault_err == 0);
    probe_faulted = 0;
    probe_write(WINDOW + 0x20, 1);
    verdict("a write faults with error code 2 (write, not present)",
          probe_faulted && fault_cr2 == WINDOW + 0x20 && fault_err == 2);

    /* read-only page: a supervisor may write it unless CR0.WP is set */
    *pte_for(pt_win_a, WINDOW) = (uint32_t)frames[1] | PTE_P;
    invlpg(WINDOW);
    probe_faulted = 0;
    probe_write(WINDOW, 0x11);
    verdict("CR0.WP=0: ring 0 writes a read-only page", !probe_faulted && peek(frames[1]) == 0x11);
    write_cr0(read_cr0() | CR0_WP);
    probe_faulted = 0;
    probe_write(WINDOW, 0x22);
    verdict("CR0.WP=1: the write faults with error code 3",
          probe_faulted && fault_err == 3 && peek(frames[1]) == 0x11);
    write_cr0(read_cr0() & ~CR0_WP);

    /* remap to another frame: after INVLPG the new frame is seen */
    *(volatile uint32_t *)frames[2] = 0xB0B0B0B0;
    *pte_for(pt_win_a, WINDOW) = (uint32_t)frames[2] | PTE_P | PTE_RW;
    invlpg(WINDOW);
    verdict("INVLPG: a remapped page shows its new frame", *(volatile uint32_t *)WINDOW == 0xB0B0B0B0);

    /* a 4 MiB page */
    write_cr4(read_cr4() | CR4_PSE);
    pd_a[BIG >> 22] = 0 | PTE_P | PTE_RW | PDE_PS;
    write_cr3((uint32_t)pd_a);
    verdict("a 4 MiB page maps physical 0 at 2 GiB",
          *(volatile uint32_t *)(BIG + (uint32_t)&marker) == 0x12345678);
    *(volatile uint32_t *)(BIG + (uint32_t)frames[3]) = 0x4D4D4D4D;
    verdict("... and stores through it land there too", peek(frames[3]) == 0x4D4D4D4D);
    verdict("... its PDE is accessed and dirty", (pd_a[BIG >> 22] & (PTE_A | PTE_D)) == (PTE_A | PTE_D));

    /* demand paging: four untouched pages, each faults once and is then mapped */
    uint32_t before = faults;
    demand = 1;
    uint32_t sum = 0;
    for (uint32_t page = 1; page <= 4; page++) {
        volatile uint32_t *p = (volatile uint32_t *)(WINDOW + page * 4096);
        *p = page * 100;
        sum += *p;
    }
    demand = 0;
    verdict("demand paging: 4 pages, 4 faults, all data kept", faults - before == 4 && sum == 1000);

    /* two address spaces: the same linear page, a different frame in each */
    *pte_for(pt_win_a, WINDOW) = (uint32_t)frames[4] | PTE_P | PTE_RW;
    *pte_for(pt_win_b, WINDOW) = (uint32_t)frames[5] | PTE_P | PTE_RW;
    pd_b[BIG >> 22] = pd_a[BIG >> 22];
    write_cr3((uint32_t)pd_a);
    *(volatile uint32_t *)WINDOW = 0xAAAA;
    write_cr3((uint32_t)pd_b);
    *(volatile uint32_t *)WINDOW = 0xBBBB;
    uint32_t in_b = *(volatile uint32_t *)WINDOW;
    write_cr3((uint32_t)pd_a);
    uint32_t in_a = *(volatile uint32_t *)WINDOW;
    verdict("CR3 switch: each address space sees its own frame",
          in_a == 0xAAAA && in_b == 0xBBBB && peek(frames[4]) == 0xAAAA
          && peek(frames[5]) == 0xBBBB);

    write_cr0(read_cr0() & ~CR0_PG);
    verdict("paging off again: identity, data intact", marker == 0x12345678);
    printf("paging: %d checks, %d failed, %u page faults\n", verdicts, verdicts_failed, faults);
    exit(verdicts_failed ? 1 : 0);
}
