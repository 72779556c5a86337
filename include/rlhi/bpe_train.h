/* Training a byte-level BPE tokenizer (GPT-2 style) on a text corpus, and
 * writing it as a Hugging Face tokenizer.json + tokenizer_config.json.
 *
 * Text is cut into pretokens by GPT-2's split regex (PCRE2, UTF + UCP),
 * after taking out the caller's special tokens wherever they appear
 * literally. Each distinct pretoken is counted once with its frequency;
 * then the most frequent adjacent pair of symbols is merged into a new
 * symbol, again and again, until the vocabulary is full. Ties go to the
 * pair with the smallest (left id, right id), so the same corpus and
 * options always give the same files, whatever the order of the input.
 *
 * Ids: 0..255 are the 256 bytes in GPT-2's byte-to-unicode order (the
 * printable bytes '!'..'~', 0xa1..0xac, 0xae..0xff ascending, then the
 * others ascending), then one id per merge in merge order, then the
 * special tokens in the order given (as added_tokens, like Llama-3 and
 * Qwen2 place theirs). Pairs are counted as adjacent windows, and a word is
 * merged left to right without overlap, so the trainer's segmentation of a
 * text equals what any standard BPE encoder produces from its output.
 */
#ifndef RLHI_BPE_TRAIN_H
#define RLHI_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"

struct rlhi_bpe_trainer;

struct rlhi_bpe_train_options {
    int vocab_size;        /* all ids: 256 bytes + merges + special tokens */
    int64_t min_frequency; /* pairs seen fewer times are never merged; 0
                              means 2 (a pair seen once only memorises) */
    const char *const *special_tokens; /* [n_special], distinct, non-empty */
    int n_special;
    /* For tokenizer_config.json; each NULL or one of the special tokens. */
    const char *bos_token, *eos_token, *pad_token;
    const char *chat_template; /* Jinja text for tokenizer_config.json, or
                                  NULL for none */
};

struct rlhi_bpe_stats {
    uint64_t bytes;      /* text bytes counted */
    uint64_t docs;       /* texts added */
    uint64_t pretokens;  /* pretokens counted */
    uint64_t words;      /* distinct pretokens */
    int merges;          /* merges learnt */
    int vocab_size;      /* ids in the result, specials included */
    double count_s;      /* seconds spent cutting and counting text */
    double merge_s;      /* seconds spent merging */
};

/* Creates a trainer. The options are copied (strings too). Errors:
 * RLHI_EINVAL for a vocab_size that leaves no room for the 256 bytes and
 * the special tokens, empty or duplicate special tokens, a bos/eos/pad that
 * is not a special token; RLHI_ENOMEM. */
int rlhi_bpe_trainer_new(struct rlhi_bpe_trainer **out,
                         const struct rlhi_bpe_train_options *opt);
void rlhi_bpe_trainer_free(struct rlhi_bpe_trainer *t);

/* Counts the pretokens of one text (any bytes; invalid UTF-8 is kept as
 * pretokens of its own). Only before rlhi_bpe_trainer_train(). */
int rlhi_bpe_trainer_add_text(struct rlhi_bpe_trainer *t, const char *text,
                              size_t len);

/* Counts a corpus file. A file whose first line is a JSON object is read
 * as JSONL, each line on its own: {"text": ...} counts the text;
 * {"messages": [{role, content}...]} (or WildChat's "conversation") counts
 * the conversation rendered with the rlhi chat template. Any other file is
 * one plain text. A JSONL line that is not valid JSON or has none of those
 * keys is skipped with a warning naming file and line, and counted in
 * *skipped (may be NULL). Errors: RLHI_EIO naming the file; RLHI_ENOMEM. */
int rlhi_bpe_trainer_add_file(struct rlhi_bpe_trainer *t, const char *path,
                              int64_t *skipped);

/* Learns merges until vocab_size ids exist or no pair is frequent enough
 * (then the vocabulary is smaller: see stats). Shows progress through the
 * base layer. Errors: RLHI_EINVAL when called twice; RLHI_ENOMEM. */
int rlhi_bpe_trainer_train(struct rlhi_bpe_trainer *t);

void rlhi_bpe_trainer_stats(const struct rlhi_bpe_trainer *t,
                            struct rlhi_bpe_stats *s);

/* The trainer's own segmentation of `text` with the learnt merges (special
 * tokens written in the text become their ids), for checking an encoder
 * against. A reference, not fast: each pretoken is merged in quadratic
 * time. On success *ids is a new array (rlhi_free) of *n ids. */
int rlhi_bpe_trainer_encode(const struct rlhi_bpe_trainer *t,
                            const char *text, size_t len, int32_t **ids,
                            size_t *n);

/* Appends the bytes of `ids` to `out`. RLHI_EINVAL for an id out of
 * range. */
int rlhi_bpe_trainer_decode(const struct rlhi_bpe_trainer *t,
                            const int32_t *ids, size_t n,
                            struct rlhi_buf *out);

/* Writes `dir`/tokenizer.json and `dir`/tokenizer_config.json (creating
 * `dir`), each atomically. Only after rlhi_bpe_trainer_train(). Errors:
 * RLHI_EIO naming the file; RLHI_EINVAL before training. */
int rlhi_bpe_trainer_save(const struct rlhi_bpe_trainer *t, const char *dir);

#endif
