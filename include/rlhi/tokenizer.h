/* Tokenizers: byte-level BPE (GPT-2, Llama-3, Qwen2 from tokenizer.json or
 * GPT-2's encoder.json + vocab.bpe) and SentencePiece-style BPE with byte
 * fallback (llama2.c tokenizer .bin files).
 *
 * A tokenizer is immutable once loaded and may be shared between threads.
 * Ids are int32. Text is UTF-8 bytes; decode() of ids that split a UTF-8
 * character returns the raw bytes (the caller joins pieces).
 */
#ifndef RLHI_TOKENIZER_H
#define RLHI_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"

struct rlhi_tokenizer;

enum rlhi_tokenizer_kind {
    RLHI_TOK_BYTE_BPE = 1, /* byte-level BPE (tokenizer.json, GPT-2 files) */
    RLHI_TOK_SPM_BPE = 2,  /* llama2.c / SentencePiece-style BPE */
};

/* Flags for rlhi_tokenizer_encode(). */
enum {
    RLHI_ENC_BOS = 1,     /* prepend the BOS token if the tokenizer has one */
    RLHI_ENC_EOS = 2,     /* append the EOS token if it has one */
    RLHI_ENC_SPECIAL = 4, /* recognise added/special tokens written in the
                             text (e.g. "<|eot_id|>"); without it they are
                             encoded as plain text */
};

/* Loads a tokenizer from `path`, which may be:
 *   - a tokenizer.json file (Hugging Face `tokenizers` format);
 *   - a directory holding tokenizer.json (tokenizer_config.json beside it,
 *     when present, supplies bos/eos), or encoder.json + vocab.bpe (GPT-2);
 *   - a llama2.c tokenizer .bin file.
 * On success *out is a new tokenizer the caller frees with
 * rlhi_tokenizer_free(). Errors name the file and what is wrong. */
int rlhi_tokenizer_load(struct rlhi_tokenizer **out, const char *path);
void rlhi_tokenizer_free(struct rlhi_tokenizer *t);

enum rlhi_tokenizer_kind rlhi_tokenizer_kind(const struct rlhi_tokenizer *t);
/* Number of ids, added tokens included (one more than the largest id). */
int rlhi_tokenizer_vocab_size(const struct rlhi_tokenizer *t);
/* BOS/EOS ids, -1 when the tokenizer has none. */
int rlhi_tokenizer_bos(const struct rlhi_tokenizer *t);
int rlhi_tokenizer_eos(const struct rlhi_tokenizer *t);
/* Id of a token given by its exact vocabulary string (e.g. "<|eot_id|>"),
 * or -1 when there is no such token. */
int rlhi_tokenizer_token_id(const struct rlhi_tokenizer *t, const char *s);

/* Encodes `len` bytes of `text`. On success *ids is a new array (caller
 * frees with rlhi_free) of *n ids. */
int rlhi_tokenizer_encode(const struct rlhi_tokenizer *t, const char *text,
                          size_t len, int flags, int32_t **ids, size_t *n);

/* Decodes ids to text appended to `out`. Special tokens are written as
 * their text unless `skip_special` is set. */
int rlhi_tokenizer_decode(const struct rlhi_tokenizer *t, const int32_t *ids,
                          size_t n, bool skip_special, struct rlhi_buf *out);

/* The bytes that token `id` adds when it follows `prev` (-1 for none), for
 * streaming output. For SentencePiece-style tokenizers this follows
 * llama2.c's run.c exactly: a leading space is dropped after BOS and byte
 * tokens "<0xNN>" give the raw byte. Returns a pointer valid while the
 * tokenizer lives (or into `scratch`, 8 bytes) and sets *len; NULL for an
 * id out of range. */
const char *rlhi_tokenizer_piece(const struct rlhi_tokenizer *t, int prev,
                                 int id, char scratch[8], size_t *len);

#endif
