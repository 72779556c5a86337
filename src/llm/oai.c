/* The OpenAI schema over the local engine: request bodies for
 * /v1/completions and /v1/chat/completions in, response bodies or
 * server-sent events out.
 *
 * A request becomes one engine job per prompt (a completion request may
 * list several), each with n choices; choice index = prompt * n + choice.
 * Field checks follow OpenAI's: unknown fields are ignored, a wrong type
 * or range is a 400 naming the field in "param". Text in responses is
 * valid UTF-8: bytes that do not form a character (a token holding half
 * of one) are written as U+FFFD, as the OpenAI and vLLM servers do.
 *
 * text_offset (completions' logprobs) counts characters (code points) of
 * the returned text, as OpenAI does; special tokens (BOS, EOS, end of
 * turn) take no room in it.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "llm/engine_internal.h"
#include "rlhi/tokenizer.h"

/* Bounds that keep one request's memory small whatever it asks. */
#define MAX_PROMPTS 256
#define MAX_STOPS 16
#define MAX_STOP_LEN 256

struct rlhi_oai_call {
    struct rlhi_engine *e;
    const struct rlhi__engine_info *info;
    bool chat, stream, include_usage, echo;
    int top_k; /* -1: no logprobs */
    int njobs, n;
    struct rlhi__job **jobs;
    char **ptext;      /* echo: each prompt's text */
    char id[48];
    long long created;
    pthread_cond_t cond;
    uint64_t seen;     /* sum of job versions at the last look */
    /* streaming progress, per choice (njobs * n) */
    size_t *sent_text;
    int *sent_toks;
    bool *started, *ended;
    bool finished;
    int status;
};

/* ---- JSON helpers ----------------------------------------------------- */

/* A JSON string from `n` bytes, invalid UTF-8 replaced by U+FFFD. */
static json_t *jstrn(const char *s, size_t n)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    json_t *v;
    size_t i = 0;

    v = json_stringn(s ? s : "", s ? n : 0);
    if (v)
        return v;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t need = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2
                    : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        size_t k;
        bool ok = need > 0 && i + need <= n;

        for (k = 1; ok && k < need; k++)
            ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
        if (ok && need > 1) {
            /* jansson also rejects overlong forms and surrogates */
            json_t *t = json_stringn(s + i, need);

            ok = t != NULL;
            json_decref(t);
        }
        if (ok) {
            rlhi_buf_add(&b, s + i, need);
            i += need;
        } else {
            rlhi_buf_add(&b, "\xef\xbf\xbd", 3);
            i++;
        }
    }
    v = json_stringn(b.buf ? b.buf : "", b.len);
    rlhi_buf_release(&b);
    return v;
}

static json_t *jstr(const char *s)
{
    return jstrn(s, s ? strlen(s) : 0);
}

int rlhi_oai_error_json(struct rlhi_buf *out, const char *message,
                        const char *type, const char *param,
                        const char *code)
{
    json_t *o;
    char *s;
    int r;

    rlhi_buf_clear(out);
    o = json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", jstr(message),
                  "type", type ? type : "invalid_request_error", "param",
                  param ? jstr(param) : json_null(), "code",
                  code ? jstr(code) : json_null());
    s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return rlhi_err(RLHI_ENOMEM, "out of memory");
    r = rlhi_buf_adds(out, s);
    free(s);
    return r;
}

/* Characters (code points) in n bytes: bytes that do not continue one. */
static size_t nchars(const char *s, size_t n)
{
    size_t i, c = 0;

    for (i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* ---- request parsing -------------------------------------------------- */

struct parse {
    struct rlhi_buf *err;
    int *status;
};

static int bad(struct parse *p, const char *param, const char *code,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int bad(struct parse *p, const char *param, const char *code,
               const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    *p->status = 400;
    rlhi_oai_error_json(p->err, msg, "invalid_request_error", param, code);
    return rlhi_err(RLHI_EINVAL, "%s", msg);
}

/* Reads an optional integer field; null or absent leave *v as it is. */
static int get_int(struct parse *p, json_t *o, const char *k, long long lo,
                   long long hi, long long *v)
{
    json_t *x = json_object_get(o, k);
    long long y;

    if (!x || json_is_null(x))
        return 0;
    if (json_is_integer(x))
        y = json_integer_value(x);
    else if (json_is_real(x) && json_real_value(x) == floor(json_real_value(x))
             && fabs(json_real_value(x)) < 9e15)
        y = (long long)json_real_value(x);
    else
        return bad(p, k, NULL, "'%s' must be an integer", k);
    if (y < lo || y > hi)
        return bad(p, k, NULL, "'%s' is %lld; it must be between %lld and "
                   "%lld", k, y, lo, hi);
    *v = y;
    return 0;
}

static int get_num(struct parse *p, json_t *o, const char *k, double lo,
                   double hi, double *v)
{
    json_t *x = json_object_get(o, k);

    if (!x || json_is_null(x))
        return 0;
    if (!json_is_number(x))
        return bad(p, k, NULL, "'%s' must be a number", k);
    if (!(json_number_value(x) >= lo && json_number_value(x) <= hi))
        return bad(p, k, NULL, "'%s' is %g; it must be between %g and %g",
                   k, json_number_value(x), lo, hi);
    *v = json_number_value(x);
    return 0;
}

static int get_bool(struct parse *p, json_t *o, const char *k, bool *v)
{
    json_t *x = json_object_get(o, k);

    if (!x || json_is_null(x))
        return 0;
    if (!json_is_boolean(x))
        return bad(p, k, NULL, "'%s' must be a boolean", k);
    *v = json_is_true(x);
    return 0;
}

struct prompt {
    int32_t *ids;
    int n;
    char *text; /* for echo */
};

static void prompts_free(struct prompt *ps, int n)
{
    int i;

    if (!ps)
        return;
    for (i = 0; i < n; i++) {
        rlhi_free(ps[i].ids);
        rlhi_free(ps[i].text);
    }
    rlhi_free(ps);
}

static int encode(struct parse *p, const struct rlhi__engine_info *in,
                  const char *text, size_t len, int flags, struct prompt *out)
{
    size_t n = 0;
    int r = rlhi_tokenizer_encode(in->tok, text, len, flags, &out->ids, &n);

    if (r) {
        *p->status = 500;
        rlhi_oai_error_json(p->err, rlhi_errmsg(), "server_error", NULL,
                            NULL);
        return r;
    }
    out->n = (int)n;
    out->text = rlhi_strndup(text, len);
    return out->text ? 0 : RLHI_ENOMEM;
}

static int ids_prompt(struct parse *p, const struct rlhi__engine_info *in,
                      json_t *arr, const char *param, struct prompt *out)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    size_t i;

    out->n = (int)json_array_size(arr);
    out->ids = rlhi_malloc(sizeof(int32_t) * (out->n ? (size_t)out->n : 1));
    if (!out->ids)
        return RLHI_ENOMEM;
    for (i = 0; i < (size_t)out->n; i++) {
        json_t *x = json_array_get(arr, i);
        json_int_t v = json_is_integer(x) ? json_integer_value(x) : -1;

        if (!json_is_integer(x) || v < 0 || v >= in->vocab)
            return bad(p, param, NULL, "'%s' token %zu must be an integer "
                       "id below %d", param, i, in->vocab);
        out->ids[i] = (int32_t)v;
    }
    if (rlhi_tokenizer_decode(in->tok, out->ids, (size_t)out->n, true, &b))
        rlhi_buf_clear(&b);
    out->text = rlhi_buf_detach(&b, NULL);
    return out->text ? 0 : RLHI_ENOMEM;
}

static bool all_of(json_t *arr, json_type type)
{
    size_t i;

    for (i = 0; i < json_array_size(arr); i++)
        if (json_typeof(json_array_get(arr, i)) != type)
            return false;
    return true;
}

/* "prompt": a string, a list of strings, a list of ids, or a list of
 * lists of ids. */
static int parse_prompts(struct parse *p, const struct rlhi__engine_info *in,
                         json_t *x, struct prompt **out, int *n)
{
    size_t i, k;
    int r = 0;
    const int flags = RLHI_ENC_BOS | RLHI_ENC_SPECIAL;

    *out = NULL;
    *n = 0;
    if (!x || json_is_null(x))
        return bad(p, "prompt", NULL, "'prompt' is required");
    if (json_is_string(x)) {
        *out = rlhi_calloc(1, sizeof **out);
        if (!*out)
            return RLHI_ENOMEM;
        *n = 1;
        return encode(p, in, json_string_value(x), json_string_length(x),
                      flags, *out);
    }
    if (!json_is_array(x) || json_array_size(x) == 0)
        return bad(p, "prompt", NULL, "'prompt' must be a string or a "
                   "non-empty list of strings or token ids");
    if (all_of(x, JSON_INTEGER)) {
        *out = rlhi_calloc(1, sizeof **out);
        if (!*out)
            return RLHI_ENOMEM;
        *n = 1;
        return ids_prompt(p, in, x, "prompt", *out);
    }
    k = json_array_size(x);
    if (k > MAX_PROMPTS)
        return bad(p, "prompt", NULL, "'prompt' lists %zu prompts; at most "
                   "%d are accepted", k, MAX_PROMPTS);
    if (!all_of(x, JSON_STRING) && !all_of(x, JSON_ARRAY))
        return bad(p, "prompt", NULL, "'prompt' must be a string or a "
                   "list of strings or token ids");
    *out = rlhi_calloc(k, sizeof **out);
    if (!*out)
        return RLHI_ENOMEM;
    *n = (int)k;
    for (i = 0; i < k && !r; i++) {
        json_t *y = json_array_get(x, i);

        if (json_is_string(y))
            r = encode(p, in, json_string_value(y), json_string_length(y),
                       flags, &(*out)[i]);
        else
            r = ids_prompt(p, in, y, "prompt", &(*out)[i]);
    }
    return r;
}

/* A message's content: a string, or a list of {"type": "text", "text"}
 * parts, joined. Returns a new string or NULL (error set). */
static char *content_text(struct parse *p, json_t *c, size_t idx)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    size_t i;

    if (json_is_string(c))
        return rlhi_strndup(json_string_value(c), json_string_length(c));
    if (json_is_null(c) || !c)
        return rlhi_strdup("");
    if (!json_is_array(c)) {
        bad(p, "messages", NULL, "'messages[%zu].content' must be a string "
            "or a list of text parts", idx);
        return NULL;
    }
    for (i = 0; i < json_array_size(c); i++) {
        json_t *part = json_array_get(c, i);
        json_t *t = json_object_get(part, "text");

        if (!json_is_string(t)) {
            rlhi_buf_release(&b);
            bad(p, "messages", NULL, "'messages[%zu].content[%zu]' must be a "
                "text part with a string 'text'", idx, i);
            return NULL;
        }
        rlhi_buf_add(&b, json_string_value(t), json_string_length(t));
    }
    if (!b.buf)
        return rlhi_strdup("");
    return rlhi_buf_detach(&b, NULL);
}

static int parse_messages(struct parse *p, const struct rlhi__engine_info *in,
                          json_t *x, struct prompt **out)
{
    struct rlhi_chat_msg *msgs = NULL;
    char **texts = NULL;
    struct rlhi_chat_options opt = {0};
    struct rlhi_buf text = RLHI_BUF_INIT;
    size_t i, n;
    int r = 0, flags = RLHI_ENC_SPECIAL;

    *out = NULL;
    if (!json_is_array(x) || json_array_size(x) == 0)
        return bad(p, "messages", NULL,
                   "'messages' must be a non-empty list of messages");
    n = json_array_size(x);
    msgs = rlhi_calloc(n, sizeof *msgs);
    texts = rlhi_calloc(n, sizeof *texts);
    if (!msgs || !texts) {
        r = RLHI_ENOMEM;
        goto out;
    }
    for (i = 0; i < n && !r; i++) {
        json_t *m = json_array_get(x, i);
        json_t *role = json_object_get(m, "role");
        const char *rs;

        if (!json_is_object(m) || !json_is_string(role)) {
            r = bad(p, "messages", NULL, "'messages[%zu]' must be an object "
                    "with a string 'role'", i);
            break;
        }
        rs = json_string_value(role);
        if (!strcmp(rs, "developer"))
            rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") &&
            strcmp(rs, "assistant")) {
            r = bad(p, "messages", NULL, "'messages[%zu].role' is '%s'; "
                    "expected system, user or assistant", i, rs);
            break;
        }
        texts[i] = content_text(p, json_object_get(m, "content"), i);
        if (!texts[i]) {
            r = *p->status == 400 ? RLHI_EINVAL : RLHI_ENOMEM;
            break;
        }
        msgs[i].role = rs;
        msgs[i].content = texts[i];
    }
    if (r)
        goto out;
    opt.add_generation_prompt = true;
    r = rlhi_chat_render(in->chat, msgs, n, &opt, &text, NULL, NULL);
    if (r) {
        r = bad(p, "messages", NULL, "cannot render the messages with the "
                "'%s' chat template: %s", rlhi_chat_kind_name(in->chat),
                rlhi_errmsg());
        goto out;
    }
    /* Llama 3.1/3.2 write the BOS text themselves; the others leave it to
     * the tokenizer. */
    if (in->chat != RLHI_CHAT_LLAMA31 && in->chat != RLHI_CHAT_LLAMA32)
        flags |= RLHI_ENC_BOS;
    *out = rlhi_calloc(1, sizeof **out);
    if (!*out) {
        r = RLHI_ENOMEM;
        goto out;
    }
    r = encode(p, in, text.buf ? text.buf : "", text.len, flags, *out);
out:
    if (texts)
        for (i = 0; i < n; i++)
            rlhi_free(texts[i]);
    rlhi_free(texts);
    rlhi_free(msgs);
    rlhi_buf_release(&text);
    return r;
}

static int parse_stops(struct parse *p, json_t *x, char ***out, int *n)
{
    size_t i, k;

    *out = NULL;
    *n = 0;
    if (!x || json_is_null(x))
        return 0;
    if (json_is_string(x)) {
        k = 1;
    } else if (json_is_array(x) && all_of(x, JSON_STRING)) {
        k = json_array_size(x);
    } else {
        return bad(p, "stop", NULL,
                   "'stop' must be a string or a list of strings");
    }
    if (k > MAX_STOPS)
        return bad(p, "stop", NULL, "'stop' lists %zu strings; at most %d "
                   "are accepted", k, MAX_STOPS);
    *out = rlhi_calloc(k + 1, sizeof **out);
    if (!*out)
        return RLHI_ENOMEM;
    for (i = 0; i < k; i++) {
        json_t *s = json_is_string(x) ? x : json_array_get(x, i);

        if (json_string_length(s) > MAX_STOP_LEN)
            return bad(p, "stop", NULL, "a stop string is longer than %d "
                       "bytes", MAX_STOP_LEN);
        if (json_string_length(s) == 0)
            continue;
        (*out)[*n] = rlhi_strndup(json_string_value(s), json_string_length(s));
        if (!(*out)[*n])
            return RLHI_ENOMEM;
        (*n)++;
    }
    return 0;
}

/* ---- start ------------------------------------------------------------ */

static void call_free(struct rlhi_oai_call *c)
{
    int i;

    if (!c)
        return;
    for (i = 0; i < c->njobs; i++)
        if (c->jobs[i])
            rlhi__job_release(c->e, c->jobs[i]);
    rlhi_free(c->jobs);
    if (c->ptext)
        for (i = 0; i < c->njobs; i++)
            rlhi_free(c->ptext[i]);
    rlhi_free(c->ptext);
    rlhi_free(c->sent_text);
    rlhi_free(c->sent_toks);
    rlhi_free(c->started);
    rlhi_free(c->ended);
    pthread_cond_destroy(&c->cond);
    rlhi_free(c);
}

int rlhi_oai_start(struct rlhi_engine *e, const char *path, const char *body,
                   size_t len, struct rlhi_oai_call **out, int *http_status,
                   struct rlhi_buf *err)
{
    const struct rlhi__engine_info *in = rlhi__engine_info(e);
    struct parse P = {err, http_status}, *p = &P;
    struct rlhi_oai_call *c = NULL;
    struct prompt *ps = NULL;
    char **stops = NULL;
    int nps = 0, nstops = 0, i, r = 0, k;
    json_t *root = NULL, *x;
    json_error_t je;
    long long max_tokens = -1, n = 1, seed = 0, top_k = -1, lp = -1;
    double temperature = 1.0, top_p = 1.0;
    bool has_seed, chat, stream = false, echo = false, ignore_eos = false;
    bool want_lp = false;
    pthread_condattr_t ca;

    *out = NULL;
    *http_status = 200;
    if (!strcmp(path, "/v1/chat/completions"))
        chat = true;
    else if (!strcmp(path, "/v1/completions"))
        chat = false;
    else {
        *http_status = 404;
        rlhi_oai_error_json(err, "unknown path", "invalid_request_error",
                            NULL, "not_found");
        return rlhi_err(RLHI_ENOTFOUND, "unknown path '%s'", path);
    }

    /* The body: a JSON object. */
    root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        r = bad(p, NULL, NULL, "invalid JSON in the request body: %s "
                "(line %d, column %d)", je.text, je.line, je.column);
        goto out;
    }
    if (!json_is_object(root)) {
        r = bad(p, NULL, NULL, "the request body must be a JSON object");
        goto out;
    }

    /* Sampling and limits. */
    x = json_object_get(root, "max_completion_tokens");
    if ((r = get_int(p, root, x && !json_is_null(x) ? "max_completion_tokens"
                                                    : "max_tokens",
                     0, 1LL << 30, &max_tokens)))
        goto out;
    if (max_tokens > in->max_tokens_limit) {
        r = bad(p, "max_tokens", NULL, "'max_tokens' is %lld; the limit is "
                "%d", max_tokens, in->max_tokens_limit);
        goto out;
    }
    if (chat && max_tokens == 0) {
        r = bad(p, "max_tokens", NULL, "'max_tokens' must be at least 1");
        goto out;
    }
    if ((r = get_num(p, root, "temperature", 0, 2, &temperature)) ||
        (r = get_num(p, root, "top_p", 0, 1, &top_p)) ||
        (r = get_int(p, root, "n", 1, in->max_batch, &n)) ||
        (r = get_bool(p, root, "stream", &stream)) ||
        (r = get_bool(p, root, "ignore_eos", &ignore_eos)))
        goto out;
    if (top_p <= 0) {
        r = bad(p, "top_p", NULL, "'top_p' must be above 0");
        goto out;
    }
    has_seed = json_object_get(root, "seed") &&
               !json_is_null(json_object_get(root, "seed"));
    if ((r = get_int(p, root, "seed", -(1LL << 62), 1LL << 62, &seed)))
        goto out;
    if ((r = parse_stops(p, json_object_get(root, "stop"), &stops, &nstops)))
        goto out;

    /* Log-probabilities: completions take a count, chat a flag and a
     * count. */
    if (chat) {
        if ((r = get_bool(p, root, "logprobs", &want_lp)) ||
            (r = get_int(p, root, "top_logprobs", 0, RLHI__MAX_TOP, &lp)))
            goto out;
        if (lp >= 0 && !want_lp) {
            r = bad(p, "top_logprobs", NULL, "'top_logprobs' needs "
                    "'logprobs': true");
            goto out;
        }
        top_k = want_lp ? (lp > 0 ? lp : 0) : -1;
    } else {
        if ((r = get_int(p, root, "logprobs", 0, RLHI__MAX_TOP, &top_k)) ||
            (r = get_bool(p, root, "echo", &echo)))
            goto out;
    }

    /* The prompts. */
    if (chat)
        r = parse_messages(p, in, json_object_get(root, "messages"), &ps),
        nps = ps ? 1 : 0;
    else
        r = parse_prompts(p, in, json_object_get(root, "prompt"), &ps, &nps);
    if (r)
        goto out;
    for (i = 0; i < nps; i++) {
        const char *field = chat ? "messages" : "prompt";
        long long mt = max_tokens;

        if (ps[i].n == 0) {
            r = bad(p, field, NULL, "the prompt is empty (no tokens)");
            goto out;
        }
        for (k = 0; k < ps[i].n; k++)
            if (ps[i].ids[k] < 0 || ps[i].ids[k] >= in->vocab) {
                r = bad(p, field, NULL, "the prompt's token %d (id %d) is "
                        "outside the model's vocabulary of %d: the "
                        "tokenizer does not fit the model", k,
                        (int)ps[i].ids[k], in->vocab);
                goto out;
            }
        if (ps[i].n > in->max_prompt) {
            r = bad(p, field, "context_length_exceeded", "the prompt has %d "
                    "tokens; the limit is %d", ps[i].n, in->max_prompt);
            goto out;
        }
        if (mt < 0)
            mt = chat ? in->ctx - ps[i].n : 16;
        if (mt > in->max_tokens_limit)
            mt = in->max_tokens_limit;
        if (ps[i].n + mt > in->ctx || (chat && mt < 1)) {
            r = bad(p, "max_tokens", "context_length_exceeded", "the prompt "
                    "(%d tokens) and max_tokens (%lld) exceed the model's "
                    "context length (%d)", ps[i].n, mt, in->ctx);
            goto out;
        }
    }

    /* The call and its jobs. */
    c = rlhi_calloc(1, sizeof *c);
    if (!c) {
        r = RLHI_ENOMEM;
        goto out;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    c->e = e;
    c->info = in;
    c->chat = chat;
    c->stream = stream;
    c->echo = echo;
    c->top_k = (int)top_k;
    c->n = (int)n;
    c->status = 200;
    x = json_object_get(root, "stream_options");
    c->include_usage = json_is_true(json_object_get(x, "include_usage"));
    c->created = (long long)time(NULL);
    snprintf(c->id, sizeof c->id, "%s-%016llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)rlhi__engine_next_seed(e));
    c->jobs = rlhi_calloc((size_t)nps, sizeof *c->jobs);
    c->ptext = rlhi_calloc((size_t)nps, sizeof *c->ptext);
    k = nps * c->n;
    c->sent_text = rlhi_calloc((size_t)k, sizeof *c->sent_text);
    c->sent_toks = rlhi_calloc((size_t)k, sizeof *c->sent_toks);
    c->started = rlhi_calloc((size_t)k, sizeof *c->started);
    c->ended = rlhi_calloc((size_t)k, sizeof *c->ended);
    if (!c->jobs || !c->ptext || !c->sent_text || !c->sent_toks ||
        !c->started || !c->ended) {
        r = RLHI_ENOMEM;
        goto out;
    }
    c->njobs = nps;
    if (!has_seed)
        seed = (long long)rlhi__engine_next_seed(e);
    for (i = 0; i < nps; i++) {
        struct rlhi__job *j = rlhi__job_new(c->n);
        int s;

        if (!j) {
            r = RLHI_ENOMEM;
            goto out;
        }
        c->jobs[i] = j;
        c->ptext[i] = ps[i].text;
        ps[i].text = NULL;
        j->prompt = ps[i].ids;
        ps[i].ids = NULL;
        j->nprompt = ps[i].n;
        j->max_tokens = max_tokens >= 0 ? (int)max_tokens
                        : chat ? in->ctx - j->nprompt : 16;
        if (j->max_tokens > in->max_tokens_limit)
            j->max_tokens = in->max_tokens_limit;
        rlhi_sampler_params_default(&j->sp);
        j->sp.temperature = (float)temperature;
        j->sp.top_p = (float)top_p;
        j->sp.seed = (uint64_t)seed;
        j->top_k = (int)top_k;
        j->echo_lp = echo && top_k >= 0;
        j->ignore_eos = ignore_eos;
        j->chat = chat;
        j->wake_each = stream;
        /* Each job owns its stop strings, plus the template's end of turn
         * for chat when it is not a single token. */
        j->stops = rlhi_calloc((size_t)nstops + 1, sizeof *j->stops);
        if (!j->stops) {
            r = RLHI_ENOMEM;
            goto out;
        }
        for (s = 0; s < nstops; s++)
            if ((j->stops[j->nstops] = rlhi_strdup(stops[s])))
                j->nstops++;
        if (chat && in->eot_id < 0 && in->eot_str &&
            (j->stops[j->nstops] = rlhi_strdup(in->eot_str)))
            j->nstops++;
        j->cond = &c->cond;
    }
    for (i = 0; i < nps && !r; i++)
        r = rlhi__engine_submit(e, c->jobs[i]);
    if (r) {
        *http_status = 503;
        rlhi_oai_error_json(err, rlhi_errmsg(), "server_error", NULL, NULL);
        goto out;
    }

out:
    if (r && *http_status == 200) {
        *http_status = r == RLHI_ENOMEM ? 500 : 400;
        rlhi_oai_error_json(err, r == RLHI_ENOMEM ? "out of memory"
                                                  : rlhi_errmsg(),
                            r == RLHI_ENOMEM ? "server_error"
                                             : "invalid_request_error",
                            NULL, NULL);
    }
    prompts_free(ps, nps);
    if (stops)
        for (i = 0; i < nstops; i++)
            rlhi_free(stops[i]);
    rlhi_free(stops);
    json_decref(root);
    if (r) {
        call_free(c);
        return r < 0 ? r : RLHI_EINVAL;
    }
    *out = c;
    return 0;
}

bool rlhi_oai_is_stream(const struct rlhi_oai_call *c)
{
    return c->stream;
}

int rlhi_oai_status(const struct rlhi_oai_call *c)
{
    return c->status;
}

/* ---- output ----------------------------------------------------------- */

static const char *finish_name(enum rlhi__finish f)
{
    return f == RLHI__STOP ? "stop" : f == RLHI__LENGTH ? "length" : "error";
}

static bool is_special(const struct rlhi__engine_info *in, int32_t id)
{
    return id == in->bos || id == in->eos || id == in->eot_id;
}

static json_t *piece(const struct rlhi__engine_info *in, int32_t prev,
                     int32_t id, const char **ps, size_t *plen, char sc[8])
{
    const char *s = rlhi_tokenizer_piece(in->tok, prev, id, sc, plen);

    if (!s) {
        s = "";
        *plen = 0;
    }
    if (ps)
        *ps = s;
    return jstrn(s, *plen);
}

static json_t *bytes_array(const char *s, size_t n)
{
    json_t *a = json_array();
    size_t i;

    for (i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

/* Completion logprobs for tokens [from, to) of one token list, appended to
 * the four arrays. Offsets: for prompt tokens (`text` NULL) a running
 * count in *off; for generated ones *off plus the characters of `text`
 * before the token. */
static void comp_lp(const struct rlhi__engine_info *in, json_t *lp,
                    const struct rlhi__tok *t, int from, int to,
                    int32_t prev, const char *text, size_t *off)
{
    json_t *tokens = json_object_get(lp, "tokens");
    json_t *tlp = json_object_get(lp, "token_logprobs");
    json_t *top = json_object_get(lp, "top_logprobs");
    json_t *offs = json_object_get(lp, "text_offset");
    char sc[8];
    const char *s;
    size_t len;
    int i, k;

    for (i = from; i < to; i++) {
        int32_t pv = i > 0 ? t[i - 1].id : prev;
        size_t o = text ? *off + nchars(text, t[i].text_start) : *off;

        json_array_append_new(tokens, piece(in, pv, t[i].id, &s, &len, sc));
        json_array_append_new(tlp, isnan(t[i].logprob)
                                       ? json_null()
                                       : json_real(t[i].logprob));
        json_array_append_new(offs, json_integer((json_int_t)o));
        if (!text && !is_special(in, t[i].id))
            *off += nchars(s, len);
        if (isnan(t[i].logprob)) {
            json_array_append_new(top, json_null());
        } else {
            json_t *d = json_object();

            for (k = 0; k < t[i].ntop; k++) {
                char sc2[8];
                size_t l2;
                const char *s2 = rlhi_tokenizer_piece(in->tok, pv,
                                                      t[i].top[k].id, sc2,
                                                      &l2);
                json_t *key = jstrn(s2 ? s2 : "", s2 ? l2 : 0);

                if (key && !json_object_get(d, json_string_value(key)))
                    json_object_set_new(d, json_string_value(key),
                                        json_real(t[i].top[k].logprob));
                json_decref(key);
            }
            json_array_append_new(top, d);
        }
    }
}

static json_t *chat_lp_entry(const struct rlhi__engine_info *in,
                             const struct rlhi__tok *t, int32_t prev)
{
    char sc[8];
    const char *s;
    size_t len;
    json_t *o, *top = json_array();
    int k;

    o = json_object();
    json_object_set_new(o, "token", piece(in, prev, t->id, &s, &len, sc));
    json_object_set_new(o, "logprob", json_real(t->logprob));
    json_object_set_new(o, "bytes", bytes_array(s, len));
    for (k = 0; k < t->ntop; k++) {
        json_t *e = json_object();

        json_object_set_new(e, "token",
                            piece(in, prev, t->top[k].id, &s, &len, sc));
        json_object_set_new(e, "logprob", json_real(t->top[k].logprob));
        json_object_set_new(e, "bytes", bytes_array(s, len));
        json_array_append_new(top, e);
    }
    json_object_set_new(o, "top_logprobs", top);
    return o;
}

/* Generated tokens of `c` to report when its text shows `upto` bytes:
 * those that end within it (running) or start before it (finished). */
static int toks_upto(const struct rlhi__choice *c, size_t upto)
{
    int i = 0;

    if (c->finish != RLHI__RUNNING) {
        while (i < c->ntoks && c->toks[i].text_start < upto)
            i++;
        return i;
    }
    while (i < c->ntoks && c->toks[i].text_end <= upto &&
           c->toks[i].text_end > c->toks[i].text_start)
        i++;
    return i;
}

static json_t *new_comp_lp(void)
{
    return json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs",
                     "top_logprobs", "text_offset");
}

/* Characters of the prompt as the echo's offsets count them. */
static size_t prompt_chars(const struct rlhi__engine_info *in,
                           const struct rlhi__job *j)
{
    size_t off = 0, len;
    char sc[8];
    int i;

    for (i = 0; i < j->nprompt; i++) {
        const char *s;

        if (is_special(in, j->prompt[i]))
            continue;
        s = rlhi_tokenizer_piece(in->tok, i ? j->prompt[i - 1] : -1,
                                 j->prompt[i], sc, &len);
        if (s)
            off += nchars(s, len);
    }
    return off;
}

/* The whole response of a finished call. Under the lock. */
static json_t *full_response(struct rlhi_oai_call *c)
{
    const struct rlhi__engine_info *in = c->info;
    json_t *choices = json_array(), *o;
    long long ptok = 0, ctok = 0;
    int i, k;

    for (i = 0; i < c->njobs; i++) {
        struct rlhi__job *j = c->jobs[i];

        ptok += j->nprompt;
        for (k = 0; k < c->n; k++) {
            struct rlhi__choice *ch = &j->ch[k];
            int nt = toks_upto(ch, ch->final_len);
            json_t *cj = json_object(), *lp = json_null();
            const char *txt = ch->text.buf ? ch->text.buf : "";

            ctok += ch->ntoks;
            json_object_set_new(cj, "index", json_integer(i * c->n + k));
            if (c->chat) {
                json_object_set_new(cj, "message",
                                    json_pack("{s:s,s:o}", "role",
                                              "assistant", "content",
                                              jstrn(txt, ch->final_len)));
                if (c->top_k >= 0) {
                    json_t *arr = json_array();
                    int t;

                    for (t = 0; t < nt; t++)
                        json_array_append_new(
                            arr, chat_lp_entry(in, &ch->toks[t],
                                               t ? ch->toks[t - 1].id
                                                 : j->prompt[j->nprompt - 1]));
                    lp = json_pack("{s:o}", "content", arr);
                }
            } else {
                struct rlhi_buf b = RLHI_BUF_INIT;
                size_t off = 0;

                if (c->echo)
                    rlhi_buf_adds(&b, c->ptext[i]);
                rlhi_buf_add(&b, txt, ch->final_len);
                json_object_set_new(cj, "text",
                                    jstrn(b.buf ? b.buf : "", b.len));
                rlhi_buf_release(&b);
                if (c->top_k >= 0) {
                    lp = new_comp_lp();
                    if (c->echo && j->ptoks)
                        comp_lp(in, lp, j->ptoks, 0, j->nprompt, -1, NULL,
                                &off);
                    else if (c->echo)
                        off = prompt_chars(in, j);
                    comp_lp(in, lp, ch->toks, 0, nt,
                            j->prompt[j->nprompt - 1], txt, &off);
                }
            }
            json_object_set_new(cj, "logprobs", lp);
            json_object_set_new(cj, "finish_reason",
                                json_string(finish_name(ch->finish)));
            json_array_append_new(choices, cj);
        }
    }
    o = json_pack("{s:s,s:s,s:I,s:s,s:o,s:{s:I,s:I,s:I}}", "id", c->id,
                  "object", c->chat ? "chat.completion" : "text_completion",
                  "created", (json_int_t)c->created, "model",
                  rlhi_engine_model_id(c->e), "choices", choices, "usage",
                  "prompt_tokens", (json_int_t)ptok, "completion_tokens",
                  (json_int_t)ctok, "total_tokens", (json_int_t)(ptok + ctok));
    return o;
}

static int add_event(struct rlhi_buf *out, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    int r;

    json_decref(o);
    if (!s)
        return RLHI_ENOMEM;
    r = rlhi_buf_addf(out, "data: %s\n\n", s);
    free(s);
    return r;
}

static json_t *chunk(struct rlhi_oai_call *c, json_t *choice)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", c->id, "object",
                     c->chat ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)c->created, "model",
                     rlhi_engine_model_id(c->e), "choices", choice);
}

/* Appends the events that became ready. Under the lock. */
static int stream_events(struct rlhi_oai_call *c, struct rlhi_buf *out)
{
    const struct rlhi__engine_info *in = c->info;
    int i, k, r = 0;

    for (i = 0; i < c->njobs && !r; i++) {
        struct rlhi__job *j = c->jobs[i];

        for (k = 0; k < c->n && !r; k++) {
            int idx = i * c->n + k, nt;
            struct rlhi__choice *ch = &j->ch[k];
            size_t ready, from = c->sent_text[idx];
            json_t *cj, *lp = json_null();
            bool fin;

            if (c->ended[idx] || (!j->done && j->queued))
                continue;
            if (ch->finish == RLHI__RUNNING && !j->ptoks && j->echo_lp)
                continue; /* prefill not committed yet */
            ready = rlhi__choice_ready(j, ch);
            if (ready < from)
                ready = from;
            nt = toks_upto(ch, ready);
            fin = ch->finish != RLHI__RUNNING;
            if (ready == from && nt == c->sent_toks[idx] && !fin &&
                c->started[idx])
                continue;
            if (fin && ch->finish == RLHI__FAILED)
                continue; /* reported once for the call */

            cj = json_pack("{s:I}", "index", (json_int_t)idx);
            if (c->chat) {
                json_t *delta = json_object();

                if (!c->started[idx])
                    json_object_set_new(delta, "role",
                                        json_string("assistant"));
                if (ready > from || !c->started[idx])
                    json_object_set_new(delta, "content",
                                        jstrn(ch->text.buf + from,
                                              ready - from));
                json_object_set_new(cj, "delta", delta);
                if (c->top_k >= 0 && nt > c->sent_toks[idx]) {
                    json_t *arr = json_array();
                    int t;

                    for (t = c->sent_toks[idx]; t < nt; t++)
                        json_array_append_new(
                            arr, chat_lp_entry(in, &ch->toks[t],
                                               t ? ch->toks[t - 1].id
                                                 : j->prompt[j->nprompt - 1]));
                    lp = json_pack("{s:o}", "content", arr);
                }
            } else {
                struct rlhi_buf b = RLHI_BUF_INIT;
                size_t off = 0;

                if (!c->started[idx] && c->echo)
                    rlhi_buf_adds(&b, c->ptext[i]);
                rlhi_buf_add(&b, ch->text.buf ? ch->text.buf + from : "",
                             ready - from);
                json_object_set_new(cj, "text",
                                    jstrn(b.buf ? b.buf : "", b.len));
                rlhi_buf_release(&b);
                if (c->top_k >= 0) {
                    lp = new_comp_lp();
                    if (!c->started[idx] && c->echo && j->ptoks)
                        comp_lp(in, lp, j->ptoks, 0, j->nprompt, -1, NULL,
                                &off);
                    off = c->echo ? prompt_chars(in, j) : 0;
                    comp_lp(in, lp, ch->toks, c->sent_toks[idx], nt,
                            j->prompt[j->nprompt - 1],
                            ch->text.buf ? ch->text.buf : "", &off);
                }
            }
            json_object_set_new(cj, "logprobs", lp);
            json_object_set_new(cj, "finish_reason",
                                fin ? json_string(finish_name(ch->finish))
                                    : json_null());
            c->started[idx] = true;
            c->sent_text[idx] = ready;
            c->sent_toks[idx] = nt;
            if (fin)
                c->ended[idx] = true;
            r = add_event(out, chunk(c, cj));
        }
    }
    return r;
}

static bool all_done(const struct rlhi_oai_call *c)
{
    int i;

    for (i = 0; i < c->njobs; i++)
        if (!c->jobs[i]->done)
            return false;
    return true;
}

static const struct rlhi__job *failed_job(const struct rlhi_oai_call *c)
{
    int i;

    for (i = 0; i < c->njobs; i++)
        if (c->jobs[i]->error)
            return c->jobs[i];
    return NULL;
}

static uint64_t versions(const struct rlhi_oai_call *c)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < c->njobs; i++)
        v += c->jobs[i]->version;
    return v;
}

/* Everything after the last choice: the error if one failed, usage, and
 * [DONE]; or the whole body without streaming. Under the lock. */
static int finish_output(struct rlhi_oai_call *c, struct rlhi_buf *out)
{
    const struct rlhi__job *f = failed_job(c);
    struct rlhi_buf err = RLHI_BUF_INIT;
    int r = 0;

    if (f) {
        c->status = strstr(f->errmsg ? f->errmsg : "", "shutting down")
                        ? 503 : 500;
        r = rlhi_oai_error_json(&err, f->errmsg ? f->errmsg : "failed",
                                "server_error", NULL, NULL);
        if (!r && c->stream)
            r = rlhi_buf_addf(out, "data: %s\n\n", err.buf);
        else if (!r)
            r = rlhi_buf_add(out, err.buf, err.len);
        rlhi_buf_release(&err);
    } else if (!c->stream) {
        json_t *o = full_response(c);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

        json_decref(o);
        r = s ? rlhi_buf_adds(out, s) : RLHI_ENOMEM;
        free(s);
    } else if (c->include_usage) {
        long long pt = 0, ct = 0;
        int i, k;

        for (i = 0; i < c->njobs; i++) {
            pt += c->jobs[i]->nprompt;
            for (k = 0; k < c->n; k++)
                ct += c->jobs[i]->ch[k].ntoks;
        }
        r = add_event(out, json_pack(
            "{s:s,s:s,s:I,s:s,s:[],s:{s:I,s:I,s:I}}", "id", c->id, "object",
            c->chat ? "chat.completion.chunk" : "text_completion", "created",
            (json_int_t)c->created, "model", rlhi_engine_model_id(c->e),
            "choices", "usage", "prompt_tokens", (json_int_t)pt,
            "completion_tokens", (json_int_t)ct, "total_tokens",
            (json_int_t)(pt + ct)));
    }
    if (!r && c->stream)
        r = rlhi_buf_adds(out, "data: [DONE]\n\n");
    c->finished = true;
    return r;
}

int rlhi_oai_wait(struct rlhi_oai_call *c, double timeout_s,
                  struct rlhi_buf *out, bool *done)
{
    struct timespec ts;
    int r = 0;

    *done = c->finished;
    if (c->finished)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (timeout_s >= 0) {
        double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + timeout_s;

        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    }
    rlhi__engine_lock(c->e);
    for (;;) {
        size_t before = out->len;

        if (c->stream && !failed_job(c)) {
            r = stream_events(c, out);
            if (r)
                break;
        }
        if (all_done(c)) {
            r = finish_output(c, out);
            *done = true;
            break;
        }
        if (out->len > before)
            break;
        c->seen = versions(c);
        while (versions(c) == c->seen && r == 0) {
            int w = timeout_s < 0
                        ? pthread_cond_wait(&c->cond, rlhi__engine_mutex(c->e))
                        : pthread_cond_timedwait(&c->cond,
                                                 rlhi__engine_mutex(c->e),
                                                 &ts);
            if (w == ETIMEDOUT)
                r = 1;
        }
        if (r)
            break;
    }
    rlhi__engine_unlock(c->e);
    return r;
}

void rlhi_oai_end(struct rlhi_oai_call *c)
{
    call_free(c);
}

int rlhi_oai_call(struct rlhi_engine *e, const char *path, const char *body,
                  size_t len, double timeout_s, int *http_status,
                  struct rlhi_buf *out)
{
    struct rlhi_oai_call *c = NULL;
    double t0 = rlhi_time_now(), left;
    bool done = false;
    int r;

    rlhi_buf_clear(out);
    r = rlhi_oai_start(e, path, body, len, &c, http_status, out);
    if (r)
        return out->len ? 0 : r;
    while (!done) {
        left = timeout_s < 0 ? -1 : timeout_s - (rlhi_time_now() - t0);
        if (timeout_s >= 0 && left <= 0) {
            *http_status = 504;
            rlhi_oai_end(c);
            return rlhi_oai_error_json(out, "the request timed out",
                                       "timeout", NULL, "timeout");
        }
        r = rlhi_oai_wait(c, left, out, &done);
        if (r < 0) {
            rlhi_oai_end(c);
            return r;
        }
    }
    *http_status = rlhi_oai_status(c);
    rlhi_oai_end(c);
    return 0;
}
