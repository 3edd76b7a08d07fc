/* Everything a guest needs from guests/lib: #include "kernel.h" and write kmain(). */
#ifndef GUEST_KERNEL_H
#define GUEST_KERNEL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "gdt.h"
#include "idt.h"
#include "io.h"
#include "multiboot.h"
#include "serial.h"

/* The guest's entry point, called by _start (multiboot.S) on its own stack. Returning
   from it is exit(return value). */
int kmain(uint32_t magic, struct multiboot_info *info);

/* exit.c: end the machine with status (code << 1) | 1 (QEMU isa-debug-exit). */
void exit(int code) __attribute__((noreturn));

/* printf.c (to COM1, or to console_write when a kernel sets it: see printf.c) */
extern void (*console_write)(const char *s, unsigned int n);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int puts(const char *s);        /* s and a newline */

/* check.c: print "<what>  ok|FAIL" and count; `verdicts` and `verdicts_failed` tally them */
extern int verdicts, verdicts_failed;
void verdict(const char *what, int ok);

/* string.c */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strcpy(char *dst, const char *src);
char *strstr(const char *hay, const char *needle);

/* The multiboot command line ("" when there is none), e.g. QEMU -append "verbose". */
static inline const char *multiboot_cmdline(const struct multiboot_info *info)
{
    if (info && (info->flags & MULTIBOOT_INFO_CMDLINE) && info->cmdline)
        return (const char *)info->cmdline;
    return "";
}

#endif
