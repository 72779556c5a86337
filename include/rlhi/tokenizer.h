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
    RLHI_ENC_SPECIAL = 4, /* recognise special tokens written in the text
                             (e.g. "<|eot_id|>"); without it they are
                             encoded as plain text. Added tokens that are
                             not special (Qwen's "<think>") are always
                             recognised, as in Hugging Face tokenizers */
};

/* Loads a tokenizer from `path`, which may be:
 *   - a tokenizer.json file (Hugging Face `tokenizers` format);
 *   - a directory holding tokenizer.json (tokenizer_config.json beside it,
 *     when present, supplies bos/eos), or encoder.json + vocab.bpe (GPT-2);
 *   - a llama2.c tokenizer .bin file.
 * On success *out is a new tokenizer the caller frees with
 * rlhi_tokenizer_free(). Errors name the file and what is wrong:
 * RLHI_ENOTFOUND (no such file, or a directory without tokenizer files),
 * RLHI_EFORMAT (bad JSON with line and column, a merge naming a missing
 * token, a truncated .bin with the token index), RLHI_ENOTIMPL (a model,
 * normalizer or pre-tokenizer type not supported: WordPiece, Unigram,
 * SentencePiece-style tokenizer.json with byte_fallback, ...). */
int rlhi_tokenizer_load(struct rlhi_tokenizer **out, const char *path);
/* Loads a llama2.c tokenizer .bin reading exactly `vocab_size` records (as
 * run.c does with the model header's vocab_size; bytes after them are
 * ignored), or every record until end of file when vocab_size <= 0.
 * Truncated or corrupt files give RLHI_EFORMAT naming the file and the
 * token index. */
int rlhi_tokenizer_load_llama2c(struct rlhi_tokenizer **out, const char *path,
                                int vocab_size);
/* Frees the tokenizer; NULL is a no-op. */
void rlhi_tokenizer_free(struct rlhi_tokenizer *t);

enum rlhi_tokenizer_kind rlhi_tokenizer_kind(const struct rlhi_tokenizer *t);
/* Number of ids, added tokens included (one more than the largest id). */
int rlhi_tokenizer_vocab_size(const struct rlhi_tokenizer *t);
/* BOS/EOS ids, -1 when the tokenizer has none. */
int rlhi_tokenizer_bos(const struct rlhi_tokenizer *t);
int rlhi_tokenizer_eos(const struct rlhi_tokenizer *t);
/* Whether the tokenizer's own configuration prepends BOS by default
 * (tokenizer_config.json `add_bos_token`, or a post-processor template that
 * starts with BOS, as Llama-3's). Encode adds BOS only when asked with
 * RLHI_ENC_BOS; callers use this to decide. False for llama2.c files (run.c
 * passes bos=1 explicitly). */
bool rlhi_tokenizer_wants_bos(const struct rlhi_tokenizer *t);
/* Whether `id` is a special token (an added token marked special; for
 * llama2.c files ids 0-2: <unk>, <s>, </s>), i.e. one that decode skips
 * with skip_special. False for ids out of range. */
bool rlhi_tokenizer_is_special(const struct rlhi_tokenizer *t, int id);
/* Id of a token given by its exact vocabulary string (e.g. "<|eot_id|>"),
 * or -1 when there is no such token. */
int rlhi_tokenizer_token_id(const struct rlhi_tokenizer *t, const char *s);

/* Encodes `len` bytes of `text` (any bytes: invalid UTF-8 falls back to
 * byte tokens). On success *ids is a new array (caller frees with
 * rlhi_free) of *n ids. Byte-level BPE matches Hugging Face `tokenizers`
 * (tokenizer.json) or GPT-2's encoder; llama2.c files match run.c's
 * encode(), BOS included in its merges. Errors: RLHI_ENOMEM, RLHI_EFORMAT
 * when the vocabulary cannot spell a byte. Thread-safe. */
int rlhi_tokenizer_encode(const struct rlhi_tokenizer *t, const char *text,
                          size_t len, int flags, int32_t **ids, size_t *n);

/* Decodes ids to text appended to `out`. Special tokens are written as
 * their text unless `skip_special` is set. No clean-up of spaces is done
 * (Hugging Face's clean_up_tokenization_spaces is lossy), so
 * decode(encode(s)) == s for byte-level BPE (up to NFC for Qwen).
 * RLHI_EINVAL for an id that names no token. */
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
