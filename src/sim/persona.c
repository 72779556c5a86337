/* Hidden personas of simulated users: the four style dimensions, sampled
 * with the marginals measured on WildChat, and their descriptions. */
#include <string.h>

#include "sim_internal.h"

/* RLHI paper (Jin et al. 2025, arXiv 2509.25137), analysis of WildChat
 * users: 59.8% prefer expert-level answers, 49.9% detailed ones, 84.5% a
 * serious/formal tone, 77.1% structured answers. */
const double rlhi_sim_marginal_high[RLHI_SIM_NDIM] = {
    0.598, 0.499, 0.845, 0.771,
};

static const char *const dim_names[RLHI_SIM_NDIM] = {
    "expertise", "informativeness", "tone", "structure",
};
static const char *const side_names[RLHI_SIM_NDIM][2] = {
    {"novice", "expert"},
    {"concise", "detailed"},
    {"casual", "formal"},
    {"prose", "structured"},
};

const char *rlhi_sim_dim_name(int dim)
{
    return dim >= 0 && dim < RLHI_SIM_NDIM ? dim_names[dim] : "unknown";
}

const char *rlhi_sim_side_name(int dim, int v)
{
    if (dim < 0 || dim >= RLHI_SIM_NDIM || v < 0 || v > 1)
        return "unknown";
    return side_names[dim][v];
}

int rlhi_sim_side_parse(int dim, const char *word)
{
    if (dim < 0 || dim >= RLHI_SIM_NDIM || !word)
        return -1;
    if (!strcmp(word, side_names[dim][1]))
        return 1;
    if (!strcmp(word, side_names[dim][0]))
        return 0;
    return -1;
}

void rlhi_sim_persona_sample(struct rlhi_sim_persona *p, struct rlhi_rng *r)
{
    int d;

    for (d = 0; d < RLHI_SIM_NDIM; d++) {
        double u = rlhi_rng_double(r), hi = rlhi_sim_marginal_high[d];

        if (u < hi)
            p->pref[d] = 1;
        else if (u < hi + (1.0 - hi) * RLHI_SIM_LOW_SHARE)
            p->pref[d] = -1;
        else
            p->pref[d] = 0;
    }
}

int rlhi_sim_persona_describe(const struct rlhi_sim_persona *p,
                              struct rlhi_buf *out)
{
    static const char *const text[RLHI_SIM_NDIM][2] = {
        {"Prefers plain, beginner-friendly explanations without jargon.",
         "Prefers expert-level answers with precise technical terms."},
        {"Prefers concise answers that give just the key point.",
         "Prefers detailed, thorough answers with several facts."},
        {"Prefers a casual, friendly tone.",
         "Prefers a formal, serious tone."},
        {"Prefers answers written as flowing prose, without lists.",
         "Prefers structured answers with bullet points or numbered "
         "lists."},
    };
    int d, r = 0, said = 0;

    for (d = 0; d < RLHI_SIM_NDIM && !r; d++) {
        if (!p->pref[d])
            continue;
        r = rlhi_buf_addf(out, "%s%s", said ? " " : "",
                          text[d][p->pref[d] > 0]);
        said++;
    }
    if (!said && !r)
        r = rlhi_buf_adds(out, "Has no particular style preferences.");
    return r ? RLHI_ENOMEM : 0;
}

static const char *const label_names[RLHI_SIM_L_COUNT] = {
    "new_request", "reattempt_feedback", "reattempt_no_guidance",
    "clarification", "positive", "continue", "other",
};

const char *rlhi_sim_label_name(int label)
{
    return label >= 0 && label < RLHI_SIM_L_COUNT ? label_names[label]
                                                  : "unknown";
}
