/* tlbstress: a working set far larger than the TLB: 4096 distinct 4 KiB pages (16 MiB) read
 * one word each, in sequential, strided and pseudo-random orders, sweep after sweep, each
 * sweep folded into an order-dependent checksum; then the same data through 4 MiB pages
 * (CR4.PSE), and a small working set across CR3 reloads, first with ordinary pages and
 * then with global ones (CR4.PGE), which a CR3 reload does not flush.
 *
 * pyvmm's TLB has 256 entries, direct-mapped: 128 pages fit, 4096 miss on every access.
 * (A processor's TLB holds a 4 MiB page in one entry; pyvmm's, like QEMU's, caches it 4 KiB
 * at a time, but its miss is a one-level walk.) Under shadow paging the shadow tables are
 * a TLB with no size limit but a costly miss (a hidden page fault, an exit), in which a
 * 4 MiB page becomes 1024 shadow entries filled one by one; a CR3 reload keeps a cached
 * shadow whose guest tables were not written, but the shadow's entries carry no G bit, so
 * the real TLB loses global pages too. Under nested paging a miss is a longer page walk
 * and no exit at all.
 *
 * Seven measured phases, each between benchmark markers (port 0x504, guests/README.md),
 * the bracket's count being the page accesses; each starts with a CR3 reload, cold:
 *   tlb fits    (op 22) 128 pages, swept again and again: they fit in the TLB
 *   tlb seq     (op 23) all pages in order
 *   tlb stride  (op 24) a quarter of the region plus one page apart
 *   tlb random  (op 25) a pseudo-random permutation
 *   4m random   (op 26) the same permutation through 4 MiB pages
 *   cr3 reload  (op 27) the 128 pages, CR3 reloaded before every sweep
 *   cr3 global  (op 28) the same with the 128 pages (and the kernel) global
 * `pages=N` (a power of two, 1024-8192; default 4096) and `sweeps=R` (1-64, default 4) on
 * the command line set the size. Everything printed is a checksum or a verdict, the same
 * on any correct machine.
 */
#include "kernel.h"

#define PTE_P   0x001
#define PTE_RW  0x002
#define PTE_A   0x020
#define PTE_D   0x040
#define PTE_PS  0x080
#define PTE_G   0x100
#define CR0_PG  0x80000000u
#define CR4_PSE 0x010u
#define CR4_PGE 0x080u

#define KERNEL_PDES 4                   /* 0-16 MiB identity */
#define DATA_PHYS   0x01000000u         /* the data: from 16 MiB, 4 MiB aligned */
#define WINDOW_4K   0x40000000u         /* the data through 4 KiB pages */
#define WINDOW_4M   0x80000000u         /* ... and through 4 MiB pages */
#define MAX_PAGES   8192
#define FIT         128                 /* the small working set */

#define MARKER_PORT 0x504
enum { OP_FITS = 22, OP_SEQ, OP_STRIDE, OP_RANDOM, OP_4M, OP_CR3, OP_CR3_GLOBAL };

static uint32_t pd_a[1024] __attribute__((aligned(4096)));
static uint32_t pd_b[1024] __attribute__((aligned(4096)));
static uint32_t kernel_pt[KERNEL_PDES][1024] __attribute__((aligned(4096)));
static uint32_t data_pt[MAX_PAGES / 1024][1024] __attribute__((aligned(4096)));

#include "paging.h"
static inline uint32_t rd(uint32_t addr) { return *(volatile uint32_t *)addr; }
static inline void wr(uint32_t addr, uint32_t v) { *(volatile uint32_t *)addr = v; }

static void mark_begin(uint32_t op, uint32_t n) { outl(MARKER_PORT, (op << 24) | n); }
static void mark_end(void) { outl(MARKER_PORT, 0); }

/* ---- the data and the orders --------------------------------------------------------- */
static uint32_t offset_of(uint32_t p) { return (p & 1023) * 4; }        /* the word read */
static uint32_t value_of(uint32_t p) { return (p * 0x61C88647u) ^ 0x1234ABCDu; }

enum order { SEQ, STRIDE, RANDOM };

/* the random order: an odd multiply, a xorshift, another odd multiply, each a bijection
 * on the low bits, so j -> page is a permutation of 0..mask */
static uint32_t scramble(uint32_t j, uint32_t mask)
{
    uint32_t x = (j * 0x9E3779B1u) & mask;
    x ^= x >> 5;
    return (x * 0x2C1B3C6Du + 0x297A2D39u) & mask;
}

/* the stride: a quarter of the region plus one page (odd, so every page comes once) */
static uint32_t stride_of(uint32_t mask) { return (mask + 1) / 4 + 1; }

/* the j-th page of a sweep over mask + 1 pages */
static uint32_t page_at(enum order order, uint32_t j, uint32_t mask)
{
    return order == SEQ ? j : order == STRIDE ? (j * stride_of(mask)) & mask : scramble(j, mask);
}

#define SEED 0x811C9DC5u

static uint32_t fold(uint32_t h, uint32_t v)
{
    h = (h + v) * 0x9E3779B1u;
    return h ^ (h >> 16);
}

#define WORD(base, p) rd((base) + ((p) << 12) + offset_of(p))

/* one sweep through the window at `base`: one loop per order, so the loop is lean */
static uint32_t sweep(uint32_t base, enum order order, uint32_t mask, uint32_t h)
{
    uint32_t p = 0, step = stride_of(mask);
    switch (order) {
    case SEQ:
        for (p = 0; p <= mask; p++)
            h = fold(h, WORD(base, p));
        break;
    case STRIDE:
        for (uint32_t j = 0; j <= mask; j++, p = (p + step) & mask)
            h = fold(h, WORD(base, p));
        break;
    case RANDOM:
        for (uint32_t j = 0; j <= mask; j++) {
            p = scramble(j, mask);
            h = fold(h, WORD(base, p));
        }
        break;
    }
    return h;
}

/* what a sweep must give */
static uint32_t expected(enum order order, uint32_t mask, uint32_t seed)
{
    uint32_t h = seed;
    for (uint32_t j = 0; j <= mask; j++)
        h = fold(h, value_of(page_at(order, j, mask)));
    return h;
}

/* A phase: `sweeps` sweeps of mask + 1 pages, CR3 reloaded before the first one (or,
 * with `reload_each`, before every one, between the two directories). Every sweep must
 * give the same checksum, which is returned; *wrong counts the sweeps that did not. */
static uint32_t phase(uint32_t op, uint32_t base, enum order order, uint32_t mask,
                      uint32_t sweeps, int reload_each, uint32_t *wrong)
{
    static uint32_t got[64 * MAX_PAGES / FIT];
    mark_begin(op, sweeps * (mask + 1));
    write_cr3((uint32_t)pd_a);
    for (uint32_t s = 0; s < sweeps; s++) {
        if (reload_each)
            write_cr3((uint32_t)(s & 1 ? pd_a : pd_b));
        got[s] = sweep(base, order, mask, SEED);
    }
    mark_end();
    uint32_t want = expected(order, mask, SEED);
    *wrong = 0;
    for (uint32_t s = 0; s < sweeps; s++)
        *wrong += got[s] != want;
    return want;
}

static uint32_t parse(const char *cmdline, const char *key, uint32_t dflt, uint32_t lo, uint32_t hi)
{
    const char *p = strstr(cmdline, key);
    if (!p)
        return dflt;
    uint32_t n = 0;
    int digits = 0;
    for (p += strlen(key); *p >= '0' && *p <= '9'; p++, digits++)
        if ((n = n * 10 + (uint32_t)(*p - '0')) > hi)
            n = hi + 1;
    if (!digits || n < lo || n > hi) {
        printf("tlbstress: %s must be %u to %u; using %u\n", key, lo, hi, dflt);
        return dflt;
    }
    return n;
}

extern char _end[];

int kmain(uint32_t magic, struct multiboot_info *info)
{
    (void)magic;
    serial_init();
    const char *cmdline = multiboot_cmdline(info);
    uint32_t pages = parse(cmdline, "pages=", 4096, 1024, MAX_PAGES);
    uint32_t sweeps = parse(cmdline, "sweeps=", 4, 1, 64);
    if (pages & (pages - 1)) {
        printf("tlbstress: pages must be a power of two; using 4096\n");
        pages = 4096;
    }
    gdt_install();
    idt_install();
    printf("tlbstress: %u pages (%u MiB), %u sweeps per order, a word per page\n",
           pages, pages / 256, sweeps);
    if ((uint32_t)_end > DATA_PHYS) {
        printf("tlbstress: the kernel overlaps the data\n");
        exit(2);
    }

    for (uint32_t t = 0; t < KERNEL_PDES; t++) {
        for (uint32_t i = 0; i < 1024; i++)
            kernel_pt[t][i] = ((t * 1024 + i) << 12) | PTE_P | PTE_RW;
        pd_a[t] = (uint32_t)kernel_pt[t] | PTE_P | PTE_RW;
    }
    for (uint32_t p = 0; p < pages; p++)
        data_pt[p / 1024][p % 1024] = (DATA_PHYS + p * 4096) | PTE_P | PTE_RW;
    for (uint32_t t = 0; t < pages / 1024; t++) {
        pd_a[(WINDOW_4K >> 22) + t] = (uint32_t)data_pt[t] | PTE_P | PTE_RW;
        pd_a[(WINDOW_4M >> 22) + t] = (DATA_PHYS + t * 0x400000u) | PTE_P | PTE_RW | PTE_PS;
    }
    for (uint32_t i = 0; i < 1024; i++)
        pd_b[i] = pd_a[i];
    write_cr4(read_cr4() | CR4_PSE);
    write_cr3((uint32_t)pd_a);
    write_cr0(read_cr0() | CR0_PG);

    /* every page gets its word, written through the 4 KiB window */
    for (uint32_t p = 0; p < pages; p++)
        wr(WINDOW_4K + p * 4096 + offset_of(p), value_of(p));

    char what[80];
    uint32_t wrong, mask = pages - 1, fit_sweeps = sweeps * pages / FIT;
    uint32_t h = phase(OP_FITS, WINDOW_4K, RANDOM, FIT - 1, fit_sweeps, 0, &wrong);
    snprintf(what, sizeof what, "tlb fits: %u pages x %u: %08x", FIT, fit_sweeps, h);
    verdict(what, wrong == 0);
    static const char *names[] = {"seq", "stride", "random"};
    uint32_t h4k = 0;
    for (enum order o = SEQ; o <= RANDOM; o++) {
        h = phase(OP_SEQ + o, WINDOW_4K, o, mask, sweeps, 0, &wrong);
        snprintf(what, sizeof what, "tlb %s: %u pages x %u: %08x", names[o], pages, sweeps, h);
        verdict(what, wrong == 0);
        h4k = h;
    }

    /* 4 MiB pages over the same frames: the same checksums */
    h = phase(OP_4M, WINDOW_4M, RANDOM, mask, sweeps, 0, &wrong);
    snprintf(what, sizeof what, "4m random: %u pages x %u: %08x", pages, sweeps, h);
    verdict(what, wrong == 0 && h == h4k);
    uint32_t ad = 0;
    for (uint32_t t = 0; t < pages / 1024; t++)
        ad |= pd_a[(WINDOW_4M >> 22) + t] & (PTE_A | PTE_D);
    verdict("4m: its page-directory entries accessed, not dirty", ad == PTE_A);
    uint32_t last = WINDOW_4M + pages * 4096 - 8;     /* a word nobody sweeps */
    uint32_t saved = rd(last);
    wr(last, 0x600D);
    verdict("4m: a write sets its page-directory entry dirty",
            (pd_a[(last >> 22)] & PTE_D) && rd(WINDOW_4K + pages * 4096 - 8) == 0x600D);
    wr(last, saved);

    /* a small working set across CR3 reloads: ordinary pages, then global ones */
    uint32_t fit_cr3 = sweeps * pages / FIT / 4;
    h = phase(OP_CR3, WINDOW_4K, SEQ, FIT - 1, fit_cr3, 1, &wrong);
    snprintf(what, sizeof what, "cr3 reload: %u pages x %u: %08x", FIT, fit_cr3, h);
    verdict(what, wrong == 0);
    for (uint32_t t = 0; t < KERNEL_PDES; t++)
        for (uint32_t i = 0; i < 1024; i++)
            kernel_pt[t][i] |= PTE_G;
    for (uint32_t p = 0; p < FIT; p++)
        data_pt[0][p] |= PTE_G;
    write_cr4(read_cr4() | CR4_PGE);
    uint32_t hg = phase(OP_CR3_GLOBAL, WINDOW_4K, SEQ, FIT - 1, fit_cr3, 1, &wrong);
    snprintf(what, sizeof what, "cr3 global: %u pages x %u: %08x", FIT, fit_cr3, hg);
    verdict(what, wrong == 0 && hg == h);

    /* what must drop a global page's entry: INVLPG, and turning CR4.PGE off */
    uint32_t page0 = WINDOW_4K + offset_of(1);          /* page 0, where page 1 has its word */
    uint32_t before = rd(page0);                        /* (cached now, global) */
    data_pt[0][0] = data_pt[0][1];
    invlpg(WINDOW_4K);
    uint32_t after = rd(page0);
    verdict("INVLPG drops a global page's entry", before != value_of(1) && after == value_of(1));
    data_pt[0][0] = (DATA_PHYS | PTE_P | PTE_RW | PTE_G);
    write_cr4(read_cr4() & ~CR4_PGE);
    write_cr4(read_cr4() | CR4_PGE);
    verdict("clearing CR4.PGE drops global entries", rd(page0) == before);
    /* and a CR3 reload drops an ordinary page's entry */
    uint32_t far = WINDOW_4K + 200 * 4096 + offset_of(201);
    before = rd(far);
    data_pt[0][200] = data_pt[0][201];
    write_cr3((uint32_t)pd_a);
    after = rd(far);
    verdict("a CR3 reload drops an ordinary page's entry", before != value_of(201) && after == value_of(201));
    data_pt[0][200] = (DATA_PHYS + 200 * 4096) | PTE_P | PTE_RW;
    write_cr3((uint32_t)pd_a);

    write_cr4(read_cr4() & ~CR4_PGE);
    write_cr0(read_cr0() & ~CR0_PG);
    printf("tlbstress: %d checks, %d failed\n", verdicts, verdicts_failed);
    return verdicts_failed ? 1 : 0;
}
