/* The paravirtual operations: pyvmm's hypercalls (docs/hypercall-abi.md, ABI version 1)
 * instead of the privileged instructions. The kernel runs at the processor's ring 1 here;
 * what it does not ask for by hypercall (LGDT and the segment loads of gdt_install, reading
 * CR2) traps and is emulated.
 */
#include "kernel.h"
#include "paravirt.h"

static void pyvmm_panic(const char *what, int32_t result) __attribute__((noreturn));

/* ---- the shared info page: events_enabled stands for IF -------------------------------- */
static union {
    struct pyvmm_shared_info info;
    uint8_t page[4096];
} shared_page __attribute__((aligned(4096)));

#define shared (&shared_page.info)

void pyvmm_ops_init(void)
{
    shared->events_enabled = 0;                 /* as IF is at the Multiboot entry */
    int32_t r = HYPERVISOR_set_shared_info((uint32_t)&shared_page);    /* identity: physical */
    if (r < 0)
        pyvmm_panic("set_shared_info", r);
}

/* ---- console --------------------------------------------------------------------------- */
static void pyvmm_console_write(const char *s, unsigned int n)
{
    HYPERVISOR_console_write(s, n);
}

static void pyvmm_panic(const char *what, int32_t result)
{
    printf("pvkernel: hypercall %s failed: %d\n", what, (int)result);
    HYPERVISOR_shutdown(4);
}

/* ---- processor ------------------------------------------------------------------------- */
static void pyvmm_load_trap_table(const trap_info_t *table)
{
    int32_t r = HYPERVISOR_set_trap_table(table);
    if (r < 0)
        pyvmm_panic("set_trap_table", r);
}

static void pyvmm_set_kernel_stack(uint32_t ss, uint32_t esp)
{
    int32_t r = HYPERVISOR_stack_switch(ss, esp);
    if (r < 0)
        pyvmm_panic("stack_switch", r);
}

static void pyvmm_shutdown(int code)
{
    HYPERVISOR_shutdown((uint32_t)code);
}

/* ---- interrupts: the events_enabled byte, no hypercall unless an event waits ----------- */
static void pyvmm_irq_disable(void)
{
    shared->events_enabled = 0;
    __asm__ volatile("" : : : "memory");
}

static void pyvmm_irq_enable(void)
{
    shared->events_enabled = 1;
    __asm__ volatile("" : : : "memory");
    if (shared->event_pending)                  /* it came while events were off: take it now */
        HYPERVISOR_nop();
}

static uint32_t pyvmm_save_fl(void)
{
    return shared->events_enabled ? EFLAGS_IF : 0;
}

static void pyvmm_restore_fl(uint32_t flags)
{
    if (flags & EFLAGS_IF)
        pyvmm_irq_enable();
    else
        pyvmm_irq_disable();
}

static void pyvmm_safe_halt(void)
{
    HYPERVISOR_block();
}

/* ---- the tick: one-shot set_timer events, armed again at each one ---------------------- */
static uint32_t tick_us;
static int tick_vector;

static void pyvmm_timer_start(uint32_t period_us, int vector)
{
    tick_us = period_us;
    tick_vector = vector;
    int32_t r = HYPERVISOR_set_timer(period_us, (uint32_t)vector);
    if (r < 0)
        pyvmm_panic("set_timer", r);
}

static void pyvmm_timer_ack(void)
{
    HYPERVISOR_set_timer(tick_us, (uint32_t)tick_vector);
}

/* ---- memory management: direct paging, batched ----------------------------------------
 * Between lazy_mmu_begin and lazy_mmu_end, set_pte queues an mmu_update request and
 * flush_tlb_one an invlpg; the queue goes to the hypervisor when it is full and at the end:
 * one mmu_update hypercall when it holds only entries, one multicall (runs of entries as
 * mmu_update calls, each invlpg in its place) otherwise. Outside, each is one hypercall.
 */
#define MMU_BATCH   256                 /* requests per hypercall */
#define CALL_BATCH  16                  /* calls per multicall */

static struct pyvmm_mmu_update requests[MMU_BATCH];
static struct pyvmm_multicall_entry calls[CALL_BATCH];
static unsigned int nrequests, run_start, ncalls;
static int lazy;

/* the requests since the last call become one mmu_update call */
static void close_run(void)
{
    if (nrequests == run_start)
        return;
    struct pyvmm_multicall_entry *c = &calls[ncalls++];
    c->op = PYVMM_HC_mmu_update;
    c->args[0] = (uint32_t)&requests[run_start];
    c->args[1] = nrequests - run_start;
    c->args[2] = 0;
    c->args[3] = c->args[4] = 0;
    c->result = 0;
    run_start = nrequests;
}

static void mmu_flush(void)
{
    close_run();
    if (ncalls == 1 && calls[0].op == PYVMM_HC_mmu_update) {
        uint32_t done = 0;
        int32_t r = HYPERVISOR_mmu_update(requests, nrequests, &done);
        if (r != (int32_t)nrequests || done != nrequests)
            pyvmm_panic("mmu_update", r < 0 ? r : (int32_t)done);
    } else if (ncalls) {
        int32_t r = HYPERVISOR_multicall(calls, ncalls);
        if (r < 0)
            pyvmm_panic("multicall", r);
        for (unsigned int i = 0; i < ncalls; i++) {
            int mmu = calls[i].op == PYVMM_HC_mmu_update;
            if (mmu ? calls[i].result != (int32_t)calls[i].args[1] : calls[i].result < 0)
                pyvmm_panic(mmu ? "mmu_update (multicall)" : "invlpg (multicall)",
                            calls[i].result);
        }
    }
    nrequests = run_start = ncalls = 0;
}

static void pyvmm_lazy_mmu_begin(void)
{
    lazy = 1;
}

static void pyvmm_lazy_mmu_end(void)
{
    mmu_flush();
    lazy = 0;
}

static void pyvmm_set_pte(uint32_t *entry, uint32_t value)
{
    if (nrequests == MMU_BATCH || ncalls == CALL_BATCH)
        mmu_flush();
    requests[nrequests].ptr = (uint32_t)entry;  /* the kernel's map is the identity */
    requests[nrequests].val = value;
    nrequests++;
    ptes_written++;
    if (!lazy)
        mmu_flush();
}

static void pyvmm_flush_tlb_one(uint32_t va)
{
    if (!lazy) {
        mmu_flush();
        int32_t r = HYPERVISOR_invlpg(va);
        if (r < 0)
            pyvmm_panic("invlpg", r);
        return;
    }
    close_run();
    if (ncalls == CALL_BATCH)
        mmu_flush();
    struct pyvmm_multicall_entry *c = &calls[ncalls++];
    c->op = PYVMM_HC_invlpg;
    c->args[0] = va;
    c->args[1] = c->args[2] = c->args[3] = c->args[4] = 0;
    c->result = 0;
}

/* set_cr3 checks the directory and every table it maps, then loads it; the first one turns
   paging on. */
static void pyvmm_load_cr3(uint32_t pgdir)
{
    mmu_flush();
    int32_t r = HYPERVISOR_set_cr3(pgdir);
    if (r < 0)
        pyvmm_panic("set_cr3", r);
}

/* The shared info page has no CR2: reading it is the privileged MOV, trapped. */
static uint32_t pyvmm_read_cr2(void)
{
    uint32_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    return cr2;
}

const struct pv_ops pyvmm_ops = {
    .iret = pyvmm_iret,
    .console_write = pyvmm_console_write,
    .load_trap_table = pyvmm_load_trap_table,
    .set_kernel_stack = pyvmm_set_kernel_stack,
    .shutdown = pyvmm_shutdown,
    .save_fl = pyvmm_save_fl,
    .restore_fl = pyvmm_restore_fl,
    .irq_disable = pyvmm_irq_disable,
    .irq_enable = pyvmm_irq_enable,
    .safe_halt = pyvmm_safe_halt,
    .timer_start = pyvmm_timer_start,
    .timer_ack = pyvmm_timer_ack,
    .lazy_mmu_begin = pyvmm_lazy_mmu_begin,
    .lazy_mmu_end = pyvmm_lazy_mmu_end,
    .set_pte = pyvmm_set_pte,
    .flush_tlb_one = pyvmm_flush_tlb_one,
    .load_cr3 = pyvmm_load_cr3,
    .read_cr2 = pyvmm_read_cr2,
};
