/* Byte-level BPE training: pretoken counting, incremental merging and the
 * Hugging Face writer (see bpe_train.h).
 *
 * Counting. Text is split at literal special tokens, each piece is cut by
 * GPT-2's regex, and each pretoken's bytes go into a hash table with a
 * count. Only distinct pretokens ("words") are kept: a 20 MB English corpus
 * has a few hundred thousand.
 *
 * Merging (the usual incremental scheme, as in Sennrich et al.'s
 * subword-nmt and Hugging Face's BpeTrainer). Each word is an array of
 * symbol ids in one big array `syms`, shrinking in place as merges apply.
 * For every adjacent pair of symbols we keep its count (sum over words of
 * word count x occurrences, counting overlapping windows) and the list of
 * words it occurs in. A max-heap orders pairs by (count desc, left asc,
 * right asc). To merge the top pair (a, b) into z we visit only the words
 * on its list, rewrite them left to right, and adjust counts: the pairs
 * around each occurrence lose the word's count, the new pairs with z gain
 * it. Counts of old pairs only ever go down, and pairs holding z are born
 * during this merge only, so the heap can be lazy: a popped entry whose
 * count is stale is pushed back with the current count, and the new pairs
 * are pushed once when the merge is done. A merge costs time in the number
 * of words holding the pair, not in the corpus size.
 *
 * Word lists may hold words that no longer contain the pair (after an
 * earlier merge took it apart); visiting one just finds nothing.
 */
#include "rlhi/bpe_train.h"

#include <jansson.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "rlhi/chat.h"

/* GPT-2's pretokenizer pattern (openai/gpt-2 src/encoder.py), which
 * Hugging Face's ByteLevel pre_tokenizer applies when use_regex is true. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
    "|\\s+(?!\\S)|\\s+";

/* Warnings about bad JSONL lines per file before going quiet: enough to
 * see the pattern, not enough to bury the progress lines. */
#define MAX_LINE_WARNINGS 10

/* ---- small hash tables ----------------------------------------------- */

/* Distinct pretokens: bytes in `arena` at off/len, with their count.
 * count == 0 marks an empty slot. */
struct wslot {
    uint64_t h;
    uint32_t off, len;
    int64_t count;
};

/* One adjacent pair of symbols. `pos` lists the words it occurs in (each
 * at most once, in order of first appearance; some may be stale). */
struct pair {
    int32_t a, b;
    int64_t count;
    int32_t *pos;
    uint32_t npos, cappos;
    int32_t stamp; /* last merge that queued it as a new pair */
};

struct hent {
    int64_t count;
    int32_t a, b;
};

struct rlhi_bpe_trainer {
    struct rlhi_bpe_train_options opt; /* strings below are owned copies */
    char **specials;
    size_t *special_len;
    bool special_first[256]; /* a special token starts with this byte */
    int min_sym_ids;         /* 256 + merges wanted */

    pcre2_code *re;
    pcre2_match_data *md;

    /* counting */
    struct wslot *wt;
    size_t wt_cap, wt_n;
    struct rlhi_buf warena;

    /* training */
    bool trained;
    int32_t *syms;     /* all words' symbols */
    size_t *woff;      /* [nw] start of word w in syms */
    uint32_t *wlen;    /* [nw] current length */
    int64_t *wcount;   /* [nw] */
    size_t nw;
    struct pair *pairs;
    size_t npairs, cappairs;
    uint64_t *pkeys;   /* [pcap] (a << 32 | b), UINT64_MAX empty */
    uint32_t *pvals;   /* [pcap] index into pairs */
    size_t pcap;
    struct hent *heap;
    size_t nheap, capheap;

    /* result: model tokens 0..ntok-1 */
    int ntok;
    uint32_t *tok_off, *tok_len;
    struct rlhi_buf tarena;
    int32_t (*merges)[2]; /* [ntok - 256] */
    uint64_t *mkeys;      /* merge map: pair -> rank, for encode */
    int32_t *mrank;
    size_t mcap;

    uint8_t id_byte[256]; /* byte of ids 0..255 */
    int32_t byte_id[256];
    struct rlhi_bpe_stats st;
};

static uint64_t mix64(uint64_t x)
{
    /* splitmix64's finaliser: spreads pair keys over the table. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static int oom(const char *what)
{
    return rlhi_err(RLHI_ENOMEM, "bpe training: out of memory (%s)", what);
}

/* Grows an array of `*cap` elements of `size` bytes to hold `need`. */
static int grow(void *pp, size_t *cap, size_t need, size_t size)
{
    void **p = pp;
    size_t c = *cap ? *cap : 16;
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

/* ---- GPT-2 byte alphabet --------------------------------------------- */

/* GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the
 * others for 256, 257, ... in byte order. Writes the UTF-8 of byte b's
 * character to out (1 or 2 bytes) and returns its length. */
static size_t byte_char(uint8_t b, char out[2])
{
    unsigned cp;

    if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae) {
        cp = b;
    } else {
        /* Count the non-printable bytes below b. */
        unsigned k = 0, c;

        for (c = 0; c < b; c++)
            if (!((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) ||
                  c >= 0xae))
                k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static void init_alphabet(struct rlhi_bpe_trainer *t)
{
    int id = 0, b;

    /* Ids follow the order of the characters' code points, which is
     * GPT-2's encoder.json order for its first 256 entries. */
    for (b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae)
            t->byte_id[b] = id, t->id_byte[id++] = (uint8_t)b;
    for (b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) ||
              b >= 0xae))
            t->byte_id[b] = id, t->id_byte[id++] = (uint8_t)b;
}

/* Appends token bytes in the byte-level alphabet as a JSON string. */
static int add_token_json(struct rlhi_buf *out, const char *s, size_t n)
{
    char tmp[512];
    size_t k = 0, i;
    struct rlhi_buf big = RLHI_BUF_INIT;
    int r = 0;

    for (i = 0; i < n && !r; i++) {
        char c[2];
        size_t cl = byte_char((uint8_t)s[i], c);

        if (k + 2 > sizeof tmp) {
            r = rlhi_buf_add(&big, tmp, k);
            k = 0;
        }
        memcpy(tmp + k, c, cl);
        k += cl;
    }
    if (!r && big.len) {
        r = rlhi_buf_add(&big, tmp, k);
        if (!r)
            r = rlhi_buf_add_json_str(out, big.buf, big.len);
    } else if (!r) {
        r = rlhi_buf_add_json_str(out, tmp, k);
    }
    rlhi_buf_release(&big);
    return r;
}

/* ---- life cycle ------------------------------------------------------ */

void rlhi_bpe_trainer_free(struct rlhi_bpe_trainer *t)
{
    size_t i;

    if (!t)
        return;
    for (i = 0; t->specials && i < (size_t)t->opt.n_special; i++)
        rlhi_free(t->specials[i]);
    rlhi_free(t->specials);
    rlhi_free(t->special_len);
    rlhi_free((char *)t->opt.bos_token);
    rlhi_free((char *)t->opt.eos_token);
    rlhi_free((char *)t->opt.pad_token);
    rlhi_free((char *)t->opt.chat_template);
    if (t->md)
        pcre2_match_data_free(t->md);
    if (t->re)
        pcre2_code_free(t->re);
    rlhi_free(t->wt);
    rlhi_buf_release(&t->warena);
    rlhi_free(t->syms);
    rlhi_free(t->woff);
    rlhi_free(t->wlen);
    rlhi_free(t->wcount);
    for (i = 0; i < t->npairs; i++)
        rlhi_free(t->pairs[i].pos);
    rlhi_free(t->pairs);
    rlhi_free(t->pkeys);
    rlhi_free(t->pvals);
    rlhi_free(t->heap);
    rlhi_free(t->tok_off);
    rlhi_free(t->tok_len);
    rlhi_buf_release(&t->tarena);
    rlhi_free(t->merges);
    rlhi_free(t->mkeys);
    rlhi_free(t->mrank);
    rlhi_free(t);
}

/* Copies an optional string that must name a special token. */
static int copy_role_token(struct rlhi_bpe_trainer *t, const char *s,
                           const char *what, const char **dst)
{
    int i;

    if (!s)
        return 0;
    for (i = 0; i < t->opt.n_special; i++)
        if (!strcmp(t->specials[i], s))
            break;
    if (i == t->opt.n_special)
        return rlhi_err(RLHI_EINVAL, "%s '%s' is not one of the special "
                        "tokens", what, s);
    *dst = rlhi_strdup(s);
    return *dst ? 0 : oom("options");
}

int rlhi_bpe_trainer_new(struct rlhi_bpe_trainer **out,
                         const struct rlhi_bpe_train_options *opt)
{
    struct rlhi_bpe_trainer *t;
    int errcode, i, j, r;
    PCRE2_SIZE erroff;
    int nsp = opt->n_special;

    *out = NULL;
    if (nsp < 0 || (nsp && !opt->special_tokens))
        return rlhi_err(RLHI_EINVAL, "bad special token list");
    if (opt->vocab_size < 256 + nsp + 1 || opt->vocab_size > (1 << 30))
        return rlhi_err(RLHI_EINVAL, "vocab_size %d is out of range: it "
                        "must leave room for the 256 bytes, the %d special "
                        "tokens and at least one merge", opt->vocab_size,
                        nsp);
    if (opt->min_frequency < 0)
        return rlhi_err(RLHI_EINVAL, "min_frequency must not be negative");
    for (i = 0; i < nsp; i++) {
        if (!opt->special_tokens[i] || !opt->special_tokens[i][0])
            return rlhi_err(RLHI_EINVAL, "special token %d is empty", i);
        for (j = 0; j < i; j++)
            if (!strcmp(opt->special_tokens[i], opt->special_tokens[j]))
                return rlhi_err(RLHI_EINVAL, "special token '%s' is given "
                                "twice", opt->special_tokens[i]);
    }

    t = rlhi_calloc(1, sizeof *t);
    if (!t)
        return oom("trainer");
    t->opt.vocab_size = opt->vocab_size;
    t->opt.min_frequency = opt->min_frequency ? opt->min_frequency : 2;
    t->specials = rlhi_calloc((size_t)nsp + 1, sizeof *t->specials);
    t->special_len = rlhi_calloc((size_t)nsp + 1, sizeof *t->special_len);
    if (!t->specials || !t->special_len) {
        rlhi_bpe_trainer_free(t);
        return oom("options");
    }
    for (i = 0; i < nsp; i++) {
        t->specials[i] = rlhi_strdup(opt->special_tokens[i]);
        if (!t->specials[i]) {
            rlhi_bpe_trainer_free(t);
            return oom("options");
        }
        t->opt.n_special = i + 1;
        t->special_len[i] = strlen(t->specials[i]);
        t->special_first[(uint8_t)t->specials[i][0]] = true;
    }
    t->opt.special_tokens = (const char *const *)t->specials;
    t->min_sym_ids = opt->vocab_size - nsp;
    r = copy_role_token(t, opt->bos_token, "bos_token", &t->opt.bos_token);
    if (!r)
        r = copy_role_token(t, opt->eos_token, "eos_token",
                            &t->opt.eos_token);
    if (!r)
        r = copy_role_token(t, opt->pad_token, "pad_token",
                            &t->opt.pad_token);
    if (!r && opt->chat_template) {
        t->opt.chat_template = rlhi_strdup(opt->chat_template);
        if (!t->opt.chat_template)
            r = oom("options");
    }
    if (r) {
        rlhi_bpe_trainer_free(t);
        return r;
    }

    /* MATCH_INVALID_UTF: bytes that are not UTF-8 are left unmatched
     * instead of failing the whole text; they become pretokens alone. */
    t->re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                          &errcode, &erroff, NULL);
    if (!t->re) {
        rlhi_bpe_trainer_free(t);
        return rlhi_err(RLHI_EINVAL, "cannot compile the GPT-2 regex "
                        "(PCRE2 error %d)", errcode);
    }
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional speed-up */
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!t->md) {
        rlhi_bpe_trainer_free(t);
        return oom("regex");
    }
    init_alphabet(t);
    *out = t;
    return 0;
}

/* ---- splitting text -------------------------------------------------- */

/* Receives one piece: a pretoken (special < 0) or special token `special`. */
typedef int (*piece_fn)(void *ctx, const char *s, size_t n, int special);

/* Cuts s[0..n) (no special tokens inside) with the GPT-2 regex. */
static int regex_pieces(const struct rlhi_bpe_trainer *t,
                        pcre2_match_data *md, const char *s, size_t n,
                        piece_fn fn, void *ctx)
{
    size_t off = 0;
    int r;

    while (off < n) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, off, 0, md, NULL);
        PCRE2_SIZE *ov;

        if (rc == PCRE2_ERROR_NOMATCH)
            return fn(ctx, s + off, n - off, -1);
        if (rc < 0)
            return rlhi_err(RLHI_EFORMAT, "cannot split text: PCRE2 error "
                            "%d at byte %zu", rc, off);
        ov = pcre2_get_ovector_pointer(md);
        if (ov[0] > off && (r = fn(ctx, s + off, ov[0] - off, -1)))
            return r;
        /* Every alternative of the pattern needs a character. */
        RLHI_ASSERT(ov[1] > ov[0]);
        if ((r = fn(ctx, s + ov[0], ov[1] - ov[0], -1)))
            return r;
        off = ov[1];
    }
    return 0;
}

/* The longest special token at s[0..n), or -1. */
static int special_at(const struct rlhi_bpe_trainer *t, const char *s,
                      size_t n)
{
    int best = -1;

    for (int k = 0; k < t->opt.n_special; k++)
        if (t->special_len[k] <= n &&
            !memcmp(s, t->specials[k], t->special_len[k]) &&
            (best < 0 || t->special_len[k] > t->special_len[best]))
            best = k;
    return best;
}

/* Splits at special tokens (leftmost, longest), then by the regex. */
static int split_text(const struct rlhi_bpe_trainer *t, pcre2_match_data *md,
                      const char *text, size_t len, piece_fn fn, void *ctx)
{
    size_t i = 0, seg = 0;
    int r;

    while (i < len) {
        int k;

        if (!t->special_first[(uint8_t)text[i]] ||
            (k = special_at(t, text + i, len - i)) < 0) {
            i++;
            continue;
        }
        if ((r = regex_pieces(t, md, text + seg, i - seg, fn, ctx)))
            return r;
        if ((r = fn(ctx, text + i, t->special_len[k], k)))
            return r;
        i += t->special_len[k];
        seg = i;
    }
    return regex_pieces(t, md, text + seg, len - seg, fn, ctx);
}

/* ---- counting -------------------------------------------------------- */

static int wt_grow(struct rlhi_bpe_trainer *t)
{
    size_t cap = t->wt_cap ? t->wt_cap * 2 : 1 << 16, i;
    struct wslot *n = rlhi_calloc(cap, sizeof *n);

    if (!n)
        return oom("pretoken table");
    for (i = 0; i < t->wt_cap; i++) {
        struct wslot *s = &t->wt[i];
        size_t j;

        if (!s->count)
            continue;
        for (j = s->h & (cap - 1); n[j].count; j = (j + 1) & (cap - 1))
            ;
        n[j] = *s;
    }
    rlhi_free(t->wt);
    t->wt = n;
    t->wt_cap = cap;
    return 0;
}

static int count_piece(void *ctx, const char *s, size_t n, int special)
{
    struct rlhi_bpe_trainer *t = ctx;
    uint64_t h;
    size_t j;

    if (special >= 0)
        return 0;
    t->st.pretokens++;
    if (2 * (t->wt_n + 1) > t->wt_cap && wt_grow(t))
        return RLHI_ENOMEM;
    h = rlhi_fnv64(RLHI_FNV64_INIT, s, n);
    for (j = h & (t->wt_cap - 1); t->wt[j].count; j = (j + 1) & (t->wt_cap - 1))
        if (t->wt[j].h == h && t->wt[j].len == n &&
            !memcmp(t->warena.buf + t->wt[j].off, s, n)) {
            t->wt[j].count++;
            return 0;
        }
    if (t->warena.len + n > UINT32_MAX)
        return rlhi_err(RLHI_ERANGE, "bpe training: more than 4 GiB of "
                        "distinct pretokens");
    t->wt[j].h = h;
    t->wt[j].off = (uint32_t)t->warena.len;
    t->wt[j].len = (uint32_t)n;
    t->wt[j].count = 1;
    t->wt_n++;
    if (rlhi_buf_add(&t->warena, s, n))
        return oom("pretokens");
    return 0;
}

int rlhi_bpe_trainer_add_text(struct rlhi_bpe_trainer *t, const char *text,
                              size_t len)
{
    double t0 = rlhi_time_now();
    int r;

    if (t->trained)
        return rlhi_err(RLHI_EINVAL, "bpe training: text added after "
                        "training");
    r = split_text(t, t->md, text, len, count_piece, t);
    t->st.bytes += len;
    t->st.docs++;
    t->st.count_s += rlhi_time_now() - t0;
    return r;
}

/* Counts one chat: rendered with the rlhi template when it can be, else
 * (unknown roles, markers inside) each content on its own. Returns 0,
 * RLHI_EFORMAT when `list` is not a message list, or an error. */
static int add_chat(struct rlhi_bpe_trainer *t, json_t *list)
{
    size_t n = json_array_size(list), i;
    struct rlhi_chat_msg *m;
    struct rlhi_buf b = RLHI_BUF_INIT;
    int r;

    if (!json_is_array(list))
        return RLHI_EFORMAT;
    m = rlhi_calloc(n + 1, sizeof *m);
    if (!m)
        return oom("messages");
    for (i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i);

        m[i].role = json_string_value(json_object_get(e, "role"));
        m[i].content = json_string_value(json_object_get(e, "content"));
        if (!m[i].content) {
            rlhi_free(m);
            return RLHI_EFORMAT;
        }
    }
    r = rlhi_chat_render(RLHI_CHAT_RLHI, m, n, NULL, &b, NULL, NULL);
    if (r == RLHI_EINVAL) {
        for (i = 0, r = 0; i < n && !r; i++)
            r = rlhi_bpe_trainer_add_text(t, m[i].content,
                                          strlen(m[i].content));
    } else if (!r) {
        r = rlhi_bpe_trainer_add_text(t, b.buf, b.len);
    }
    rlhi_buf_release(&b);
    rlhi_free(m);
    return r;
}

/* Counts one JSONL line; RLHI_EFORMAT (message set) for a bad line. */
static int add_json_line(struct rlhi_bpe_trainer *t, const char *line,
                         size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(line, len, 0, &jerr), *v;
    int r = 0;

    if (!root)
        return rlhi_err(RLHI_EFORMAT, "%s", jerr.text);
    if ((v = json_object_get(root, "text")) && json_is_string(v)) {
        r = rlhi_bpe_trainer_add_text(t, json_string_value(v),
                                      json_string_length(v));
    } else if ((v = json_object_get(root, "messages")) ||
               (v = json_object_get(root, "conversation"))) {
        r = add_chat(t, v);
        if (r == RLHI_EFORMAT)
            rlhi_err(r, "'%s' is not a list of {role, content}",
                     json_object_get(root, "messages") ? "messages"
                                                       : "conversation");
    } else {
        r = rlhi_err(RLHI_EFORMAT, "no 'text', 'messages' or "
                     "'conversation' key");
    }
    json_decref(root);
    return r;
}

/* True when the first non-blank line of data is a JSON object. */
static bool looks_jsonl(const char *data, size_t len)
{
    size_t i = 0, e;
    json_error_t jerr;
    json_t *v;
    bool yes;

    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' ||
                       data[i] == '\r'))
        i++;
    if (i >= len || data[i] != '{')
        return false;
    for (e = i; e < len && data[e] != '\n'; e++)
        ;
    v = json_loadb(data + i, e - i, 0, &jerr);
    yes = json_is_object(v);
    json_decref(v);
    return yes;
}

int rlhi_bpe_trainer_add_file(struct rlhi_bpe_trainer *t, const char *path,
                              int64_t *skipped)
{
    char *data;
    size_t len, pos = 0, line = 0;
    int64_t bad = 0;
    int r;
    struct rlhi_progress p;

    if (skipped)
        *skipped = 0;
    r = rlhi_file_read(path, &data, &len);
    if (r)
        return r;
    if (!looks_jsonl(data, len)) {
        r = rlhi_bpe_trainer_add_text(t, data, len);
        rlhi_free(data);
        return r ? rlhi_err_prefix(r, "'%s'", path) : 0;
    }
    rlhi_progress_start_bytes(&p, path, len);
    while (pos < len && !r) {
        size_t e = pos;

        while (e < len && data[e] != '\n')
            e++;
        line++;
        if (e > pos && !(e == pos + 1 && data[pos] == '\r')) {
            r = add_json_line(t, data + pos, e - pos);
            if (r == RLHI_EFORMAT) {
                if (bad < MAX_LINE_WARNINGS)
                    rlhi_warn("'%s': line %zu: skipped: %s", path, line,
                              rlhi_errmsg());
                bad++;
                r = 0;
            }
        }
        pos = e + 1;
        rlhi_progress_update(&p, pos < len ? pos : len);
    }
    rlhi_progress_finish(&p);
    rlhi_free(data);
    if (bad > MAX_LINE_WARNINGS)
        rlhi_warn("'%s': %lld lines skipped in all", path, (long long)bad);
    if (skipped)
        *skipped = bad;
    return r ? rlhi_err_prefix(r, "'%s': line %zu", path, line) : 0;
}

/* ---- pairs ----------------------------------------------------------- */

static int pmap_grow(struct rlhi_bpe_trainer *t)
{
    size_t cap = t->pcap ? t->pcap * 2 : 1 << 16, i;
    uint64_t *k = rlhi_malloc(cap * sizeof *k);
    uint32_t *v = rlhi_malloc(cap * sizeof *v);

    if (!k || !v) {
        rlhi_free(k);
        rlhi_free(v);
        return oom("pair table");
    }
    memset(k, 0xff, cap * sizeof *k);
    for (i = 0; i < t->pcap; i++) {
        size_t j;

        if (t->pkeys[i] == UINT64_MAX)
            continue;
        for (j = mix64(t->pkeys[i]) & (cap - 1); k[j] != UINT64_MAX;
             j = (j + 1) & (cap - 1))
            ;
        k[j] = t->pkeys[i];
        v[j] = t->pvals[i];
    }
    rlhi_free(t->pkeys);
    rlhi_free(t->pvals);
    t->pkeys = k;
    t->pvals = v;
    t->pcap = cap;
    return 0;
}

/* Index of pair (a, b), creating it with count 0 when `create`; -1 when
 * absent (or out of memory, with the message set). */
static int64_t pair_get(struct rlhi_bpe_trainer *t, int32_t a, int32_t b,
                        bool create)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t j;
    struct pair *p;

    if (create && 2 * (t->npairs + 1) > t->pcap && pmap_grow(t))
        return -1;
    for (j = mix64(key) & (t->pcap - 1); t->pkeys[j] != UINT64_MAX;
         j = (j + 1) & (t->pcap - 1))
        if (t->pkeys[j] == key)
            return t->pvals[j];
    if (!create)
        return -1;
    if (grow(&t->pairs, &t->cappairs, t->npairs + 1, sizeof *t->pairs)) {
        oom("pairs");
        return -1;
    }
    p = &t->pairs[t->npairs];
    memset(p, 0, sizeof *p);
    p->a = a;
    p->b = b;
    p->stamp = -1;
    t->pkeys[j] = key;
    t->pvals[j] = (uint32_t)t->npairs;
    return (int64_t)t->npairs++;
}

/* Adds `delta` to pair (a, b) and, for a positive delta, word w to its
 * list. Returns the pair's index or -1 (message set). */
static int64_t pair_add(struct rlhi_bpe_trainer *t, int32_t a, int32_t b,
                        int64_t delta, int32_t w)
{
    int64_t i = pair_get(t, a, b, delta > 0);
    struct pair *p;

    RLHI_ASSERT(i >= 0 || delta > 0);
    if (i < 0)
        return -1;
    p = &t->pairs[i];
    p->count += delta;
    if (delta > 0 && (!p->npos || p->pos[p->npos - 1] != w)) {
        size_t cap = p->cappos;

        if (grow(&p->pos, &cap, (size_t)p->npos + 1, sizeof *p->pos)) {
            oom("pair positions");
            return -1;
        }
        p->cappos = (uint32_t)cap;
        p->pos[p->npos++] = w;
    }
    return i;
}

/* ---- heap ------------------------------------------------------------ */

static bool before(const struct hent *x, const struct hent *y)
{
    if (x->count != y->count)
        return x->count > y->count;
    if (x->a != y->a)
        return x->a < y->a;
    return x->b < y->b;
}

static void sift_down(struct hent *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        struct hent tmp;

        if (l < n && before(&h[l], &h[best]))
            best = l;
        if (l + 1 < n && before(&h[l + 1], &h[best]))
            best = l + 1;
        if (best == i)
            return;
        tmp = h[i];
        h[i] = h[best];
        h[best] = tmp;
        i = best;
    }
}

static int heap_push(struct rlhi_bpe_trainer *t, int64_t count, int32_t a,
                     int32_t b)
{
    size_t i;

    if (grow(&t->heap, &t->capheap, t->nheap + 1, sizeof *t->heap))
        return oom("heap");
    i = t->nheap++;
    t->heap[i] = (struct hent){count, a, b};
    while (i && before(&t->heap[i], &t->heap[(i - 1) / 2])) {
        struct hent tmp = t->heap[i];

        t->heap[i] = t->heap[(i - 1) / 2];
        t->heap[(i - 1) / 2] = tmp;
        i = (i - 1) / 2;
    }
    return 0;
}

static void heap_pop(struct rlhi_bpe_trainer *t)
{
    t->heap[0] = t->heap[--t->nheap];
    sift_down(t->heap, t->nheap, 0);
}

/* ---- training -------------------------------------------------------- */

/* Turns the pretoken table into words of byte ids and counts all pairs. */
static int build_words(struct rlhi_bpe_trainer *t)
{
    size_t i, w = 0, total = 0;

    for (i = 0; i < t->wt_cap; i++)
        if (t->wt[i].count)
            total += t->wt[i].len;
    t->nw = t->wt_n;
    t->syms = rlhi_malloc((total + 1) * sizeof *t->syms);
    t->woff = rlhi_malloc((t->nw + 1) * sizeof *t->woff);
    t->wlen = rlhi_malloc((t->nw + 1) * sizeof *t->wlen);
    t->wcount = rlhi_malloc((t->nw + 1) * sizeof *t->wcount);
    if (!t->syms || !t->woff || !t->wlen || !t->wcount)
        return oom("words");
    if (pmap_grow(t))
        return RLHI_ENOMEM;
    total = 0;
    for (i = 0; i < t->wt_cap; i++) {
        const struct wslot *s = &t->wt[i];
        const uint8_t *bytes = (const uint8_t *)t->warena.buf + s->off;
        uint32_t k;

        if (!s->count)
            continue;
        t->woff[w] = total;
        t->wlen[w] = s->len;
        t->wcount[w] = s->count;
        for (k = 0; k < s->len; k++)
            t->syms[total + k] = t->byte_id[bytes[k]];
        for (k = 0; k + 1 < s->len; k++)
            if (pair_add(t, t->syms[total + k], t->syms[total + k + 1],
                         s->count, (int32_t)w) < 0)
                return RLHI_ENOMEM;
        total += s->len;
        w++;
    }
    t->st.words = t->nw;

    /* The counting table is no longer needed. */
    rlhi_free(t->wt);
    t->wt = NULL;
    t->wt_cap = t->wt_n = 0;
    rlhi_buf_release(&t->warena);

    if (grow(&t->heap, &t->capheap, t->npairs + 1, sizeof *t->heap))
        return oom("heap");
    for (i = 0; i < t->npairs; i++)
        t->heap[i] = (struct hent){t->pairs[i].count, t->pairs[i].a,
                                   t->pairs[i].b};
    t->nheap = t->npairs;
    for (i = t->nheap / 2; i-- > 0;)
        sift_down(t->heap, t->nheap, i);
    return 0;
}

/* New pairs of the current merge, pushed onto the heap when it is done. */
struct fresh {
    int64_t *idx;
    size_t n, cap;
};

static int gain(struct rlhi_bpe_trainer *t, struct fresh *f, int32_t a,
                int32_t b, int64_t c, int32_t w, int32_t merge)
{
    int64_t i = pair_add(t, a, b, c, w);

    if (i < 0)
        return RLHI_ENOMEM;
    if (t->pairs[i].stamp != merge) {
        t->pairs[i].stamp = merge;
        if (grow(&f->idx, &f->cap, f->n + 1, sizeof *f->idx))
            return oom("new pairs");
        f->idx[f->n++] = i;
    }
    return 0;
}

/* Rewrites word w with (a, b) -> z, left to right, updating pair counts. */
static int merge_word(struct rlhi_bpe_trainer *t, struct fresh *f, int32_t w,
                      int32_t a, int32_t b, int32_t z, int32_t merge)
{
    int32_t *s = t->syms + t->woff[w];
    uint32_t len = t->wlen[w], i = 0, j = 0;
    int64_t c = t->wcount[w];

    while (i < len) {
        if (i + 1 < len && s[i] == a && s[i + 1] == b) {
            pair_add(t, a, b, -c, w);
            if (j > 0) {
                pair_add(t, s[j - 1], a, -c, w);
                if (gain(t, f, s[j - 1], z, c, w, merge))
                    return RLHI_ENOMEM;
            }
            if (i + 2 < len) {
                pair_add(t, b, s[i + 2], -c, w);
                if (gain(t, f, z, s[i + 2], c, w, merge))
                    return RLHI_ENOMEM;
            }
            s[j++] = z;
            i += 2;
        } else {
            s[j++] = s[i++];
        }
    }
    t->wlen[w] = j;
    return 0;
}

/* Records token z = a + b: its bytes and the merge. */
static int add_token(struct rlhi_bpe_trainer *t, int32_t a, int32_t b)
{
    int32_t z = t->ntok;
    size_t off = t->tarena.len;

    /* Grow first: the bytes are copied from the arena itself. */
    if (rlhi_buf_grow(&t->tarena, (size_t)t->tok_len[a] + t->tok_len[b]))
        return oom("tokens");
    memcpy(t->tarena.buf + off, t->tarena.buf + t->tok_off[a],
           t->tok_len[a]);
    memcpy(t->tarena.buf + off + t->tok_len[a],
           t->tarena.buf + t->tok_off[b], t->tok_len[b]);
    t->tarena.len += (size_t)t->tok_len[a] + t->tok_len[b];
    t->tarena.buf[t->tarena.len] = 0;
    t->tok_off[z] = (uint32_t)off;
    t->tok_len[z] = t->tok_len[a] + t->tok_len[b];
    t->merges[z - 256][0] = a;
    t->merges[z - 256][1] = b;
    t->ntok++;
    return 0;
}

/* Builds the pair -> rank map that encode() uses. */
static int build_merge_map(struct rlhi_bpe_trainer *t)
{
    int nm = t->ntok - 256, i;

    t->mcap = 16;
    while (t->mcap < 2 * (size_t)nm + 2)
        t->mcap *= 2;
    t->mkeys = rlhi_malloc(t->mcap * sizeof *t->mkeys);
    t->mrank = rlhi_malloc(t->mcap * sizeof *t->mrank);
    if (!t->mkeys || !t->mrank)
        return oom("merge map");
    memset(t->mkeys, 0xff, t->mcap * sizeof *t->mkeys);
    for (i = 0; i < nm; i++) {
        uint64_t key = (uint64_t)(uint32_t)t->merges[i][0] << 32 |
                       (uint32_t)t->merges[i][1];
        size_t j = mix64(key) & (t->mcap - 1);

        while (t->mkeys[j] != UINT64_MAX)
            j = (j + 1) & (t->mcap - 1);
        t->mkeys[j] = key;
        t->mrank[j] = i;
    }
    return 0;
}

/* Frees what only training needs. */
static void drop_training_state(struct rlhi_bpe_trainer *t)
{
    for (size_t i = 0; i < t->npairs; i++)
        rlhi_free(t->pairs[i].pos);
    rlhi_free(t->pairs);
    rlhi_free(t->pkeys);
    rlhi_free(t->pvals);
    rlhi_free(t->heap);
    rlhi_free(t->syms);
    rlhi_free(t->woff);
    rlhi_free(t->wlen);
    rlhi_free(t->wcount);
    t->pairs = NULL;
    t->pkeys = NULL;
    t->pvals = NULL;
    t->heap = NULL;
    t->syms = NULL;
    t->woff = NULL;
    t->wlen = NULL;
    t->wcount = NULL;
    t->npairs = t->cappairs = t->pcap = t->nheap = t->capheap = 0;
}

int rlhi_bpe_trainer_train(struct rlhi_bpe_trainer *t)
{
    int want = t->min_sym_ids - 256, r = 0, i;
    double t0 = rlhi_time_now();
    struct fresh f = {NULL, 0, 0};
    struct rlhi_progress p;

    if (t->trained)
        return rlhi_err(RLHI_EINVAL, "bpe training: already trained");
    t->trained = true;
    t->tok_off = rlhi_malloc((size_t)t->min_sym_ids * sizeof *t->tok_off);
    t->tok_len = rlhi_malloc((size_t)t->min_sym_ids * sizeof *t->tok_len);
    t->merges = rlhi_malloc(((size_t)want + 1) * sizeof *t->merges);
    if (!t->tok_off || !t->tok_len || !t->merges)
        return oom("tokens");
    for (i = 0; i < 256; i++) {
        t->tok_off[i] = (uint32_t)i;
        t->tok_len[i] = 1;
        if (rlhi_buf_addc(&t->tarena, (char)t->id_byte[i]))
            return oom("tokens");
    }
    t->ntok = 256;
    if ((r = build_words(t)))
        return r;

    rlhi_progress_start(&p, "bpe merges", (uint64_t)want);
    while (t->ntok < t->min_sym_ids && t->nheap) {
        struct hent top = t->heap[0];
        int64_t pi = pair_get(t, top.a, top.b, false);
        int64_t cur = t->pairs[pi].count;
        int32_t *pos, z = t->ntok, merge = t->ntok - 256;
        uint32_t npos, k;

        /* Lazy heap: fix a stale entry and look again. */
        if (cur != top.count) {
            RLHI_ASSERT(cur < top.count);
            heap_pop(t);
            if (cur > 0 && (r = heap_push(t, cur, top.a, top.b)))
                break;
            continue;
        }
        if (cur < t->opt.min_frequency)
            break;
        heap_pop(t);
        if ((r = add_token(t, top.a, top.b)))
            break;

        /* Take the word list: the pair is gone after this merge. */
        pos = t->pairs[pi].pos;
        npos = t->pairs[pi].npos;
        t->pairs[pi].pos = NULL;
        t->pairs[pi].npos = t->pairs[pi].cappos = 0;
        f.n = 0;
        for (k = 0; k < npos && !r; k++)
            r = merge_word(t, &f, pos[k], top.a, top.b, z, merge);
        rlhi_free(pos);
        if (r)
            break;
        RLHI_ASSERT(t->pairs[pi].count == 0);
        for (size_t q = 0; q < f.n && !r; q++) {
            const struct pair *np = &t->pairs[f.idx[q]];

            if (np->count > 0)
                r = heap_push(t, np->count, np->a, np->b);
        }
        rlhi_progress_update(&p, (uint64_t)(t->ntok - 256));
    }
    rlhi_progress_finish(&p);
    rlhi_free(f.idx);
    if (r)
        return r;
    t->st.merges = t->ntok - 256;
    t->st.vocab_size = t->ntok + t->opt.n_special;
    t->st.merge_s = rlhi_time_now() - t0;
    drop_training_state(t);
    return build_merge_map(t);
}

void rlhi_bpe_trainer_stats(const struct rlhi_bpe_trainer *t,
                            struct rlhi_bpe_stats *s)
{
    *s = t->st;
}

/* ---- encode / decode ------------------------------------------------- */

static int32_t merge_rank(const struct rlhi_bpe_trainer *t, int32_t a,
                          int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t j;

    for (j = mix64(key) & (t->mcap - 1); t->mkeys[j] != UINT64_MAX;
         j = (j + 1) & (t->mcap - 1))
        if (t->mkeys[j] == key)
            return t->mrank[j];
    return -1;
}

struct enc {
    const struct rlhi_bpe_trainer *t;
    int32_t *ids;
    size_t n, cap;
};

static int encode_piece(void *ctx, const char *s, size_t n, int special)
{
    struct enc *e = ctx;
    const struct rlhi_bpe_trainer *t = e->t;
    int32_t *w;
    size_t len = n, i, j;

    if (grow(&e->ids, &e->cap, e->n + n + 1, sizeof *e->ids))
        return oom("ids");
    if (special >= 0) {
        e->ids[e->n++] = t->ntok + special;
        return 0;
    }
    w = e->ids + e->n;
    for (i = 0; i < n; i++)
        w[i] = t->byte_id[(uint8_t)s[i]];

    /* Apply the lowest-ranked merge present, at every place left to
     * right, until none applies. */
    for (;;) {
        int32_t best = -1, a, b;

        for (i = 0; i + 1 < len; i++) {
            int32_t r = merge_rank(t, w[i], w[i + 1]);

            if (r >= 0 && (best < 0 || r < best))
                best = r;
        }
        if (best < 0)
            break;
        a = t->merges[best][0];
        b = t->merges[best][1];
        for (i = 0, j = 0; i < len;) {
            if (i + 1 < len && w[i] == a && w[i + 1] == b) {
                w[j++] = 256 + best;
                i += 2;
            } else {
                w[j++] = w[i++];
            }
        }
        len = j;
    }
    e->n += len;
    return 0;
}

int rlhi_bpe_trainer_encode(const struct rlhi_bpe_trainer *t,
                            const char *text, size_t len, int32_t **ids,
                            size_t *n)
{
    struct enc e = {t, NULL, 0, 0};
    pcre2_match_data *md;
    int r;

    if (!t->trained || !t->mkeys)
        return rlhi_err(RLHI_EINVAL, "bpe encode: not trained");
    md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!md)
        return oom("regex");
    r = split_text(t, md, text, len, encode_piece, &e);
    pcre2_match_data_free(md);
    if (r) {
        rlhi_free(e.ids);
        return r;
    }
    if (!e.ids && !(e.ids = rlhi_malloc(sizeof *e.ids)))
        return oom("ids");
    *ids = e.ids;
    *n = e.n;
    return 0;
}

int rlhi_bpe_trainer_decode(const struct rlhi_bpe_trainer *t,
                            const int32_t *ids, size_t n,
                            struct rlhi_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        int r;

        if (id < 0 || id >= t->ntok + t->opt.n_special)
            return rlhi_err(RLHI_EINVAL, "bpe decode: id %d out of range "
                            "(vocabulary of %d)", id,
                            t->ntok + t->opt.n_special);
        if (id < t->ntok)
            r = rlhi_buf_add(out, t->tarena.buf + t->tok_off[id],
                             t->tok_len[id]);
        else
            r = rlhi_buf_adds(out, t->specials[id - t->ntok]);
        if (r)
            return oom("decode");
    }
    return 0;
}

/* ---- writing Hugging Face files --------------------------------------- */

/* One added_tokens / added_tokens_decoder entry's fields. */
static int added_fields(struct rlhi_buf *b, const char *content)
{
    int r = rlhi_buf_adds(b, "\"content\": ");

    r = r ? r : rlhi_buf_add_json_str(b, content, strlen(content));
    return r ? r : rlhi_buf_adds(b, ", \"single_word\": false, \"lstrip\": "
                                 "false, \"rstrip\": false, \"normalized\": "
                                 "false, \"special\": true");
}

static int write_tokenizer_json(const struct rlhi_bpe_trainer *t,
                                struct rlhi_buf *b)
{
    int r = 0, i;

    r |= rlhi_buf_adds(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": "
                          "null,\n  \"padding\": null,\n  \"added_tokens\": [");
    for (i = 0; i < t->opt.n_special; i++) {
        r |= rlhi_buf_addf(b, "%s\n    {\"id\": %d, ", i ? "," : "",
                           t->ntok + i);
        r |= added_fields(b, t->specials[i]);
        r |= rlhi_buf_adds(b, "}");
    }
    r |= rlhi_buf_adds(b,
        "\n  ],\n  \"normalizer\": null,\n"
        "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": "
        "false, \"trim_offsets\": true, \"use_regex\": true},\n"
        "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": "
        "false, \"trim_offsets\": false, \"use_regex\": false},\n"
        "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": "
        "false, \"trim_offsets\": true, \"use_regex\": true},\n"
        "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
        "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n"
        "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
        "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
        "    \"vocab\": {");
    for (i = 0; i < t->ntok && !r; i++) {
        r |= rlhi_buf_adds(b, i ? ",\n      " : "\n      ");
        r |= add_token_json(b, t->tarena.buf + t->tok_off[i], t->tok_len[i]);
        r |= rlhi_buf_addf(b, ": %d", i);
    }
    r |= rlhi_buf_adds(b, "\n    },\n    \"merges\": [");
    for (i = 0; i + 256 < t->ntok && !r; i++) {
        struct rlhi_buf m = RLHI_BUF_INIT;
        int a = t->merges[i][0], c = t->merges[i][1];
        size_t k;

        /* "left right" in the byte-level alphabet: build it unescaped,
         * then escape once. */
        for (k = 0; k < t->tok_len[a] && !r; k++) {
            char ch[2];

            r |= rlhi_buf_add(&m, ch, byte_char((uint8_t)t->tarena.buf[
                                           t->tok_off[a] + k], ch));
        }
        r |= rlhi_buf_addc(&m, ' ');
        for (k = 0; k < t->tok_len[c] && !r; k++) {
            char ch[2];

            r |= rlhi_buf_add(&m, ch, byte_char((uint8_t)t->tarena.buf[
                                           t->tok_off[c] + k], ch));
        }
        r |= rlhi_buf_adds(b, i ? ",\n      " : "\n      ");
        r |= rlhi_buf_add_json_str(b, m.buf, m.len);
        rlhi_buf_release(&m);
    }
    r |= rlhi_buf_adds(b, "\n    ]\n  }\n}\n");
    return r ? RLHI_ENOMEM : 0;
}

static int add_opt_token(struct rlhi_buf *b, const char *key, const char *v)
{
    int r = rlhi_buf_addf(b, "  \"%s\": ", key);

    if (!v)
        r |= rlhi_buf_adds(b, "null");
    else
        r |= rlhi_buf_add_json_str(b, v, strlen(v));
    return r | rlhi_buf_adds(b, ",\n");
}

static int write_config_json(const struct rlhi_bpe_trainer *t,
                             struct rlhi_buf *b)
{
    int r = 0, i;

    r |= rlhi_buf_adds(b, "{\n  \"add_bos_token\": false,\n"
                          "  \"add_eos_token\": false,\n"
                          "  \"add_prefix_space\": false,\n"
                          "  \"added_tokens_decoder\": {");
    for (i = 0; i < t->opt.n_special; i++) {
        r |= rlhi_buf_addf(b, "%s\n    \"%d\": {", i ? "," : "", t->ntok + i);
        r |= added_fields(b, t->specials[i]);
        r |= rlhi_buf_adds(b, "}");
    }
    r |= rlhi_buf_adds(b, "\n  },\n");
    r |= add_opt_token(b, "bos_token", t->opt.bos_token);
    if (t->opt.chat_template) {
        r |= rlhi_buf_adds(b, "  \"chat_template\": ");
        r |= rlhi_buf_add_json_str(b, t->opt.chat_template,
                                   strlen(t->opt.chat_template));
        r |= rlhi_buf_adds(b, ",\n");
    }
    r |= rlhi_buf_adds(b, "  \"clean_up_tokenization_spaces\": false,\n");
    r |= add_opt_token(b, "eos_token", t->opt.eos_token);
    r |= rlhi_buf_addf(b, "  \"model_max_length\": %d,\n", 1 << 20);
    r |= add_opt_token(b, "pad_token", t->opt.pad_token);
    r |= rlhi_buf_adds(b, "  \"tokenizer_class\": \"PreTrainedTokenizerFast"
                          "\",\n  \"unk_token\": null\n}\n");
    return r ? RLHI_ENOMEM : 0;
}

int rlhi_bpe_trainer_save(const struct rlhi_bpe_trainer *t, const char *dir)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    char *path = NULL;
    int r;

    if (!t->trained || !t->mkeys)
        return rlhi_err(RLHI_EINVAL, "bpe save: not trained");
    if ((r = rlhi_mkdir_p(dir)))
        return r;
    if ((r = write_tokenizer_json(t, &b))) {
        r = oom("tokenizer.json");
        goto out;
    }
    if (!(path = rlhi_path_join(dir, "tokenizer.json"))) {
        r = oom("path");
        goto out;
    }
    if ((r = rlhi_file_write_atomic(path, b.buf, b.len)))
        goto out;
    rlhi_free(path);
    path = NULL;
    rlhi_buf_clear(&b);
    if ((r = write_config_json(t, &b))) {
        r = oom("tokenizer_config.json");
        goto out;
    }
    if (!(path = rlhi_path_join(dir, "tokenizer_config.json"))) {
        r = oom("path");
        goto out;
    }
    r = rlhi_file_write_atomic(path, b.buf, b.len);
out:
    rlhi_free(path);
    rlhi_buf_release(&b);
    return r;
}
