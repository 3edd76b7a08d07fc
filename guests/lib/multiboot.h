/* The Multiboot v1 information structure the loader passes in EBX (only the part we use). */
#ifndef GUEST_MULTIBOOT_H
#define GUEST_MULTIBOOT_H

#include <stdint.h>

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002   /* in EAX at entry */

#define MULTIBOOT_INFO_MEMORY  (1 << 0)         /* mem_lower/mem_upper are valid */
#define MULTIBOOT_INFO_CMDLINE (1 << 2)         /* cmdline is valid */

struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;         /* KiB of memory from 0 (at most 640) */
    uint32_t mem_upper;         /* KiB of memory from 1 MiB up to the first hole */
    uint32_t boot_device;
    uint32_t cmdline;           /* physical address of a NUL-terminated string */
    uint32_t mods_count;
    uint32_t mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length;
    uint32_t mmap_addr;
};

#endif
