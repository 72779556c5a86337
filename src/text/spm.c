/* SentencePiece-style BPE as in llama2.c: the tokenizer .bin file, encode()
 * and decode() of karpathy/llama2.c run.c, reproduced exactly.
 *
 * File (run.c build_tokenizer): int32 max_token_length, then per token
 * float32 score, int32 len, len bytes; little-endian, no count: the number
 * of records comes from the model header in run.c, or here from the end of
 * the file. Ids 0-2 are <unk>, <s> (BOS), </s> (EOS); 3..258 the byte
 * tokens <0x00>..<0xFF>.
 *
 * Encode (run.c encode): optional BOS (1), then the piece " " (dummy
 * prefix) when the text is not empty, then each UTF-8 code point (at most
 * 4 bytes) looked up whole, else one byte token per byte (id = byte + 3);
 * then repeatedly merge the adjacent pair whose concatenation is in the
 * vocabulary with the highest score (> -1e10), the first such pair on
 * ties; then optional EOS (2). run.c rescans every pair after each merge,
 * O(n^2) in the text length; rlhi__spm_encode keeps the candidates in a
 * heap ordered by (score, position), which picks the same pair every step,
 * and rlhi__spm_encode_plain keeps run.c's loop as the reference twin.
 *
 * Deliberate differences, none of which run.c can meet without undefined
 * behaviour: run.c reads the text as a C string, here all `len` bytes are
 * encoded (a NUL byte gets byte token 3); when the vocabulary has no " "
 * run.c pushes id -1, here the prefix is left out; when two tokens have the
 * same string run.c's bsearch may find either, here the lowest id wins.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "rlhi/tokenizer.h"
#include "text/tok_internal.h"

/* Token strings longer than this are taken as corruption (the Llama-2
 * vocabulary's longest is 16 bytes; 1 MiB is far beyond any real one). */
#define MAX_PIECE (1 << 20)

/* run.c's best_score starts here: pairs scoring at or below never merge. */
#define MIN_SCORE (-1e10f)

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

int rlhi__spm_load(struct rlhi_tokenizer *t, const char *path,
                   int vocab_size)
{
    struct rlhi_mmap m;
    const uint8_t *p, *end;
    int32_t n = 0, cap = 0, i;
    int r;

    r = rlhi_mmap_open(&m, path);
    if (r)
        return r;
    p = m.data;
    end = p + m.size;
    if (m.size < 4) {
        r = rlhi_err(RLHI_EFORMAT, "cannot load tokenizer '%s': file is %zu "
                     "bytes, too short for a llama2.c tokenizer", path,
                     m.size);
        goto out;
    }
    t->max_token_length = (int32_t)rd32(p);
    if (t->max_token_length <= 0 || t->max_token_length > MAX_PIECE) {
        r = rlhi_err(RLHI_EFORMAT, "cannot load tokenizer '%s': "
                     "max_token_length %d is not plausible\nhint: is this a "
                     "llama2.c tokenizer .bin?", path,
                     (int)t->max_token_length);
        goto out;
    }
    p += 4;
    while (vocab_size > 0 ? n < vocab_size : p < end) {
        uint32_t bits;
        int32_t len;
        float score;

        if (end - p < 8) {
            r = rlhi_err(RLHI_EFORMAT, "cannot load tokenizer '%s': token %d:"
                         " file ends inside the record header (byte %zu)",
                         path, (int)n, (size_t)(p - (const uint8_t *)m.data));
            goto out;
        }
        bits = rd32(p);
        memcpy(&score, &bits, sizeof score);
        len = (int32_t)rd32(p + 4);
        if (len < 0 || len > MAX_PIECE) {
            r = rlhi_err(RLHI_EFORMAT, "cannot load tokenizer '%s': token %d:"
                         " length %d is out of range (byte %zu)", path,
                         (int)n, (int)len,
                         (size_t)(p + 4 - (const uint8_t *)m.data));
            goto out;
        }
        if (end - p - 8 < len) {
            r = rlhi_err(RLHI_EFORMAT, "cannot load tokenizer '%s': token %d:"
                         " file ends inside its %d bytes (byte %zu)", path,
                         (int)n, (int)len,
                         (size_t)(p + 8 - (const uint8_t *)m.data));
            goto out;
        }
        if (n == cap) {
            float *s;

            cap = cap ? 2 * cap : 1024;
            s = rlhi_realloc(t->scores, (size_t)cap * sizeof *s);
            if (!s) {
                r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory",
                             path);
                goto out;
            }
            t->scores = s;
        }
        if (rlhi__tok_reserve(t, n + 1) ||
            rlhi__tok_set(t, n, p + 8, (size_t)len, 0)) {
            r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory",
                         path);
            goto out;
        }
        t->scores[n] = score;
        n++;
        p += 8 + len;
    }
    if (n < 3) {
        r = rlhi_err(RLHI_EFORMAT, "cannot load tokenizer '%s': %d tokens, "
                     "need at least <unk>, <s>, </s>", path, (int)n);
        goto out;
    }
    if (rlhi__vocab_build(t)) {
        r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", path);
        goto out;
    }
    t->bos = 1;
    t->eos = 2;
    t->space_id = rlhi__vocab_find(t, " ", 1);
    for (i = 0; i < 256 && i + 3 < n; i++)
        t->byte_id[i] = i + 3;
out:
    rlhi_mmap_close(&m);
    return r;
}

/* The code-point pass of run.c encode(): whole code points, else bytes. */
static int codepoints(const struct rlhi_tokenizer *t, const char *text,
                      size_t len, struct rlhi__ids *out)
{
    char buf[5];
    size_t i, k = 0;
    int r;

    if (len && t->space_id >= 0 && (r = rlhi__ids_push(out, t->space_id)))
        return r;
    for (i = 0; i < len; i++) {
        uint8_t c = (uint8_t)text[i];
        uint8_t next = i + 1 < len ? (uint8_t)text[i + 1] : 0;
        int32_t id;
        size_t j;

        if ((c & 0xc0) != 0x80)
            k = 0;
        buf[k++] = (char)c;
        /* A code point goes on while continuation bytes follow, up to 4. */
        if ((next & 0xc0) == 0x80 && k < 4)
            continue;
        id = rlhi__vocab_find(t, buf, k);
        if (id >= 0) {
            if ((r = rlhi__ids_push(out, id)))
                return r;
        } else {
            for (j = 0; j < k; j++) {
                int32_t b = (uint8_t)buf[j] + 3;

                if (b >= t->n_ids)
                    return rlhi_err(RLHI_ERANGE, "cannot encode: byte token "
                                    "%d is beyond the %d tokens of '%s'",
                                    (int)b, (int)t->n_ids, t->path);
                if ((r = rlhi__ids_push(out, b)))
                    return r;
            }
        }
        k = 0;
    }
    return 0;
}

/* The id of the concatenation of tokens a and b, or -1. */
static int32_t pair_id(const struct rlhi_tokenizer *t, int32_t a, int32_t b,
                       char *buf)
{
    memcpy(buf, t->arena + t->off[a], t->len[a]);
    memcpy(buf + t->len[a], t->arena + t->off[b], t->len[b]);
    return rlhi__vocab_find(t, buf, t->len[a] + t->len[b]);
}

static char *pair_buf(const struct rlhi_tokenizer *t)
{
    uint32_t maxl = 0;
    int32_t i;

    for (i = 0; i < t->n_ids; i++)
        if (t->len[i] > maxl)
            maxl = t->len[i];
    return rlhi_malloc(2 * (size_t)maxl + 1);
}

int rlhi__spm_encode_plain(const struct rlhi_tokenizer *t, const char *text,
                           size_t len, struct rlhi__ids *out)
{
    size_t start = 0; /* run.c merges over BOS too */
    char *buf;
    int r = codepoints(t, text, len, out);

    if (r)
        return r;
    if (!(buf = pair_buf(t)))
        return rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
    for (;;) {
        float best = MIN_SCORE;
        int32_t best_id = -1;
        size_t best_at = 0, i;

        for (i = start; i + 1 < out->n; i++) {
            int32_t id = pair_id(t, out->v[i], out->v[i + 1], buf);

            if (id >= 0 && t->scores[id] > best) {
                best = t->scores[id];
                best_id = id;
                best_at = i;
            }
        }
        if (best_id < 0)
            break;
        out->v[best_at] = best_id;
        memmove(out->v + best_at + 1, out->v + best_at + 2,
                (out->n - best_at - 2) * sizeof *out->v);
        out->n--;
    }
    rlhi_free(buf);
    return 0;
}

/* A candidate merge: higher score first, then leftmost. */
struct cand {
    float score;
    int32_t pos, left, right, id;
};

static bool cand_before(const struct cand *a, const struct cand *b)
{
    return a->score > b->score || (a->score == b->score && a->pos < b->pos);
}

RLHI__HEAP_DEFINE(struct cand, cand_before)

static void push_pair(const struct rlhi_tokenizer *t, struct cand *h,
                      size_t *nh, const int32_t *v, int32_t a, int32_t b,
                      char *buf)
{
    int32_t id = pair_id(t, v[a], v[b], buf);

    /* The same test as run.c: in the vocabulary and scoring > -1e10
     * (which also keeps NaN scores out, as there). */
    if (id >= 0 && t->scores[id] > MIN_SCORE)
        heap_push(h, nh, (struct cand){t->scores[id], a, v[a], v[b], id});
}

int rlhi__spm_encode(const struct rlhi_tokenizer *t, const char *text,
                     size_t len, struct rlhi__ids *out)
{
    size_t start, n, nh = 0, i;
    int32_t *v, *next = NULL, *prev;
    struct cand *h = NULL;
    char *buf = NULL;
    int r = codepoints(t, text, len, out);

    if (r)
        return r;
    /* run.c merges over everything in the list, BOS included. */
    start = 0;
    v = out->v + start;
    n = out->n - start;
    if (n < 2)
        return 0;
    next = rlhi_malloc(2 * n * sizeof *next);
    h = rlhi_malloc(3 * n * sizeof *h);
    buf = pair_buf(t);
    if (!next || !h || !buf) {
        r = rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
        goto out;
    }
    prev = next + n;
    for (i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        prev[i] = (int32_t)i - 1;
    }
    for (i = 0; i + 1 < n; i++)
        push_pair(t, h, &nh, v, (int32_t)i, (int32_t)i + 1, buf);
    while (nh) {
        struct cand c = heap_pop(h, &nh);
        int32_t p = c.pos, q = next[p], nq;

        if (v[p] != c.left || q < 0 || v[q] != c.right)
            continue; /* stale */
        v[p] = c.id;
        v[q] = -1;
        nq = next[q];
        next[p] = nq;
        if (nq >= 0)
            prev[nq] = p;
        if (prev[p] >= 0)
            push_pair(t, h, &nh, v, prev[p], p, buf);
        if (nq >= 0)
            push_pair(t, h, &nh, v, p, nq, buf);
    }
    /* Compact the surviving symbols in place (left to right). */
    {
        size_t k = 0;
        int32_t p;

        for (p = 0; p >= 0; p = next[p])
            v[k++] = v[p];
        out->n = start + k;
    }
out:
    rlhi_free(next);
    rlhi_free(h);
    rlhi_free(buf);
    return r;
}

const char *rlhi__spm_piece(const struct rlhi_tokenizer *t, int prev, int id,
                            char scratch[8], size_t *len)
{
    const char *piece = t->arena + t->off[id], *p;
    size_t n = t->len[id];
    int digits = 0, val = 0;

    /* After BOS a leading space is dropped (run.c, llama2.c PR #89). */
    if (prev == 1 && n && piece[0] == ' ') {
        piece++;
        n--;
    }
    /* run.c: sscanf(piece, "<0x%02hhX>", &b) == 1 gives the raw byte.
     * sscanf succeeds once "<0x" and one hex digit are read (the trailing
     * '>' is not checked); %X skips white space and takes a sign first,
     * both counting against the width of 2. */
    if (n >= 4 && !strncmp(piece, "<0x", 3)) {
        int width = 2;
        bool neg = false;

        p = piece + 3;
        while (p < piece + n && isspace((uint8_t)*p))
            p++;
        if (p < piece + n && (*p == '+' || *p == '-')) {
            neg = *p == '-';
            p++;
            width--;
        }
        for (; width > 0 && p < piece + n && isxdigit((uint8_t)*p);
             width--, p++) {
            val = val * 16 + (isdigit((uint8_t)*p) ? *p - '0'
                                                   : (tolower(*p) - 'a' + 10));
            digits++;
        }
        if (digits) {
            scratch[0] = (char)(uint8_t)(neg ? -val : val);
            scratch[1] = 0;
            *len = 1;
            return scratch;
        }
    }
    *len = n;
    return piece;
}
