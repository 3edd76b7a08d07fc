/* pagefault: demand paging, the way a kernel gives memory out: a large region whose pages
 * are all not present, each first touch a page fault that the handler answers with a
 * frame (zero-filled, with a tag word naming its address) and, the first time in a 4 MiB
 * stretch, a page table; then eviction (dirty pages copied to a swap area, clean ones
 * dropped), the refaults that bring them back, and a write-protect pass (every page made
 * read-only, the writes faulting and re-enabling write access: dirty logging).
 *
 * Every fault is a true one, which a software VMM must reflect into the guest: under
 * shadow paging each costs an exit to find that out, then more exits to deliver it, to
 * read CR2, to return with IRET, and a hidden fault to fill the shadow once the guest
 * has mapped the page; under nested paging the guest takes it directly.
 *
 * Four measured phases, each between benchmark markers (port 0x504, guests/README.md),
 * the bracket's count being the pages touched:
 *   demand     (op 18) the first touch of every page: one fault each
 *   evict      (op 19) every 4th page unmapped (INVLPG), a dirty one swapped out first
 *   refault    (op 20) every page touched again: the evicted ones fault back in
 *   wrprotect  (op 21) every page read-only (one CR3 reload), every 4th page written
 * `mib=N` on the command line sets the region's size (1-16 MiB, default 8). Every value
 * printed is a count or a verdict, the same on any correct machine.
 */
#include "kernel.h"

#define PTE_P    0x001
#define PTE_RW   0x002
#define PTE_A    0x020
#define PTE_D    0x040
#define PTE_SWAP 0x200                  /* not present, bits 12-31 a swap slot */
#define CR0_PG   0x80000000u
#define CR0_WP   0x00010000u

#define KERNEL_PDES  10                 /* 0-40 MiB identity */
#define ARENA_BASE   0x01000000u        /* frames: 16-36 MiB */
#define ARENA_FRAMES 5120
#define SWAP_BASE    0x02400000u        /* the swap area: 36-40 MiB, 1024 slots */
#define SWAP_SLOTS   1024

#define REGION       0x40000000u        /* the demand-paged region: PDEs 256-259 */
#define DEFAULT_MIB  8
#define MAX_MIB      16
#define MAX_PAGES    (MAX_MIB * 256)

#define MARKER_PORT  0x504
#define OP_DEMAND    18
#define OP_EVICT     19
#define OP_REFAULT   20
#define OP_WRPROTECT 21

static uint32_t page_dir[1024] __attribute__((aligned(4096)));
static uint32_t kernel_pt[KERNEL_PDES][1024] __attribute__((aligned(4096)));

#include "paging.h"
static inline uint32_t rd(uint32_t addr) { return *(volatile uint32_t *)addr; }
static inline void wr(uint32_t addr, uint32_t v) { *(volatile uint32_t *)addr = v; }

static void zero_page(uint32_t phys)
{
    uint32_t n = 1024;
    __asm__ volatile("rep stosl" : "+D"(phys), "+c"(n) : "a"(0) : "memory");
}

static void copy_page(uint32_t dst, uint32_t src)
{
    uint32_t n = 1024;
    __asm__ volatile("rep movsl" : "+D"(dst), "+S"(src), "+c"(n) :: "memory");
}

/* ---- frames and swap slots: LIFO free lists ---------------------------------------- */
static uint32_t free_frames[ARENA_FRAMES], nfree;
static uint32_t free_slots[SWAP_SLOTS], nslots;

static uint32_t alloc_frame(void)
{
    if (!nfree) {
        printf("pagefault: out of frames\n");
        exit(2);
    }
    return free_frames[--nfree];
}

static void free_frame(uint32_t f) { free_frames[nfree++] = f; }

/* ---- the region and what each page must hold ---------------------------------------- */
static uint32_t pages;                  /* in the region */
static uint32_t expect_word[MAX_PAGES]; /* the value at offset_of(p), as the model says */

static uint32_t page_va(uint32_t p) { return REGION + p * 4096; }
static uint32_t tag(uint32_t va) { return va ^ 0x7A600000u; }               /* word 0 */
static uint32_t offset_of(uint32_t p) { return 4 + ((p * 52) % 4088 & ~3u); }  /* 4-4088 */
static uint32_t *pte_of(uint32_t va) { return (uint32_t *)((page_dir[va >> 22] & ~0xFFFu) + ((va >> 12) & 1023) * 4); }

/* ---- the page-fault handler --------------------------------------------------------- */
static volatile uint32_t expect_cr2, expect_error;
static uint32_t faults, wrong_cr2, wrong_error, errors[8];
static uint32_t tables, zero_fills, swap_ins, write_enables;

static void page_fault(struct frame *f)
{
    uint32_t cr2 = read_cr2(), err = f->error_code;
    faults++;
    errors[err & 7]++;
    wrong_cr2 += cr2 != expect_cr2;
    wrong_error += err != expect_error;
    if (cr2 - REGION >= pages * 4096) {
        printf("pagefault: unexpected #PF at eip=%08x cr2=%08x error=%x\n", f->eip, cr2, err);
        exit(2);
    }
    uint32_t *pde = &page_dir[cr2 >> 22];
    if (!(*pde & PTE_P)) {              /* the first fault in these 4 MiB: a page table */
        uint32_t pt = alloc_frame();
        zero_page(pt);
        *pde = pt | PTE_P | PTE_RW;
        tables++;
    }
    uint32_t *pte = pte_of(cr2), e = *pte;
    if (e & PTE_P) {                    /* present: a write to a write-protected page */
        *pte = e | PTE_RW;              /* (no INVLPG: the fault dropped the old entry) */
        write_enables++;
        return;
    }
    uint32_t frame = alloc_frame();
    if (e & PTE_SWAP) {                 /* it was dirty when evicted: read it back */
        uint32_t slot = e >> 12;
        copy_page(frame, SWAP_BASE + slot * 4096);
        free_slots[nslots++] = slot;
        swap_ins++;
    } else {                            /* never touched, or clean when evicted */
        zero_page(frame);
        wr(frame, tag(cr2 & ~0xFFFu));
        zero_fills++;
    }
    *pte = frame | PTE_P | PTE_RW;      /* (not present before: nothing to invalidate) */
}

/* ---- touching pages ----------------------------------------------------------------- */
/* the PTE of va, or 0 while its page table does not exist yet */
static uint32_t pte_value(uint32_t va) { return page_dir[va >> 22] & PTE_P ? *pte_of(va) : 0; }

/* A read or a write of page p's checked word. `fault` says whether it must fault; a read
 * must see what the model says the word holds. */
static uint32_t read_wrong;
static void touch(uint32_t p, int write, uint32_t value, int fault, uint32_t *expected)
{
    uint32_t va = page_va(p) + offset_of(p);
    expect_cr2 = va;
    if (fault) {
        expect_error = (write ? 2 : 0) | (pte_value(va) & PTE_P);
        (*expected)++;
    } else {
        expect_error = 0xFF;            /* no fault has this error code */
    }
    if (write) {
        wr(va, value);
        expect_word[p] = value;
    } else {
        read_wrong += rd(va) != expect_word[p];
    }
}

/* every page's tag and checked word, with no fault expected: the number of wrong ones */
static uint32_t check_all(void)
{
    uint32_t wrong = 0;
    expect_cr2 = 0;
    expect_error = 0xFF;
    for (uint32_t p = 0; p < pages; p++)
        wrong += rd(page_va(p)) != tag(page_va(p))
               || rd(page_va(p) + offset_of(p)) != expect_word[p];
    return wrong;
}

static void mark_begin(uint32_t op, uint32_t n) { outl(MARKER_PORT, (op << 24) | n); }
static void mark_end(void) { outl(MARKER_PORT, 0); }

static uint32_t parse_mib(const char *cmdline)
{
    const char *p = strstr(cmdline, "mib=");
    if (!p)
        return DEFAULT_MIB;
    uint32_t n = 0;
    int digits = 0;
    for (p += 4; *p >= '0' && *p <= '9'; p++, digits++)
        if ((n = n * 10 + (uint32_t)(*p - '0')) > MAX_MIB)
            n = MAX_MIB + 1;
    if (!digits || n == 0 || n > MAX_MIB) {
        printf("pagefault: mib must be 1 to %u; using %u\n", MAX_MIB, DEFAULT_MIB);
        return DEFAULT_MIB;
    }
    return n;
}

extern char _end[];

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    serial_init();
    uint32_t mib = parse_mib(multiboot_cmdline(info));
    pages = mib * 256;
    gdt_install();
    idt_install();
    set_handler(14, page_fault);
    printf("pagefault: demand paging over %u MiB at 0x%08x (%u pages)\n", mib, REGION, pages);
    if ((uint32_t)_end > ARENA_BASE) {
        printf("pagefault: the kernel overlaps the frame arena\n");
        exit(2);
    }
    for (uint32_t i = ARENA_FRAMES; i-- > 0;)
        free_frames[nfree++] = ARENA_BASE + i * 4096;
    for (uint32_t i = SWAP_SLOTS; i-- > 0;)
        free_slots[nslots++] = i;
    for (uint32_t t = 0; t < KERNEL_PDES; t++) {
        for (uint32_t i = 0; i < 1024; i++)
            kernel_pt[t][i] = ((t * 1024 + i) << 12) | PTE_P | PTE_RW;
        page_dir[t] = (uint32_t)kernel_pt[t] | PTE_P | PTE_RW;
    }
    write_cr3((uint32_t)page_dir);
    write_cr0(read_cr0() | CR0_PG | CR0_WP);

    char what[80];
    uint32_t expected = 0, writes = 0;

    /* demand: every page touched once, in order; a third of them written */
    mark_begin(OP_DEMAND, pages);
    for (uint32_t p = 0; p < pages; p++) {
        int write = p % 3 == 0;
        writes += write;
        touch(p, write, write ? 0x5EED0000u ^ p : 0, 1, &expected);
    }
    mark_end();
    snprintf(what, sizeof what, "demand: %u faults, one per first touch", faults);
    verdict(what, faults == pages && expected == pages);
    snprintf(what, sizeof what, "demand: %u writes (error 2), %u reads (error 0)",
             errors[2], errors[0]);
    verdict(what, errors[2] == writes && errors[0] == pages - writes);
    snprintf(what, sizeof what, "demand: %u page tables, %u zero-filled frames", tables, zero_fills);
    verdict(what, tables == (pages + 1023) / 1024 && zero_fills == pages);
    verdict("demand: every page tagged, zero or as written", check_all() == 0);
    uint32_t dirty_wrong = 0, clean = 0, dirty = 0;
    for (uint32_t p = 0; p < pages; p++)
        dirty_wrong += (*pte_of(page_va(p)) & (PTE_A | PTE_D)) != (p % 3 ? PTE_A : PTE_A | PTE_D);
    verdict("demand: PTEs accessed, dirty where written", dirty_wrong == 0);

    /* evict every 4th page: a dirty one goes to swap first, a clean one is dropped */
    uint32_t frames_in_use = ARENA_FRAMES - nfree;
    mark_begin(OP_EVICT, pages / 4);
    for (uint32_t p = 1; p < pages; p += 4) {
        uint32_t va = page_va(p), *pte = pte_of(va), e = *pte;
        if (e & PTE_D) {
            uint32_t slot = free_slots[--nslots];
            copy_page(SWAP_BASE + slot * 4096, e & ~0xFFFu);
            *pte = (slot << 12) | PTE_SWAP;
            dirty++;
        } else {
            *pte = 0;
            clean++;
        }
        invlpg(va);
        free_frame(e & ~0xFFFu);
    }
    mark_end();
    uint32_t evicted = dirty + clean;
    snprintf(what, sizeof what, "evict: %u pages: %u dirty swapped, %u dropped",
             evicted, dirty, clean);
    verdict(what, evicted == pages / 4 && dirty == (pages + 2) / 12
            && frames_in_use - (ARENA_FRAMES - nfree) == evicted);
    /* (a clean page held zeros and its tag: a zero-filled frame gives it back as it was) */

    /* refault: every page touched again, writes to every 8th; the evicted ones fault */
    uint32_t before = faults, fills_before = zero_fills;
    expected = 0;
    errors[0] = errors[2] = 0;
    mark_begin(OP_REFAULT, pages);
    for (uint32_t p = 0; p < pages; p++) {
        int write = p % 8 == 1;
        touch(p, write, 0xABCD0000u ^ p, p % 4 == 1, &expected);
    }
    mark_end();
    snprintf(what, sizeof what, "refault: %u faults, only the evicted pages", faults - before);
    verdict(what, faults - before == evicted && expected == evicted);
    snprintf(what, sizeof what, "refault: %u swapped in, %u zero-filled", swap_ins,
             zero_fills - fills_before);
    verdict(what, swap_ins == dirty && zero_fills - fills_before == clean && nslots == SWAP_SLOTS);
    snprintf(what, sizeof what, "refault: %u writes (error 2), %u reads (error 0)",
             errors[2], errors[0]);
    verdict(what, errors[2] == pages / 8 && errors[0] == evicted - errors[2]);
    verdict("refault: swapped pages kept their data", check_all() == 0);

    /* write-protect every page (one CR3 reload for all), then write every 4th */
    before = faults;
    expected = 0;
    mark_begin(OP_WRPROTECT, pages);
    for (uint32_t p = 0; p < pages; p++)
        *pte_of(page_va(p)) &= ~PTE_RW;
    write_cr3((uint32_t)page_dir);
    for (uint32_t p = 0; p < pages; p++) {
        int write = p % 4 == 3;
        touch(p, write, 0x3C3C0000u ^ p, write, &expected);
    }
    mark_end();
    snprintf(what, sizeof what, "wrprotect: %u faults (error 3), reads free", faults - before);
    verdict(what, faults - before == pages / 4 && expected == pages / 4
            && errors[3] == pages / 4 && write_enables == pages / 4);
    verdict("wrprotect: every page as written", check_all() == 0);

    verdict("every read saw what was last written, or zero", read_wrong == 0);
    verdict("every fault at the byte touched (CR2)", wrong_cr2 == 0);
    verdict("every fault with the error code expected", wrong_error == 0);

    /* give everything back */
    write_cr0(read_cr0() & ~CR0_PG);
    for (uint32_t p = 0; p < pages; p++) {
        uint32_t e = *pte_of(page_va(p));
        if (e & PTE_P)
            free_frame(e & ~0xFFFu);
    }
    for (uint32_t i = REGION >> 22; i < (REGION >> 22) + (pages + 1023) / 1024; i++)
        free_frame(page_dir[i] & ~0xFFFu);
    verdict("all frames back in the free list", nfree == ARENA_FRAMES);
    printf("pagefault: %u page faults taken\n", faults);
    printf("pagefault: %d checks, %d failed\n", verdicts, verdicts_failed);
    return verdicts_failed ? 1 : 0;
}
