/* ptemod: fork and exit over and over, the way a Unix kernel does them: a fresh page
 * directory and page tables for the child, the parent's user mappings copied entry by
 * entry with the writable pages made read-only copy-on-write in both, a CR3 switch into
 * the child, the child's first write to each page faulting and getting its own copy, the
 * switch back, and the teardown (every entry cleared, every frame and page-table page
 * given back, the same pages reused by the next child).
 *
 * It is the workload where a software VMM's shadow page tables hurt most: page-table
 * pages are written all the time (each first write since a CR3 load traps, as the VMM
 * keeps them write-protected), CR3 is reloaded several times per fork, and each reload
 * makes the VMM resync the tables written since, which are then filled again fault by
 * fault, while nested paging (VT-x with EPT) lets the guest do all of it without a
 * single exit.
 *
 * The "process" has four regions in three page tables, as an ELF program would: text
 * (read-only, shared, never copied), data, heap and stack (writable, so copy-on-write).
 * The kernel (0-16 MiB, identity) is shared by every address space through the same
 * four page tables. Frames for page directories, page tables and copies come from an
 * 8 MiB arena with a LIFO free list and reference counts.
 *
 * Two measured phases, each between benchmark markers (port 0x504, guests/README.md):
 *   fork/exit  (op 16) fork, switch to the child, which reads its pages, switch back,
 *                      tear down; the parent then writes its page: a reuse fault
 *   fork/cow   (op 17) the same, but the child also writes 4 pages (4 copy faults),
 *                      and the parent and child take turns twice
 * `iterations=K` on the command line sets the forks per phase (default 48). Everything
 * printed is a count or a verdict, the same on any correct machine.
 */
#include "kernel.h"

#define ITERATIONS 48
#define MAX_ITERATIONS 100000u

#define PTE_P   0x001
#define PTE_RW  0x002
#define PTE_US  0x004
#define PTE_A   0x020
#define PTE_D   0x040
#define PTE_COW 0x200                   /* an "available" bit: copy this page on a write */
#define CR0_PG  0x80000000u
#define CR0_WP  0x00010000u

#define KERNEL_PDES   4                 /* 0-16 MiB identity, shared by every space */
#define ARENA_BASE    0x00800000u       /* frames for tables and copies: 8-16 MiB */
#define ARENA_FRAMES  2048

#define MARKER_PORT   0x504
#define OP_FORK_EXIT  16
#define OP_FORK_COW   17

#define COW_WRITES    4                 /* pages the child writes in the fork/cow phase */

/* The process's regions (its VMAs). */
struct region {
    const char *name;
    uint32_t base, pages, flags;
};
static const struct region regions[] = {
    {"text",  0x08048000u,  8, PTE_P | PTE_US},
    {"data",  0x08050000u, 16, PTE_P | PTE_RW | PTE_US},
    {"heap",  0x40000000u, 32, PTE_P | PTE_RW | PTE_US},
    {"stack", 0xBFFF8000u,  8, PTE_P | PTE_RW | PTE_US},
};
#define NREGIONS (sizeof regions / sizeof regions[0])
#define USER_PAGES 64
#define WRITABLE_PAGES 56               /* data, heap and stack */
#define GEN_PAGE 0x40000000u            /* the parent's generation counter lives here */

static uint32_t kernel_pt[KERNEL_PDES][1024] __attribute__((aligned(4096)));

/* ---- frames ------------------------------------------------------------------------- */
static uint32_t free_list[ARENA_FRAMES];
static uint32_t nfree, min_free;
static uint16_t refs[ARENA_FRAMES];

#define REF(frame) refs[((frame) - ARENA_BASE) >> 12]

static void zero_page(uint32_t phys)
{
    uint32_t d = phys, n = 1024;
    __asm__ volatile("rep stosl" : "+D"(d), "+c"(n) : "a"(0) : "memory");
}

static void copy_page(uint32_t dst, uint32_t src)
{
    uint32_t n = 1024;
    __asm__ volatile("rep movsl" : "+D"(dst), "+S"(src), "+c"(n) :: "memory");
}

static uint32_t alloc_frame(void)
{
    if (nfree == 0) {
        printf("ptemod: out of frames\n");
        exit(2);
    }
    uint32_t f = free_list[--nfree];
    if (nfree < min_free)
        min_free = nfree;
    REF(f) = 1;
    return f;
}

static void put_frame(uint32_t f)
{
    if (--REF(f) == 0)
        free_list[nfree++] = f;
}

/* ---- paging primitives -------------------------------------------------------------- */
#include "paging.h"

static inline uint32_t rd(uint32_t addr) { return *(volatile uint32_t *)addr; }
static inline void wr(uint32_t addr, uint32_t v) { *(volatile uint32_t *)addr = v; }

/* The PTE of `va` in directory `pd` (physical = kernel address), or 0 if it has no table. */
static uint32_t *pte_of(uint32_t pd, uint32_t va)
{
    uint32_t pde = rd(pd + (va >> 22) * 4);
    if (!(pde & PTE_P))
        return 0;
    return (uint32_t *)((pde & ~0xFFFu) + ((va >> 12) & 1023) * 4);
}

static uint32_t *pte_alloc(uint32_t pd, uint32_t va)
{
    uint32_t *pde = (uint32_t *)(pd + (va >> 22) * 4);
    if (!(*pde & PTE_P)) {
        uint32_t pt = alloc_frame();
        zero_page(pt);
        *pde = pt | PTE_P | PTE_RW | PTE_US;
    }
    return pte_of(pd, va);
}

static uint32_t new_directory(void)
{
    uint32_t pd = alloc_frame();
    zero_page(pd);
    for (int i = 0; i < KERNEL_PDES; i++)
        wr(pd + i * 4, (uint32_t)kernel_pt[i] | PTE_P | PTE_RW);
    return pd;
}

/* ---- the data a space should hold ---------------------------------------------------- */
static uint32_t pattern(uint32_t va) { return (va * 0x9E3779B1u) ^ 0xA5A5A5A5u; }
static uint32_t child_mark(uint32_t iteration, uint32_t va) { return 0xC0DE0000u ^ (iteration << 20) ^ va; }

/* The writable pages in order: index 0-55 -> a virtual address */
static uint32_t writable_page(uint32_t k)
{
    for (uint32_t r = 1; r < NREGIONS; r++) {
        if (k < regions[r].pages)
            return regions[r].base + k * 4096;
        k -= regions[r].pages;
    }
    return 0;
}

/* the page the child writes, k-th of iteration i (distinct for k < 56) */
static uint32_t cow_page(uint32_t i, uint32_t k) { return writable_page((i * 7 + k * 11) % WRITABLE_PAGES); }

static uint32_t generation;             /* the parent's counter, word 0 of GEN_PAGE */
static uint32_t written_va[COW_WRITES]; /* this iteration's cow_page(i, k) */

/* Check, through the current CR3, the words 0, 1 and 1023 of every user page: the
 * parent's (pattern, and its counter), plus, for a child, what it wrote at word 1 of its
 * written pages (`written` of them, iteration i). Returns the number of wrong words. */
static uint32_t check_space(uint32_t i, uint32_t written)
{
    uint32_t wrong = 0;
    for (uint32_t r = 0; r < NREGIONS; r++)
        for (uint32_t p = 0; p < regions[r].pages; p++) {
            uint32_t va = regions[r].base + p * 4096;
            uint32_t w0 = va == GEN_PAGE && generation ? generation : pattern(va);
            uint32_t w1 = pattern(va + 4);
            for (uint32_t k = 0; k < written; k++)
                if (written_va[k] == va)
                    w1 = child_mark(i, va);
            wrong += (rd(va) != w0) + (rd(va + 4) != w1) + (rd(va + 4092) != pattern(va + 4092));
        }
    return wrong;
}

/* ---- fork and exit ------------------------------------------------------------------ */
static uint32_t parent_pd;

/* copy the parent's user mappings into a new directory, copy-on-write */
static uint32_t fork_space(void)
{
    uint32_t pd = new_directory();
    for (uint32_t r = 0; r < NREGIONS; r++)
        for (uint32_t p = 0; p < regions[r].pages; p++) {
            uint32_t va = regions[r].base + p * 4096;
            uint32_t *src = pte_of(parent_pd, va);
            uint32_t e = *src;
            if (!(e & PTE_P))
                continue;
            if (e & (PTE_RW | PTE_COW)) {
                e = (e & ~PTE_RW) | PTE_COW;
                *src = e;               /* the parent loses write access too */
            }
            *pte_alloc(pd, va) = e & ~(PTE_A | PTE_D);
            REF(e & ~0xFFFu)++;
        }
    /* the parent's TLB may still let it write: reload its CR3 (what fork's flush does) */
    write_cr3(parent_pd);
    return pd;
}

/* unmap every page, give back every frame, then the page tables and the directory */
static void exit_space(uint32_t pd)
{
    for (uint32_t r = 0; r < NREGIONS; r++)
        for (uint32_t p = 0; p < regions[r].pages; p++) {
            uint32_t *pte = pte_of(pd, regions[r].base + p * 4096);
            if (pte && (*pte & PTE_P)) {
                put_frame(*pte & ~0xFFFu);
                *pte = 0;
            }
        }
    for (uint32_t i = KERNEL_PDES; i < 1024; i++) {
        uint32_t pde = rd(pd + i * 4);
        if (pde & PTE_P) {
            put_frame(pde & ~0xFFFu);
            wr(pd + i * 4, 0);
        }
    }
    put_frame(pd);
}

/* ---- the page-fault handler: copy-on-write ------------------------------------------ */
static volatile uint32_t expect_cr2;    /* where the next fault must be */
static uint32_t cow_copies, cow_reuses, refused, wrong_cr2, wrong_error, faults;

extern char probe_write_site[], probe_write_resume[];
int probe_write(uint32_t address, uint32_t value);
__asm__(
    ".text\n"
    ".global probe_write, probe_write_site, probe_write_resume\n"
    "probe_write:\n"
    "    movl 4(%esp), %ecx\n"
    "    movl 8(%esp), %edx\n"
    "    movl $1, %eax\n"
    "probe_write_site:\n"
    "    movl %edx, (%ecx)\n"
    "probe_write_resume:\n"
    "    ret\n");
static uint32_t probe_error;

static void page_fault(struct frame *f)
{
    uint32_t cr2 = read_cr2();
    faults++;
    if (cr2 != expect_cr2)
        wrong_cr2++;
    uint32_t *pte = pte_of(read_cr3() & ~0xFFFu, cr2);
    if (f->error_code == 3 && pte && (*pte & (PTE_P | PTE_COW)) == (PTE_P | PTE_COW)) {
        uint32_t frame = *pte & ~0xFFFu;
        if (REF(frame) > 1) {           /* shared: copy it, and drop our share */
            uint32_t copy = alloc_frame();
            copy_page(copy, frame);
            REF(frame)--;
            *pte = copy | PTE_P | PTE_RW | PTE_US;
            cow_copies++;
        } else {                        /* ours alone now: just make it writable */
            *pte = (*pte & ~PTE_COW) | PTE_RW;
            cow_reuses++;
        }
        invlpg(cr2);
        return;
    }
    if (f->error_code != 3)
        wrong_error++;
    if (f->eip == (uint32_t)probe_write_site) {     /* a write the space does not allow */
        refused++;
        probe_error = f->error_code;
        f->eip = (uint32_t)probe_write_resume;
        f->eax = 0;
        return;
    }
    printf("ptemod: unexpected #PF at eip=%08x cr2=%08x error=%x\n", f->eip, cr2, f->error_code);
    exit(2);
}

/* ---- the phases --------------------------------------------------------------------- */
static void mark_begin(uint32_t op, uint32_t n) { outl(MARKER_PORT, (op << 24) | n); }
static void mark_end(void) { outl(MARKER_PORT, 0); }

struct tally {
    uint32_t child_wrong, own_wrong, parent_wrong, pd_moved, dirty_wrong;
};

/* the parent writes its counter: a copy-on-write fault on a page it alone holds */
static void parent_writes(void)
{
    generation++;
    expect_cr2 = GEN_PAGE;
    wr(GEN_PAGE, generation);
}

static uint32_t first_pd;

static void fork_exit(uint32_t i, struct tally *t)
{
    uint32_t child = fork_space();
    if (!first_pd)
        first_pd = child;
    t->pd_moved += child != first_pd;
    write_cr3(child);
    t->child_wrong += check_space(i, 0) != 0;
    write_cr3(parent_pd);
    exit_space(child);
    parent_writes();
}

static void fork_cow(uint32_t i, struct tally *t)
{
    uint32_t child = fork_space();
    t->pd_moved += child != first_pd;
    write_cr3(child);
    t->child_wrong += check_space(i, 0) != 0;
    for (uint32_t k = 0; k < COW_WRITES; k++) {
        uint32_t va = written_va[k] = cow_page(i, k);
        expect_cr2 = va + 4;
        wr(va + 4, 0);                  /* faults: the copy */
        wr(va + 4, child_mark(i, va));  /* does not */
    }
    write_cr3(parent_pd);               /* the parent runs: its pages are untouched */
    t->parent_wrong += check_space(i, 0) != 0;
    write_cr3(child);                   /* and the child again: its copies are still there */
    t->own_wrong += check_space(i, COW_WRITES) != 0;
    /* accessed everywhere (it read every page), dirty exactly where it wrote */
    for (uint32_t r = 0; r < NREGIONS; r++)
        for (uint32_t p = 0; p < regions[r].pages; p++) {
            uint32_t va = regions[r].base + p * 4096, want = PTE_A;
            for (uint32_t k = 0; k < COW_WRITES; k++)
                if (written_va[k] == va)
                    want |= PTE_D;
            t->dirty_wrong += (*pte_of(child, va) & (PTE_A | PTE_D)) != want;
        }
    write_cr3(parent_pd);
    exit_space(child);
    parent_writes();
    t->parent_wrong += check_space(i, 0) != 0;
}

static uint32_t parse_iterations(const char *cmdline)
{
    const char *p = strstr(cmdline, "iterations=");
    if (!p)
        return ITERATIONS;
    uint32_t n = 0;
    int digits = 0;
    for (p += 11; *p >= '0' && *p <= '9'; p++, digits++)
        if ((n = n * 10 + (uint32_t)(*p - '0')) > MAX_ITERATIONS)
            n = MAX_ITERATIONS + 1;
    if (!digits || n == 0 || n > MAX_ITERATIONS) {
        printf("ptemod: iterations must be 1 to %u; using %u\n", MAX_ITERATIONS, ITERATIONS);
        return ITERATIONS;
    }
    return n;
}

extern char _end[];

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    serial_init();
    uint32_t n = parse_iterations(multiboot_cmdline(info));
    gdt_install();
    idt_install();
    set_handler(14, page_fault);
    printf("ptemod: fork, copy-on-write and exit, %u forks per phase\n", n);
    if ((uint32_t)_end > ARENA_BASE) {
        printf("ptemod: the kernel overlaps the frame arena\n");
        exit(2);
    }

    for (uint32_t i = ARENA_FRAMES; i-- > 0;)          /* lowest frames first */
        free_list[nfree++] = ARENA_BASE + i * 4096;
    min_free = nfree;
    for (uint32_t t = 0; t < KERNEL_PDES; t++)
        for (uint32_t i = 0; i < 1024; i++)
            kernel_pt[t][i] = ((t * 1024 + i) << 12) | PTE_P | PTE_RW;

    /* the parent: its regions, each page filled with the pattern of its addresses */
    parent_pd = new_directory();
    for (uint32_t r = 0; r < NREGIONS; r++)
        for (uint32_t p = 0; p < regions[r].pages; p++) {
            uint32_t va = regions[r].base + p * 4096, frame = alloc_frame();
            for (uint32_t w = 0; w < 1024; w++)
                wr(frame + w * 4, pattern(va + w * 4));
            *pte_alloc(parent_pd, va) = frame | regions[r].flags;
        }
    uint32_t parent_frames = ARENA_FRAMES - nfree;
    write_cr3(parent_pd);
    write_cr0(read_cr0() | CR0_PG | CR0_WP);
    printf("parent: %u pages (text 8 read-only, data 16, heap 32, stack 8), %u frames\n",
           USER_PAGES, parent_frames);
    verdict("paging on: the parent sees its pages", check_space(0, 0) == 0);

    char what[80];
    uint32_t free_before = nfree;
    struct tally t = {0, 0, 0, 0, 0};
    min_free = nfree;
    mark_begin(OP_FORK_EXIT, n);
    for (uint32_t i = 0; i < n; i++)
        fork_exit(i, &t);
    mark_end();
    snprintf(what, sizeof what, "fork/exit x%u: each child saw its parent's pages", n);
    verdict(what, t.child_wrong == 0);
    snprintf(what, sizeof what, "fork/exit: %u reuse faults, no copies", cow_reuses);
    verdict(what, cow_reuses == n && cow_copies == 0);
    snprintf(what, sizeof what, "fork/exit: %u frames a child (directory, 3 tables)",
         free_before - min_free);
    verdict(what, free_before - min_free == 4);
    verdict("fork/exit: every frame given back", nfree == free_before);

    uint32_t reuses_before = cow_reuses, moved = t.pd_moved;
    t = (struct tally){0, 0, 0, moved, 0};
    min_free = nfree;
    mark_begin(OP_FORK_COW, n);
    for (uint32_t i = 0; i < n; i++)
        fork_cow(i, &t);
    mark_end();
    snprintf(what, sizeof what, "fork/cow x%u: each child saw its parent's pages", n);
    verdict(what, t.child_wrong == 0);
    verdict("fork/cow: each child kept its own writes", t.own_wrong == 0);
    verdict("fork/cow: the parent's pages never changed", t.parent_wrong == 0);
    snprintf(what, sizeof what, "fork/cow: %u copy faults, %u reuse faults", cow_copies,
         cow_reuses - reuses_before);
    verdict(what, cow_copies == n * COW_WRITES && cow_reuses - reuses_before == n);
    verdict("fork/cow: child PTEs accessed, dirty where written", t.dirty_wrong == 0);
    snprintf(what, sizeof what, "fork/cow: %u frames a child (4 tables, %u copies)",
         free_before - min_free, COW_WRITES);
    verdict(what, free_before - min_free == 4 + COW_WRITES);
    verdict("every child reused the first one's directory page", t.pd_moved == 0);
    verdict("fork/cow: every frame given back", nfree == free_before);

    /* the text is read-only and not copy-on-write: a write is refused */
    expect_cr2 = regions[0].base + 8;
    probe_write(regions[0].base + 8, 1);
    verdict("a write to the text faults (error 3) and is refused",
            refused == 1 && probe_error == 3 && rd(regions[0].base + 8) == pattern(regions[0].base + 8));
    verdict("every fault at the address written, error 3", wrong_cr2 == 0 && wrong_error == 0);

    /* tear the parent down too: the arena is whole again */
    write_cr0(read_cr0() & ~CR0_PG);
    exit_space(parent_pd);
    verdict("the parent torn down: all frames free", nfree == ARENA_FRAMES);
    printf("ptemod: %u page faults taken\n", faults);
    printf("ptemod: %d checks, %d failed\n", verdicts, verdicts_failed);
    return verdicts_failed ? 1 : 0;
}
