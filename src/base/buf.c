/* Growable byte buffer (struct rlhi_buf). */
#include "rlhi/base.h"

#include <stdio.h>
#include <string.h>

int rlhi_buf_grow(struct rlhi_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    size_t cap;
    char *p;

    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap / 2 * 3 + 16;
    p = rlhi_realloc(b->buf, cap);
    if (!p)
        return RLHI_ENOMEM;
    b->buf = p;
    b->cap = cap;
    return 0;
}

int rlhi_buf_add(struct rlhi_buf *b, const void *data, size_t n)
{
    if (rlhi_buf_grow(b, n))
        return RLHI_ENOMEM;
    if (n)
        memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = 0;
    return 0;
}

int rlhi_buf_adds(struct rlhi_buf *b, const char *s)
{
    return rlhi_buf_add(b, s, strlen(s));
}

int rlhi_buf_addc(struct rlhi_buf *b, char c)
{
    return rlhi_buf_add(b, &c, 1);
}

int rlhi_buf_vaddf(struct rlhi_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return RLHI_EINVAL;
    if (rlhi_buf_grow(b, (size_t)n))
        return RLHI_ENOMEM;
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int rlhi_buf_addf(struct rlhi_buf *b, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = rlhi_buf_vaddf(b, fmt, ap);
    va_end(ap);
    return r;
}

int rlhi_buf_add_json_str(struct rlhi_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;

    if (rlhi_buf_addc(b, '"'))
        return RLHI_ENOMEM;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        int r;

        switch (c) {
        case '"': r = rlhi_buf_add(b, "\\\"", 2); break;
        case '\\': r = rlhi_buf_add(b, "\\\\", 2); break;
        case '\n': r = rlhi_buf_add(b, "\\n", 2); break;
        case '\r': r = rlhi_buf_add(b, "\\r", 2); break;
        case '\t': r = rlhi_buf_add(b, "\\t", 2); break;
        default:
            if (c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                r = rlhi_buf_add(b, esc, 6);
            } else {
                r = rlhi_buf_addc(b, (char)c);
            }
        }
        if (r)
            return r;
    }
    return rlhi_buf_addc(b, '"');
}

void rlhi_buf_clear(struct rlhi_buf *b)
{
    b->len = 0;
    if (b->buf)
        b->buf[0] = 0;
}

void rlhi_buf_release(struct rlhi_buf *b)
{
    rlhi_free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
}

char *rlhi_buf_detach(struct rlhi_buf *b, size_t *len)
{
    char *s;

    if (!b->buf && rlhi_buf_grow(b, 0))
        return NULL;
    b->buf[b->len] = 0;
    s = b->buf;
    if (len)
        *len = b->len;
    b->buf = NULL;
    b->len = b->cap = 0;
    return s;
}
