/* Internals shared by the pair stages (pairs.c, rank.c, filter.c,
 * llm_detect.c, export_pairs.c): loading a conversation, the user's persona,
 * building prompts, storing a pair. */
#ifndef RLHI_PAIRS_INTERNAL_H
#define RLHI_PAIRS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "rlhi/pairs.h"

/* A conversation's messages as loaded from the store; all owned. */
struct rlhi__conv {
    int64_t id;
    int64_t user_id;
    char *hash;
    size_t n;
    struct rlhi_chat_msg *msgs; /* role and content strings owned */
};

/* Loads conversation `id`. 0, RLHI_ENOTFOUND, RLHI_EDB or RLHI_ENOMEM. */
int rlhi__conv_load(struct rlhi_store *s, int64_t id, struct rlhi__conv *c);
void rlhi__conv_release(struct rlhi__conv *c);

/* The persona text of `user_id` by `backend` in *text (new string, caller
 * frees), or NULL when the user has none. 0 or RLHI_EDB/RLHI_ENOMEM. */
int rlhi__persona_text(struct rlhi_store *s, int64_t user_id,
                       const char *backend, char **text);

/* A new copy of `s`, redacted when `redact` (adding the replacements to
 * *count when count is not NULL). NULL on no memory (message set). */
char *rlhi__dup_redacted(const char *s, bool redact, uint64_t *count);

/* Appends to `out` the JSON message list: a system message holding
 * `persona` (when not NULL), then msgs[0..n). 0 or RLHI_ENOMEM. */
int rlhi__prompt_json(const char *persona, const struct rlhi_chat_msg *msgs,
                      size_t n, struct rlhi_buf *out);

/* Appends "role: content" lines for msgs[0..n), keeping the total under
 * `max_chars` (0: no limit) by dropping the oldest messages first and then
 * cutting the remaining texts. 0 or RLHI_ENOMEM. */
int rlhi__transcript(const struct rlhi_chat_msg *msgs, size_t n,
                     size_t max_chars, struct rlhi_buf *out);

/* True when the pair (source, conversation, turn, round) is stored. */
int rlhi__pair_exists(struct rlhi_store *s, const char *source,
                      int64_t conv, int turn, int round);

/* rlhi__pair_exists for a candidate turn of a run, counting it in
 * stats->turns and, when its pair is stored, in stats->done. */
int rlhi__pair_seen(struct rlhi_store *s, const char *source, int64_t conv,
                    int turn, int round, struct rlhi_pairs_stats *stats);

struct rlhi__pair {
    int64_t conv, user_id;
    int turn, round;
    const char *source, *prompt, *chosen, *rejected, *persona;
    bool has_scores;
    double chosen_score, rejected_score;
};

/* Insert (ON CONFLICT DO NOTHING) of one pair inside the caller's
 * transaction. Returns 1
 * when stored, 0 when it was already there, or RLHI_EDB. */
int rlhi__pair_insert(struct rlhi_store *s, const struct rlhi__pair *p);

/* Asks and parses a JSON verdict: calls ask with msgs, finds the JSON
 * object, and runs `check` on it (returns 0 or sets a message and returns
 * RLHI_EFORMAT). On a malformed verdict asks once more with a user message
 * saying what was wrong. On success *verdict is the parsed object (caller
 * frees with json_decref, typed void * here to keep jansson out of the
 * header). */
int rlhi__ask_json(struct rlhi_ask *ask, const struct rlhi_chat_msg *msgs,
                   size_t n, int (*check)(void *obj, void *arg), void *arg,
                   void **verdict);

/* The same for `n` requests at once (request i: msgs[i], counts[i]
 * messages, checked with args[i]), through ask->many when it has one.
 * Per request: rcs[i] is 0 with verdicts[i] set, or RLHI_EFORMAT with
 * errs[i] the message (caller frees with rlhi_free). Returns 0, or the
 * code of a failure that is not a malformed verdict (the network, memory;
 * with its message), after which no verdict is returned. */
int rlhi__ask_json_many(struct rlhi_ask *ask,
                        const struct rlhi_chat_msg *const *msgs,
                        const size_t *counts, size_t n,
                        int (*check)(void *obj, void *arg),
                        void *const *args, void **verdicts, int *rcs,
                        char **errs);

/* Appends the JSON text of `json` (a json_t *) to `out` with jansson
 * `flags`, through json_dump_callback so that no memory from jansson's
 * allocator (which a stage may replace) leaks out. 0 or RLHI_ENOMEM. */
int rlhi__json_dump(const void *json, size_t flags, struct rlhi_buf *out);

/* A candidate turn of a pair stage: a message of conversation `conv`. */
struct rlhi__turn_ref {
    int64_t conv;
    int turn; /* index of the feedback (rewrite) or request (rank) */
};

/* Runs `sql` (selecting conversation id, message index; `backend` bound as
 * its first parameter) into *refs (new array, caller frees) and *n,
 * growing the array from `first_cap` rows. 0, or RLHI_EDB (message
 * `read_err`) or RLHI_ENOMEM ("cannot list <list_what>"); on error *refs
 * may hold rows read so far and is still the caller's to free. */
int rlhi__turn_refs_load(struct rlhi_store *s, const char *sql,
                         const char *backend, size_t first_cap,
                         const char *list_what, const char *read_err,
                         struct rlhi__turn_ref **refs, size_t *n);

/* Records the end of pair-stage run `run` with the counts in `stats`, the
 * candidates under the key `turns_key`. 0 or RLHI_EDB. */
int rlhi__pairs_run_finish(struct rlhi_store *s, int64_t run,
                           const char *turns_key,
                           const struct rlhi_pairs_stats *stats);

/* The most pairs a run makes: the smaller of o->limit and
 * o->stop_after_pairs among those set, or 0 for no cap. */
int64_t rlhi__pairs_cap(const struct rlhi_pairs_opts *o);

/* The --stop_after_pairs test hook: RLHI_EIO (message set) once `stats`
 * holds that many made pairs, else 0. */
int rlhi__pairs_stop_hook(const struct rlhi_pairs_opts *o,
                          const struct rlhi_pairs_stats *stats);

#endif
