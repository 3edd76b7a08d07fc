/* pyvmm's paravirtual interface, ABI version 1 (docs/hypercall-abi.md), for guest kernels:
 * how to find the hypervisor, the hypercall numbers, the structures they take, and one
 * inline VMCALL wrapper per hypercall.
 *
 * A hypercall is VMCALL (0F 01 C1) from the guest kernel with the number in EAX and up to
 * five arguments in EBX, ECX, EDX, ESI, EDI; the result comes back in EAX (negative: an
 * error), every other register is preserved. Pointers are guest-virtual, "physical"
 * arguments guest-physical. From ring 3, or without the hypervisor, VMCALL is #UD: call
 * these only after pyvmm_abi_version() said yes.
 */
#ifndef GUEST_PYVMM_HYPERCALL_H
#define GUEST_PYVMM_HYPERCALL_H

/* ---- finding the hypervisor (CPUID) ----------------------------------------------------- */
#define PYVMM_CPUID_BASE       0x40000000u     /* EAX: highest leaf; EBX ECX EDX: signature */
#define PYVMM_CPUID_VERSION    0x40000001u     /* EAX: the ABI version */
#define PYVMM_SIGNATURE        "PyVMM PyVMM "  /* 12 bytes, in EBX, ECX, EDX */
#define PYVMM_ABI_VERSION      1

/* ---- hypercall numbers (EAX) ------------------------------------------------------------ */
#define PYVMM_HC_console_write       0  /* EBX buffer, ECX length -> length */
#define PYVMM_HC_set_trap_table      1  /* EBX table of struct pyvmm_trap_info */
#define PYVMM_HC_stack_switch        2  /* EBX SS, ECX ESP: kernel stack for entries from ring 3 */
#define PYVMM_HC_set_shared_info     3  /* EBX guest-physical address of the shared info page */
#define PYVMM_HC_mmu_update          4  /* EBX requests, ECX count, EDX u32 *done (or 0) */
#define PYVMM_HC_set_cr3             5  /* EBX guest-physical page directory; paging on */
#define PYVMM_HC_invlpg              6  /* EBX virtual address */
#define PYVMM_HC_multicall           7  /* EBX calls, ECX count */
#define PYVMM_HC_set_timer           8  /* EBX delay in microseconds (0: cancel), ECX vector */
#define PYVMM_HC_block               9  /* events on, sleep until one has been handled */
#define PYVMM_HC_iret               10  /* pops EIP, CS, EFLAGS (+ ESP, SS to ring 3) */
#define PYVMM_HC_shutdown           11  /* EBX status: exit status (status << 1) | 1 */
#define PYVMM_HC_get_time           12  /* -> guest microseconds since boot (low 32 bits) */
#define PYVMM_HC_nop                13  /* delivers pending events */

/* ---- errors (negative results) ---------------------------------------------------------- */
#define PYVMM_EPERM   (-1)
#define PYVMM_EFAULT  (-14)
#define PYVMM_EINVAL  (-22)
#define PYVMM_ENOSYS  (-38)

#define PYVMM_TRAP_DPL(n)       ((n) & 3)  /* trap table flags: who may INT n the entry */
#define PYVMM_TRAP_EVENTS_OFF   0x04    /* events off on entry (an interrupt gate; else a trap gate) */

#ifndef __ASSEMBLER__          /* assembly sources get the numbers above only */
#include <stdint.h>

/* ---- structures ------------------------------------------------------------------------- */
/* set_trap_table: an array of these, ended by an entry whose address is 0 (at most 256). */
struct pyvmm_trap_info {
    uint8_t vector;
    uint8_t flags;          /* bits 0-1: the lowest ring that may INT n it; bit 2: events off */
    uint16_t cs;            /* the guest's kernel code selector */
    uint32_t address;       /* the handler; 0 ends the table */
} __attribute__((packed));

/* mmu_update: write `val` into the page-directory or page-table entry at guest-physical
   address `ptr`, after the hypervisor's checks. */
struct pyvmm_mmu_update {
    uint32_t ptr;
    uint32_t val;
};

/* multicall: `count` of these in one hypervisor entry; each gets its own result. */
struct pyvmm_multicall_entry {
    uint32_t op;
    uint32_t args[5];
    int32_t result;
};

/* The shared info page (page-aligned, in guest RAM, registered with set_shared_info). */
struct pyvmm_shared_info {
    volatile uint8_t events_enabled;    /* the guest's interrupt flag, written by the guest */
    volatile uint8_t event_pending;     /* set by the hypervisor: an event waits */
    uint8_t reserved[2];
    volatile uint32_t pending_vector;   /* that event's vector */
    volatile uint64_t time_us;          /* guest time, updated at every hypervisor entry */
} __attribute__((packed));

_Static_assert(sizeof(struct pyvmm_trap_info) == 8, "trap table entries are 8 bytes");
_Static_assert(sizeof(struct pyvmm_mmu_update) == 8, "mmu_update requests are 8 bytes");
_Static_assert(sizeof(struct pyvmm_multicall_entry) == 28, "multicall entries are 28 bytes");
_Static_assert(sizeof(struct pyvmm_shared_info) == 16, "shared info fields up to time_us");

/* ---- detection -------------------------------------------------------------------------- */
static inline void pyvmm_cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* The ABI version pyvmm offers, or 0: no pyvmm signature (a bare machine, QEMU, or a
   hypervisor that hides itself), or a signature without hypercalls (version 0, or no
   version leaf at all: leaf 0x40000000's EAX below 0x40000001). All 12 bytes count. */
static inline uint32_t pyvmm_abi_version(void)
{
    uint32_t max, sig[3], unused;
    pyvmm_cpuid(PYVMM_CPUID_BASE, &max, &sig[0], &sig[1], &sig[2]);
    const char *got = (const char *)sig;
    for (int i = 0; i < 12; i++)
        if (got[i] != PYVMM_SIGNATURE[i])
            return 0;
    if (max < PYVMM_CPUID_VERSION || max > PYVMM_CPUID_BASE + 0xFF)
        return 0;
    uint32_t version;
    pyvmm_cpuid(PYVMM_CPUID_VERSION, &version, &unused, &unused, &unused);
    return version;
}

/* ---- the hypercalls --------------------------------------------------------------------- */
static inline int32_t pyvmm_hypercall5(uint32_t op, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t a4, uint32_t a5)
{
    int32_t ret;
    __asm__ volatile("vmcall"
                     : "=a"(ret)
                     : "a"(op), "b"(a1), "c"(a2), "d"(a3), "S"(a4), "D"(a5)
                     : "memory", "cc");
    return ret;
}

static inline int32_t pyvmm_hypercall2(uint32_t op, uint32_t a1, uint32_t a2)
{
    int32_t ret;
    __asm__ volatile("vmcall" : "=a"(ret) : "a"(op), "b"(a1), "c"(a2) : "memory", "cc");
    return ret;
}

static inline int32_t pyvmm_hypercall3(uint32_t op, uint32_t a1, uint32_t a2, uint32_t a3)
{
    int32_t ret;
    __asm__ volatile("vmcall" : "=a"(ret) : "a"(op), "b"(a1), "c"(a2), "d"(a3) : "memory", "cc");
    return ret;
}

static inline int32_t HYPERVISOR_console_write(const char *buf, uint32_t len)
{
    return pyvmm_hypercall2(PYVMM_HC_console_write, (uint32_t)buf, len);
}

static inline int32_t HYPERVISOR_set_trap_table(const struct pyvmm_trap_info *table)
{
    return pyvmm_hypercall2(PYVMM_HC_set_trap_table, (uint32_t)table, 0);
}

static inline int32_t HYPERVISOR_stack_switch(uint32_t ss, uint32_t esp)
{
    return pyvmm_hypercall2(PYVMM_HC_stack_switch, ss, esp);
}

static inline int32_t HYPERVISOR_set_shared_info(uint32_t phys)
{
    return pyvmm_hypercall2(PYVMM_HC_set_shared_info, phys, 0);
}

static inline int32_t HYPERVISOR_mmu_update(const struct pyvmm_mmu_update *req, uint32_t count,
                                             uint32_t *done)
{
    return pyvmm_hypercall3(PYVMM_HC_mmu_update, (uint32_t)req, count, (uint32_t)done);
}

static inline int32_t HYPERVISOR_set_cr3(uint32_t pgdir_phys)
{
    return pyvmm_hypercall2(PYVMM_HC_set_cr3, pgdir_phys, 0);
}

static inline int32_t HYPERVISOR_invlpg(uint32_t va)
{
    return pyvmm_hypercall2(PYVMM_HC_invlpg, va, 0);
}

static inline int32_t HYPERVISOR_multicall(struct pyvmm_multicall_entry *calls, uint32_t count)
{
    return pyvmm_hypercall2(PYVMM_HC_multicall, (uint32_t)calls, count);
}

static inline int32_t HYPERVISOR_set_timer(uint32_t delay_us, uint32_t vector)
{
    return pyvmm_hypercall2(PYVMM_HC_set_timer, delay_us, vector);
}

/* Events are delivered during the call, and their handlers' return may leave EAX as it
   was at delivery: the result of block is not worth reading. */
static inline void HYPERVISOR_block(void)
{
    pyvmm_hypercall2(PYVMM_HC_block, 0, 0);
}

static inline void HYPERVISOR_shutdown(uint32_t status) __attribute__((noreturn));
static inline void HYPERVISOR_shutdown(uint32_t status)
{
    pyvmm_hypercall2(PYVMM_HC_shutdown, status, 0);
    for (;;)
        ;
}

static inline uint32_t HYPERVISOR_get_time(void)
{
    return (uint32_t)pyvmm_hypercall2(PYVMM_HC_get_time, 0, 0);
}

static inline void HYPERVISOR_nop(void)
{
    pyvmm_hypercall2(PYVMM_HC_nop, 0, 0);
}

/* PYVMM_HC_iret has no C wrapper: it is jumped to with ESP at the frame (see the
   pvkernel guest's traps.S for one that also gives the interrupted code its EAX back). */

#endif /* __ASSEMBLER__ */
#endif
