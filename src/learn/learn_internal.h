/* Pieces of the SFT trainer (sft.c) that the DPO and reward trainers
 * reuse: rendering and tokenizing one conversation with its assistant
 * tokens marked, and copying tokenizer files next to a saved model. */
#ifndef RLHI_LEARN_INTERNAL_H
#define RLHI_LEARN_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/chat.h"
#include "rlhi/tokenizer.h"

/* Growable token list with a scored flag per token (sft.c). */
struct toks {
    int32_t *id;
    uint8_t *sc;
    size_t n, cap;
};

/* Renders `root` = {"messages": [...]} with template `kind`, tokenizes it
 * (BOS added when the tokenizer wants it and the template did not write
 * it) and marks each assistant answer and its end-of-turn marker as
 * scored (sc = 1). out->n is reset first; out's arrays are grown as
 * needed and stay the caller's (rlhi_free). 0, RLHI_EFORMAT (the message
 * says what is wrong with the record) or RLHI_ENOMEM. */
int rlhi__sft_example(json_t *root, const struct rlhi_tokenizer *tok,
                      enum rlhi_chat_kind kind, struct toks *out);

/* Copies the tokenizer and template files found in `from` (NULL: none)
 * into `to`. 0 or RLHI_EIO / RLHI_ENOMEM. */
int rlhi__copy_tokenizer(const char *from, const char *to);

#endif
