/* Simulated evaluation against the world's hidden truth: the judge's win
 * rate of two answer sets, persona-derivation accuracy and feedback-
 * detection precision/recall of the pipeline's results in a store. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "rlhi/eval.h"
#include "rlhi/jsonl.h"

int rlhi_eval_sim_compare(const struct rlhi_sim_truth *t,
                          char *const *a, char *const *b, int nboot,
                          uint64_t seed, struct rlhi_eval_sim_result *out)
{
    int *oc, i, d, n = 0, cared[RLHI_SIM_NDIM] = {0}, r;
    double ra = 0, rb = 0;

    memset(out, 0, sizeof *out);
    oc = rlhi_malloc(((size_t)t->n_items + 1) * sizeof *oc);
    if (!oc)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate outcomes");
    for (i = 0; i < t->n_items; i++) {
        const struct rlhi_sim_persona *p = &t->users[t->items[i].user].persona;
        const struct rlhi_sim_request *q = &t->items[i].req;
        struct rlhi_sim_verdict va, vb;

        if (!a[i] || !b[i])
            continue;
        rlhi_sim_judge(a[i], q, p, &va);
        rlhi_sim_judge(b[i], q, p, &vb);
        oc[n++] = va.score > vb.score ? 1 : va.score < vb.score ? -1 : 0;
        ra += va.correct == RLHI_SIM_RIGHT;
        rb += vb.correct == RLHI_SIM_RIGHT;
        if (q->kind == RLHI_SIM_ARITH) {
            out->n_arith++;
            out->arith_a += va.correct == RLHI_SIM_RIGHT;
            out->arith_b += vb.correct == RLHI_SIM_RIGHT;
        }
        for (d = 0; d < RLHI_SIM_NDIM; d++) {
            if (!p->pref[d])
                continue;
            cared[d]++;
            out->match_a[d] += va.reading.style.v[d] == (p->pref[d] > 0);
            out->match_b[d] += vb.reading.style.v[d] == (p->pref[d] > 0);
        }
    }
    if (!n) {
        rlhi_free(oc);
        return rlhi_err(RLHI_EINVAL, "no held-out item answered by both");
    }
    r = rlhi_eval_winrate(oc, n, nboot, seed, &out->win);
    rlhi_free(oc);
    out->correct_a = ra / n;
    out->correct_b = rb / n;
    if (out->n_arith) {
        out->arith_a /= out->n_arith;
        out->arith_b /= out->n_arith;
    }
    for (d = 0; d < RLHI_SIM_NDIM; d++) {
        out->match_a[d] = cared[d] ? out->match_a[d] / cared[d] : 0;
        out->match_b[d] = cared[d] ? out->match_b[d] / cared[d] : 0;
    }
    return r;
}

int rlhi_eval_persona_accuracy(struct rlhi_store *s,
                               const struct rlhi_sim_truth *t,
                               struct rlhi_eval_persona_result *out)
{
    sqlite3_stmt *st;
    int rc, d, npref[RLHI_SIM_NDIM] = {0};

    memset(out, 0, sizeof *out);
    rc = rlhi_store_prepare(s, &st,
                            "SELECT u.key, p.expertise, p.informativeness, "
                            "p.tone, p.structure FROM personas p JOIN users "
                            "u ON u.id = p.user_id WHERE p.backend = "
                            "'builtin' ORDER BY u.key");
    if (rc)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        int u = key ? rlhi_sim_truth_user(t, key) : -1;

        if (u < 0)
            continue;
        out->users++;
        for (d = 0; d < RLHI_SIM_NDIM; d++) {
            const char *v = (const char *)sqlite3_column_text(st, 1 + d);
            int got = v ? rlhi_sim_side_parse(d, v) : -1;
            int pref = t->users[u].persona.pref[d];
            int want = pref > 0 ? 1 : pref < 0 ? 0 : -1;

            out->acc[d] += got == want;
            out->no_signal[d] += got < 0;
            if (want >= 0) {
                npref[d]++;
                out->acc_pref[d] += got == want;
            }
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return rlhi_store_err(s, "cannot read personas");
    for (d = 0; d < RLHI_SIM_NDIM; d++) {
        if (out->users) {
            out->acc[d] /= out->users;
            out->no_signal[d] /= out->users;
        }
        if (npref[d])
            out->acc_pref[d] /= npref[d];
    }
    return 0;
}

/* One truth turn record. */
struct tturn {
    char hash[40];
    int idx, label;
    bool dis;
};

static int cmp_turn(const void *a, const void *b)
{
    const struct tturn *x = a, *y = b;
    int c = strcmp(x->hash, y->hash);

    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static int label_index(const char *name)
{
    int k;

    for (k = 0; name && k < RLHI_SIM_L_COUNT; k++)
        if (!strcmp(rlhi_sim_label_name(k), name))
            return k;
    return -1;
}

/* Loads the {"type":"turn"} records of a truth file, sorted. */
static int load_turns(const char *path, struct tturn **out, int *n)
{
    struct rlhi_jsonl *j;
    json_t *o;
    int r, cap = 0;

    *out = NULL;
    *n = 0;
    r = rlhi_jsonl_open(&j, path);
    if (r)
        return r;
    while ((r = rlhi_jsonl_next(j, &o)) > 0) {
        const char *type = json_string_value(json_object_get(o, "type"));
        const char *h = json_string_value(json_object_get(o,
                                                          "conversation_hash"));
        json_t *ti = json_object_get(o, "turn_index");
        int lab = label_index(json_string_value(json_object_get(o, "label")));

        if (type && !strcmp(type, "turn")) {
            if (!h || !json_is_integer(ti) || lab < 0 || strlen(h) >= 40) {
                r = rlhi_err(RLHI_EFORMAT, "'%s': line %llu: bad turn record",
                             path,
                             (unsigned long long)rlhi_jsonl_line_no(j));
                json_decref(o);
                break;
            }
            if (*n == cap) {
                int nc = cap ? 2 * cap : 1024;
                void *p = rlhi_realloc(*out, (size_t)nc * sizeof **out);

                if (!p) {
                    json_decref(o);
                    r = rlhi_err(RLHI_ENOMEM, "cannot grow truth turns");
                    break;
                }
                *out = p;
                cap = nc;
            }
            snprintf((*out)[*n].hash, sizeof (*out)[*n].hash, "%s", h);
            (*out)[*n].idx = (int)json_integer_value(ti);
            (*out)[*n].label = lab;
            (*out)[*n].dis = json_is_true(json_object_get(o, "dissatisfied"));
            (*n)++;
        }
        json_decref(o);
    }
    rlhi_jsonl_close(j);
    if (r < 0) {
        rlhi_free(*out);
        *out = NULL;
        *n = 0;
        return r;
    }
    qsort(*out, (size_t)*n, sizeof **out, cmp_turn);
    return 0;
}

int rlhi_eval_feedback_prf(struct rlhi_store *s, const char *truth_path,
                           struct rlhi_eval_feedback_result *out)
{
    struct tturn *tt, key;
    sqlite3_stmt *st;
    int n, rc, agree = 0;

    memset(out, 0, sizeof *out);
    rc = load_turns(truth_path, &tt, &n);
    if (rc)
        return rc;
    rc = rlhi_store_prepare(s, &st,
                            "SELECT c.hash, f.turn_index, f.label, "
                            "f.dissatisfied FROM feedback f JOIN "
                            "conversations c ON c.id = f.conversation_id "
                            "WHERE f.backend = 'builtin'");
    if (rc) {
        rlhi_free(tt);
        return rc;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *h = (const char *)sqlite3_column_text(st, 0);
        const struct tturn *hit;
        int got = label_index((const char *)sqlite3_column_text(st, 2));
        bool dis = sqlite3_column_int(st, 3) != 0;

        if (!h)
            continue;
        snprintf(key.hash, sizeof key.hash, "%s", h);
        key.idx = sqlite3_column_int(st, 1);
        hit = bsearch(&key, tt, (size_t)n, sizeof *tt, cmp_turn);
        if (!hit)
            continue;
        out->turns++;
        if (got == hit->label) {
            agree++;
            out->tp[got]++;
        } else {
            out->fn[hit->label]++;
            if (got >= 0)
                out->fp[got]++;
        }
        out->dis_tp += dis && hit->dis;
        out->dis_fp += dis && !hit->dis;
        out->dis_fn += !dis && hit->dis;
    }
    sqlite3_finalize(st);
    rlhi_free(tt);
    if (rc != SQLITE_DONE)
        return rlhi_store_err(s, "cannot read feedback labels");
    out->accuracy = out->turns ? (double)agree / out->turns : 0.0;
    return 0;
}
