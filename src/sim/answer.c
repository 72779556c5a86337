/* Answers in a given style: the writer behind the scripted assistant, the
 * corpus, and the oracle answers of tests.
 *
 * An answer is built from parts, each carrying one dimension so that the
 * style reader (style.c) can find it again in any text:
 *   tone       an opener, connectives between sentences, a closing, and a
 *              list heading: formal words, or slang, contractions and '!';
 *   expertise  a framing phrase ("Strictly speaking," / "Put simply,") and
 *              the fact sentences in technical or plain vocabulary;
 *   informativeness  four facts (or all arithmetic steps and a check) or
 *              one fact (or the bare result);
 *   structure  one paragraph, or a heading and one list item per sentence.
 */
#include <ctype.h>
#include <string.h>

#include "sim_internal.h"

static const char *const formal_open[] = {
    "Certainly.", "Thank you for your question.",
    "I would be glad to explain.", "Certainly, I can help with that.",
};
static const char *const casual_open[] = {
    "Hey!", "Sure thing!", "Oh, fun one!", "Ooh, good one!", "Hi there!",
};
static const char *const formal_conn[] = {
    "Furthermore,", "Moreover,", "In addition,", "Additionally,",
};
static const char *const casual_conn[] = {
    "Also,", "Plus,", "Oh, and", "And btw,",
};
static const char *const formal_close[] = {
    "I hope this information is helpful.",
    "Please let me know if you require further details.",
    "Kind regards.", "I trust this answers your question.",
};
static const char *const casual_close[] = {
    "Hope that helps!", "Pretty cool, right?", "Cheers!",
    "Let me know if you wanna know more!", "That's it, have fun!",
};
static const char *const formal_head[] = {
    "the principal points are as follows:", "the key points are these:",
};
static const char *const casual_head[] = {
    "here's the quick rundown:", "here's the gist:",
};

void rlhi_sim_style_random(struct rlhi_sim_style *st, struct rlhi_rng *r)
{
    int d;

    for (d = 0; d < RLHI_SIM_NDIM; d++)
        st->v[d] = (int8_t)rlhi_rng_below(r, 2);
}

void rlhi_sim_style_for(const struct rlhi_sim_persona *p,
                        struct rlhi_sim_style *st, struct rlhi_rng *r)
{
    int d;

    for (d = 0; d < RLHI_SIM_NDIM; d++)
        st->v[d] = p->pref[d] ? (int8_t)(p->pref[d] > 0)
                              : (int8_t)rlhi_rng_below(r, 2);
}

/* Sentences after a framing or connective read better in lower case when
 * they open with a common word; names keep their capital. */
static bool lower_ok(const char *s)
{
    static const char *const words[] = {
        "The ", "A ", "An ", "Our ", "Each ", "One ", "Most ", "Only ",
        "Your ", "There ", "Use ", "Add ", "Let ", "Bake ", "Knead ",
        "Water ", "Legend ", "Laid ", "People ", "Scientists ", "Lava ",
        "About ", "Approximately ", "Normal ", "Adult ", "Dinosaurs ",
        "Puppies ", "Dogs ", "Bees ", "Baby ", "Elephant ", "Elephants ",
        "Kennel ", "Italian ", "Season ", "Spaghetti ", "Sunshine ",
        "Solar ", "Mean ", "Estimates ", "Western ", "Young ", "Secure ",
        "Getting ", "Looking ", "Classic ", "Eight ", "When ", "In ",
        "Kneading ", "Binary ", "Daily ", "Regulation ", "Lunar ",
        "Palaeontologists ", "Roman ", "White ", "Legend ", "Do ", "Take ",
        "Compute ", "So ", "Break ", "First ", "Next ", "Then ", "Split ",
        "By ", "You ", "Verification ", "Multiply ",
    };
    size_t i;

    for (i = 0; i < sizeof words / sizeof *words; i++)
        if (!strncmp(s, words[i], strlen(words[i])))
            return true;
    return false;
}

/* The parts of an answer before layout: content sentences in order. */
struct parts {
    char sent[8][200];
    int n;
};

static void add_sent(struct parts *p, const char *s)
{
    if (p->n < 8)
        rlhi__copy(p->sent[p->n++], sizeof p->sent[0], s);
}

/* Facts and the wrong number come from `r`, a stream of the content
 * seed alone, so that a revision with the same seed states the same facts
 * (the first of them when concise). */
static int fact_parts(const struct rlhi_sim_request *q,
                      const struct rlhi_sim_style *st, int err,
                      struct rlhi_rng *r, struct parts *p)
{
    const struct rlhi__topic *t = &rlhi__topics[q->topic];
    int order[RLHI__FACTS_PER_TOPIC], i, k, n, bad;
    struct rlhi_buf b = RLHI_BUF_INIT;

    for (i = 0; i < RLHI__FACTS_PER_TOPIC; i++)
        order[i] = i;
    for (i = RLHI__FACTS_PER_TOPIC - 1; i > 0; i--) {
        int j = (int)rlhi_rng_below(r, (uint64_t)i + 1), x = order[i];

        order[i] = order[j];
        order[j] = x;
    }
    /* Four of five facts against one: the widest gap in length that the
     * world allows, so that "too long" and "more detail" are clear. */
    n = st->v[RLHI_SIM_INFORM] ? 4 : 1;
    bad = err ? (int)rlhi_rng_below(r, (uint64_t)n) : -1;
    for (k = 0; k < n; k++) {
        const struct rlhi__fact *f = &t->facts[order[k]];
        long v = k == bad ? rlhi__wrong_value(f->value, r) : f->value;

        rlhi_buf_clear(&b);
        if (rlhi__fact_put(&b, st->v[RLHI_SIM_EXPERTISE] ? f->tech
                                                         : f->plain, v)) {
            rlhi_buf_release(&b);
            return RLHI_ENOMEM;
        }
        add_sent(p, b.buf);
    }
    rlhi_buf_release(&b);
    return 0;
}

/* One arithmetic step x op y = z in expert or plain words. */
static void step(struct parts *p, bool expert, char op, long x, long y,
                 long z)
{
    char s[200];

    if (op == '*')
        snprintf(s, sizeof s, expert ? "Compute the product: %ld * %ld = %ld."
                                     : "Do %ld times %ld, which gives %ld.",
                 x, y, z);
    else if (op == '+')
        snprintf(s, sizeof s, expert ? "Compute the sum: %ld + %ld = %ld."
                                     : "Add %ld and %ld to get %ld.",
                 x, y, z);
    else if (expert)
        snprintf(s, sizeof s, "Compute the difference: %ld - %ld = %ld.", x,
                 y, z);
    else
        snprintf(s, sizeof s, "Take %ld away from %ld and you get %ld.", y,
                 x, z);
    add_sent(p, s);
}

static void arith_parts(const struct rlhi_sim_request *q,
                        const struct rlhi_sim_style *st, int err,
                        struct rlhi_rng *r, struct parts *p)
{
    bool ex = st->v[RLHI_SIM_EXPERTISE] == 1;
    long ans = err ? rlhi__wrong_value(q->answer, r) : q->answer;
    char s[200];

    if (st->v[RLHI_SIM_INFORM]) {
        long a = q->a, b = q->b, c = q->c, m;

        switch (q->form) {
        case 0:
        case 1:
            snprintf(s, sizeof s,
                     ex ? "Split the multiplicand with the distributive "
                          "property: %ld = %ld + %ld."
                        : "Break %ld into %ld and %ld.",
                     a, a / 10 * 10, a % 10);
            add_sent(p, s);
            step(p, ex, '*', a / 10 * 10, b, a / 10 * 10 * b);
            step(p, ex, '*', a % 10, b, a % 10 * b);
            step(p, ex, '+', a / 10 * 10 * b, a % 10 * b, ans);
            break;
        case 2:
            add_sent(p, ex ? "By operator precedence, multiply first."
                           : "Do the multiplying part first.");
            m = b * c;
            step(p, ex, '*', b, c, m);
            step(p, ex, '+', a, m, ans);
            break;
        case 3:
            add_sent(p, ex ? "By operator precedence, multiply first."
                           : "Do the multiplying part first.");
            m = a * b;
            step(p, ex, '*', a, b, m);
            step(p, ex, '+', m, c, ans);
            break;
        default:
            add_sent(p, ex ? "Subtract each subtrahend in turn."
                           : "Take the amounts away one at a time.");
            m = a - b;
            step(p, ex, '-', a, b, m);
            step(p, ex, '-', m, c, ans);
            break;
        }
        add_sent(p, ex ? "Verification by the inverse operation confirms "
                         "the value."
                       : "You can check it by working backwards.");
    }
    snprintf(s, sizeof s, ex ? "The result evaluates to %ld."
                             : "So the answer is %ld.", ans);
    add_sent(p, s);
}

/* Appends s, lower-casing its first letter when it follows a framing. */
static int put_after(struct rlhi_buf *out, const char *s, bool after_comma)
{
    int r = 0;

    if (after_comma && lower_ok(s)) {
        r = rlhi_buf_addc(out, (char)tolower((unsigned char)s[0]));
        s++;
    }
    return r ? r : rlhi_buf_adds(out, s);
}

static bool ends_comma(const char *s)
{
    size_t n = strlen(s);

    return n && s[n - 1] == ',';
}

int rlhi_sim_answer_write(const struct rlhi_sim_request *q,
                          const struct rlhi_sim_style *st, int err,
                          struct rlhi_rng *r, struct rlhi_buf *out)
{
    uint64_t content = rlhi_rng_u64(r);

    return rlhi_sim_answer_write_content(q, st, err, content, r, out);
}

int rlhi_sim_answer_write_content(const struct rlhi_sim_request *q,
                                  const struct rlhi_sim_style *st, int err,
                                  uint64_t content, struct rlhi_rng *r,
                                  struct rlhi_buf *out)
{
    struct rlhi_rng cr;
    bool formal = st->v[RLHI_SIM_TONE] == 1;
    bool expert = st->v[RLHI_SIM_EXPERTISE] == 1;
    const char *open, *frame, *close;
    struct parts p;
    int i, rc = 0;

    /* Draw every part first so that the stream of random numbers does not
     * depend on the layout. */
    memset(&p, 0, sizeof p);
    open = formal ? RLHI__PICK(formal_open, r) : RLHI__PICK(casual_open, r);
    frame = expert ? rlhi__pick(rlhi__expert_frames,
                                (size_t)rlhi__n_expert_frames, r)
                   : rlhi__pick(rlhi__plain_frames,
                                (size_t)rlhi__n_plain_frames, r);
    close = formal ? RLHI__PICK(formal_close, r) : RLHI__PICK(casual_close, r);
    rlhi_rng_seed(&cr, content);
    if (q->kind == RLHI_SIM_FACTS)
        rc = fact_parts(q, st, err, &cr, &p);
    else
        arith_parts(q, st, err, &cr, &p);
    if (rc)
        return rc;

    if (st->v[RLHI_SIM_STRUCTURE]) {
        const char *head = formal ? RLHI__PICK(formal_head, r)
                                  : RLHI__PICK(casual_head, r);
        bool numbered = rlhi_rng_below(r, 2);

        rc |= rlhi_buf_addf(out, "%s\n\n%s ", open, frame);
        rc |= rlhi_buf_adds(out, head);
        rc |= rlhi_buf_adds(out, "\n");
        for (i = 0; i < p.n; i++) {
            if (numbered)
                rc |= rlhi_buf_addf(out, "%d. %s\n", i + 1, p.sent[i]);
            else
                rc |= rlhi_buf_addf(out, "- %s\n", p.sent[i]);
        }
        rc |= rlhi_buf_addf(out, "\n%s", close);
        return rc ? RLHI_ENOMEM : 0;
    }

    rc |= rlhi_buf_addf(out, "%s %s ", open, frame);
    rc |= put_after(out, p.sent[0], ends_comma(frame));
    for (i = 1; i < p.n; i++) {
        /* A connective before every other sentence: enough tone markers
         * without sounding like a list of "Moreover"s. */
        if (i % 2 == 1) {
            const char *c = formal ? RLHI__PICK(formal_conn, r)
                                   : RLHI__PICK(casual_conn, r);

            rc |= rlhi_buf_addf(out, " %s ", c);
            rc |= put_after(out, p.sent[i], ends_comma(c) ||
                                                !strcmp(c, "Oh, and"));
        } else {
            rc |= rlhi_buf_addf(out, " %s", p.sent[i]);
        }
    }
    rc |= rlhi_buf_addf(out, " %s", close);
    return rc ? RLHI_ENOMEM : 0;
}
