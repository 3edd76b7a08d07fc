/* A flat GDT: selector 0x08 = ring-0 code, 0x10 = ring-0 data, both base 0, limit 4 GiB. */
#ifndef GUEST_GDT_H
#define GUEST_GDT_H

#include <stdint.h>

#define KERNEL_CS 0x08
#define KERNEL_DS 0x10

#define GDT_ENTRIES 8           /* 0 null, 1 code, 2 data; 3..7 free for a guest's own use */

/* Access byte values for gdt_set_entry (present, ring 0, non-system). */
#define GDT_CODE  0x9A          /* execute/read */
#define GDT_DATA  0x92          /* read/write */
/* Flags nibble: 0xC = 4 KiB granularity, 32-bit; 0x4 = byte granularity, 32-bit. */
#define GDT_FLAT  0xC

void gdt_set_entry(int index, uint32_t base, uint32_t limit, uint8_t access, uint8_t flags);
void gdt_install(void);         /* fill entries 1 and 2, LGDT, reload all segment registers */
uint64_t gdt_get_entry(int index);
uint32_t gdt_base(void);        /* the table's address (its LGDT limit: GDT_ENTRIES * 8 - 1) */

/* The 32-bit task-state segment (SDM Vol. 3, 8.2.1). Without task switches the CPU reads
   only SS0:ESP0 from it (the stack for an entry into ring 0 from an outer ring) and the
   I/O map base. */
struct tss {
    uint32_t link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t es, cs, ss, ds, fs, gs, ldt, iomap;
} __attribute__((packed));

/* Put `tss` in GDT entry `index` (an available 32-bit TSS, DPL 0), with SS0:ESP0 =
   KERNEL_DS:esp0 and no I/O permission bitmap, and load it with LTR. */
void tss_install(int index, struct tss *tss, uint32_t esp0);

#endif
