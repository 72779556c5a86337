/* Reading the world's hidden truth back: personas by hashed_ip and the
 * held-out requests with their tasks, for judging answers. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"

void rlhi_sim_truth_release(struct rlhi_sim_truth *t)
{
    rlhi_free(t->users);
    rlhi_free(t->items);
    memset(t, 0, sizeof *t);
}

int rlhi_sim_truth_user(const struct rlhi_sim_truth *t, const char *ip)
{
    int i;

    for (i = 0; i < t->n_users; i++)
        if (!strcmp(t->users[i].hashed_ip, ip))
            return i;
    return -1;
}

int rlhi_sim_truth_find(const struct rlhi_sim_truth *t, const char *id)
{
    int i;

    for (i = 0; i < t->n_items; i++)
        if (!strcmp(t->items[i].id, id))
            return i;
    return -1;
}

static const char *str_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int int_of(json_t *o, const char *key, long *out)
{
    json_t *v = json_object_get(o, key);

    if (!json_is_integer(v))
        return -1;
    *out = (long)json_integer_value(v);
    return 0;
}

static int parse_user(json_t *o, struct rlhi_sim_truth_user *u,
                      const char **why)
{
    const char *ip = str_of(o, "hashed_ip");
    json_t *p = json_object_get(o, "persona");
    int d;

    if (!ip || strlen(ip) >= sizeof u->hashed_ip) {
        *why = "missing or bad 'hashed_ip'";
        return -1;
    }
    if (!json_is_object(p)) {
        *why = "missing 'persona' object";
        return -1;
    }
    rlhi__copy(u->hashed_ip, sizeof u->hashed_ip, ip);
    for (d = 0; d < RLHI_SIM_NDIM; d++) {
        const char *w = str_of(p, rlhi_sim_dim_name(d));
        int side;

        if (!w) {
            *why = "persona lacks a dimension";
            return -1;
        }
        side = rlhi_sim_side_parse(d, w);
        if (side < 0 && strcmp(w, "any")) {
            *why = "persona has an unknown side";
            return -1;
        }
        u->persona.pref[d] = (int8_t)(side < 0 ? 0 : side ? 1 : -1);
    }
    return 0;
}

static int parse_task(json_t *o, struct rlhi_sim_request *q, const char **why)
{
    json_t *t = json_object_get(o, "task");
    const char *kind = json_is_object(t) ? str_of(t, "kind") : NULL;
    const char *req = str_of(o, "request");
    long form, a, b, c, ans;

    memset(q, 0, sizeof *q);
    if (req)
        rlhi__copy(q->text, sizeof q->text, req);
    if (!kind) {
        *why = "missing 'task' with a 'kind'";
        return -1;
    }
    if (!strcmp(kind, "facts")) {
        const char *name = str_of(t, "topic");

        q->kind = RLHI_SIM_FACTS;
        q->topic = name ? rlhi_sim_topic_find(name) : -1;
        if (q->topic < 0) {
            *why = "unknown topic";
            return -1;
        }
        return 0;
    }
    if (!strcmp(kind, "arith") && !int_of(t, "form", &form) &&
        !int_of(t, "a", &a) && !int_of(t, "b", &b) && !int_of(t, "c", &c) &&
        !int_of(t, "answer", &ans) && form >= 0 &&
        form < RLHI__ARITH_FORMS) {
        q->kind = RLHI_SIM_ARITH;
        q->topic = -1;
        q->form = (int)form;
        q->a = (int)a;
        q->b = (int)b;
        q->c = (int)c;
        q->answer = ans;
        return 0;
    }
    *why = "bad task";
    return -1;
}

int rlhi_sim_truth_load(const char *path, struct rlhi_sim_truth *t)
{
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int cu = 0, ci = 0, rc = 0;

    memset(t, 0, sizeof *t);
    if (!f)
        return rlhi_err_errno(RLHI_EIO, "cannot open '%s'", path);
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        json_error_t je;
        json_t *o;
        const char *type, *why = NULL;

        lineno++;
        if (len <= 1 && (len == 0 || line[0] == '\n'))
            continue;
        o = json_loadb(line, (size_t)len, 0, &je);
        if (!o || !json_is_object(o)) {
            rc = rlhi_err(RLHI_EFORMAT, "cannot parse '%s': line %ld: %s",
                          path, lineno, o ? "not a JSON object" : je.text);
            json_decref(o);
            break;
        }
        type = str_of(o, "type");
        if (type && !strcmp(type, "user")) {
            if (t->n_users == cu) {
                int nc = cu ? 2 * cu : 256;
                void *p = rlhi_realloc(t->users, (size_t)nc * sizeof *t->users);

                if (!p) {
                    rc = rlhi_err(RLHI_ENOMEM, "cannot load '%s'", path);
                    json_decref(o);
                    break;
                }
                t->users = p;
                cu = nc;
            }
            if (parse_user(o, &t->users[t->n_users], &why))
                rc = rlhi_err(RLHI_EFORMAT, "bad user in '%s': line %ld: %s",
                              path, lineno, why);
            else
                t->n_users++;
        } else if (type && !strcmp(type, "heldout")) {
            struct rlhi_sim_truth_item *it;
            const char *id = str_of(o, "id"), *ip = str_of(o, "hashed_ip");

            if (t->n_items == ci) {
                int nc = ci ? 2 * ci : 512;
                void *p = rlhi_realloc(t->items, (size_t)nc * sizeof *t->items);

                if (!p) {
                    rc = rlhi_err(RLHI_ENOMEM, "cannot load '%s'", path);
                    json_decref(o);
                    break;
                }
                t->items = p;
                ci = nc;
            }
            it = &t->items[t->n_items];
            if (!id || strlen(id) >= sizeof it->id || !ip) {
                why = "missing 'id' or 'hashed_ip'";
            } else if (!parse_task(o, &it->req, &why)) {
                rlhi__copy(it->id, sizeof it->id, id);
                it->user = rlhi_sim_truth_user(t, ip);
                if (it->user < 0)
                    why = "held-out item of a user not listed before it";
                else
                    t->n_items++;
            }
            if (why)
                rc = rlhi_err(RLHI_EFORMAT, "bad held-out item in '%s': "
                                            "line %ld: %s", path, lineno, why);
        } else if (!type) {
            rc = rlhi_err(RLHI_EFORMAT, "cannot read '%s': line %ld: no "
                                        "'type'", path, lineno);
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (!rc && !t->n_users)
        rc = rlhi_err(RLHI_EFORMAT, "no users in '%s'", path);
    if (rc)
        rlhi_sim_truth_release(t);
    return rc;
}
