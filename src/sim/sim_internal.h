/* Internals shared by the files of the simulated world (src/sim/). */
#ifndef RLHI_SIM_INTERNAL_H
#define RLHI_SIM_INTERNAL_H

#include <stddef.h>

#include "rlhi/sim.h"

/* One fact of a topic. Both sentences hold exactly one integer, written
 * with "%d" for `value`, and at least one of the '|'-separated `cue`
 * words (case-insensitive substrings), so that a judge can find the fact
 * in any text and check its number. Technical terms in `tech` are marked
 * with [brackets]; the marks are removed when the sentence is written and
 * the marked terms make up the reader's technical lexicon. */
struct rlhi__fact {
    const char *cue;
    int value;
    const char *plain;
    const char *tech;
};

#define RLHI__FACTS_PER_TOPIC 5

struct rlhi__topic {
    const char *name;    /* short name, used in truth files */
    const char *phrase;  /* how a user names it: "the planets" */
    struct rlhi__fact facts[RLHI__FACTS_PER_TOPIC];
};

extern const struct rlhi__topic rlhi__topics[];
extern const int rlhi__ntopics;

/* Number of arithmetic templates. */
#define RLHI__ARITH_FORMS 5

/* A wrong value near `value` (never equal, never negative). */
long rlhi__wrong_value(long value, struct rlhi_rng *r);

/* Writes fact sentence `s` with `value` substituted and the [marks]
 * removed into out. 0 or RLHI_ENOMEM. */
int rlhi__fact_put(struct rlhi_buf *out, const char *s, long value);

/* Picks one of n strings. */
const char *rlhi__pick(const char *const *list, size_t n, struct rlhi_rng *r);
#define RLHI__PICK(list, r) rlhi__pick(list, sizeof(list) / sizeof(*list), r)

/* Copies at most cap-1 bytes and NUL-terminates. */
void rlhi__copy(char *dst, size_t cap, const char *src);

/* Formats a template from our own tables: each "%d" takes the next of
 * the n integers, "%s" takes str; nothing else is special. Avoids passing
 * non-literal formats to printf. */
void rlhi__format(char *out, size_t cap, const char *fmt, const long *ints,
                  int n, const char *str);

/* Decides how a user with persona p reacts to `answer` (to request q):
 * returns 0 when the user ends the conversation, else 1 and fills *x. For
 * RLHI_SIM_L_NEW_REQUEST the caller draws the request and sets the text.
 * `after_pleasantry`: the answer replied to thanks or a remark, so only a
 * new request, a remark or the end may follow. */
int rlhi__react(const struct rlhi_sim_persona *p,
                const struct rlhi_sim_behaviour *b, double propensity,
                const struct rlhi_sim_request *q, const char *answer,
                bool after_pleasantry, struct rlhi_rng *r,
                struct rlhi_sim_reaction *x);

/* Index of the first fact of q's topic that `text` states with a wrong
 * number, or -1. */
int rlhi__first_wrong_fact(const char *text, const struct rlhi_sim_request *q);

/* Adds one or two typos to text in place (seeded). */
void rlhi__typos(char *text, size_t cap, struct rlhi_rng *r);

/* Case-insensitive search for phrase at word boundaries in text; returns
 * the number of occurrences. */
int rlhi__count_phrase(const char *text, const char *phrase);
/* The same on a text already in lower case, for a lower-case phrase. */
int rlhi__count_lower(const char *lower, const char *phrase);

/* The technical lexicon: every [marked] term of every fact (lowercase,
 * built once, thread-safe after the first call returns) plus the expert
 * framings. Sets *n. */
const char *const *rlhi__tech_lexicon(int *n);

/* Framings and markers the writer uses and the reader counts. */
extern const char *const rlhi__expert_frames[];
extern const int rlhi__n_expert_frames;
extern const char *const rlhi__plain_frames[];
extern const int rlhi__n_plain_frames;

#endif
