/* Byte-level BPE (GPT-2, Llama-3, Qwen2): loading tokenizer.json or GPT-2's
 * encoder.json + vocab.bpe, pre-tokenizing with PCRE2, merging.
 *
 * Loading. jansson takes ~0.5 s (plus ~0.1 s to free) on Qwen's 11 MB
 * tokenizer.json, almost all of it building 150k-key objects and 300k
 * small strings for `model.vocab` and `model.merges` that we would only
 * copy again. So the top-level object and `model` are walked by a small
 * scanner here that reads those two members straight into the token table;
 * every other value (added_tokens, normalizer, pre_tokenizer, ...) is
 * handed to jansson (json_loadb with JSON_DISABLE_EOF_CHECK stops right
 * after the value). Syntax errors anywhere give the line and column.
 *
 * Token strings in these files are written in GPT-2's byte-to-unicode
 * alphabet (each byte 0-255 is a printable code point; `bytes_to_unicode`
 * in openai/gpt-2 encoder.py). The table stores the raw bytes instead, so
 * that encoding starts from bytes and decoding is concatenation.
 *
 * Encoding one stretch of text (between added tokens): NFC when the
 * normalizer asks (utf8proc), then each pre-tokenizer regex stage splits
 * pieces further (HF Split "Isolated": matches and the gaps between them
 * are both pieces), then each final piece is BPE-merged: start from one
 * token per byte, repeatedly merge the adjacent pair with the lowest merge
 * rank, leftmost first (Hugging Face's order). With `ignore_merges`
 * (Llama-3) a piece found whole in the vocabulary is emitted as is.
 * Short pieces use a linear scan; long ones a binary heap with lazy
 * deletion, so a megabyte without spaces costs n log n, not n^2. Texts of
 * 16 KB and more get a per-call cache of piece -> ids (words repeat); it
 * gains 0-30% on real text (GPT-2 and Qwen most, Llama-3 least: with
 * ignore_merges most pieces are one vocabulary lookup anyway).
 *
 * Measured (CPU seconds on the 2-core CI machine while busy; see
 * bench/bench_tokenizer.c, 10 MB of eval JSONL): load GPT-2 0.05 s,
 * Llama-3 0.3 s, Qwen 0.2 s; encode 15, 12 and 10 MB/s.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "rlhi/tokenizer.h"
#include "text/tok_internal.h"

/* GPT-2's pre-tokenizer pattern (openai/gpt-2 encoder.py), used by a
 * ByteLevel pre-tokenizer with use_regex and by encoder.json + vocab.bpe. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
    "|\\s+(?!\\S)|\\s+";

/* Ids at or above this are taken as corruption: real vocabularies stay
 * under 300k (Gemma's 256k is the largest in use), and the token table is
 * sized by the largest id. */
#define MAX_ID (1 << 24)

/* Pieces up to this many bytes merge by linear scan (no allocation); the
 * heap only pays for itself on long pieces. */
#define LINEAR_MAX 128

/* ---- GPT-2 byte <-> unicode ----------------------------------------- */

/* bytes_to_unicode(): printable Latin-1 bytes ('!'..'~', 0xA1..0xAC,
 * 0xAE..0xFF) map to themselves; the other 68 bytes, in increasing order,
 * to U+0100..U+0143. This is the inverse. */
static int cp_to_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7e) || (cp >= 0xa1 && cp <= 0xac) ||
        (cp >= 0xae && cp <= 0xff))
        return (int)cp;
    if (cp >= 0x100 && cp < 0x100 + 33)
        return (int)(cp - 0x100);
    if (cp >= 0x100 + 33 && cp < 0x100 + 67)
        return (int)(cp - 0x100 - 33 + 0x7f);
    if (cp == 0x100 + 67)
        return 0xad;
    return -1;
}

/* Decodes one UTF-8 code point at s[0..n); its length or 0 if invalid. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint32_t c = s[0];
    size_t len, i;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, c &= 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, c &= 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, c &= 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff))
        || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

static size_t utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Raw bytes of byte-alphabet text into `o` (at least n bytes); the length,
 * or -1 when a character is outside the alphabet. */
static long bytelevel_to_raw(const char *s, size_t n, char *o)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, k = 0;

    while (i < n) {
        uint32_t cp;
        size_t l = utf8_next(p + i, n - i, &cp);
        int b;

        if (!l || (b = cp_to_byte(cp)) < 0)
            return -1;
        o[k++] = (char)b;
        i += l;
    }
    return (long)k;
}

bool rlhi__bytelevel_decode(const char *s, size_t n, struct rlhi_buf *out)
{
    long k;

    rlhi_buf_clear(out);
    if (rlhi_buf_grow(out, n))
        return false;
    k = bytelevel_to_raw(s, n, out->buf);
    if (k < 0)
        return false;
    out->len = (size_t)k;
    out->buf[k] = 0;
    return true;
}

/* ---- a small JSON scanner for the big members ------------------------ */

struct jscan {
    const char *buf, *p, *end; /* buf is NUL-terminated at end */
    const char *path;
};

static int jerr_at(const struct jscan *s, const char *at, const char *what)
{
    const char *q, *ls = s->buf;
    int line = 1;

    for (q = s->buf; q < at && q < s->end; q++)
        if (*q == '\n') {
            line++;
            ls = q + 1;
        }
    return rlhi_err(RLHI_EFORMAT, "cannot parse '%s': line %d, column %d: %s",
                    s->path, line, (int)(at - ls) + 1, what);
}

static int jerr(const struct jscan *s, const char *what)
{
    return jerr_at(s, s->p, what);
}

static void jws(struct jscan *s)
{
    while (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')
        s->p++;
}

static int hex4(const char *p, uint32_t *v)
{
    int i;

    *v = 0;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;

        if (d < 0)
            return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

/* Reads a JSON string at s->p (which must be '"') into `out`, unescaped. */
static int jstr(struct jscan *s, struct rlhi_buf *out)
{
    const char *p;

    rlhi_buf_clear(out);
    if (*s->p != '"')
        return jerr(s, "expected a string");
    p = s->p + 1;
    for (;;) {
        const char *q = p;
        uint32_t cp, lo;
        char u[4];

        while (q < s->end && *q != '"' && *q != '\\' && (uint8_t)*q >= 0x20)
            q++;
        if (rlhi_buf_add(out, p, (size_t)(q - p)))
            return rlhi_err(RLHI_ENOMEM, "cannot parse '%s': out of memory",
                            s->path);
        if (q >= s->end)
            return jerr_at(s, s->p, "unterminated string");
        if (*q == '"') {
            s->p = q + 1;
            return 0;
        }
        if (*q != '\\')
            return jerr_at(s, q, "control character in string");
        q++;
        switch (*q) {
        case '"': case '\\': case '/': cp = (uint8_t)*q; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (q + 5 > s->end || hex4(q + 1, &cp))
                return jerr_at(s, q - 1, "invalid \\u escape");
            q += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return jerr_at(s, q - 5, "lone low surrogate");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (q + 7 > s->end || q[1] != '\\' || q[2] != 'u' ||
                    hex4(q + 3, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return jerr_at(s, q - 5, "lone high surrogate");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                q += 6;
            }
            break;
        default:
            return jerr_at(s, q - 1, "invalid escape in string");
        }
        if (rlhi_buf_add(out, u, utf8_put(cp, u)))
            return rlhi_err(RLHI_ENOMEM, "cannot parse '%s': out of memory",
                            s->path);
        p = q + 1;
    }
}

static int jexpect(struct jscan *s, char c, const char *what)
{
    jws(s);
    if (*s->p != c || s->p >= s->end)
        return jerr(s, what);
    s->p++;
    return 0;
}

/* Steps to the next member of an object whose '{' was read: 1 with the
 * key in `key` and s->p at the value, 0 at the closing brace, or < 0. */
static int jkey(struct jscan *s, bool *first, struct rlhi_buf *key)
{
    int r;

    jws(s);
    if (*s->p == '}' && s->p < s->end) {
        s->p++;
        return 0;
    }
    if (!*first) {
        if (*s->p != ',' || s->p >= s->end)
            return jerr(s, "expected ',' or '}'");
        s->p++;
        jws(s);
    }
    *first = false;
    if (*s->p != '"')
        return jerr(s, "expected a string key");
    r = jstr(s, key);
    if (!r)
        r = jexpect(s, ':', "expected ':'");
    jws(s);
    return r < 0 ? r : 1;
}

/* Steps to the next element of an array whose '[' was read: 1 with s->p
 * at the element, 0 at the closing bracket, or < 0. */
static int jelem(struct jscan *s, bool *first)
{
    jws(s);
    if (*s->p == ']' && s->p < s->end) {
        s->p++;
        return 0;
    }
    if (!*first) {
        if (*s->p != ',' || s->p >= s->end)
            return jerr(s, "expected ',' or ']'");
        s->p++;
        jws(s);
    }
    *first = false;
    return 1;
}

static int jint(struct jscan *s, int32_t *v)
{
    const char *p = s->p;
    bool neg = *p == '-';
    int64_t x = 0;

    p += neg;
    if (*p < '0' || *p > '9')
        return jerr(s, "expected an integer");
    while (*p >= '0' && *p <= '9') {
        x = x * 10 + (*p++ - '0');
        if (x > INT32_MAX)
            return jerr(s, "integer out of range");
    }
    if (*p == '.' || *p == 'e' || *p == 'E')
        return jerr(s, "expected an integer");
    s->p = p;
    *v = (int32_t)(neg ? -x : x);
    return 0;
}

/* Reads any JSON value at s->p as a jansson value (new reference). */
static int jvalue(struct jscan *s, json_t **out)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    const char *p = s->p;
    json_error_t e;

    *out = NULL;
    if (*p == '{' || *p == '[') {
        *out = json_loadb(p, (size_t)(s->end - p),
                          JSON_DISABLE_EOF_CHECK | JSON_ALLOW_NUL, &e);
        if (!*out) {
            const char *q, *at = p;
            int line = 1;

            /* jansson counts lines from p; find the absolute line. */
            for (q = p; q < s->end && line < e.line; q++)
                if (*q == '\n') {
                    line++;
                    at = q + 1;
                }
            return jerr_at(s, at + (e.column > 0 ? e.column - 1 : 0), e.text);
        }
        s->p = p + e.position;
        return 0;
    }
    if (*p == '"') {
        int r = jstr(s, &b);

        if (!r)
            *out = json_stringn(b.buf ? b.buf : "", b.len);
        rlhi_buf_release(&b);
        if (r)
            return r;
    } else if (!strncmp(p, "true", 4)) {
        *out = json_true();
        s->p += 4;
    } else if (!strncmp(p, "false", 5)) {
        *out = json_false();
        s->p += 5;
    } else if (!strncmp(p, "null", 4)) {
        *out = json_null();
        s->p += 4;
    } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
        char *end;
        bool real = false;
        const char *q = p;

        while (*q == '-' || *q == '+' || *q == '.' || *q == 'e' ||
               *q == 'E' || (*q >= '0' && *q <= '9'))
            real |= *q == '.' || *q == 'e' || *q == 'E', q++;
        if (real)
            *out = json_real(strtod(p, &end));
        else
            *out = json_integer(strtoll(p, &end, 10));
        if (end != q) {
            json_decref(*out);
            *out = NULL;
            return jerr(s, "invalid number");
        }
        s->p = q;
    } else {
        return jerr(s, "expected a value");
    }
    if (!*out)
        return rlhi_err(RLHI_ENOMEM, "cannot parse '%s': out of memory",
                        s->path);
    return 0;
}

/* ---- what the scanner collects -------------------------------------- */

struct ventry {
    int32_t id;
    uint32_t off, len; /* key in keys, byte-alphabet text */
};

struct mentry {
    uint32_t off, la, lb; /* left at off, right at off+la, in mstr */
};

struct parsed {
    json_t *rest;  /* top-level members other than model */
    json_t *model; /* model members other than vocab and merges */
    struct rlhi_buf keys, mstr, tmp;
    struct ventry *v;
    size_t nv, capv;
    struct mentry *m;
    size_t nm, capm;
    bool have_vocab, have_merges;
};

static void parsed_release(struct parsed *P)
{
    json_decref(P->rest);
    json_decref(P->model);
    rlhi_buf_release(&P->keys);
    rlhi_buf_release(&P->mstr);
    rlhi_buf_release(&P->tmp);
    rlhi_free(P->v);
    rlhi_free(P->m);
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    size_t c = *cap ? *cap : 1024;
    void *q;

    if (need <= *cap)
        return 0;
    while (c < need)
        c *= 2;
    q = rlhi_realloc(*p, c * size);
    if (!q)
        return RLHI_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int oom(const char *path)
{
    return rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", path);
}

/* `vocab`: {"token": id, ...} */
static int parse_vocab(struct jscan *s, struct parsed *P)
{
    bool first = true;
    int r;

    if (*s->p != '{')
        return jerr(s, "expected '{' for the vocabulary");
    s->p++;
    while ((r = jkey(s, &first, &P->tmp)) > 0) {
        struct ventry *e;

        if (grow((void **)&P->v, &P->capv, P->nv + 1, sizeof *P->v))
            return oom(s->path);
        e = &P->v[P->nv];
        if ((r = jint(s, &e->id)) < 0)
            return r;
        if (e->id < 0 || e->id >= MAX_ID)
            return jerr(s, "token id out of range");
        e->off = (uint32_t)P->keys.len;
        e->len = (uint32_t)P->tmp.len;
        if (rlhi_buf_add(&P->keys, P->tmp.buf, P->tmp.len))
            return oom(s->path);
        P->nv++;
    }
    P->have_vocab = true;
    return r;
}

static int add_merge(struct parsed *P, const char *a, size_t la,
                     const char *b, size_t lb, const char *path)
{
    struct mentry *e;

    if (grow((void **)&P->m, &P->capm, P->nm + 1, sizeof *P->m))
        return oom(path);
    e = &P->m[P->nm++];
    e->off = (uint32_t)P->mstr.len;
    e->la = (uint32_t)la;
    e->lb = (uint32_t)lb;
    if (rlhi_buf_add(&P->mstr, a, la) || rlhi_buf_add(&P->mstr, b, lb))
        return oom(path);
    return 0;
}

/* `merges`: ["a b", ...] or [["a", "b"], ...] */
static int parse_merges(struct jscan *s, struct parsed *P)
{
    struct rlhi_buf a = RLHI_BUF_INIT;
    bool first = true;
    int r;

    if (*s->p != '[')
        return jerr(s, "expected '[' for the merges");
    s->p++;
    while ((r = jelem(s, &first)) > 0) {
        const char *at = s->p;

        if (*s->p == '"') {
            const char *sp;

            if ((r = jstr(s, &P->tmp)) < 0)
                break;
            sp = P->tmp.buf ? memchr(P->tmp.buf, ' ', P->tmp.len) : NULL;
            if (!sp) {
                r = jerr_at(s, at, "merge is not of the form \"a b\"");
                break;
            }
            r = add_merge(P, P->tmp.buf, (size_t)(sp - P->tmp.buf), sp + 1,
                          P->tmp.len - (size_t)(sp - P->tmp.buf) - 1,
                          s->path);
        } else if (*s->p == '[') {
            bool f2 = true;

            s->p++;
            if ((r = jelem(s, &f2)) <= 0 || (r = jstr(s, &a)) < 0 ||
                (r = jelem(s, &f2)) <= 0 || (r = jstr(s, &P->tmp)) < 0 ||
                (r = jelem(s, &f2)) != 0) {
                r = r < 0 ? r
                          : jerr_at(s, at, "merge is not a pair of strings");
                break;
            }
            r = add_merge(P, a.buf ? a.buf : "", a.len,
                          P->tmp.buf ? P->tmp.buf : "", P->tmp.len, s->path);
        } else {
            r = jerr(s, "expected a merge (\"a b\" or [\"a\", \"b\"])");
        }
        if (r < 0)
            break;
    }
    rlhi_buf_release(&a);
    P->have_merges = true;
    return r;
}

static int parse_model(struct jscan *s, struct parsed *P)
{
    struct rlhi_buf key = RLHI_BUF_INIT;
    bool first = true;
    int r;

    if (*s->p != '{') {
        rlhi_buf_release(&key);
        return jerr(s, "expected '{' for the model");
    }
    s->p++;
    while ((r = jkey(s, &first, &key)) > 0) {
        json_t *v;

        if (!strcmp(key.buf, "vocab"))
            r = parse_vocab(s, P);
        else if (!strcmp(key.buf, "merges"))
            r = parse_merges(s, P);
        else if ((r = jvalue(s, &v)) == 0)
            json_object_set_new(P->model, key.buf, v);
        if (r < 0)
            break;
    }
    rlhi_buf_release(&key);
    return r;
}

static int parse_top(struct jscan *s, struct parsed *P)
{
    struct rlhi_buf key = RLHI_BUF_INIT;
    bool first = true;
    int r;

    jws(s);
    if (*s->p != '{' || s->p >= s->end)
        return jerr(s, "expected '{' at the start");
    s->p++;
    while ((r = jkey(s, &first, &key)) > 0) {
        json_t *v;

        if (!strcmp(key.buf, "model"))
            r = parse_model(s, P);
        else if ((r = jvalue(s, &v)) == 0)
            json_object_set_new(P->rest, key.buf, v);
        if (r < 0)
            break;
    }
    rlhi_buf_release(&key);
    if (r < 0)
        return r;
    jws(s);
    if (s->p < s->end)
        return jerr(s, "unexpected data after the end");
    return 0;
}

/* ---- building the tables -------------------------------------------- */

static uint32_t merge_hash(uint64_t key, uint32_t cap)
{
    /* Fibonacci hashing of the packed pair. */
    return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

static inline const struct rlhi__merge_slot *
merge_find(const struct rlhi_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t j = merge_hash(key, t->merge_cap);

    for (;; j = (j + 1) & (t->merge_cap - 1)) {
        const struct rlhi__merge_slot *m = &t->merges[j];

        if (m->key == key)
            return m;
        if (m->key == UINT64_MAX)
            return NULL;
    }
}

static int build_merges(struct rlhi_tokenizer *t, struct parsed *P)
{
    uint32_t cap = 16;
    size_t i, maxl = 0;
    char *sa = NULL, *sb = NULL, *sc = NULL;
    int r = 0;

    for (i = 0; i < P->nm; i++)
        if (P->m[i].la + P->m[i].lb > maxl)
            maxl = P->m[i].la + P->m[i].lb;
    while (cap < 2 * P->nm + 2)
        cap *= 2;
    t->merges = rlhi_malloc(cap * sizeof *t->merges);
    sa = rlhi_malloc(maxl + 1);
    sb = rlhi_malloc(maxl + 1);
    sc = rlhi_malloc(2 * maxl + 2);
    if (!t->merges || !sa || !sb || !sc) {
        r = oom(t->path);
        goto out;
    }
    t->merge_cap = cap;
    for (i = 0; i < cap; i++)
        t->merges[i].key = UINT64_MAX;
    for (i = 0; i < P->nm; i++) {
        const struct mentry *e = &P->m[i];
        const char *a = P->mstr.buf + e->off, *b = a + e->la;
        long ka = bytelevel_to_raw(a, e->la, sa);
        long kb = bytelevel_to_raw(b, e->lb, sb);
        int32_t ia, ib, ic;
        uint64_t key;
        uint32_t j;

        if (ka < 0 || kb < 0) {
            r = rlhi_err(RLHI_EFORMAT, "cannot load '%s': merge %zu ('%.*s "
                         "%.*s') is not in the byte-level alphabet", t->path,
                         i, (int)e->la, a, (int)e->lb, b);
            goto out;
        }
        ia = rlhi__vocab_find(t, sa, (size_t)ka);
        ib = rlhi__vocab_find(t, sb, (size_t)kb);
        memcpy(sc, sa, (size_t)ka);
        memcpy(sc + ka, sb, (size_t)kb);
        ic = rlhi__vocab_find(t, sc, (size_t)(ka + kb));
        if (ia < 0 || ib < 0 || ic < 0) {
            r = rlhi_err(RLHI_EFORMAT, "cannot load '%s': merge %zu ('%.*s "
                         "%.*s'): '%.*s%s' is not in the vocabulary",
                         t->path, i, (int)e->la, a, (int)e->lb, b,
                         ia < 0 ? (int)e->la : (int)(e->la + e->lb), a,
                         ia < 0 || ib < 0 ? "" : " (merged)");
            goto out;
        }
        key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        for (j = merge_hash(key, cap);; j = (j + 1) & (cap - 1)) {
            if (t->merges[j].key == key)
                break; /* a repeated merge keeps its first (best) rank */
            if (t->merges[j].key == UINT64_MAX) {
                t->merges[j].key = key;
                t->merges[j].rank = (int32_t)i;
                t->merges[j].id = ic;
                break;
            }
        }
    }
    t->n_merges = (int32_t)P->nm;
out:
    rlhi_free(sa);
    rlhi_free(sb);
    rlhi_free(sc);
    return r;
}

static int add_stage(struct rlhi_tokenizer *t, const char *pattern,
                     size_t len, bool literal,
                     enum rlhi__split_behavior behavior)
{
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    PCRE2_SIZE eoff;
    int ecode;
    pcre2_code *re;

    if (t->n_stages == RLHI__MAX_STAGES)
        return rlhi_err(RLHI_ENOTIMPL, "not implemented: more than %d "
                        "pre-tokenizer splits in '%s'", RLHI__MAX_STAGES,
                        t->path);
    /* UCP: \s, \p{L} etc. follow Unicode, as the Rust regex crate does. */
    opts |= literal ? PCRE2_LITERAL : PCRE2_UCP;
    re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &ecode, &eoff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];

        pcre2_get_error_message(ecode, msg, sizeof msg);
        return rlhi_err(RLHI_EFORMAT, "cannot load '%s': pre-tokenizer "
                        "regex '%.*s': %s at offset %zu", t->path, (int)len,
                        pattern, (char *)msg, (size_t)eoff);
    }
    /* JIT is several times faster; without it the interpreter still works. */
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    t->re[t->n_stages] = re;
    t->behavior[t->n_stages] = behavior;
    t->n_stages++;
    return 0;
}

static const char *jtype(json_t *o)
{
    const char *s = json_string_value(json_object_get(o, "type"));

    return s ? s : "";
}

static int notimpl(const struct rlhi_tokenizer *t, const char *what,
                   const char *type)
{
    return rlhi_err(RLHI_ENOTIMPL, "not implemented: %s '%s' in '%s'", what,
                    type, t->path);
}

/* Reads the pre_tokenizer into regex stages; *bytelevel tells whether a
 * ByteLevel step was seen. */
static int setup_pretok(struct rlhi_tokenizer *t, json_t *p, bool *bytelevel)
{
    const char *type = jtype(p);

    if (json_is_null(p) || !p)
        return 0;
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers"), *e;
        size_t i;
        int r;

        json_array_foreach(list, i, e)
            if ((r = setup_pretok(t, e, bytelevel)) < 0)
                return r;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        json_t *ur = json_object_get(p, "use_regex");

        *bytelevel = true;
        t->prefix_space = json_is_true(json_object_get(p, "add_prefix_space"));
        if (!ur || json_is_true(ur))
            return add_stage(t, gpt2_pattern, strlen(gpt2_pattern), false,
                             SPLIT_ISOLATED);
        return 0;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        json_t *rx = json_object_get(pat, "Regex");
        json_t *lit = json_object_get(pat, "String");
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        enum rlhi__split_behavior b;

        if (json_is_true(json_object_get(p, "invert")))
            return notimpl(t, "pre_tokenizer Split with invert", "true");
        if (beh && !strcmp(beh, "Isolated"))
            b = SPLIT_ISOLATED;
        else if (beh && !strcmp(beh, "Removed"))
            b = SPLIT_REMOVED;
        else
            return notimpl(t, "Split behavior", beh ? beh : "(none)");
        if (json_is_string(rx))
            return add_stage(t, json_string_value(rx),
                             json_string_length(rx), false, b);
        if (json_is_string(lit))
            return add_stage(t, json_string_value(lit),
                             json_string_length(lit), true, b);
        return rlhi_err(RLHI_EFORMAT, "cannot load '%s': Split pre-tokenizer "
                        "without a Regex or String pattern", t->path);
    }
    return notimpl(t, "pre_tokenizer", type);
}

static int setup_normalizer(struct rlhi_tokenizer *t, json_t *n)
{
    const char *type = jtype(n);

    if (!n || json_is_null(n))
        return 0;
    if (!strcmp(type, "NFC")) {
        t->nfc = true;
        return 0;
    }
    if (!strcmp(type, "Sequence")) {
        json_t *e;
        size_t i;
        int r;

        json_array_foreach(json_object_get(n, "normalizers"), i, e)
            if ((r = setup_normalizer(t, e)) < 0)
                return r;
        return 0;
    }
    return notimpl(t, "normalizer", type);
}

static int check_decoder(struct rlhi_tokenizer *t, json_t *d)
{
    const char *type = jtype(d);

    if (!d || json_is_null(d) || !strcmp(type, "ByteLevel"))
        return 0;
    if (!strcmp(type, "Sequence")) {
        json_t *e;
        size_t i;
        int r;

        json_array_foreach(json_object_get(d, "decoders"), i, e)
            if ((r = check_decoder(t, e)) < 0)
                return r;
        return 0;
    }
    return notimpl(t, "decoder", type);
}

/* A TemplateProcessing post-processor that starts with a special token
 * sets BOS and says the model wants it. */
static void read_post(struct rlhi_tokenizer *t, json_t *p)
{
    const char *type = jtype(p), *name;
    json_t *first, *st, *ids;

    if (!strcmp(type, "Sequence")) {
        json_t *e;
        size_t i;

        json_array_foreach(json_object_get(p, "processors"), i, e)
            read_post(t, e);
        return;
    }
    if (strcmp(type, "TemplateProcessing"))
        return;
    first = json_array_get(json_object_get(p, "single"), 0);
    name = json_string_value(
        json_object_get(json_object_get(first, "SpecialToken"), "id"));
    if (!name)
        return;
    st = json_object_get(json_object_get(p, "special_tokens"), name);
    ids = json_object_get(st, "ids");
    if (json_is_integer(json_array_get(ids, 0))) {
        t->bos = (int32_t)json_integer_value(json_array_get(ids, 0));
        t->wants_bos = true;
    }
}

static int check_model(struct rlhi_tokenizer *t, json_t *m)
{
    const char *type = json_string_value(json_object_get(m, "type"));
    json_t *v;

    if (type && strcmp(type, "BPE"))
        return notimpl(t, "model type", type);
    if (json_is_true(json_object_get(m, "byte_fallback")))
        return notimpl(t, "BPE with byte_fallback (SentencePiece-style "
                       "tokenizer.json)", "true");
    v = json_object_get(m, "dropout");
    if (json_is_number(v) && json_number_value(v) > 0)
        return notimpl(t, "BPE dropout", "> 0");
    v = json_object_get(m, "continuing_subword_prefix");
    if (json_is_string(v) && json_string_length(v))
        return notimpl(t, "continuing_subword_prefix", json_string_value(v));
    v = json_object_get(m, "end_of_word_suffix");
    if (json_is_string(v) && json_string_length(v))
        return notimpl(t, "end_of_word_suffix", json_string_value(v));
    t->ignore_merges = json_is_true(json_object_get(m, "ignore_merges"));
    return 0;
}

static int cmp_added_id(const void *a, const void *b)
{
    const struct rlhi__added *x = a, *y = b;

    return x->id < y->id ? -1 : x->id > y->id;
}

static int read_added(struct rlhi_tokenizer *t, json_t *list)
{
    json_t *e;
    size_t i, n = json_array_size(list);

    if (list && !json_is_array(list) && !json_is_null(list))
        return rlhi_err(RLHI_EFORMAT, "cannot load '%s': added_tokens is "
                        "not an array", t->path);
    t->added = rlhi_calloc(n ? n : 1, sizeof *t->added);
    if (!t->added)
        return oom(t->path);
    json_array_foreach(list, i, e) {
        json_t *id = json_object_get(e, "id");
        json_t *c = json_object_get(e, "content");
        struct rlhi__added *a = &t->added[t->n_added];

        if (!json_is_integer(id) || !json_is_string(c) ||
            json_integer_value(id) < 0 || json_integer_value(id) >= MAX_ID)
            return rlhi_err(RLHI_EFORMAT, "cannot load '%s': added_tokens[%zu]"
                            " needs an integer id below %d and a string "
                            "content",
                            t->path, i, MAX_ID);
        a->id = (int32_t)json_integer_value(id);
        a->len = (uint32_t)json_string_length(c);
        a->content = rlhi_strndup(json_string_value(c), a->len);
        if (!a->content)
            return oom(t->path);
        a->special = json_is_true(json_object_get(e, "special"));
        a->lstrip = json_is_true(json_object_get(e, "lstrip"));
        a->rstrip = json_is_true(json_object_get(e, "rstrip"));
        a->single_word = json_is_true(json_object_get(e, "single_word"));
        t->n_added++;
    }
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added_id);
    return 0;
}

/* Fills the token table from the parsed vocabulary, added tokens and
 * merges; the tokenizer is usable afterwards. */
static int build(struct rlhi_tokenizer *t, struct parsed *P)
{
    int32_t n = 0;
    size_t i;
    char *raw = NULL;
    size_t maxl = 0;
    int r, b;

    for (i = 0; i < P->nv; i++) {
        if (P->v[i].id >= n)
            n = P->v[i].id + 1;
        if (P->v[i].len > maxl)
            maxl = P->v[i].len;
    }
    for (i = 0; i < (size_t)t->n_added; i++)
        if (t->added[i].id >= n)
            n = t->added[i].id + 1;
    if (rlhi__tok_reserve(t, n) || !(raw = rlhi_malloc(maxl + 1)))
        return oom(t->path);

    for (i = 0; i < P->nv; i++) {
        const struct ventry *e = &P->v[i];
        const char *key = P->keys.buf + e->off;
        long k = bytelevel_to_raw(key, e->len, raw);

        if (t->flags[e->id] & TOKF_PRESENT) {
            r = rlhi_err(RLHI_EFORMAT, "cannot load '%s': id %d is given to "
                         "both '%s' and '%.*s'", t->path, (int)e->id,
                         t->arena + t->off[e->id], (int)e->len, key);
            goto out;
        }
        /* A token outside the byte alphabet (possible in hand-made files)
         * is kept as its UTF-8 text. */
        if (k < 0)
            r = rlhi__tok_set(t, e->id, key, e->len, 0);
        else
            r = rlhi__tok_set(t, e->id, raw, (size_t)k, 0);
        if (r) {
            r = oom(t->path);
            goto out;
        }
    }
    for (i = 0; i < (size_t)t->n_added; i++) {
        const struct rlhi__added *a = &t->added[i];
        uint8_t f = TOKF_ADDED | (a->special ? TOKF_SPECIAL : 0);

        if (rlhi__tok_set(t, a->id, a->content, a->len, f)) {
            r = oom(t->path);
            goto out;
        }
    }
    if (rlhi__vocab_build(t) || rlhi__added_index(t)) {
        r = oom(t->path);
        goto out;
    }
    for (b = 0; b < 256; b++) {
        char c = (char)b;

        t->byte_id[b] = rlhi__vocab_find(t, &c, 1);
    }
    r = build_merges(t, P);
out:
    rlhi_free(raw);
    return r;
}

int rlhi__bpe_load_json(struct rlhi_tokenizer *t, const char *path)
{
    struct parsed P;
    struct jscan s;
    char *data = NULL;
    size_t len;
    bool bytelevel = false;
    int r;

    memset(&P, 0, sizeof P);
    r = rlhi_file_read(path, &data, &len);
    if (r)
        return r;
    P.rest = json_object();
    P.model = json_object();
    if (!P.rest || !P.model) {
        r = oom(path);
        goto out;
    }
    s.buf = s.p = data;
    s.end = data + len;
    s.path = path;
    if ((r = parse_top(&s, &P)) < 0)
        goto out;
    if (!P.have_vocab || !P.have_merges) {
        r = rlhi_err(RLHI_EFORMAT, "cannot load '%s': no model.vocab and "
                     "model.merges (not a BPE tokenizer.json)", path);
        goto out;
    }
    if ((r = check_model(t, P.model)) < 0 ||
        (r = setup_normalizer(t, json_object_get(P.rest, "normalizer"))) < 0
        || (r = setup_pretok(t, json_object_get(P.rest, "pre_tokenizer"),
                             &bytelevel)) < 0 ||
        (r = check_decoder(t, json_object_get(P.rest, "decoder"))) < 0)
        goto out;
    if (!bytelevel) {
        r = notimpl(t, "BPE without a ByteLevel pre-tokenizer", "");
        goto out;
    }
    if ((r = read_added(t, json_object_get(P.rest, "added_tokens"))) < 0 ||
        (r = build(t, &P)) < 0)
        goto out;
    read_post(t, json_object_get(P.rest, "post_processor"));
out:
    parsed_release(&P);
    rlhi_free(data);
    return r;
}

int rlhi__bpe_load_gpt2(struct rlhi_tokenizer *t, const char *dir)
{
    static const char eot[] = "<|endoftext|>";
    char *enc = rlhi_path_join(dir, "encoder.json");
    char *bpe = rlhi_path_join(dir, "vocab.bpe");
    char *data = NULL, *p, *end;
    struct parsed P;
    struct jscan s;
    size_t len, i, line = 1;
    int r;

    memset(&P, 0, sizeof P);
    if (!enc || !bpe) {
        r = oom(dir);
        goto out;
    }
    rlhi_free(t->path);
    t->path = enc;
    enc = NULL;

    /* encoder.json: one object, token -> id */
    if ((r = rlhi_file_read(t->path, &data, &len)) < 0)
        goto out;
    s.buf = s.p = data;
    s.end = data + len;
    s.path = t->path;
    jws(&s);
    if ((r = parse_vocab(&s, &P)) < 0)
        goto out;
    jws(&s);
    if (s.p < s.end) {
        r = jerr(&s, "unexpected data after the end");
        goto out;
    }
    rlhi_free(data);
    data = NULL;

    /* vocab.bpe: "#version: 0.2" then one "a b" merge per line */
    if ((r = rlhi_file_read(bpe, &data, &len)) < 0)
        goto out;
    for (p = data, end = data + len; p < end; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *q = nl ? nl : end, *sp;
        char *line_start = p;

        p = nl ? nl + 1 : end;
        if (q > line_start && q[-1] == '\r')
            q--;
        if (q == line_start || (line == 1 && *line_start == '#'))
            continue;
        sp = memchr(line_start, ' ', (size_t)(q - line_start));
        if (!sp) {
            r = rlhi_err(RLHI_EFORMAT, "cannot load '%s': line %zu: expected "
                         "a merge 'a b'", bpe, line);
            goto out;
        }
        if ((r = add_merge(&P, line_start, (size_t)(sp - line_start), sp + 1,
                           (size_t)(q - sp - 1), bpe)) < 0)
            goto out;
    }

    /* GPT-2's one special token, when the vocabulary has it. */
    t->added = rlhi_calloc(1, sizeof *t->added);
    if (!t->added) {
        r = oom(dir);
        goto out;
    }
    for (i = 0; i < P.nv; i++)
        if (P.v[i].len == sizeof eot - 1 &&
            !memcmp(P.keys.buf + P.v[i].off, eot, sizeof eot - 1)) {
            t->added[0].id = P.v[i].id;
            t->added[0].content = rlhi_strdup(eot);
            t->added[0].len = sizeof eot - 1;
            t->added[0].special = true;
            if (!t->added[0].content) {
                r = oom(dir);
                goto out;
            }
            t->n_added = 1;
        }
    if ((r = add_stage(t, gpt2_pattern, strlen(gpt2_pattern), false,
                       SPLIT_ISOLATED)) < 0)
        goto out;
    /* A merge error should name vocab.bpe, where the merges live. */
    r = build(t, &P);
    if (r < 0 && strstr(rlhi_errmsg(), "merge "))
        rlhi_err_prefix(r, "in '%s'", bpe);
out:
    parsed_release(&P);
    rlhi_free(data);
    rlhi_free(enc);
    rlhi_free(bpe);
    return r;
}

void rlhi__bpe_free(struct rlhi_tokenizer *t)
{
    int i;

    for (i = 0; i < t->n_stages; i++)
        pcre2_code_free(t->re[i]);
    t->n_stages = 0;
    rlhi_free(t->merges);
    t->merges = NULL;
}

/* ---- merging -------------------------------------------------------- */

static int byte_missing(const struct rlhi_tokenizer *t, uint8_t b)
{
    return rlhi_err(RLHI_EFORMAT, "cannot encode: byte 0x%02x has no token "
                    "in '%s'", b, t->path);
}

/* Linear scan: each step finds the lowest-ranked adjacent pair. */
static int word_linear(const struct rlhi_tokenizer *t, const uint8_t *s,
                       size_t n, struct rlhi__ids *out)
{
    int32_t id[LINEAR_MAX], rank[LINEAR_MAX], nid[LINEAR_MAX];
    size_t m = n, i;

    for (i = 0; i < n; i++)
        if ((id[i] = t->byte_id[s[i]]) < 0)
            return byte_missing(t, s[i]);
    for (i = 0; i + 1 < m; i++) {
        const struct rlhi__merge_slot *ms = merge_find(t, id[i], id[i + 1]);

        rank[i] = ms ? ms->rank : INT32_MAX;
        nid[i] = ms ? ms->id : -1;
    }
    for (;;) {
        int32_t best = INT32_MAX;
        size_t at = 0;

        for (i = 0; i + 1 < m; i++)
            if (rank[i] < best) {
                best = rank[i];
                at = i;
            }
        if (best == INT32_MAX)
            break;
        id[at] = nid[at];
        for (i = at + 1; i + 1 < m; i++) {
            id[i] = id[i + 1];
            rank[i] = rank[i + 1];
            nid[i] = nid[i + 1];
        }
        m--;
        /* Only the pairs touching the merged symbol change. */
        for (i = at ? at - 1 : 0; i <= at && i + 1 < m; i++) {
            const struct rlhi__merge_slot *ms =
                merge_find(t, id[i], id[i + 1]);

            rank[i] = ms ? ms->rank : INT32_MAX;
            nid[i] = ms ? ms->id : -1;
        }
    }
    for (i = 0; i < m; i++)
        if (rlhi__ids_push(out, id[i]))
            return RLHI_ENOMEM;
    return 0;
}

/* A candidate merge in the heap: (rank, pos) orders it; left/right are
 * the ids it was made from, to notice when it has gone stale. */
struct cand {
    int32_t rank, pos, left, right;
};

static bool cand_less(const struct cand *a, const struct cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

RLHI__HEAP_DEFINE(struct cand, cand_less)

/* Heap of candidate merges over a linked list of symbols: the same order
 * as the linear scan (lowest rank, then leftmost), in n log n. */
static int word_heap(const struct rlhi_tokenizer *t, const uint8_t *s,
                     size_t n, struct rlhi__ids *out)
{
    int32_t *id = rlhi_malloc(n * 3 * sizeof *id);
    int32_t *prev = id + n, *next = id + 2 * n;
    /* Each merge adds at most two candidates: n - 1 + 2 (n - 1). */
    struct cand *h = rlhi_malloc(3 * n * sizeof *h);
    size_t nh = 0, i;
    int r = 0;

    if (!id || !h) {
        r = rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
        goto out;
    }
    for (i = 0; i < n; i++) {
        if ((id[i] = t->byte_id[s[i]]) < 0) {
            r = byte_missing(t, s[i]);
            goto out;
        }
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (i = 0; i + 1 < n; i++) {
        const struct rlhi__merge_slot *ms = merge_find(t, id[i], id[i + 1]);

        if (ms)
            heap_push(h, &nh, (struct cand){ms->rank, (int32_t)i, id[i],
                                            id[i + 1]});
    }
    while (nh) {
        struct cand c = heap_pop(h, &nh);
        const struct rlhi__merge_slot *ms;
        int32_t p = c.pos, q = next[p], nq, l;

        /* Stale: the left symbol was merged away or into something else,
         * or its right neighbour changed. */
        if (id[p] != c.left || q < 0 || id[q] != c.right)
            continue;
        ms = merge_find(t, c.left, c.right);
        id[p] = ms->id;
        id[q] = -1;
        nq = next[q];
        next[p] = nq;
        if (nq >= 0)
            prev[nq] = p;
        l = prev[p];
        if (l >= 0 && (ms = merge_find(t, id[l], id[p])))
            heap_push(h, &nh, (struct cand){ms->rank, l, id[l], id[p]});
        if (nq >= 0 && (ms = merge_find(t, id[p], id[nq])))
            heap_push(h, &nh, (struct cand){ms->rank, p, id[p], id[nq]});
    }
    for (i = 0; i < n && !r; i = (size_t)next[i]) {
        r = rlhi__ids_push(out, id[i]);
        if (next[i] < 0)
            break;
    }
out:
    rlhi_free(id);
    rlhi_free(h);
    return r;
}

int rlhi__bpe_word(const struct rlhi_tokenizer *t, const uint8_t *s,
                   size_t n, int use_heap, struct rlhi__ids *out)
{
    if (!n)
        return 0;
    if (use_heap == 1 || (use_heap < 0 && n > LINEAR_MAX))
        return word_heap(t, s, n, out);
    if (n > LINEAR_MAX)
        return rlhi_err(RLHI_EINVAL, "linear merge of %zu bytes: at most %d",
                        n, LINEAR_MAX);
    return word_linear(t, s, n, out);
}

/* A per-call cache of short pieces: real text repeats its words, and a
 * hit skips the merge loop whose table lookups miss the CPU caches (the
 * merge table is 8-16 MB). Direct-mapped, replaced on collision; one
 * encode call owns it, so the shared tokenizer stays read-only. */
#define CACHE_SLOTS 8192 /* x 64 B = 512 KiB */
#define CACHE_BYTES 23
#define CACHE_IDS 8

struct cache_slot {
    uint32_t hash;
    uint8_t len, nids; /* len 0: empty */
    char bytes[CACHE_BYTES];
    int32_t ids[CACHE_IDS];
};

/* Texts shorter than this are encoded without a cache: zeroing and
 * filling one costs more than it saves. A variable only so that tests can compare cached and
 * uncached results. */
size_t rlhi__bpe_cache_min = 16384;

struct enc_ctx {
    pcre2_match_data *md;
    pcre2_match_context *mc;
    struct cache_slot *cache; /* [CACHE_SLOTS] or NULL */
};

static int piece_uncached(const struct rlhi_tokenizer *t, const char *s,
                          size_t n, struct rlhi__ids *out)
{
    if (t->ignore_merges) {
        int32_t id = rlhi__vocab_find(t, s, n);

        if (id >= 0)
            return rlhi__ids_push(out, id);
    }
    if (n == 1) {
        if (t->byte_id[(uint8_t)s[0]] < 0)
            return byte_missing(t, (uint8_t)s[0]);
        return rlhi__ids_push(out, t->byte_id[(uint8_t)s[0]]);
    }
    return rlhi__bpe_word(t, (const uint8_t *)s, n, -1, out);
}

/* One pre-tokenized piece to ids. */
static int piece(const struct rlhi_tokenizer *t, const char *s, size_t n,
                 struct enc_ctx *cx, struct rlhi__ids *out)
{
    struct cache_slot *c;
    uint32_t h;
    size_t start = out->n;
    int r;

    if (!n)
        return 0;
    if (!cx->cache || n > CACHE_BYTES)
        return piece_uncached(t, s, n, out);
    h = rlhi__hash_bytes(s, n);
    c = &cx->cache[h & (CACHE_SLOTS - 1)];
    if (c->len == n && c->hash == h && !memcmp(c->bytes, s, n)) {
        uint8_t i;

        for (i = 0; i < c->nids; i++)
            if ((r = rlhi__ids_push(out, c->ids[i])))
                return r;
        return 0;
    }
    if ((r = piece_uncached(t, s, n, out)))
        return r;
    if (out->n - start <= CACHE_IDS) {
        c->hash = h;
        c->len = (uint8_t)n;
        c->nids = (uint8_t)(out->n - start);
        memcpy(c->bytes, s, n);
        memcpy(c->ids, out->v + start, c->nids * sizeof *c->ids);
    }
    return 0;
}

/* Splits s[0..n) with regex stage k and hands each piece on to the next. */
static int split(const struct rlhi_tokenizer *t, int k, const char *s,
                 size_t n, struct enc_ctx *cx, struct rlhi__ids *out)
{
    size_t off = 0, last = 0;
    int r;

    if (k == t->n_stages)
        return piece(t, s, n, cx, out);
    while (off < n) {
        int rc = pcre2_match(t->re[k], (PCRE2_SPTR)s, n, off, 0, cx->md,
                             cx->mc);
        PCRE2_SIZE *ov, ms, me;

        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];

            pcre2_get_error_message(rc, msg, sizeof msg);
            return rlhi_err(RLHI_EFORMAT, "cannot encode: pre-tokenizer regex "
                            "failed: %s", (char *)msg);
        }
        ov = pcre2_get_ovector_pointer(cx->md);
        ms = ov[0];
        me = ov[1];
        if (me <= ms) {
            /* Empty match: step one character on. */
            off = ms + 1;
            while (off < n && ((uint8_t)s[off] & 0xc0) == 0x80)
                off++;
            continue;
        }
        if (ms > last &&
            (r = split(t, k + 1, s + last, ms - last, cx, out)) < 0)
            return r;
        if (t->behavior[k] == SPLIT_ISOLATED &&
            (r = split(t, k + 1, s + ms, me - ms, cx, out)) < 0)
            return r;
        last = off = me;
    }
    if (last < n)
        return split(t, k + 1, s + last, n - last, cx, out);
    return 0;
}

/* NFC of s[0..n) into `out` when it changes anything (*changed). Lines
 * are normalised one by one: '\n' is a starter that composes with nothing,
 * so NFC(a "\n" b) = NFC(a) "\n" NFC(b). A line whose bytes are all below
 * 0xCC (code points below U+0300) is already NFC: every character that
 * NFC can change or combine is U+0300 or above. A line that is not valid
 * UTF-8 is left as it is. utf8proc allocates with malloc: free() it. */
static int nfc(const char *s, size_t n, struct rlhi_buf *out, bool *changed)
{
    size_t pos = 0;

    *changed = false;
    while (pos < n) {
        const char *nl = memchr(s + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - s) + 1 : n, i;
        utf8proc_uint8_t *m = NULL;
        utf8proc_ssize_t k = -1;
        bool plain = true;

        for (i = pos; i < end && plain; i++)
            plain = (uint8_t)s[i] < 0xcc;
        if (!plain)
            k = utf8proc_map((const utf8proc_uint8_t *)s + pos,
                             (utf8proc_ssize_t)(end - pos), &m,
                             UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (k >= 0 && !*changed &&
            ((size_t)k != end - pos || memcmp(m, s + pos, (size_t)k))) {
            *changed = true;
            if (rlhi_buf_add(out, s, pos)) {
                free(m);
                return RLHI_ENOMEM;
            }
        }
        if (*changed && (k >= 0 ? rlhi_buf_add(out, m, (size_t)k)
                                : rlhi_buf_add(out, s + pos, end - pos))) {
            free(m);
            return RLHI_ENOMEM;
        }
        free(m);
        pos = end;
    }
    return 0;
}

int rlhi__bpe_encode_text(const struct rlhi_tokenizer *t, const char *s,
                          size_t n, struct rlhi__ids *out)
{
    struct rlhi_buf norm = RLHI_BUF_INIT, pre = RLHI_BUF_INIT;
    struct enc_ctx cx = {NULL, NULL, NULL};
    pcre2_jit_stack *js = NULL;
    bool changed = false;
    int r;

    if (!n)
        return 0;
    if (t->nfc && nfc(s, n, &norm, &changed)) {
        r = rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
        goto out;
    }
    if (changed) {
        s = norm.buf;
        n = norm.len;
    }
    if (t->prefix_space && s[0] != ' ') {
        if (rlhi_buf_addc(&pre, ' ') || rlhi_buf_add(&pre, s, n)) {
            r = rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
            goto out;
        }
        s = pre.buf;
        n = pre.len;
    }
    if (n >= rlhi__bpe_cache_min &&
        !(cx.cache = rlhi_calloc(CACHE_SLOTS, sizeof *cx.cache))) {
        r = rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
        goto out;
    }
    if (t->n_stages) {
        cx.md = pcre2_match_data_create(1, NULL);
        cx.mc = pcre2_match_context_create(NULL);
        /* A run of millions of spaces can exhaust JIT's default 32 KiB
         * stack on \s+(?!\S); give it room to grow to 8 MiB. */
        js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
        if (!cx.md || !cx.mc || !js) {
            r = rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
            goto out;
        }
        pcre2_jit_stack_assign(cx.mc, NULL, js);
    }
    r = split(t, 0, s, n, &cx, out);
out:
    pcre2_jit_stack_free(js);
    pcre2_match_context_free(cx.mc);
    pcre2_match_data_free(cx.md);
    rlhi_free(cx.cache);
    rlhi_buf_release(&pre);
    rlhi_buf_release(&norm);
    return r;
}
