/* The console: COM1, a 16550 UART at I/O port 0x3F8, polled (no interrupts). */
#ifndef GUEST_SERIAL_H
#define GUEST_SERIAL_H

#define COM1 0x3F8

void serial_init(void);
void serial_putc(char c);       /* '\n' goes out as "\r\n" (a terminal in raw mode wants it) */
void serial_puts(const char *s);
void serial_write(const char *s, unsigned int n);

#endif
