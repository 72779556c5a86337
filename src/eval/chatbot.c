/* A local model answering chats: render with the chat template, generate
 * to the end-of-turn marker, return the text. Used by evaluation and by
 * the simulated users of `rlhi sim interact`. */
#include <string.h>

#include "rlhi/eval.h"
#include "rlhi/generate.h"

/* Fewest positions left for an answer before old messages are dropped. */
#define MIN_ANSWER_ROOM 32

int rlhi_eval_chatbot_init(struct rlhi_eval_chatbot *b,
                           const struct rlhi_model *m,
                           const struct rlhi_tokenizer *tok,
                           enum rlhi_chat_kind kind)
{
    const char *eot = rlhi_chat_eot(kind);

    memset(b, 0, sizeof *b);
    if (m->cfg.max_seq_len < 2 * MIN_ANSWER_ROOM)
        return rlhi_err(RLHI_EINVAL, "a context of %d positions is too "
                        "short to chat", m->cfg.max_seq_len);
    b->m = m;
    b->tok = tok;
    b->kind = kind;
    b->eot = eot ? rlhi_tokenizer_token_id(tok, eot) : -1;
    b->eot_text = eot;
    b->max_tokens = 160;
    b->temperature = 0.7f;
    b->top_p = 0.95f;
    return 0;
}

void rlhi_eval_chatbot_release(struct rlhi_eval_chatbot *b)
{
    rlhi_buf_release(&b->out);
}

/* Renders msgs[0] (when a system message) and msgs[from..n) with the
 * generation prompt and tokenizes them. */
static int encode(struct rlhi_eval_chatbot *b, const struct rlhi_chat_msg *m,
                  size_t n, size_t from, int32_t **ids, size_t *nids)
{
    struct rlhi_chat_options o = {0};
    struct rlhi_chat_msg *sel;
    struct rlhi_buf text = RLHI_BUF_INIT;
    size_t k = 0, i;
    int r;

    sel = rlhi_malloc((n + 1) * sizeof *sel);
    if (!sel)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate messages");
    if (n && !strcmp(m[0].role, "system")) {
        sel[k++] = m[0];
        if (from == 0)
            from = 1;
    }
    for (i = from; i < n; i++)
        sel[k++] = m[i];
    o.add_generation_prompt = true;
    r = rlhi_chat_render(b->kind, sel, k, &o, &text, NULL, NULL);
    if (!r)
        r = rlhi_tokenizer_encode(b->tok, text.buf ? text.buf : "", text.len,
                                  RLHI_ENC_SPECIAL |
                                      (rlhi_tokenizer_wants_bos(b->tok)
                                           ? RLHI_ENC_BOS : 0),
                                  ids, nids);
    rlhi_buf_release(&text);
    rlhi_free(sel);
    return r;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len, i;
    unsigned c = s[0];

    if (c < 0x80)
        return 1;
    len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
        : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!len || len > n)
        return 0;
    for (i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) ||
        (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return len;
}

/* Drops bytes that are not valid UTF-8 and NUL bytes in place: a small
 * model can emit byte tokens that do not form characters, and logs and
 * JSON need valid text. */
static void keep_utf8(struct rlhi_buf *b)
{
    size_t i = 0, o = 0, k;

    while (i < b->len) {
        k = utf8_len((const unsigned char *)b->buf + i, b->len - i);
        if (!k || !b->buf[i]) {
            i++;
            continue;
        }
        memmove(b->buf + o, b->buf + i, k);
        o += k;
        i += k;
    }
    b->len = o;
    b->buf[o] = 0;
}

/* Tokenizes the prompt, dropping the oldest turns (a user message and
 * its answer at a time) until the answer has room; fills generation
 * options for it. */
static int prepare(struct rlhi_eval_chatbot *b,
                   const struct rlhi_chat_msg *msgs, size_t n, uint64_t seed,
                   int32_t **ids, size_t *nids, struct rlhi_gen_opts *o)
{
    const char *eot = rlhi_chat_eot(b->kind);
    size_t from = 0;
    int ctx = b->m->cfg.max_seq_len, room, r;

    *ids = NULL;
    if (!n)
        return rlhi_err(RLHI_EINVAL, "no messages to answer");
    for (;;) {
        rlhi_free(*ids);
        *ids = NULL;
        r = encode(b, msgs, n, from, ids, nids);
        if (r)
            return r;
        room = ctx - (int)*nids;
        if (room >= b->max_tokens || room >= MIN_ANSWER_ROOM * 4)
            break;
        if (from + 1 >= n) {
            if (room >= MIN_ANSWER_ROOM)
                break;
            rlhi_free(*ids);
            *ids = NULL;
            return rlhi_err(RLHI_ERANGE, "the last message alone takes %zu "
                            "of %d positions", *nids, ctx);
        }
        from += from == 0 && !strcmp(msgs[0].role, "system") ? 1 : 2;
        if (from >= n)
            from = n - 1;
    }

    rlhi_gen_opts_default(o);
    o->sampler.temperature = b->temperature;
    o->sampler.top_p = b->temperature > 0 ? b->top_p : 1.0f;
    o->sampler.seed = seed ? seed : 1;
    o->max_tokens = room < b->max_tokens ? room : b->max_tokens;
    o->max_seq = ctx;
    if (b->eot >= 0) {
        o->stop_ids = &b->eot;
        o->n_stop_ids = 1;
    } else if (eot) {
        o->stop = &b->eot_text;
        o->n_stop = 1;
    }
    return 0;
}

/* Copies generated text into `out` as a clean answer: valid UTF-8, cut at
 * the first chat marker the model wrote (the end of turn, or the start of
 * another turn), since templates forbid markers inside contents. */
static int clean_text(const struct rlhi_gen_result *res, struct rlhi_buf *out)
{
    static const char *const markers[] = {"<|end|>", "<|user|>",
                                          "<|assistant|>", "<|system|>",
                                          "<|endoftext|>", "<|eot_id|>",
                                          "<|im_end|>", "<|im_start|>",
                                          "<|start_header_id|>"};
    size_t k;

    rlhi_buf_clear(out);
    if (rlhi_buf_add(out, res->text ? res->text : "", res->text_len) ||
        rlhi_buf_grow(out, 1)) /* a buffer even for "" */
        return rlhi_err(RLHI_ENOMEM, "cannot keep the reply");
    keep_utf8(out);
    for (k = 0; k < sizeof markers / sizeof *markers; k++) {
        char *cut = strstr(out->buf, markers[k]);

        if (cut) {
            *cut = 0;
            out->len = (size_t)(cut - out->buf);
        }
    }
    return 0;
}

int rlhi_eval_chatbot_reply(struct rlhi_eval_chatbot *b,
                            const struct rlhi_chat_msg *msgs, size_t n,
                            uint64_t seed, const char **reply)
{
    struct rlhi_gen_opts o;
    struct rlhi_gen_result res;
    int32_t *ids = NULL;
    size_t nids = 0;
    int r;

    *reply = NULL;
    r = prepare(b, msgs, n, seed, &ids, &nids, &o);
    if (r)
        return r;
    memset(&res, 0, sizeof res);
    r = rlhi_generate(b->m, b->tok, ids, (int)nids, &o, &res);
    rlhi_free(ids);
    if (r)
        return r;
    b->tokens += res.n_tokens;
    r = clean_text(&res, &b->out);
    rlhi_gen_result_release(&res);
    if (!r)
        *reply = b->out.buf;
    return r;
}

int rlhi_eval_chatbot_reply_n(struct rlhi_eval_chatbot *b,
                              const struct rlhi_chat_msg *msgs, size_t n,
                              const uint64_t *seeds, int k, char **out)
{
    struct rlhi_gen_opts o;
    struct rlhi_gen_result *res;
    struct rlhi_buf t = RLHI_BUF_INIT;
    int32_t *ids = NULL;
    size_t nids = 0;
    int r, i;

    for (i = 0; i < k; i++)
        out[i] = NULL;
    r = prepare(b, msgs, n, seeds[0], &ids, &nids, &o);
    if (r)
        return r;
    res = rlhi_calloc((size_t)k, sizeof *res);
    if (!res) {
        rlhi_free(ids);
        return rlhi_err(RLHI_ENOMEM, "cannot allocate %d results", k);
    }
    r = rlhi_generate_n(b->m, b->tok, ids, (int)nids, &o, seeds, k, res);
    rlhi_free(ids);
    for (i = 0; !r && i < k; i++) {
        b->tokens += res[i].n_tokens;
        r = clean_text(&res[i], &t);
        if (!r && !(out[i] = rlhi_strdup(t.buf)))
            r = rlhi_err(RLHI_ENOMEM, "cannot keep a reply");
    }
    for (i = 0; i < k; i++) {
        rlhi_gen_result_release(&res[i]);
        if (r) {
            rlhi_free(out[i]);
            out[i] = NULL;
        }
    }
    rlhi_free(res);
    rlhi_buf_release(&t);
    return r;
}

int rlhi_eval_reasoning_run(struct rlhi_eval_chatbot *b,
                            const struct rlhi_eval_set *set, int limit,
                            double *acc, int *n)
{
    int i, right = 0, count = set->n;
    struct rlhi_progress p;

    if (limit > 0 && limit < count)
        count = limit;
    rlhi_progress_start(&p, "eval reasoning", (uint64_t)count);
    for (i = 0; i < count; i++) {
        struct rlhi_chat_msg m = {"user", set->items[i].question};
        const char *reply;
        int r = rlhi_eval_chatbot_reply(b, &m, 1, (uint64_t)i + 1, &reply);

        if (r)
            return rlhi_err_prefix(r, "item %d", i + 1);
        right += rlhi_eval_answer_correct(set->kind, reply,
                                          set->items[i].answer);
        rlhi_progress_update(&p, (uint64_t)i + 1);
    }
    rlhi_progress_finish(&p);
    *acc = count ? (double)right / count : 0.0;
    *n = count;
    return 0;
}
