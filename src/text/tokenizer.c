/* Tokenizer front end: loading by path, the token table, added tokens,
 * bos/eos from tokenizer_config.json, and encode/decode dispatch.
 *
 * Encoding of byte-level BPE follows Hugging Face `tokenizers`: the text is
 * first cut at added tokens (leftmost match, longest at a position), each
 * stretch between them goes through normalizer, pre-tokenizer and BPE
 * (bpe.c). Added tokens that are not marked special are always recognised,
 * as Hugging Face does; special ones only with RLHI_ENC_SPECIAL, so that
 * user text cannot smuggle in control tokens by default.
 *
 * bos/eos. When tokenizer_config.json sits beside tokenizer.json its
 * `bos_token` / `eos_token` (a string, or an object with `content`, or null)
 * decide, and `add_bos_token` says whether the model wants BOS by default.
 * Without it: BOS is the token a TemplateProcessing post-processor puts
 * first, else the first of <|begin_of_text|>, <s>, <|startoftext|>,
 * <|endoftext|> that exists;
 * EOS the first of <|end_of_text|>, <|endoftext|>, </s>. So Llama-3.1 with
 * its config gets BOS 128000 and EOS <|eot_id|> 128009 (the instruct
 * config), Qwen gets no BOS and EOS <|im_end|>, GPT-2 gets 50256 for both.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlhi/tokenizer.h"
#include "text/tok_internal.h"

/* ---- shared table helpers ------------------------------------------- */

uint32_t rlhi__hash_bytes(const void *s, size_t n)
{
    /* 32-bit FNV-1a: short keys (tokens are a few bytes), good spread. */
    const uint8_t *p = s;
    uint32_t h = 2166136261u;

    while (n--)
        h = (h ^ *p++) * 16777619u;
    return h;
}

int rlhi__tok_reserve(struct rlhi_tokenizer *t, int32_t n)
{
    int32_t cap = t->n_ids;
    uint32_t *off, *len;
    uint8_t *flags;

    if (n <= cap)
        return 0;
    off = rlhi_realloc(t->off, (size_t)n * sizeof *off);
    if (!off)
        return RLHI_ENOMEM;
    t->off = off;
    len = rlhi_realloc(t->len, (size_t)n * sizeof *len);
    if (!len)
        return RLHI_ENOMEM;
    t->len = len;
    flags = rlhi_realloc(t->flags, (size_t)n);
    if (!flags)
        return RLHI_ENOMEM;
    t->flags = flags;
    memset(off + cap, 0, (size_t)(n - cap) * sizeof *off);
    memset(len + cap, 0, (size_t)(n - cap) * sizeof *len);
    memset(flags + cap, 0, (size_t)(n - cap));
    t->n_ids = n;
    return 0;
}

int rlhi__tok_set(struct rlhi_tokenizer *t, int32_t id, const void *s,
                  size_t n, uint8_t flags)
{
    if (t->arena_len + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        char *a;

        while (cap < t->arena_len + n + 1)
            cap *= 2;
        if (cap > UINT32_MAX)
            return RLHI_ERANGE;
        a = rlhi_realloc(t->arena, cap);
        if (!a)
            return RLHI_ENOMEM;
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, s, n);
    t->arena[t->arena_len + n] = 0; /* NUL after each token, for messages */
    t->off[id] = (uint32_t)t->arena_len;
    t->len[id] = (uint32_t)n;
    t->flags[id] = flags | TOKF_PRESENT;
    t->arena_len += n + 1;
    return 0;
}

static void strmap_release(struct rlhi__strmap *m)
{
    rlhi_free(m->slot);
    memset(m, 0, sizeof *m);
}

int rlhi__vocab_build(struct rlhi_tokenizer *t)
{
    struct rlhi__strmap *m = &t->vocab;
    uint32_t cap = 16, count = 0, i;
    int32_t id;

    strmap_release(m);
    for (id = 0; id < t->n_ids; id++)
        count += (t->flags[id] & (TOKF_PRESENT | TOKF_ADDED)) == TOKF_PRESENT;
    /* Load factor at most 1/2 keeps probe chains short. */
    while (cap < 2 * count)
        cap *= 2;
    m->slot = rlhi_malloc(cap * sizeof *m->slot);
    if (!m->slot)
        return RLHI_ENOMEM;
    for (i = 0; i < cap; i++)
        m->slot[i].id = -1;
    m->cap = cap;
    for (id = 0; id < t->n_ids; id++) {
        const char *s = t->arena + t->off[id];
        uint32_t h, j;

        if ((t->flags[id] & (TOKF_PRESENT | TOKF_ADDED)) != TOKF_PRESENT)
            continue;
        h = rlhi__hash_bytes(s, t->len[id]);
        for (j = h & (cap - 1);; j = (j + 1) & (cap - 1)) {
            int32_t o = m->slot[j].id;

            if (o < 0) {
                m->slot[j].id = id;
                m->slot[j].hash = h;
                m->count++;
                break;
            }
            if (m->slot[j].hash == h && t->len[o] == t->len[id] &&
                !memcmp(t->arena + t->off[o], s, t->len[id]))
                break; /* duplicate string: the first id keeps it */
        }
    }
    return 0;
}

int32_t rlhi__vocab_find(const struct rlhi_tokenizer *t, const void *s,
                         size_t n)
{
    const struct rlhi__strmap *m = &t->vocab;
    uint32_t h, j;

    if (!m->cap)
        return -1;
    h = rlhi__hash_bytes(s, n);
    for (j = h & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
        int32_t o = m->slot[j].id;

        if (o < 0)
            return -1;
        if (m->slot[j].hash == h && t->len[o] == n &&
            !memcmp(t->arena + t->off[o], s, n))
            return o;
    }
}

static int cmp_added_len(const void *a, const void *b, void *arg)
{
    const struct rlhi__added *ad = arg;
    uint32_t la = ad[*(const int32_t *)a].len, lb = ad[*(const int32_t *)b].len;

    return la < lb ? 1 : la > lb ? -1 : 0;
}

int rlhi__added_index(struct rlhi_tokenizer *t)
{
    int b, i;

    for (b = 0; b < 256; b++) {
        int n = 0;
        int32_t *list;

        rlhi_free(t->added_by_byte[b]);
        t->added_by_byte[b] = NULL;
        for (i = 0; i < t->n_added; i++)
            n += t->added[i].len && (uint8_t)t->added[i].content[0] == b;
        if (!n)
            continue;
        list = rlhi_malloc((size_t)(n + 1) * sizeof *list);
        if (!list)
            return RLHI_ENOMEM;
        n = 0;
        for (i = 0; i < t->n_added; i++)
            if (t->added[i].len && (uint8_t)t->added[i].content[0] == b)
                list[n++] = i;
        /* Longest first, so the first hit at a position is the longest. */
        qsort_r(list, (size_t)n, sizeof *list, cmp_added_len, t->added);
        list[n] = -1;
        t->added_by_byte[b] = list;
    }
    return 0;
}

/* ---- loading -------------------------------------------------------- */

void rlhi_tokenizer_free(struct rlhi_tokenizer *t)
{
    int i;

    if (!t)
        return;
    rlhi__bpe_free(t);
    for (i = 0; i < t->n_added; i++)
        rlhi_free(t->added[i].content);
    rlhi_free(t->added);
    for (i = 0; i < 256; i++)
        rlhi_free(t->added_by_byte[i]);
    strmap_release(&t->vocab);
    rlhi_free(t->off);
    rlhi_free(t->len);
    rlhi_free(t->flags);
    rlhi_free(t->arena);
    rlhi_free(t->scores);
    rlhi_free(t->path);
    rlhi_free(t);
}

/* Looks an added token up by its content; its index in t->added or -1. */
static int added_find(const struct rlhi_tokenizer *t, const char *s)
{
    int i;

    for (i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, s))
            return i;
    return -1;
}

int rlhi_tokenizer_token_id(const struct rlhi_tokenizer *t, const char *s)
{
    struct rlhi_buf raw = RLHI_BUF_INIT;
    int i = added_find(t, s);
    int32_t id;

    if (i >= 0)
        return t->added[i].id;
    if (t->kind == RLHI_TOK_SPM_BPE)
        return rlhi__vocab_find(t, s, strlen(s));
    /* Byte-level vocabularies are written in GPT-2's byte alphabet. */
    if (!rlhi__bytelevel_decode(s, strlen(s), &raw)) {
        rlhi_buf_release(&raw);
        return -1;
    }
    id = rlhi__vocab_find(t, raw.buf ? raw.buf : "", raw.len);
    rlhi_buf_release(&raw);
    return id;
}

/* The content of a bos_token/eos_token config entry, or NULL. */
static const char *config_token(json_t *v)
{
    if (json_is_object(v))
        v = json_object_get(v, "content");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int32_t first_present(const struct rlhi_tokenizer *t,
                             const char *const *names)
{
    for (; *names; names++) {
        int id = rlhi_tokenizer_token_id(t, *names);

        if (id >= 0)
            return id;
    }
    return -1;
}

/* Sets bos/eos from tokenizer_config.json at `config` (when it exists) or
 * by the defaults described at the top of this file. */
static int apply_config(struct rlhi_tokenizer *t, const char *config)
{
    static const char *const bos_names[] = {"<|begin_of_text|>", "<s>",
                                            "<|startoftext|>",
                                            "<|endoftext|>", NULL};
    static const char *const eos_names[] = {"<|end_of_text|>",
                                            "<|endoftext|>", "</s>", NULL};
    json_error_t jerr;
    json_t *root, *v;

    if (t->bos < 0)
        t->bos = first_present(t, bos_names);
    t->eos = first_present(t, eos_names);
    if (!config || !rlhi_path_exists(config))
        return 0;

    /* model_max_length can be 1e30: read integers as reals. */
    root = json_load_file(config, JSON_DECODE_INT_AS_REAL, &jerr);
    if (!root)
        return rlhi_err(RLHI_EFORMAT, "cannot parse '%s': line %d: %s",
                        config, jerr.line, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return rlhi_err(RLHI_EFORMAT, "cannot parse '%s': not an object",
                        config);
    }
    v = json_object_get(root, "bos_token");
    if (v) {
        const char *s = config_token(v);

        t->bos = s ? rlhi_tokenizer_token_id(t, s) : -1;
        if (s && t->bos < 0)
            rlhi_warn("'%s': bos_token '%s' is not in the vocabulary",
                      config, s);
    }
    v = json_object_get(root, "eos_token");
    if (v) {
        const char *s = config_token(v);

        t->eos = s ? rlhi_tokenizer_token_id(t, s) : -1;
        if (s && t->eos < 0)
            rlhi_warn("'%s': eos_token '%s' is not in the vocabulary",
                      config, s);
    }
    v = json_object_get(root, "add_bos_token");
    if (json_is_boolean(v))
        t->wants_bos = json_is_true(v);
    if (t->bos < 0)
        t->wants_bos = false;
    json_decref(root);
    return 0;
}

/* Whether a file looks like JSON (first non-blank byte '{'). */
static bool looks_like_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    int c;

    if (!f)
        return false;
    do
        c = fgetc(f);
    while (c == ' ' || c == '\t' || c == '\n' || c == '\r');
    fclose(f);
    return c == '{';
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return rlhi_strdup(".");
    if (slash == path)
        return rlhi_strdup("/");
    return rlhi_strndup(path, (size_t)(slash - path));
}

static int load_json_with_config(struct rlhi_tokenizer *t, const char *json)
{
    char *dir = dir_of(json), *config = NULL;
    int r;

    if (!dir)
        return rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", json);
    config = rlhi_path_join(dir, "tokenizer_config.json");
    rlhi_free(dir);
    if (!config)
        return rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", json);
    t->kind = RLHI_TOK_BYTE_BPE;
    r = rlhi__bpe_load_json(t, json);
    if (!r)
        r = apply_config(t, config);
    rlhi_free(config);
    return r;
}

static int load_any(struct rlhi_tokenizer *t, const char *path)
{
    if (rlhi_path_is_dir(path)) {
        char *json = rlhi_path_join(path, "tokenizer.json");
        char *enc = rlhi_path_join(path, "encoder.json");
        char *bpe = rlhi_path_join(path, "vocab.bpe");
        int r;

        if (!json || !enc || !bpe)
            r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory",
                         path);
        else if (rlhi_path_exists(json))
            r = load_json_with_config(t, json);
        else if (rlhi_path_exists(enc) && rlhi_path_exists(bpe)) {
            t->kind = RLHI_TOK_BYTE_BPE;
            r = rlhi__bpe_load_gpt2(t, path);
            if (!r)
                r = apply_config(t, NULL);
        } else
            r = rlhi_err(RLHI_ENOTFOUND,
                         "cannot load tokenizer from '%s': no tokenizer.json"
                         " or encoder.json + vocab.bpe in it", path);
        rlhi_free(json);
        rlhi_free(enc);
        rlhi_free(bpe);
        return r;
    }
    if (!rlhi_path_exists(path)) {
        FILE *f = fopen(path, "rb"); /* for the system's reason */

        if (f)
            fclose(f);
        return rlhi_err_errno(RLHI_ENOTFOUND, "cannot open tokenizer '%s'",
                              path);
    }
    if (looks_like_json(path))
        return load_json_with_config(t, path);
    t->kind = RLHI_TOK_SPM_BPE;
    return rlhi__spm_load(t, path, 0);
}

static struct rlhi_tokenizer *tok_new(const char *path)
{
    struct rlhi_tokenizer *t = rlhi_calloc(1, sizeof *t);
    int i;

    if (!t)
        return NULL;
    t->path = rlhi_strdup(path);
    if (!t->path) {
        rlhi_free(t);
        return NULL;
    }
    t->bos = t->eos = -1;
    t->space_id = -1;
    for (i = 0; i < 256; i++)
        t->byte_id[i] = -1;
    return t;
}

int rlhi_tokenizer_load(struct rlhi_tokenizer **out, const char *path)
{
    struct rlhi_tokenizer *t = tok_new(path);
    int r;

    *out = NULL;
    if (!t)
        return rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", path);
    r = load_any(t, path);
    if (r < 0) {
        rlhi_tokenizer_free(t);
        return r;
    }
    *out = t;
    return 0;
}

int rlhi_tokenizer_load_llama2c(struct rlhi_tokenizer **out, const char *path,
                                int vocab_size)
{
    struct rlhi_tokenizer *t = tok_new(path);
    int r;

    *out = NULL;
    if (!t)
        return rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", path);
    t->kind = RLHI_TOK_SPM_BPE;
    r = rlhi__spm_load(t, path, vocab_size);
    if (r < 0) {
        rlhi_tokenizer_free(t);
        return r;
    }
    *out = t;
    return 0;
}

/* ---- accessors ------------------------------------------------------ */

enum rlhi_tokenizer_kind rlhi_tokenizer_kind(const struct rlhi_tokenizer *t)
{
    return t->kind;
}

int rlhi_tokenizer_vocab_size(const struct rlhi_tokenizer *t)
{
    return t->n_ids;
}

int rlhi_tokenizer_bos(const struct rlhi_tokenizer *t)
{
    return t->bos;
}

int rlhi_tokenizer_eos(const struct rlhi_tokenizer *t)
{
    return t->eos;
}

bool rlhi_tokenizer_wants_bos(const struct rlhi_tokenizer *t)
{
    return t->wants_bos;
}

bool rlhi_tokenizer_is_special(const struct rlhi_tokenizer *t, int id)
{
    if (id < 0 || id >= t->n_ids)
        return false;
    if (t->kind == RLHI_TOK_SPM_BPE)
        return id < 3; /* <unk>, <s>, </s> */
    return (t->flags[id] & TOKF_SPECIAL) != 0;
}

/* ---- encode --------------------------------------------------------- */

int rlhi__ids_push(struct rlhi__ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        int32_t *v = rlhi_realloc(a->v, cap * sizeof *v);

        if (!v)
            return rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

static bool is_word_byte(uint8_t c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

/* The added token matching text[pos..len) (longest), or -1. */
static int added_at(const struct rlhi_tokenizer *t, const char *text,
                    size_t pos, size_t len, int flags)
{
    const int32_t *c = t->added_by_byte[(uint8_t)text[pos]];

    if (!c)
        return -1;
    for (; *c >= 0; c++) {
        const struct rlhi__added *a = &t->added[*c];

        if (a->special && !(flags & RLHI_ENC_SPECIAL))
            continue;
        if (a->len > len - pos || memcmp(text + pos, a->content, a->len))
            continue;
        /* single_word: not glued to a word on either side. */
        if (a->single_word &&
            ((pos > 0 && is_word_byte((uint8_t)text[pos - 1])) ||
             (pos + a->len < len &&
              is_word_byte((uint8_t)text[pos + a->len]))))
            continue;
        return *c;
    }
    return -1;
}

static bool is_space_byte(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

static int encode_bytelevel(const struct rlhi_tokenizer *t, const char *text,
                            size_t len, int flags, struct rlhi__ids *out)
{
    size_t pos = 0, seg = 0;
    int r;

    while (pos < len) {
        int k = added_at(t, text, pos, len, flags);
        size_t end = pos;

        if (k < 0) {
            pos++;
            continue;
        }
        /* lstrip/rstrip: the token swallows whitespace beside it. */
        if (t->added[k].lstrip)
            while (end > seg && is_space_byte(text[end - 1]))
                end--;
        r = rlhi__bpe_encode_text(t, text + seg, end - seg, out);
        if (!r)
            r = rlhi__ids_push(out, t->added[k].id);
        if (r)
            return r;
        pos += t->added[k].len;
        if (t->added[k].rstrip)
            while (pos < len && is_space_byte(text[pos]))
                pos++;
        seg = pos;
    }
    return rlhi__bpe_encode_text(t, text + seg, len - seg, out);
}

int rlhi_tokenizer_encode(const struct rlhi_tokenizer *t, const char *text,
                          size_t len, int flags, int32_t **ids, size_t *n)
{
    struct rlhi__ids out = {NULL, 0, 0};
    int r = 0;

    *ids = NULL;
    *n = 0;
    if (t->kind == RLHI_TOK_SPM_BPE) {
        /* run.c merges across BOS too, so BOS goes in first. */
        if ((flags & RLHI_ENC_BOS) && t->bos >= 0)
            r = rlhi__ids_push(&out, t->bos);
        if (!r)
            r = rlhi__spm_encode(t, text, len, &out);
    } else {
        if ((flags & RLHI_ENC_BOS) && t->bos >= 0)
            r = rlhi__ids_push(&out, t->bos);
        if (!r)
            r = encode_bytelevel(t, text, len, flags, &out);
    }
    if (!r && (flags & RLHI_ENC_EOS) && t->eos >= 0)
        r = rlhi__ids_push(&out, t->eos);
    if (r) {
        rlhi_free(out.v);
        return r;
    }
    if (!out.v) {
        out.v = rlhi_malloc(sizeof *out.v);
        if (!out.v)
            return rlhi_err(RLHI_ENOMEM, "cannot encode: out of memory");
    }
    *ids = out.v;
    *n = out.n;
    return 0;
}

/* ---- decode --------------------------------------------------------- */

const char *rlhi_tokenizer_piece(const struct rlhi_tokenizer *t, int prev,
                                 int id, char scratch[8], size_t *len)
{
    if (id < 0 || id >= t->n_ids || !(t->flags[id] & TOKF_PRESENT)) {
        *len = 0;
        return NULL;
    }
    if (t->kind == RLHI_TOK_SPM_BPE)
        return rlhi__spm_piece(t, prev, id, scratch, len);
    *len = t->len[id];
    return t->arena + t->off[id];
}

int rlhi_tokenizer_decode(const struct rlhi_tokenizer *t, const int32_t *ids,
                          size_t n, bool skip_special, struct rlhi_buf *out)
{
    int prev = -1;
    size_t i;

    for (i = 0; i < n; i++) {
        char scratch[8];
        size_t len;
        const char *p = rlhi_tokenizer_piece(t, prev, ids[i], scratch, &len);

        if (!p)
            return rlhi_err(RLHI_EINVAL,
                            "cannot decode: id %d at position %zu is not in"
                            " the vocabulary of '%s' (%d ids)", (int)ids[i],
                            i, t->path, t->n_ids);
        prev = ids[i];
        if (skip_special && rlhi_tokenizer_is_special(t, ids[i]))
            continue;
        if (rlhi_buf_add(out, p, len))
            return rlhi_err(RLHI_ENOMEM, "cannot decode: out of memory");
    }
    if (!out->buf && rlhi_buf_add(out, "", 0))
        return rlhi_err(RLHI_ENOMEM, "cannot decode: out of memory");
    return 0;
}
