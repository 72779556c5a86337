/* The first half of the RLHI pipeline: chat logs into the store, feedback
 * labels on follow-up turns, per-user personas, and redaction of personal
 * data.
 *
 * Every stage reads from and writes to a struct rlhi_store, commits in
 * batches together with its resume marker, and can be killed at any moment
 * and rerun: the rerun finishes the job and duplicates nothing. Problems
 * with single records (a malformed line, a wrong type) are reported through
 * the log hook at WARN level as "FILE:LINE: what" and counted; the stage
 * goes on. Only failures of the store or the files stop a stage.
 */
#ifndef RLHI_PIPELINE_H
#define RLHI_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "rlhi/base.h"
#include "rlhi/store.h"

/* ---- ingest ----------------------------------------------------------- */

struct rlhi_ingest_opts {
    /* Keep only these languages: comma-separated, compared without case
     * with the record's `language` ("English,French"). A record without
     * one passes as English when its users' text looks English (common
     * English words, mostly ASCII), else it is dropped. NULL keeps all. */
    const char *language;
    bool drop_toxic;    /* drop conversations flagged toxic */
    bool drop_redacted; /* drop conversations WildChat marked redacted */
    /* After loading, delete users (and their conversations) with fewer
     * than this many conversations in the store; 0 keeps everyone. Give
     * all files in one run: the count is over the whole store. */
    int min_conversations_per_user;
    int max_turns;      /* drop conversations with more user turns; 0: any */
    bool force;         /* ignore resume markers; re-read every file */
    int batch;          /* records per transaction; 0: 10000 records or
                           64 MiB of lines, whichever comes first */
    /* Test hook: stop with RLHI_EIO after this many committed batches, as
     * if the process had been killed. 0: off. */
    int stop_after_batches;
    const char *args;   /* recorded in `runs`; may be NULL */
};

struct rlhi_ingest_stats {
    uint64_t files;
    uint64_t bytes;          /* uncompressed bytes read */
    uint64_t lines;          /* non-blank lines */
    uint64_t inserted;       /* new conversations stored */
    uint64_t duplicates;     /* conversations already in the store */
    uint64_t malformed;      /* lines or records skipped with a warning */
    uint64_t filtered;       /* dropped by the filters (all reasons) */
    uint64_t filtered_language, filtered_toxic, filtered_redacted,
        filtered_turns;
    uint64_t pruned_users, pruned_conversations; /* min_conversations */
    uint64_t messages;       /* messages of the inserted conversations */
    uint64_t resumed_files;  /* files continued from a resume marker */
    double seconds;
};

/* Loads WildChat JSONL, plain {"messages": [...]} chat JSONL or ShareGPT
 * {"conversations": [{"from", "value"}]} JSONL (plain, gzip or zstd; "-"
 * for stdin) into the store. Conversations already stored (same
 * conversation_hash or id, or the same user and messages when there is no
 * id) are counted as duplicates and left alone. Malformed lines and
 * records are logged at WARN as "FILE:LINE: what" and counted in
 * stats->malformed. Returns 0 (check stats->malformed) or a negative code
 * when a file cannot be read or the store fails; a batch in flight is then
 * rolled back and a rerun resumes. `stats` is filled in either case. */
int rlhi_ingest(struct rlhi_store *s, const char *const *paths, int npaths,
                const struct rlhi_ingest_opts *opts,
                struct rlhi_ingest_stats *stats);

/* The id a conversation without conversation_hash gets: SHA-256 hex of the
 * canonical JSON of its messages, exactly what Python's
 *     json.dumps([{"role": r, "content": c}, ...], ensure_ascii=False,
 *                separators=(",", ":"))
 * produces, encoded as UTF-8, when the record names no user (user NULL);
 * when it does (`user` or a message's `hashed_ip`), of
 *     json.dumps({"user": u, "messages": [...]}, ...)
 * so that the same short exchange ("hi" / "Hello! How can I help?") from
 * two users stays two conversations, while a log ingested twice is still
 * stored once. `roles` and `contents` have n entries. */
int rlhi_ingest_conversation_id(const char *user, const char *const *roles,
                                const char *const *contents, size_t n,
                                char hex[65]);

/* rlhi_ingest_conversation_id without a user. */
int rlhi_ingest_messages_hash(const char *const *roles,
                              const char *const *contents, size_t n,
                              char hex[65]);

/* ---- feedback --------------------------------------------------------- */

/* What a user turn after an assistant answer does. Priorities between the
 * labels are documented in src/pipeline/feedback.c. */
enum rlhi_fb_label {
    RLHI_FB_REATTEMPT_FEEDBACK = 0, /* unhappy, and says how to do better */
    RLHI_FB_REATTEMPT_NO_GUIDANCE,  /* unhappy or asks to redo, no how */
    RLHI_FB_CLARIFICATION,          /* answers the assistant's question */
    RLHI_FB_POSITIVE,               /* thanks / praise, no new task */
    RLHI_FB_CONTINUE,               /* "go on", "continue", "more" */
    RLHI_FB_NEW_REQUEST,            /* a new task not judging the answer */
    RLHI_FB_OTHER,
    RLHI_FB_NLABELS
};

/* "reattempt_feedback", ... ; "?" for an out-of-range value. */
const char *rlhi_feedback_label_name(int label);
/* The label for a name, or -1. */
int rlhi_feedback_label_parse(const char *name);

struct rlhi_fb_result {
    int label;          /* enum rlhi_fb_label */
    bool dissatisfied;  /* the user is unhappy with the answer */
    bool actionable;    /* the turn says what to change */
    const char *rule;   /* static name of the deciding rule, for debugging */
};

struct rlhi_feedback_detector;

/* Compiles the builtin detector's patterns. *out is the caller's to free
 * with rlhi_feedback_detector_free(). One detector per thread. */
int rlhi_feedback_detector_new(struct rlhi_feedback_detector **out);
void rlhi_feedback_detector_free(struct rlhi_feedback_detector *d);

/* Labels user turn `turn` that follows assistant answer `answer`, which
 * answered user request `request` (NULL when there was none). All three
 * are UTF-8 text, kept by the caller. 0 or RLHI_ENOMEM. */
int rlhi_feedback_classify(struct rlhi_feedback_detector *d,
                           const char *request, const char *answer,
                           const char *turn, struct rlhi_fb_result *out);

struct rlhi_feedback_opts {
    const char *backend;    /* "builtin" (NULL means builtin) */
    bool force;             /* relabel everything for this backend */
    int threads;            /* classifying threads; 0: online CPUs, <= 8 */
    int stop_after_batches; /* test hook as in rlhi_ingest_opts */
    const char *args;
};

struct rlhi_feedback_stats {
    uint64_t conversations;   /* conversations labelled in this run */
    uint64_t turns;           /* user turns labelled (or exported) */
    uint64_t by_label[RLHI_FB_NLABELS];
    uint64_t dissatisfied, actionable;
    double seconds;
};

/* Labels every user turn that follows an assistant answer, in every
 * conversation not yet labelled by this backend. Returns 0, RLHI_ENOTIMPL
 * ("not implemented: backend 'X'") for a backend other than builtin, or
 * another negative code. */
int rlhi_feedback_run(struct rlhi_store *s,
                      const struct rlhi_feedback_opts *opts,
                      struct rlhi_feedback_stats *stats);

/* Writes one JSON object per labelled turn to `out`:
 * {"conversation_hash", "turn_index", "label", "dissatisfied",
 * "actionable"} with turn_index the 0-based index of the user message in
 * its conversation; in conversation then turn order. Counts go to `stats`
 * (may be NULL). */
int rlhi_feedback_export(struct rlhi_store *s, const char *backend,
                         FILE *out, struct rlhi_feedback_stats *stats);

/* ---- personas --------------------------------------------------------- */

enum rlhi_persona_dim {
    RLHI_DIM_EXPERTISE = 0,   /* "expert" | "novice" | "no signal" */
    RLHI_DIM_INFORMATIVENESS, /* "detailed" | "concise" | "no signal" */
    RLHI_DIM_TONE,            /* "formal" | "casual" | "no signal" */
    RLHI_DIM_STRUCTURE,       /* "structured" | "prose" | "no signal" */
    RLHI_DIM_N
};

/* "expertise", "informativeness", "tone", "structure". */
const char *rlhi_persona_dim_name(int dim);

/* One user message of a history. `id` names it in the evidence
 * ("<conversation_hash>#<index>"); `label` is its feedback label name or
 * NULL. All kept by the caller. */
struct rlhi_persona_msg {
    const char *id;
    const char *text;
    const char *label;
};

struct rlhi_persona {
    const char *value[RLHI_DIM_N]; /* static strings as listed above */
    char *evidence[RLHI_DIM_N];    /* JSON arrays of {"message", "phrase",
                                      "signal"}; owned */
    char *text;                    /* natural-language persona; owned */
};

/* Derives a persona from a user's messages with the builtin rules.
 * `redact` passes quoted phrases through rlhi_redact(). On success the
 * caller releases *out with rlhi_persona_release(). */
int rlhi_persona_derive(const struct rlhi_persona_msg *msgs, size_t n,
                        bool redact, struct rlhi_persona *out);
void rlhi_persona_release(struct rlhi_persona *p);

struct rlhi_persona_opts {
    const char *backend; /* "builtin" (NULL means builtin) */
    bool redact;
    bool force;          /* recompute even when the history is unchanged */
    int stop_after_batches;
    const char *args;
};

struct rlhi_persona_stats {
    uint64_t users, made, unchanged;
    double seconds;
};

/* Makes or refreshes the persona of every user whose history (hashed with
 * SHA-256) changed since their stored persona. Uses the feedback labels of
 * the builtin backend when present. */
int rlhi_persona_run(struct rlhi_store *s,
                     const struct rlhi_persona_opts *opts,
                     struct rlhi_persona_stats *stats);

/* Writes one JSON object per persona: {"user", "backend", "expertise":
 * {"value", "evidence"}, ..., "text", "history_hash"}. *n (may be NULL)
 * gets the count. */
int rlhi_persona_export(struct rlhi_store *s, const char *backend,
                        FILE *out, uint64_t *n);

/* ---- redaction -------------------------------------------------------- */

/* Copies `in` (n bytes) to `out` (cleared first) with e-mail addresses,
 * phone numbers, API keys and secrets ("sk-...", "AKIA...", long hex or
 * base64 tokens, "password: x") and URLs replaced by "[EMAIL]", "[PHONE]",
 * "[SECRET]" and "[URL]". Returns the number of replacements (>= 0) or
 * RLHI_ENOMEM. Thread-safe. */
int rlhi_redact(const char *in, size_t n, struct rlhi_buf *out);

#endif
