/* Simulated users chatting with a real model: the world's answerer
 * callback over the generation API, producing on-policy logs. */
#include <string.h>

#include "rlhi/demo.h"
#include "rlhi/eval.h"
#include "rlhi/generate.h"

struct answerer {
    struct rlhi_eval_chatbot bot;
    struct rlhi_chat_msg *msgs;
    int cap;
    long turns;
    struct rlhi_progress prog;
};

/* The rlhi_sim_answer_fn: the model sees the history only; the seed of
 * each turn comes from the world's answer stream, which is seeded per
 * user and conversation, so the logs do not depend on the order in which
 * conversations are run. */
static const char *answer(void *ctx, const struct rlhi_sim_msg *h, int n,
                          struct rlhi_sim_ask *ask)
{
    struct answerer *a = ctx;
    const char *reply;
    int i, r;

    if (n > a->cap) {
        void *p = rlhi_realloc(a->msgs, (size_t)n * sizeof *a->msgs);

        if (!p) {
            rlhi_err(RLHI_ENOMEM, "cannot allocate a history");
            return NULL;
        }
        a->msgs = p;
        a->cap = n;
    }
    for (i = 0; i < n; i++) {
        a->msgs[i].role = h[i].role;
        a->msgs[i].content = h[i].content;
    }
    r = rlhi_eval_chatbot_reply(&a->bot, a->msgs, (size_t)n,
                                rlhi_rng_u64(ask->rng), &reply);
    if (r)
        return NULL;
    a->turns++;
    rlhi_progress_update(&a->prog, (uint64_t)a->turns);
    return reply;
}

int rlhi_demo_interact(const char *model_dir, const struct rlhi_sim_config *c,
                       float temperature, const char *out_dir,
                       struct rlhi_sim_stats *st)
{
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    struct answerer a;
    enum rlhi_chat_kind kind;
    int r;

    memset(&a, 0, sizeof a);
    r = rlhi_generate_load(model_dir, NULL, &m, &tok);
    if (r)
        return r;
    if (rlhi_chat_template_from_dir(model_dir, &kind))
        kind = RLHI_CHAT_RLHI;
    r = rlhi_eval_chatbot_init(&a.bot, m, tok, kind);
    if (r)
        goto out;
    if (temperature >= 0)
        a.bot.temperature = temperature;
    rlhi_progress_start(&a.prog, "sim interact: answers", 0);
    r = rlhi_sim_world_write(c, answer, &a, out_dir, st);
    rlhi_progress_finish(&a.prog);
    if (!r)
        rlhi_info("sim interact: %ld answers, %lld tokens generated",
                  a.turns, (long long)a.bot.tokens);
out:
    rlhi_free(a.msgs);
    rlhi_eval_chatbot_release(&a.bot);
    rlhi_tokenizer_free(tok);
    rlhi_model_free(m);
    return r;
}
