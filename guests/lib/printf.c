/* A small printf for the serial console.
 *
 * Conversions: %d %i %u %x %X %o %c %s %p %%. Flags: '-' (left-justify), '0' (zero pad),
 * '+' (sign on non-negative %d too).
 * Width: digits or '*'. Precision ('.N') limits %s. Length modifiers 'l' and 'h' are
 * accepted and ignored (int and long are both 32 bits here). No floating point: the
 * guests are integer-only (no FPU on the CPU they target).
 * All arithmetic is 32-bit: no 64-bit division, which would need libgcc.
 */
#include <stdarg.h>
#include "kernel.h"
#include "serial.h"

struct out {
    void (*put)(struct out *o, char c);
    char *buf;                  /* snprintf: where to write; console_write: the pending text */
    size_t size, len;           /* len counts every char, even those that did not fit */
    size_t fill;                /* console_write: bytes waiting in buf */
};

/* NULL: printf and puts drive COM1 themselves (serial_putc). A kernel with a console of its
   own (a hypervisor's, say) sets it: the text then comes in pieces of up to 128 bytes, each
   '\n' already sent as "\r\n", exactly the bytes serial_putc would have written. */
void (*console_write)(const char *s, unsigned int n);

static void put_serial(struct out *o, char c)
{
    serial_putc(c);
    o->len++;
}

static void console_byte(struct out *o, char c)
{
    if (o->fill == o->size) {
        console_write(o->buf, o->fill);
        o->fill = 0;
    }
    o->buf[o->fill++] = c;
}

static void put_console(struct out *o, char c)
{
    if (c == '\n')
        console_byte(o, '\r');
    console_byte(o, c);
    o->len++;
}

static void put_buf(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        o->put(o, c);
}

/* Emit prefix+digits (or a string) in a field of `width`. */
static void field(struct out *o, const char *prefix, const char *s, int len, int width,
                  int left, int zero)
{
    int plen = (int)strlen(prefix);
    int fill = width - plen - len;
    if (!left && !zero)
        pad(o, ' ', fill);
    while (*prefix)
        o->put(o, *prefix++);
    if (!left && zero)
        pad(o, '0', fill);
    for (int i = 0; i < len; i++)
        o->put(o, s[i]);
    if (left)
        pad(o, ' ', fill);
}

static int utoa(uint32_t v, unsigned base, int upper, char *tmp)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char rev[12];
    int n = 0;
    do {
        rev[n++] = digits[v % base];
        v /= base;
    } while (v);
    for (int i = 0; i < n; i++)
        tmp[i] = rev[n - 1 - i];
    return n;
}

static void format(struct out *o, const char *fmt, va_list ap)
{
    char tmp[12];
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            o->put(o, *fmt);
            continue;
        }
        int left = 0, zero = 0, plus = 0, width = 0, prec = -1;
        for (;; fmt++) {                        /* flags */
            if (fmt[1] == '-')
                left = 1;
            else if (fmt[1] == '0')
                zero = 1;
            else if (fmt[1] == '+')
                plus = 1;
            else
                break;
        }
        fmt++;
        if (*fmt == '*') {
            width = va_arg(ap, int);
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9')
                width = width * 10 + (*fmt++ - '0');
        }
        if (*fmt == '.') {
            prec = 0;
            fmt++;
            while (*fmt >= '0' && *fmt <= '9')
                prec = prec * 10 + (*fmt++ - '0');
        }
        while (*fmt == 'l' || *fmt == 'h')
            fmt++;

        switch (*fmt) {
        case 'd':
        case 'i': {
            int v = va_arg(ap, int);
            /* Negate as unsigned: -INT_MIN overflows as int. */
            uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
            field(o, v < 0 ? "-" : plus ? "+" : "", tmp, utoa(u, 10, 0, tmp), width, left, zero);
            break;
        }
        case 'u':
            field(o, "", tmp, utoa(va_arg(ap, uint32_t), 10, 0, tmp), width, left, zero);
            break;
        case 'x':
        case 'X':
            field(o, "", tmp, utoa(va_arg(ap, uint32_t), 16, *fmt == 'X', tmp), width, left,
                  zero);
            break;
        case 'o':
            field(o, "", tmp, utoa(va_arg(ap, uint32_t), 8, 0, tmp), width, left, zero);
            break;
        case 'p': {
            uint32_t v = (uint32_t)va_arg(ap, void *);
            int n = utoa(v, 16, 0, tmp);
            /* Always 8 digits after 0x: addresses line up. */
            char full[8];
            for (int i = 0; i < 8; i++)
                full[i] = i < 8 - n ? '0' : tmp[i - (8 - n)];
            field(o, "0x", full, 8, width, left, 0);
            break;
        }
        case 'c':
            tmp[0] = (char)va_arg(ap, int);
            field(o, "", tmp, 1, width, left, 0);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)strlen(s);
            if (prec >= 0 && prec < n)
                n = prec;
            field(o, "", s, n, width, left, 0);
            break;
        }
        case '%':
            o->put(o, '%');
            break;
        case '\0':                              /* a lone '%' at the end */
            return;
        default:                                /* unknown: print it as written */
            o->put(o, '%');
            o->put(o, *fmt);
            break;
        }
    }
}

int vprintf(const char *fmt, va_list ap)
{
    if (console_write) {
        char text[128];
        struct out o = { put_console, text, sizeof text, 0, 0 };
        format(&o, fmt, ap);
        if (o.fill)
            console_write(text, o.fill);
        return (int)o.len;
    }
    struct out o = { put_serial, 0, 0, 0, 0 };
    format(&o, fmt, ap);
    return (int)o.len;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { put_buf, buf, size, 0, 0 };
    format(&o, fmt, ap);
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int puts(const char *s)
{
    if (console_write)
        return printf("%s\n", s) < 0 ? -1 : 0;
    serial_puts(s);
    serial_putc('\n');
    return 0;
}
