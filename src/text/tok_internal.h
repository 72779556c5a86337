/* Internal layout of a tokenizer, shared by tokenizer.c, bpe.c and spm.c.
 *
 * Every id 0..n_ids-1 has an entry in a token table: the bytes it decodes
 * to (already mapped back from GPT-2's byte-to-unicode alphabet for
 * byte-level vocabularies, or the llama2.c piece as stored) living in one
 * arena, and flags. Ids that no file names are holes (no TOKF_PRESENT).
 * A hash table maps the model vocabulary's bytes to ids; added tokens
 * (Hugging Face `added_tokens`, GPT-2's <|endoftext|>) sit in their own list
 * and are matched in text before pre-tokenization.
 *
 * Byte-level BPE keeps merges in an open-addressing table keyed by the pair
 * of ids (left << 32 | right) giving the merge rank and the merged id, so
 * merging never touches strings. SentencePiece-style BPE (llama2.c) merges
 * by score over concatenated strings, as run.c does.
 */
#ifndef RLHI_TEXT_TOK_INTERNAL_H
#define RLHI_TEXT_TOK_INTERNAL_H

#include <stdint.h>

#include "rlhi/tokenizer.h"

enum {
    TOKF_PRESENT = 1, /* the id names a token */
    TOKF_ADDED = 2,   /* an added token: decodes to its content as is */
    TOKF_SPECIAL = 4, /* an added token marked special (skippable) */
};

/* A string-to-id table over the token arena (open addressing). */
struct rlhi__strmap_slot {
    uint32_t hash; /* hash of the key, meaningless when id < 0 */
    int32_t id;    /* -1 for an empty slot */
};
struct rlhi__strmap {
    struct rlhi__strmap_slot *slot; /* [cap], hash and id side by side so
                                       a probe touches one cache line */
    uint32_t cap;                   /* a power of two, >= 2 x entries */
    uint32_t count;
};

/* One added token (Hugging Face `added_tokens` entry). */
struct rlhi__added {
    int32_t id;
    char *content; /* owned, NUL-terminated */
    uint32_t len;
    bool special, lstrip, rstrip, single_word;
};

/* One merge: pair (left, right) -> merged id with rank (lower first). */
struct rlhi__merge_slot {
    uint64_t key; /* (uint64)left << 32 | right; UINT64_MAX when empty */
    int32_t rank;
    int32_t id;
};

/* A pre-tokenizer stage: split by a regex (PCRE2) with a behaviour. */
enum rlhi__split_behavior {
    SPLIT_ISOLATED = 0, /* matches and gaps both become pieces */
    SPLIT_REMOVED = 1,  /* matches are dropped, gaps kept */
};

#define RLHI__MAX_STAGES 4

struct rlhi_tokenizer {
    enum rlhi_tokenizer_kind kind;
    char *path; /* the file it came from, for messages */

    /* token table */
    int32_t n_ids;
    uint32_t *off; /* [n_ids] offset of the token bytes in arena */
    uint32_t *len; /* [n_ids] length of the token bytes */
    uint8_t *flags; /* [n_ids] TOKF_* */
    char *arena;
    size_t arena_len, arena_cap;
    struct rlhi__strmap vocab; /* model vocabulary bytes -> id */

    struct rlhi__added *added; /* sorted by id */
    int n_added;
    /* Added-token candidates by first byte, longest first, for matching. */
    int32_t *added_by_byte[256]; /* indices into added, -1 terminated */

    int32_t bos, eos;
    bool wants_bos; /* the config adds BOS by default */

    /* byte-level BPE */
    struct rlhi__merge_slot *merges;
    uint32_t merge_cap;
    int32_t n_merges;
    int32_t byte_id[256]; /* id of the token for a single raw byte, or -1 */
    bool ignore_merges;   /* a pretoken found whole in vocab is emitted */
    bool nfc;             /* normalizer NFC */
    bool prefix_space;    /* ByteLevel add_prefix_space */
    int n_stages;
    void *re[RLHI__MAX_STAGES]; /* pcre2_code_8 * */
    enum rlhi__split_behavior behavior[RLHI__MAX_STAGES];

    /* SentencePiece-style BPE (llama2.c) */
    float *scores; /* [n_ids] merge scores */
    int32_t max_token_length;
    int32_t space_id; /* id of " " (run.c's dummy prefix), -1 if none */
};

/* ---- tokenizer.c: shared table helpers ---- */

uint32_t rlhi__hash_bytes(const void *s, size_t n);
/* Appends a token's bytes to the arena and records it under `id` (which
 * must be < t->n_ids). 0 or RLHI_ENOMEM. */
int rlhi__tok_set(struct rlhi_tokenizer *t, int32_t id, const void *s,
                  size_t n, uint8_t flags);
/* Grows the token table to hold ids < n (new ids are holes). */
int rlhi__tok_reserve(struct rlhi_tokenizer *t, int32_t n);
/* Builds t->vocab over the ids without TOKF_ADDED, first id wins on a
 * duplicate string. 0 or RLHI_ENOMEM. */
int rlhi__vocab_build(struct rlhi_tokenizer *t);
/* Looks up a model vocabulary string; the id or -1. */
int32_t rlhi__vocab_find(const struct rlhi_tokenizer *t, const void *s,
                         size_t n);
/* Builds added_by_byte from t->added. 0 or RLHI_ENOMEM. */
int rlhi__added_index(struct rlhi_tokenizer *t);

/* ---- bpe.c ---- */

/* Loads a Hugging Face tokenizer.json into `t` (bos/eos from a
 * TemplateProcessing post-processor; tokenizer.c applies the config). */
int rlhi__bpe_load_json(struct rlhi_tokenizer *t, const char *path);
/* Loads GPT-2's encoder.json + vocab.bpe from directory `dir`. */
int rlhi__bpe_load_gpt2(struct rlhi_tokenizer *t, const char *dir);
void rlhi__bpe_free(struct rlhi_tokenizer *t);
/* Encodes one stretch of text that holds no added token, appending ids. */
struct rlhi__ids {
    int32_t *v;
    size_t n, cap;
};
int rlhi__ids_push(struct rlhi__ids *a, int32_t id);
int rlhi__bpe_encode_text(const struct rlhi_tokenizer *t, const char *s,
                          size_t n, struct rlhi__ids *out);
/* BPE-merges one pretoken's raw bytes (no regex, no whole-word lookup).
 * `use_heap` 1 forces the priority-queue merge, 0 the linear scan, -1
 * picks by length; both must give the same ids (tests compare them). */
int rlhi__bpe_word(const struct rlhi_tokenizer *t, const uint8_t *s,
                   size_t n, int use_heap, struct rlhi__ids *out);
/* Texts at least this long get a per-call cache of short pieces (default
 * 16384 bytes); tests set it to 0 and SIZE_MAX to compare both paths. */
extern size_t rlhi__bpe_cache_min;
/* Maps token text in GPT-2's byte-to-unicode alphabet to raw bytes in
 * `out`; false if a character is outside the alphabet. */
bool rlhi__bytelevel_decode(const char *s, size_t n, struct rlhi_buf *out);

/* ---- spm.c ---- */

/* Loads a llama2.c tokenizer .bin; vocab_size <= 0 reads until EOF. */
int rlhi__spm_load(struct rlhi_tokenizer *t, const char *path,
                   int vocab_size);
int rlhi__spm_encode(const struct rlhi_tokenizer *t, const char *text,
                     size_t len, struct rlhi__ids *out);
/* run.c's encode() merge loop, O(n^2), kept as the reference twin of the
 * heap version that rlhi__spm_encode uses. */
int rlhi__spm_encode_plain(const struct rlhi_tokenizer *t, const char *text,
                           size_t len, struct rlhi__ids *out);
const char *rlhi__spm_piece(const struct rlhi_tokenizer *t, int prev, int id,
                            char scratch[8], size_t *len);

/* Defines `static void heap_push(type *h, size_t *n, type c)` and
 * `static type heap_pop(type *h, size_t *n)`: a binary heap in the caller's
 * array h[0..*n) whose top is the element that `before(a, b)` (a
 * `static bool before(const type *, const type *)`) puts first. Pushing
 * needs room for one more element; popping needs *n > 0. The candidate
 * merges of bpe.c and spm.c use it; a macro rather than a void * heap so
 * the hot merge loops keep typed copies and an inlined comparison. */
#define RLHI__HEAP_DEFINE(type, before)                                     \
    static void heap_push(type *h, size_t *n, type c)                       \
    {                                                                       \
        size_t i = (*n)++;                                                  \
                                                                            \
        while (i > 0 && before(&c, &h[(i - 1) / 2])) {                      \
            h[i] = h[(i - 1) / 2];                                          \
            i = (i - 1) / 2;                                                \
        }                                                                   \
        h[i] = c;                                                           \
    }                                                                       \
                                                                            \
    static type heap_pop(type *h, size_t *n)                                \
    {                                                                       \
        type top = h[0], last = h[--*n];                                    \
        size_t i = 0;                                                       \
                                                                            \
        for (;;) {                                                          \
            size_t c = 2 * i + 1;                                           \
                                                                            \
            if (c >= *n)                                                    \
                break;                                                      \
            if (c + 1 < *n && before(&h[c + 1], &h[c]))                     \
                c++;                                                        \
            if (!before(&h[c], &last))                                      \
                break;                                                      \
            h[i] = h[c];                                                    \
            i = c;                                                          \
        }                                                                   \
        if (*n)                                                             \
            h[i] = last;                                                    \
        return top;                                                         \
    }

#endif
