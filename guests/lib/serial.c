/* Polled 16550 UART driver for COM1. */
#include "serial.h"
#include "io.h"

/* Register offsets from the base port. */
#define THR 0   /* transmit holding register (write), DLAB=0 */
#define DLL 0   /* divisor latch low, DLAB=1 */
#define IER 1   /* interrupt enable, DLAB=0 */
#define DLM 1   /* divisor latch high, DLAB=1 */
#define FCR 2   /* FIFO control (write) */
#define LCR 3   /* line control: bit 7 = DLAB */
#define MCR 4   /* modem control */
#define LSR 5   /* line status: bit 5 = THR empty */

#define LSR_THR_EMPTY 0x20

void serial_init(void)
{
    outb(COM1 + IER, 0x00);     /* we poll: no UART interrupts */
    outb(COM1 + LCR, 0x80);     /* DLAB on, to set the baud divisor */
    outb(COM1 + DLL, 0x01);     /* 115200 / 1 = 115200 baud */
    outb(COM1 + DLM, 0x00);
    outb(COM1 + LCR, 0x03);     /* DLAB off; 8 data bits, no parity, 1 stop bit */
    outb(COM1 + FCR, 0x07);     /* enable and clear both FIFOs */
    outb(COM1 + MCR, 0x03);     /* DTR and RTS (no OUT2: keeps the IRQ line quiet) */
}

static void raw_putc(char c)
{
    /* Wait until the transmitter can take a byte. An emulator's UART is always ready,
       but this is what real hardware (and a faithful model) needs. */
    while (!(inb(COM1 + LSR) & LSR_THR_EMPTY))
        ;
    outb(COM1 + THR, (uint8_t)c);
}

void serial_putc(char c)
{
    if (c == '\n')
        raw_putc('\r');
    raw_putc(c);
}

void serial_write(const char *s, unsigned int n)
{
    while (n--)
        serial_putc(*s++);
}

void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}
