/* How simulated users react to an answer: feedback in many phrasings,
 * corrections, redo requests, thanks, continuations and new requests, each
 * with its truth label.
 *
 * The phrasings are written for this world (not taken from any log), so
 * that a detector developed on them can be measured honestly on real
 * conversations.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sim_internal.h"

/* Feedback per dimension and target side; "%s" is the subject. */
static const char *const fb_novice[] = {
    "explain it like I'm new to this",
    "too technical, simpler words please",
    "I don't understand the jargon, can you say it in plain English?",
    "can you explain %s without all the technical terms?",
    "ELI5 please", "that's over my head, make it simpler",
    "I'm a beginner, please use everyday words",
    "Could you rephrase that in simpler language?",
};
static const char *const fb_expert[] = {
    "you can use the technical terms, I know the field",
    "too basic, give me the technical version",
    "be more precise and technical please",
    "I'm an expert, skip the simplifications",
    "Please use the proper terminology for %s.",
    "that's dumbed down, I want the technical details",
    "Could you answer at a more expert level?",
};
static const char *const fb_concise[] = {
    "way too long, just the key point",
    "too long, can you shorten it?", "tl;dr please",
    "Can you make it shorter?",
    "that's a lot of text, give me the short version",
    "just the main point please", "less detail please, one line is enough",
    "Please be more concise.",
};
static const char *const fb_detailed[] = {
    "more detail please", "more detail on %s",
    "that's too short, can you expand?",
    "tell me more about %s, with more facts",
    "I need a more thorough answer",
    "Could you elaborate? I would like a fuller explanation.",
    "can you go deeper on %s?", "that's it? give me more than one fact",
};
static const char *const fb_casual[] = {
    "you sound like a robot, relax", "too stiff, talk to me like a friend",
    "can you be more casual?", "no need to be so formal lol",
    "say it in a chill way", "less formal please, just chat with me",
};
static const char *const fb_formal[] = {
    "less casual please", "Please keep it professional.",
    "Could you answer in a more formal tone?", "no slang please",
    "Please drop the slang and write formally.",
    "a more serious tone please",
};
static const char *const fb_structured[] = {
    "can you put that in a list?", "use bullet points please",
    "break it down into points", "Please format it as a list.",
    "make it a numbered list", "bullet points would be easier to read",
    "Could you structure that with bullet points?",
};
static const char *const fb_prose[] = {
    "no bullet points please, just write it normally",
    "write it as a paragraph", "too many lists, prose please",
    "Please write it as normal text, not a list.",
    "can you turn that list into a paragraph?",
    "I prefer flowing text over bullet points",
};

static const char *const *const fb_lists[RLHI_SIM_NDIM][2] = {
    {fb_novice, fb_expert},
    {fb_concise, fb_detailed},
    {fb_casual, fb_formal},
    {fb_prose, fb_structured},
};
static const size_t fb_counts[RLHI_SIM_NDIM][2] = {
    {sizeof fb_novice / sizeof *fb_novice,
     sizeof fb_expert / sizeof *fb_expert},
    {sizeof fb_concise / sizeof *fb_concise,
     sizeof fb_detailed / sizeof *fb_detailed},
    {sizeof fb_casual / sizeof *fb_casual,
     sizeof fb_formal / sizeof *fb_formal},
    {sizeof fb_prose / sizeof *fb_prose,
     sizeof fb_structured / sizeof *fb_structured},
};

static const char *subject(const struct rlhi_sim_request *q)
{
    if (!q)
        return "this";
    if (q->kind == RLHI_SIM_FACTS)
        return rlhi__topics[q->topic].phrase;
    return "the steps";
}

/* snprintf with a format from our own tables that may hold one %s. */
static void fill(char *out, size_t cap, const char *fmt, const char *s)
{
    const char *p = strstr(fmt, "%s");
    size_t n;

    if (!p) {
        rlhi__copy(out, cap, fmt);
        return;
    }
    n = (size_t)(p - fmt);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, fmt, n);
    out[n] = 0;
    rlhi__copy(out + n, cap - n, s);
    n = strlen(out);
    rlhi__copy(out + n, cap - n, p + 2);
}

void rlhi_sim_feedback_text(int dim, int target,
                            const struct rlhi_sim_request *q,
                            struct rlhi_rng *r, char *out, size_t cap)
{
    const char *fmt;

    if (dim < 0 || dim >= RLHI_SIM_NDIM || target < 0 || target > 1) {
        rlhi__copy(out, cap, "try again");
        return;
    }
    fmt = rlhi__pick(fb_lists[dim][target], fb_counts[dim][target], r);
    fill(out, cap, fmt, subject(q));
}

void rlhi_sim_correction_text(const struct rlhi_sim_request *q,
                              const char *answer, struct rlhi_rng *r,
                              char *out, size_t cap)
{
    static const char *const arith[] = {
        "that's wrong, %s is %d", "are you sure? check the math",
        "I think you made a mistake in the math, it should be %d",
        "The result is incorrect. Please recompute %s.",
        "no, %s is %d, not what you wrote", "your arithmetic is off",
    };
    static const char *const facts[] = {
        "that's not right, check the numbers",
        "are you sure about that figure?", "One of those numbers is wrong.",
        "I read somewhere that it's %d, not what you said",
        "that's wrong, please fix the facts about %s",
        "hmm, I don't think that number is correct",
    };
    char expr[96];
    int k;

    if (q->kind == RLHI_SIM_ARITH) {
        static const char *const ops[RLHI__ARITH_FORMS] = {
            "%d*%d", "%d*%d", "%d+%d*%d", "%d*%d+%d", "%d-%d-%d",
        };
        long v[3] = {q->a, q->b, q->c};

        rlhi__format(expr, sizeof expr, ops[q->form], v, 3, NULL);
        v[0] = q->answer;
        k = (int)rlhi_rng_below(r, sizeof arith / sizeof *arith);
        rlhi__format(out, cap, arith[k], v, 1, expr);
        return;
    }
    k = (int)rlhi_rng_below(r, sizeof facts / sizeof *facts);
    if (k == 3) {
        /* Names the right number of the fact that was wrong. */
        int w = rlhi__first_wrong_fact(answer, q);

        if (w >= 0) {
            long v = rlhi__topics[q->topic].facts[w].value;

            rlhi__format(out, cap, facts[3], &v, 1, NULL);
            return;
        }
        k = 0;
    }
    fill(out, cap, facts[k], subject(q));
}

static const char *const redo[] = {
    "try again", "no, that's not it. again?", "regenerate",
    "hmm, another answer please", "that's not what I wanted",
    "Please try again.", "nope, one more time", "I don't like that answer",
};
static const char *const thanks[] = {
    "thanks!", "great, thank you", "perfect, that's what I needed",
    "Thank you very much.", "cool thanks", "That is helpful, thank you.",
    "awesome", "Thanks, that answers my question.",
};
static const char *const more[] = {
    "continue", "go on", "tell me more", "keep going", "and?",
    "Please continue.", "what else?",
};
static const char *const stray[] = {
    "ok", "hmm", "let me think", "lol", "I see.", "huh",
    "ok, I will think about it", "brb",
};
static const char *const clarify_word[RLHI_SIM_NDIM][2] = {
    {"Keep it simple, I'm new to this.",
     "I know the subject well, so technical is fine."},
    {"The short version, please.", "A detailed one, please."},
    {"just keep it chill", "Please keep it formal."},
    {"Just a normal paragraph.", "A list would be best."},
};

/* Users who like a casual tone often type in lower case without a final
 * full stop; the change is cosmetic and keeps the label. */
static void casualise(char *s, struct rlhi_rng *r)
{
    size_t n = strlen(s), i;

    if (rlhi_rng_below(r, 2))
        return;
    for (i = 0; i < n; i++)
        s[i] = (char)tolower((unsigned char)s[i]);
    if (n && s[n - 1] == '.')
        s[n - 1] = 0;
}

static void set(struct rlhi_sim_reaction *x, int label, bool dis, bool act)
{
    memset(x, 0, sizeof *x);
    x->label = label;
    x->dissatisfied = dis;
    x->actionable = act;
    x->dim = -1;
    x->target = -1;
}

/* Does the answer (n bytes) end with a rhetorical tag ("Pretty cool,
 * right?") rather than a question the user could answer? */
static bool rhetorical(const char *answer, size_t n)
{
    static const char *const tag[] = {", right?", ", huh?", ", isn't it?",
                                      ", no?", ", eh?"};

    for (size_t i = 0; i < sizeof tag / sizeof tag[0]; i++) {
        size_t k = strlen(tag[i]);

        if (n >= k && !strncasecmp(answer + n - k, tag[i], k))
            return true;
    }
    return false;
}

int rlhi__react(const struct rlhi_sim_persona *p,
                const struct rlhi_sim_behaviour *b, double propensity,
                const struct rlhi_sim_request *q, const char *answer,
                bool after_pleasantry, struct rlhi_rng *r,
                struct rlhi_sim_reaction *x)
{
    struct rlhi_sim_verdict v;
    double u = rlhi_rng_double(r);
    int missed[RLHI_SIM_NDIM], nmiss = 0, d;
    size_t n = strlen(answer);
    bool asked;

    rlhi_sim_judge(answer, q, p, &v);
    for (d = 0; d < RLHI_SIM_NDIM; d++) {
        int got = v.reading.style.v[d];

        if (p->pref[d] && got >= 0 && (p->pref[d] > 0) != (got == 1))
            missed[nmiss++] = d;
    }
    while (n && isspace((unsigned char)answer[n - 1]))
        n--;
    asked = !after_pleasantry && n && answer[n - 1] == '?' &&
            v.correct == RLHI_SIM_ABSENT && !rhetorical(answer, n);

    /* A question from the assistant gets an answer that clarifies. */
    if (asked) {
        int cared[RLHI_SIM_NDIM], nc = 0;

        for (d = 0; d < RLHI_SIM_NDIM; d++)
            if (p->pref[d])
                cared[nc++] = d;
        set(x, RLHI_SIM_L_CLARIFICATION, false, false);
        if (nc) {
            x->dim = cared[rlhi_rng_below(r, (uint64_t)nc)];
            x->target = p->pref[x->dim] > 0;
            rlhi__copy(x->text, sizeof x->text,
                       clarify_word[x->dim][x->target]);
        } else {
            rlhi__copy(x->text, sizeof x->text, "Either is fine.");
        }
        return 1;
    }

    if (!after_pleasantry && v.correct == RLHI_SIM_WRONG &&
        u < b->p_correction * propensity) {
        set(x, RLHI_SIM_L_REATTEMPT_FEEDBACK, true, true);
        x->correction = true;
        rlhi_sim_correction_text(q, answer, r, x->text, sizeof x->text);
        goto done;
    }
    if (!after_pleasantry && nmiss) {
        double pf = b->p_feedback * propensity;

        if (u < pf) {
            set(x, RLHI_SIM_L_REATTEMPT_FEEDBACK, true, true);
            x->dim = missed[rlhi_rng_below(r, (uint64_t)nmiss)];
            x->target = p->pref[x->dim] > 0;
            rlhi_sim_feedback_text(x->dim, x->target, q, r, x->text,
                                   sizeof x->text);
            goto done;
        }
        if (u < pf + b->p_no_guidance * propensity) {
            set(x, RLHI_SIM_L_REATTEMPT_NO_GUIDANCE, true, false);
            rlhi__copy(x->text, sizeof x->text, RLHI__PICK(redo, r));
            goto done;
        }
    }

    /* Otherwise the user moves on. The options not open here (thanks
     * only when nothing was amiss; "continue" only for facts and not after
     * a pleasantry) drop out and the others keep their proportions. */
    {
        bool pos = !after_pleasantry && !nmiss &&
                   v.correct != RLHI_SIM_WRONG;
        bool cont = !after_pleasantry && q->kind == RLHI_SIM_FACTS;
        double p_new = 1.0 - b->p_end - b->p_positive - b->p_continue -
                       b->p_other;
        double total = b->p_end + (pos ? b->p_positive : 0) +
                       (cont ? b->p_continue : 0) + b->p_other +
                       (p_new > 0 ? p_new : 0);

        u = rlhi_rng_double(r) * total;
        if (u < b->p_end)
            return 0;
        u -= b->p_end;
        if (pos && u < b->p_positive) {
            set(x, RLHI_SIM_L_POSITIVE, false, false);
            rlhi__copy(x->text, sizeof x->text, RLHI__PICK(thanks, r));
            goto done;
        }
        u -= pos ? b->p_positive : 0;
        if (cont && u < b->p_continue) {
            set(x, RLHI_SIM_L_CONTINUE, false, false);
            rlhi__copy(x->text, sizeof x->text, RLHI__PICK(more, r));
            goto done;
        }
        u -= cont ? b->p_continue : 0;
        if (u < b->p_other) {
            set(x, RLHI_SIM_L_OTHER, false, false);
            rlhi__copy(x->text, sizeof x->text, RLHI__PICK(stray, r));
            goto done;
        }
    }
    /* A new request: the caller draws it and fills the text. */
    set(x, RLHI_SIM_L_NEW_REQUEST, false, false);
    return 1;

done:
    if (p->pref[RLHI_SIM_TONE] < 0 && x->label != RLHI_SIM_L_NEW_REQUEST)
        casualise(x->text, r);
    if (rlhi_rng_double(r) < b->typo_rate)
        rlhi__typos(x->text, sizeof x->text, r);
    return 1;
}
