/* The llm client: chat, completion and scoring requests against the local
 * engine or an OpenAI-compatible HTTP endpoint, with a thread pool,
 * retries and a SQLite response cache.
 *
 * Every request is first written as the OpenAI request body (keys sorted,
 * so the same request always gives the same bytes); that body is the
 * cache key's input, what is POSTed, and what the local backend hands to
 * rlhi_oai_call(). Both backends therefore answer with the same JSON and
 * share one parser.
 *
 * Retries: a try that fails with HTTP 429 or 5xx, or with a connection
 * error or a timeout, is retried up to max_retries times. The wait before
 * retry k (1-based) is "equal jitter" exponential backoff: w =
 * min(backoff_max, backoff_base * 2^(k-1)), then uniform in [w/2, w]; a
 * Retry-After header (seconds) raises it, up to backoff_max. Other 4xx
 * statuses are final: the request itself is wrong.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llm/llm_internal.h"

struct rlhi_llm {
    char *endpoint; /* "local:PATH" or a base URL ending in /v1 */
    bool local;
    struct rlhi_engine *engine;
    char *model;
    char *auth;     /* "Authorization: Bearer KEY" or NULL */
    int concurrency, max_retries;
    double backoff_base, backoff_max, timeout;
    struct rlhi__cache *cache;
    pthread_mutex_t mu; /* stats and rng */
    struct rlhi_llm_stats stats;
    struct rlhi_rng rng;
};

void rlhi_llm_options_default(struct rlhi_llm_options *o)
{
    memset(o, 0, sizeof *o);
    o->concurrency = 4;
    o->max_retries = 5;
    o->backoff_base_s = 0.5;
    o->backoff_max_s = 30;
    o->timeout_s = 300;
}

void rlhi_llm_request_init(struct rlhi_llm_request *r, enum rlhi_llm_kind k)
{
    memset(r, 0, sizeof *r);
    r->kind = k;
    r->temperature = -1;
    r->seed = -1;
    r->n = 1;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int rlhi_llm_open(struct rlhi_llm **out, const struct rlhi_llm_options *o)
{
    struct rlhi_llm *l;
    int r = 0;

    *out = NULL;
    if (!o || !o->endpoint || !o->endpoint[0])
        return rlhi_err(RLHI_EINVAL, "llm: no endpoint given (\"local:PATH\" "
                        "or an http(s) URL)");
    l = rlhi_calloc(1, sizeof *l);
    if (!l)
        return rlhi_err(RLHI_ENOMEM, "out of memory");
    pthread_mutex_init(&l->mu, NULL);
    rlhi_rng_seed(&l->rng, (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)l);
    l->concurrency = o->concurrency > 0 ? o->concurrency : 4;
    l->max_retries = o->max_retries > 0 ? o->max_retries : 0;
    l->backoff_base = o->backoff_base_s > 0 ? o->backoff_base_s : 0.5;
    l->backoff_max = o->backoff_max_s > 0 ? o->backoff_max_s : 30;
    l->timeout = o->timeout_s > 0 ? o->timeout_s : 300;

    if (!strncmp(o->endpoint, "local:", 6)) {
        struct rlhi_engine_options eo = {0};

        l->local = true;
        l->endpoint = rlhi_strdup(o->endpoint);
        eo.model_path = o->endpoint + 6;
        eo.tokenizer_path = o->tokenizer;
        eo.chat_template = o->chat_template;
        eo.max_batch = l->concurrency > 16 ? l->concurrency : 16;
        r = rlhi_engine_open(&l->engine, &eo);
        if (r)
            goto fail;
        l->model = rlhi_strdup(o->model ? o->model
                                        : rlhi_engine_model_id(l->engine));
    } else if (!strncmp(o->endpoint, "http://", 7) ||
               !strncmp(o->endpoint, "https://", 8)) {
        size_t n = strlen(o->endpoint);
        struct rlhi_buf b = RLHI_BUF_INIT;

        while (n > 8 && o->endpoint[n - 1] == '/')
            n--;
        rlhi_buf_add(&b, o->endpoint, n);
        if (n < 3 || strncmp(o->endpoint + n - 3, "/v1", 3))
            rlhi_buf_adds(&b, "/v1");
        l->endpoint = rlhi_buf_detach(&b, NULL);
        l->model = rlhi_strdup(o->model ? o->model : "default");
        pthread_once(&curl_once, curl_init);
    } else {
        r = rlhi_err(RLHI_EINVAL, "llm: endpoint '%s' is neither "
                     "\"local:PATH\" nor an http(s) URL", o->endpoint);
        goto fail;
    }
    if (o->api_key) {
        struct rlhi_buf b = RLHI_BUF_INIT;

        rlhi_buf_addf(&b, "Authorization: Bearer %s", o->api_key);
        l->auth = rlhi_buf_detach(&b, NULL);
    }
    if (!l->endpoint || !l->model || (o->api_key && !l->auth)) {
        r = rlhi_err(RLHI_ENOMEM, "out of memory");
        goto fail;
    }
    if (o->cache_path) {
        r = rlhi__cache_open(&l->cache, o->cache_path);
        if (r)
            goto fail;
    }
    *out = l;
    return 0;
fail:
    rlhi_llm_close(l);
    return r;
}

void rlhi_llm_close(struct rlhi_llm *l)
{
    if (!l)
        return;
    rlhi_engine_close(l->engine);
    rlhi__cache_close(l->cache);
    pthread_mutex_destroy(&l->mu);
    rlhi_free(l->endpoint);
    rlhi_free(l->model);
    rlhi_free(l->auth);
    rlhi_free(l);
}

void rlhi_llm_get_stats(struct rlhi_llm *l, struct rlhi_llm_stats *s)
{
    pthread_mutex_lock(&l->mu);
    *s = l->stats;
    pthread_mutex_unlock(&l->mu);
}

void rlhi_llm_result_release(struct rlhi_llm_result *r)
{
    int i;

    if (!r)
        return;
    for (i = 0; i < r->n_texts; i++) {
        rlhi_free(r->texts[i]);
        rlhi_free(r->finish_reasons[i]);
    }
    rlhi_free(r->texts);
    rlhi_free(r->finish_reasons);
    rlhi_free(r->token_logprobs);
    rlhi_free(r->error);
    rlhi_free(r->response);
    memset(r, 0, sizeof *r);
}

/* ---- request bodies --------------------------------------------------- */

static const char *path_of(enum rlhi_llm_kind k)
{
    return k == RLHI_LLM_CHAT ? "/chat/completions" : "/completions";
}

/* The OpenAI body for `q`, keys sorted. New string (free()) or NULL. */
static char *make_body(const struct rlhi_llm *l,
                       const struct rlhi_llm_request *q)
{
    json_t *o = json_object();
    char *s = NULL;
    size_t i;

    if (!o)
        return NULL;
    json_object_set_new(o, "model", json_string(l->model));
    if (q->kind == RLHI_LLM_CHAT) {
        json_t *msgs = json_array();

        for (i = 0; i < q->n_messages; i++)
            json_array_append_new(msgs, json_pack(
                "{s:s,s:s}", "role", q->messages[i].role ? q->messages[i].role
                                                         : "",
                "content", q->messages[i].content ? q->messages[i].content
                                                  : ""));
        json_object_set_new(o, "messages", msgs);
    } else if (q->kind == RLHI_LLM_SCORE) {
        struct rlhi_buf b = RLHI_BUF_INIT;

        rlhi_buf_adds(&b, q->prompt ? q->prompt : "");
        rlhi_buf_adds(&b, q->completion ? q->completion : "");
        json_object_set_new(o, "prompt", json_stringn(b.buf ? b.buf : "",
                                                      b.len));
        rlhi_buf_release(&b);
        json_object_set_new(o, "max_tokens", json_integer(0));
        json_object_set_new(o, "echo", json_true());
        json_object_set_new(o, "logprobs", json_integer(0));
        json_object_set_new(o, "temperature", json_integer(0));
    } else {
        json_object_set_new(o, "prompt", json_string(q->prompt ? q->prompt
                                                               : ""));
    }
    if (q->kind != RLHI_LLM_SCORE) {
        if (q->max_tokens > 0)
            json_object_set_new(o, "max_tokens", json_integer(q->max_tokens));
        if (q->temperature >= 0)
            json_object_set_new(o, "temperature", json_real(q->temperature));
        if (q->top_p > 0)
            json_object_set_new(o, "top_p", json_real(q->top_p));
        if (q->seed >= 0)
            json_object_set_new(o, "seed", json_integer(q->seed));
        if (q->n > 1)
            json_object_set_new(o, "n", json_integer(q->n));
        if (q->n_stop > 0) {
            json_t *st = json_array();
            int k;

            for (k = 0; k < q->n_stop; k++)
                json_array_append_new(st, json_string(q->stop[k]));
            json_object_set_new(o, "stop", st);
        }
    }
    s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* ---- responses -------------------------------------------------------- */

static size_t nchars(const char *s)
{
    size_t c = 0;

    for (; *s; s++)
        c += ((unsigned char)*s & 0xc0) != 0x80;
    return c;
}

/* Fills `res` from a 200 response body. 0 or RLHI_EFORMAT naming what is
 * missing. */
static int parse_response(const struct rlhi_llm_request *q, const char *body,
                          struct rlhi_llm_result *res)
{
    json_error_t je;
    json_t *root = json_loads(body, 0, &je), *ch, *usage;
    int r = 0;
    size_t i;

    if (!root)
        return rlhi_err(RLHI_EFORMAT, "response is not JSON: %s (line %d, "
                        "column %d)", je.text, je.line, je.column);
    ch = json_object_get(root, "choices");
    if (!json_is_array(ch) || json_array_size(ch) == 0) {
        r = rlhi_err(RLHI_EFORMAT, "response has no 'choices'");
        goto out;
    }
    usage = json_object_get(root, "usage");
    res->prompt_tokens =
        (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
    res->completion_tokens =
        (int)json_integer_value(json_object_get(usage, "completion_tokens"));

    if (q->kind != RLHI_LLM_SCORE) {
        size_t n = json_array_size(ch);

        res->texts = rlhi_calloc(n, sizeof *res->texts);
        res->finish_reasons = rlhi_calloc(n, sizeof *res->finish_reasons);
        if (!res->texts || !res->finish_reasons) {
            r = rlhi_err(RLHI_ENOMEM, "out of memory");
            goto out;
        }
        for (i = 0; i < n; i++) {
            json_t *c = json_array_get(ch, i), *t;
            json_t *fr = json_object_get(c, "finish_reason");

            t = q->kind == RLHI_LLM_CHAT
                    ? json_object_get(json_object_get(c, "message"), "content")
                    : json_object_get(c, "text");
            if (!json_is_string(t) && !json_is_null(t)) {
                r = rlhi_err(RLHI_EFORMAT, "response choice %zu has no "
                             "text", i);
                goto out;
            }
            res->texts[i] = rlhi_strdup(json_is_string(t)
                                            ? json_string_value(t) : "");
            res->finish_reasons[i] = rlhi_strdup(
                json_is_string(fr) ? json_string_value(fr) : "");
            res->n_texts++;
            if (!res->texts[i] || !res->finish_reasons[i]) {
                r = rlhi_err(RLHI_ENOMEM, "out of memory");
                goto out;
            }
        }
    } else {
        /* The completion's tokens are those whose text reaches past the
         * prompt's characters, by text_offset; a token spanning the
         * boundary counts with the completion. */
        json_t *c = json_array_get(ch, 0);
        json_t *lp = json_object_get(c, "logprobs");
        json_t *tlp = json_object_get(lp, "token_logprobs");
        json_t *off = json_object_get(lp, "text_offset");
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t n = json_array_size(tlp), plen = nchars(q->prompt ? q->prompt
                                                                 : "");
        size_t total = text ? nchars(text) : 0;

        if (!json_is_array(tlp) || !json_is_array(off) ||
            json_array_size(off) != n || !text) {
            r = rlhi_err(RLHI_EFORMAT, "response has no token_logprobs and "
                         "text_offset of equal length (does the server "
                         "support echo with logprobs?)");
            goto out;
        }
        res->token_logprobs = rlhi_calloc(n ? n : 1, sizeof(double));
        if (!res->token_logprobs) {
            r = rlhi_err(RLHI_ENOMEM, "out of memory");
            goto out;
        }
        for (i = 0; i < n; i++) {
            size_t a = (size_t)json_integer_value(json_array_get(off, i));
            size_t b = i + 1 < n
                           ? (size_t)json_integer_value(json_array_get(off,
                                                                       i + 1))
                           : total;
            json_t *v = json_array_get(tlp, i);

            if (!(a >= plen || b > plen) || !json_is_number(v))
                continue;
            if (a < plen)
                res->boundary_merged = true;
            res->token_logprobs[res->n_tokens++] = json_number_value(v);
            res->logprob += json_number_value(v);
        }
    }
out:
    json_decref(root);
    return r;
}

/* ---- one try ---------------------------------------------------------- */

struct http_out {
    struct rlhi_buf body;
    double retry_after; /* seconds, 0 when absent */
};

static size_t on_body(char *p, size_t sz, size_t n, void *user)
{
    struct http_out *h = user;

    return rlhi_buf_add(&h->body, p, sz * n) ? 0 : sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *user)
{
    struct http_out *h = user;
    size_t len = sz * n;

    if (len > 12 && !strncasecmp(p, "retry-after:", 12))
        h->retry_after = atof(p + 12);
    return len;
}

/* One try. Sets *status (0 when no HTTP answer came) and `body`.
 * Returns 0, or a negative code with the message (connection errors). */
static int try_once(struct rlhi_llm *l, CURL *curl,
                    const struct rlhi_llm_request *q, const char *body,
                    int *status, struct http_out *h)
{
    char url[4096];
    struct curl_slist *hdr = NULL;
    CURLcode cr;
    long code = 0;

    *status = 0;
    rlhi_buf_clear(&h->body);
    h->retry_after = 0;
    pthread_mutex_lock(&l->mu);
    l->stats.http_requests++;
    pthread_mutex_unlock(&l->mu);
    if (l->local)
        return rlhi_oai_call(l->engine, q->kind == RLHI_LLM_CHAT
                                            ? "/v1/chat/completions"
                                            : "/v1/completions",
                             body, strlen(body), l->timeout, status,
                             &h->body);

    snprintf(url, sizeof url, "%s%s", l->endpoint, path_of(q->kind));
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    if (l->auth)
        hdr = curl_slist_append(hdr, l->auth);
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)(l->timeout * 1000));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(l->timeout * 1000 < 30000 ? l->timeout * 1000
                                                      : 30000));
    cr = curl_easy_perform(curl);
    curl_slist_free_all(hdr);
    if (cr != CURLE_OK)
        return rlhi_err(RLHI_ENET, "cannot reach '%s': %s", url,
                        curl_easy_strerror(cr));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    *status = (int)code;
    if (!h->body.buf)
        rlhi_buf_adds(&h->body, "");
    return 0;
}

/* The error message of an error body, or the body's start. */
static void error_text(int status, const char *body, struct rlhi_buf *out)
{
    json_t *j = json_loads(body ? body : "", 0, NULL);
    const char *m = json_string_value(
        json_object_get(json_object_get(j, "error"), "message"));

    rlhi_buf_clear(out);
    if (m)
        rlhi_buf_addf(out, "HTTP %d: %s", status, m);
    else
        rlhi_buf_addf(out, "HTTP %d: %.200s", status, body ? body : "");
    json_decref(j);
}

static void sleep_s(double s)
{
    struct timespec ts;

    if (s <= 0)
        return;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

/* Runs one request to completion (cache, tries, parse). */
static void run_one(struct rlhi_llm *l, CURL *curl,
                    const struct rlhi_llm_request *q,
                    struct rlhi_llm_result *res)
{
    struct http_out h = {RLHI_BUF_INIT, 0};
    struct rlhi_buf msg = RLHI_BUF_INIT;
    char *body = NULL, *hit = NULL, key[65];
    int status = 0, r = 0, k;

    memset(res, 0, sizeof *res);
    pthread_mutex_lock(&l->mu);
    l->stats.requests++;
    pthread_mutex_unlock(&l->mu);
    if ((q->kind == RLHI_LLM_CHAT && (!q->messages || !q->n_messages)) ||
        (q->kind != RLHI_LLM_CHAT && !q->prompt) ||
        (q->kind == RLHI_LLM_SCORE && !q->completion) ||
        q->kind < RLHI_LLM_CHAT || q->kind > RLHI_LLM_SCORE) {
        r = rlhi_err(RLHI_EINVAL, "llm: request lacks its messages, prompt "
                     "or completion");
        goto out;
    }
    body = make_body(l, q);
    if (!body) {
        r = rlhi_err(RLHI_ENOMEM, "out of memory");
        goto out;
    }

    /* The cache first. */
    if (l->cache) {
        rlhi_llm_cache_key(l->endpoint, l->model, body, strlen(body), key);
        r = rlhi__cache_get(l->cache, key, &hit);
        if (r < 0)
            goto out;
        pthread_mutex_lock(&l->mu);
        if (r == 1)
            l->stats.cache_hits++;
        else
            l->stats.cache_misses++;
        pthread_mutex_unlock(&l->mu);
        r = 0;
        if (hit) {
            r = parse_response(q, hit, res);
            if (!r) {
                res->cached = true;
                res->http_status = 200;
                res->response = hit;
                hit = NULL;
                goto out;
            }
            /* an unreadable entry is asked again and replaced */
            rlhi_llm_result_release(res);
            r = 0;
        }
    }

    /* Tries, with backoff between them. */
    for (k = 0;; k++) {
        bool retry;

        r = try_once(l, curl, q, body, &status, &h);
        res->attempts = k + 1;
        res->http_status = status;
        if (!r && status == 200) {
            r = parse_response(q, h.body.buf, res);
            break;
        }
        if (!r) {
            error_text(status, h.body.buf, &msg);
            retry = status == 429 || status >= 500;
            r = rlhi_err(status == 429 || status >= 500 ? RLHI_ENET
                                                        : RLHI_EINVAL,
                         "%s", msg.buf);
        } else {
            retry = r == RLHI_ENET;
        }
        if (!retry || k >= l->max_retries)
            break;
        {
            double w = l->backoff_base * (double)(1ULL << (k < 30 ? k : 30));
            double u;

            if (w > l->backoff_max)
                w = l->backoff_max;
            pthread_mutex_lock(&l->mu);
            u = rlhi_rng_double(&l->rng);
            l->stats.retries++;
            pthread_mutex_unlock(&l->mu);
            w = w * (0.5 + 0.5 * u);
            if (h.retry_after > w)
                w = h.retry_after < l->backoff_max ? h.retry_after
                                                   : l->backoff_max;
            rlhi_debug("llm: %s; retry %d in %.2f s", rlhi_errmsg(), k + 1,
                       w);
            sleep_s(w);
        }
    }
    if (!r && l->cache)
        r = rlhi__cache_put(l->cache, key, l->endpoint, l->model, body,
                            h.body.buf);
    if (!r) {
        res->response = rlhi_buf_detach(&h.body, NULL);
        if (!res->response)
            r = rlhi_err(RLHI_ENOMEM, "out of memory");
    }
out:
    if (r) {
        int attempts = res->attempts, hs = res->http_status;

        rlhi_llm_result_release(res);
        res->attempts = attempts;
        res->http_status = hs;
        res->status = r;
        res->error = rlhi_strdup(rlhi_errmsg());
        pthread_mutex_lock(&l->mu);
        l->stats.failures++;
        pthread_mutex_unlock(&l->mu);
    }
    free(body);
    rlhi_free(hit);
    rlhi_buf_release(&h.body);
    rlhi_buf_release(&msg);
}

/* ---- the pool --------------------------------------------------------- */

struct pool {
    struct rlhi_llm *l;
    const struct rlhi_llm_request *reqs;
    struct rlhi_llm_result *res;
    size_t n, next;
    pthread_mutex_t mu;
};

static void *worker(void *arg)
{
    struct pool *p = arg;
    CURL *curl = p->l->local ? NULL : curl_easy_init();

    for (;;) {
        size_t i;

        pthread_mutex_lock(&p->mu);
        i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n)
            break;
        if (!p->l->local && !curl) {
            memset(&p->res[i], 0, sizeof p->res[i]);
            p->res[i].status = RLHI_ENOMEM;
            p->res[i].error = rlhi_strdup("cannot make a curl handle");
            continue;
        }
        run_one(p->l, curl, &p->reqs[i], &p->res[i]);
    }
    if (curl)
        curl_easy_cleanup(curl);
    return NULL;
}

int rlhi_llm_run(struct rlhi_llm *l, const struct rlhi_llm_request *reqs,
                 size_t n, struct rlhi_llm_result *results)
{
    struct pool p = {l, reqs, results, n, 0, PTHREAD_MUTEX_INITIALIZER};
    pthread_t th[64];
    size_t i, nt = (size_t)l->concurrency < n ? (size_t)l->concurrency : n;
    size_t started = 0;

    if (nt > 64)
        nt = 64;
    /* One request, or one thread: run here. */
    for (i = 1; i < nt; i++) {
        if (pthread_create(&th[started], NULL, worker, &p))
            break;
        started++;
    }
    worker(&p);
    for (i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&p.mu);
    for (i = 0; i < n; i++)
        if (results[i].status < 0)
            return rlhi_err(results[i].status, "request %zu: %s", i,
                            results[i].error ? results[i].error : "failed");
    return 0;
}

/* ---- conveniences ----------------------------------------------------- */

static int first_text(struct rlhi_llm *l, const struct rlhi_llm_request *q,
                      char **text)
{
    struct rlhi_llm_result res;
    int r = rlhi_llm_run(l, q, 1, &res);

    *text = NULL;
    if (!r) {
        *text = rlhi_strdup(res.n_texts ? res.texts[0] : "");
        if (!*text)
            r = rlhi_err(RLHI_ENOMEM, "out of memory");
    }
    rlhi_llm_result_release(&res);
    return r;
}

int rlhi_llm_chat(struct rlhi_llm *l, const struct rlhi_chat_msg *msgs,
                  size_t n, int max_tokens, float temperature, char **text)
{
    struct rlhi_llm_request q;

    rlhi_llm_request_init(&q, RLHI_LLM_CHAT);
    q.messages = msgs;
    q.n_messages = n;
    q.max_tokens = max_tokens;
    q.temperature = temperature;
    return first_text(l, &q, text);
}

int rlhi_llm_complete(struct rlhi_llm *l, const char *prompt, int max_tokens,
                      float temperature, char **text)
{
    struct rlhi_llm_request q;

    rlhi_llm_request_init(&q, RLHI_LLM_COMPLETE);
    q.prompt = prompt;
    q.max_tokens = max_tokens;
    q.temperature = temperature;
    return first_text(l, &q, text);
}

int rlhi_llm_score(struct rlhi_llm *l, const char *prompt,
                   const char *completion, double *logprob, int *n_tokens)
{
    struct rlhi_llm_request q;
    struct rlhi_llm_result res;
    int r;

    rlhi_llm_request_init(&q, RLHI_LLM_SCORE);
    q.prompt = prompt;
    q.completion = completion;
    r = rlhi_llm_run(l, &q, 1, &res);
    if (!r) {
        *logprob = res.logprob;
        if (n_tokens)
            *n_tokens = res.n_tokens;
    }
    rlhi_llm_result_release(&res);
    return r;
}
