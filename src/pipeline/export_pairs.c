/* Preference pairs out of the store as TRL's conversational explicit-prompt
 * JSONL, which TRL's DPOTrainer, OpenRLHF and LLaMA-Factory read as is:
 *     {"prompt": [{"role": "system", "content": PERSONA}, {"role": "user",
 *      ...}, ...], "chosen": [{"role": "assistant", "content": ...}],
 *      "rejected": [{"role": "assistant", "content": ...}], ...}
 * followed by our fields (persona, user_id, conversation_hash, turn,
 * source, round, chosen_score, rejected_score, margin).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "pairs_internal.h"

static json_t *answer(const char *text)
{
    json_t *m = json_object(), *l = json_array();

    if (!m || !l || json_object_set_new(m, "role", json_string("assistant"))
        || json_object_set_new(m, "content", json_string(text)) ||
        json_array_append_new(l, m)) {
        json_decref(m);
        json_decref(l);
        return NULL;
    }
    return l;
}

/* A REAL column as a JSON number, NULL as null. */
static json_t *real_or_null(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL
               ? json_null() : json_real(sqlite3_column_double(st, col));
}

int rlhi_pairs_export(struct rlhi_store *s, const char *source,
                      bool include_dropped, FILE *out, uint64_t *n)
{
    sqlite3_stmt *st;
    struct rlhi_buf line = RLHI_BUF_INIT;
    uint64_t count = 0;
    int rc;

    if (n)
        *n = 0;
    if ((rc = rlhi_pairs_schema(s)))
        return rc;
    if ((rc = rlhi_store_prepare(s, &st, "SELECT p.prompt, p.chosen, "
                                 "p.rejected, p.persona, u.key, c.hash, "
                                 "p.turn_index, p.source, p.round, "
                                 "p.chosen_score, p.rejected_score, "
                                 "p.margin, p.kept, p.drop_reason FROM "
                                 "pairs p LEFT JOIN users u ON u.id = "
                                 "p.user_id LEFT JOIN conversations c ON "
                                 "c.id = p.conversation_id WHERE (?1 IS "
                                 "NULL OR p.source = ?1) AND (?2 OR "
                                 "p.kept) ORDER BY p.source, c.hash, "
                                 "p.turn_index, p.round")))
        return rc;
    sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, include_dropped);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *ptxt = (const char *)sqlite3_column_text(st, 0);
        json_t *o = json_object(), *prompt;
        json_error_t je;
        int e = 0;

#define TXT(i) ((const char *)sqlite3_column_text(st, i))
#define STR_OR_NULL(i) (TXT(i) ? json_string(TXT(i)) : json_null())
        if (!o) {
            rc = RLHI_ENOMEM;
            break;
        }
        if (!(prompt = json_loads(ptxt, 0, &je)) || !json_is_array(prompt)) {
            json_decref(prompt);
            json_decref(o);
            rc = rlhi_err(RLHI_EFORMAT, "pair of conversation '%s' turn %d "
                          "in '%s': the stored prompt is not a message "
                          "list", TXT(5) ? TXT(5) : "?",
                          sqlite3_column_int(st, 6), rlhi_store_path(s));
            break;
        }
        /* TRL's keys first, then ours; jansson keeps insertion order. */
        e |= json_object_set_new(o, "prompt", prompt);
        e |= json_object_set_new(o, "chosen", answer(TXT(1)));
        e |= json_object_set_new(o, "rejected", answer(TXT(2)));
        e |= json_object_set_new(o, "persona", STR_OR_NULL(3));
        e |= json_object_set_new(o, "user_id", STR_OR_NULL(4));
        e |= json_object_set_new(o, "conversation_hash", STR_OR_NULL(5));
        e |= json_object_set_new(o, "turn",
                                 json_integer(sqlite3_column_int(st, 6)));
        e |= json_object_set_new(o, "source", STR_OR_NULL(7));
        e |= json_object_set_new(o, "round",
                                 json_integer(sqlite3_column_int(st, 8)));
        e |= json_object_set_new(o, "chosen_score", real_or_null(st, 9));
        e |= json_object_set_new(o, "rejected_score", real_or_null(st, 10));
        e |= json_object_set_new(o, "margin", real_or_null(st, 11));
        if (include_dropped) {
            e |= json_object_set_new(o, "kept",
                                     json_boolean(sqlite3_column_int(st,
                                                                     12)));
            e |= json_object_set_new(o, "drop_reason", STR_OR_NULL(13));
        }
#undef TXT
#undef STR_OR_NULL
        rlhi_buf_clear(&line);
        /* 9 significant digits keep a float score exact and print 0.1 as
         * 0.1, not 0.10000000000000001. */
        if (e || rlhi__json_dump(o, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                 JSON_REAL_PRECISION(9), &line) ||
            rlhi_buf_addc(&line, '\n')) {
            json_decref(o);
            rc = rlhi_err(RLHI_ENOMEM, "cannot write a pair");
            break;
        }
        json_decref(o);
        if (fwrite(line.buf, 1, line.len, out) != line.len) {
            rc = rlhi_err_errno(RLHI_EIO, "cannot write pairs");
            break;
        }
        count++;
    }
    sqlite3_finalize(st);
    rlhi_buf_release(&line);
    if (n)
        *n = count;
    if (rc == SQLITE_DONE)
        return 0;
    if (rc == RLHI_ENOMEM)
        return rlhi_err(RLHI_ENOMEM, "cannot export pairs");
    return rc < 0 ? rc : rlhi_store_err(s, "cannot read pairs");
}
