/* A generic chat corpus for training the base model: requests from the
 * knowledge world, answers in random styles, and often a user feedback
 * turn followed by an answer revised to follow it. There are no personas:
 * a model trained on it learns to follow feedback but knows no user. */
#include <stdio.h>
#include <string.h>

#include "sim_internal.h"

static const char *const welcome[] = {
    "You are welcome.", "Anytime!", "Glad it helped!",
    "I am glad this was helpful.",
};
static const char *const thanks[] = {
    "thanks!", "Thank you.", "great, thank you", "perfect, thanks",
};
static const char *const redo[] = {
    "try again", "Please try again.", "another answer please",
};

struct cmsg {
    const char *role;
    char *text;
};

static int add(struct cmsg *m, int *n, const char *role, const char *text)
{
    m[*n].role = role;
    m[*n].text = rlhi_strdup(text);
    if (!m[*n].text)
        return rlhi_err(RLHI_ENOMEM, "cannot copy a corpus message");
    (*n)++;
    return 0;
}

static int answer(struct cmsg *m, int *n, const struct rlhi_sim_request *q,
                  const struct rlhi_sim_style *st, int err, uint64_t content,
                  struct rlhi_rng *r, struct rlhi_buf *b)
{
    rlhi_buf_clear(b);
    if (rlhi_sim_answer_write_content(q, st, err, content, r, b))
        return rlhi_err(RLHI_ENOMEM, "cannot write a corpus answer");
    return add(m, n, "assistant", b->buf);
}

/* One conversation of 2 to 8 messages into m. */
static int conversation(struct rlhi_rng *r, struct cmsg *m, int *n,
                        struct rlhi_buf *b)
{
    int rounds = 1 + (rlhi_rng_double(r) < 0.3), k, rc = 0;

    for (k = 0; k < rounds && !rc; k++) {
        struct rlhi_sim_request q;
        struct rlhi_sim_style st;
        int err = rlhi_rng_double(r) < 0.15;
        uint64_t content = rlhi_rng_u64(r);
        double u;

        rlhi_sim_request_sample(&q, 0.08, r);
        rlhi_sim_style_random(&st, r);
        rc = add(m, n, "user", q.text);
        if (!rc)
            rc = answer(m, n, &q, &st, err, content, r, b);
        if (rc)
            break;
        u = rlhi_rng_double(r);
        if (err) {
            /* Every wrong answer is corrected (same style, same facts), so
             * that a model trained on the corpus does not learn wrong
             * facts as fine. */
            char text[320];

            rlhi_sim_correction_text(&q, m[*n - 1].text, r, text,
                                     sizeof text);
            rc = add(m, n, "user", text);
            if (!rc)
                rc = answer(m, n, &q, &st, 0, content, r, b);
        } else if (u < 0.65) {
            /* Feedback on one dimension, and the answer revised to move
             * that dimension only. */
            int d = (int)rlhi_rng_below(r, RLHI_SIM_NDIM);
            char text[320];

            st.v[d] = (int8_t)!st.v[d];
            rlhi_sim_feedback_text(d, st.v[d], &q, r, text, sizeof text);
            rc = add(m, n, "user", text);
            if (!rc)
                rc = answer(m, n, &q, &st, 0, content, r, b);
        } else if (u < 0.72) {
            rlhi_sim_style_random(&st, r);
            rc = add(m, n, "user", RLHI__PICK(redo, r));
            if (!rc)
                rc = answer(m, n, &q, &st, 0, content, r, b);
        } else if (u < 0.82) {
            rc = add(m, n, "user", RLHI__PICK(thanks, r));
            if (!rc)
                rc = add(m, n, "assistant", RLHI__PICK(welcome, r));
        }
    }
    return rc;
}

int rlhi_sim_corpus_write(FILE *f, long n, uint64_t seed, bool text)
{
    struct rlhi_buf b = RLHI_BUF_INIT, line = RLHI_BUF_INIT;
    struct rlhi_progress prog;
    long i;
    int rc = 0;

    rlhi_progress_start(&prog, "sim corpus", (uint64_t)(n > 0 ? n : 0));
    for (i = 0; i < n && !rc; i++) {
        struct cmsg m[16];
        struct rlhi_rng r;
        uint64_t s[2] = {seed, (uint64_t)i};
        int nm = 0, k;

        rlhi_rng_seed(&r, rlhi_fnv64(RLHI_FNV64_INIT, s, sizeof s));
        rc = conversation(&r, m, &nm, &b);
        rlhi_buf_clear(&line);
        if (!rc && !text) {
            rc |= rlhi_buf_adds(&line, "{\"messages\":[");
            for (k = 0; k < nm; k++) {
                rc |= rlhi_buf_addf(&line, "%s{\"role\":\"%s\",\"content\":",
                                    k ? "," : "", m[k].role);
                rc |= rlhi_buf_add_json_str(&line, m[k].text,
                                            strlen(m[k].text));
                rc |= rlhi_buf_adds(&line, "}");
            }
            rc |= rlhi_buf_adds(&line, "]}\n");
        } else if (!rc) {
            for (k = 0; k < nm; k++)
                rc |= rlhi_buf_addf(&line, "%s\n\n", m[k].text);
        }
        if (rc && rc != RLHI_ENOMEM)
            rc = rlhi_err(RLHI_ENOMEM, "cannot format the corpus");
        for (k = 0; k < nm; k++)
            rlhi_free(m[k].text);
        if (!rc && fwrite(line.buf, 1, line.len, f) != line.len)
            rc = rlhi_err_errno(RLHI_EIO, "cannot write the corpus");
        rlhi_progress_update(&prog, (uint64_t)i + 1);
    }
    rlhi_progress_finish(&prog);
    if (!rc && fflush(f))
        rc = rlhi_err_errno(RLHI_EIO, "cannot write the corpus");
    rlhi_buf_release(&b);
    rlhi_buf_release(&line);
    return rc;
}
