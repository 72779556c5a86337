/* Internals shared by the two persona stages: the builtin rules
 * (persona.c) and the LLM summariser (llm_detect.c) read a user's history
 * and store personas through the same three statements. */
#ifndef RLHI_PERSONA_INTERNAL_H
#define RLHI_PERSONA_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "rlhi/pipeline.h"
#include "rlhi/store.h"

/* Prepares the statements of a persona run: *msgs (bind a user id; gives
 * conversation hash, message index, text, builtin feedback label of each
 * user message), *old (bind user id, backend; gives the stored history
 * hash) and *put (see rlhi__persona_put). 0 or RLHI_EDB; the caller
 * finalizes all three, also on error (an unprepared one is NULL). */
int rlhi__persona_stmts(struct rlhi_store *s, sqlite3_stmt **msgs,
                        sqlite3_stmt **old, sqlite3_stmt **put);

/* True when the persona of `user_id` by `backend` was made from the
 * history whose SHA-256 is `hex`. Leaves `old` reset. */
bool rlhi__persona_is_same(sqlite3_stmt *old, int64_t user_id,
                           const char *backend, const char *hex);

/* Stores `p` as the persona of `user_id` by `backend`, made from the
 * history with SHA-256 `hex`, with `put` from rlhi__persona_stmts, in the
 * caller's transaction. 0 or RLHI_EDB (message set); `put` is left for the
 * caller to reset. */
int rlhi__persona_put(struct rlhi_store *s, sqlite3_stmt *put,
                      int64_t user_id, const char *backend,
                      const struct rlhi_persona *p, const char *hex,
                      bool redact);

#endif
