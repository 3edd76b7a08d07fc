/* The paravirt operations: every place where the kernel would touch the machine's control
 * state goes through this one table of function pointers, filled at boot either with the
 * native implementations (pvops_native.c: the privileged instructions) or with pyvmm's
 * (pvops_pyvmm.c: hypercalls), as Linux's paravirt_ops does for Xen.
 */
#ifndef PVKERNEL_PARAVIRT_H
#define PVKERNEL_PARAVIRT_H

#include <stdint.h>

#include "pyvmm_hypercall.h"

#define EFLAGS_IF 0x200u

/* The kernel's handlers, in the ABI's trap-table format (the native load_trap_table turns
   it into IDT gates): ended by an entry whose address is 0. */
typedef struct pyvmm_trap_info trap_info_t;

struct pv_ops {
    /* Not called but jumped to, with ESP at an interrupt frame and every register as the
       interrupted code will get it back (traps.S relies on it being first). */
    void (*iret)(void);

    /* console */
    void (*console_write)(const char *s, unsigned int n);

    /* processor */
    void (*load_trap_table)(const trap_info_t *table);
    void (*set_kernel_stack)(uint32_t ss, uint32_t esp);  /* for entries from ring 3 */
    void (*shutdown)(int code);         /* does not return; status (code << 1) | 1 */

    /* interrupts: the flags word has EFLAGS_IF where interrupts (events) were on */
    uint32_t (*save_fl)(void);
    void (*restore_fl)(uint32_t flags);
    void (*irq_disable)(void);
    void (*irq_enable)(void);
    void (*safe_halt)(void);            /* turn interrupts on and wait for one to be handled */

    /* the tick */
    void (*timer_start)(uint32_t period_us, int vector);
    void (*timer_ack)(void);            /* once a tick: EOI, or arm the next one */

    /* memory management; entries are written between lazy_mmu_begin and lazy_mmu_end and
       may take effect only at the end (a batch) */
    void (*lazy_mmu_begin)(void);
    void (*lazy_mmu_end)(void);
    void (*set_pte)(uint32_t *entry, uint32_t value);   /* a PDE or a PTE */
    void (*flush_tlb_one)(uint32_t va);                 /* after changing a present entry */
    void (*load_cr3)(uint32_t pgdir_phys);              /* the first one turns paging on */
    uint32_t (*read_cr2)(void);
};

_Static_assert(__builtin_offsetof(struct pv_ops, iret) == 0, "traps.S jumps through offset 0");

extern struct pv_ops pv_ops;
extern const struct pv_ops native_ops;
extern const struct pv_ops pyvmm_ops;

/* pvops_pyvmm.c: register the shared info page; call once, before using pyvmm_ops. */
void pyvmm_ops_init(void);

/* pvops_*.c: how many page-table entries went through set_pte (the same on both paths). */
extern uint32_t ptes_written;

/* traps.S */
void native_iret(void);
void pyvmm_iret(void);
void enter_frame(void *frame) __attribute__((noreturn));    /* restore it and iret */

#endif
