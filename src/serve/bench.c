/* A bounded load test of an OpenAI-compatible server on this machine:
 * `clients` threads post /v1/completions until a fixed number of requests
 * is answered or a time cap passes, then report requests/s, completion
 * tokens/s and latency. Only loopback addresses are accepted. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rlhi/serve.h"

struct load {
    const struct rlhi_bench_serve_options *o;
    char *url;
    char *body;
    char auth[300];
    pthread_mutex_t mu;
    int next, done, failed;
    long long tokens;
    double t0, *lat;
};

static size_t sink(char *p, size_t sz, size_t n, void *user)
{
    return rlhi_buf_add(user, p, sz * n) ? 0 : sz * n;
}

static void *client(void *arg)
{
    struct load *L = arg;
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    struct rlhi_buf resp = RLHI_BUF_INIT;

    if (!c)
        return NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    if (L->auth[0])
        h = curl_slist_append(h, L->auth);
    curl_easy_setopt(c, CURLOPT_URL, L->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, L->body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                     (long)(L->o->max_seconds * 1000) + 1000);
    for (;;) {
        long status = 0;
        double t;
        CURLcode cr;
        json_t *j;
        long long toks = -1;

        pthread_mutex_lock(&L->mu);
        if (L->next >= L->o->requests ||
            rlhi_time_now() - L->t0 > L->o->max_seconds) {
            pthread_mutex_unlock(&L->mu);
            break;
        }
        L->next++;
        pthread_mutex_unlock(&L->mu);

        rlhi_buf_clear(&resp);
        t = rlhi_time_now();
        cr = curl_easy_perform(c);
        t = rlhi_time_now() - t;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (cr == CURLE_OK && status == 200 && resp.buf) {
            j = json_loads(resp.buf, 0, NULL);
            toks = json_integer_value(json_object_get(
                json_object_get(j, "usage"), "completion_tokens"));
            json_decref(j);
        }
        pthread_mutex_lock(&L->mu);
        if (toks >= 0) {
            L->lat[L->done++] = t;
            L->tokens += toks;
        } else {
            L->failed++;
        }
        pthread_mutex_unlock(&L->mu);
    }
    rlhi_buf_release(&resp);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Only this machine may be loaded: 127.0.0.0/8, localhost, ::1. */
static int check_loopback(const char *url)
{
    CURLU *u = curl_url();
    char *host = NULL;
    int ok = 0;

    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        ok = !strncmp(host, "127.", 4) || !strcmp(host, "localhost") ||
             !strcmp(host, "[::1]");
    curl_free(host);
    curl_url_cleanup(u);
    return ok ? 0 : rlhi_err(RLHI_EINVAL, "bench serve: '%s' is not a "
                             "loopback address; only this machine may be "
                             "loaded", url);
}

int rlhi_bench_serve(const struct rlhi_bench_serve_options *o,
                     struct rlhi_bench_serve_result *res)
{
    struct load L;
    pthread_t *th = NULL;
    json_t *b;
    int i, r = 0, started = 0;
    size_t ul;

    memset(res, 0, sizeof *res);
    memset(&L, 0, sizeof L);
    if (!o->url || o->clients < 1 || o->requests < 1 || o->max_tokens < 1 ||
        o->max_seconds <= 0)
        return rlhi_err(RLHI_EINVAL, "bench serve: url, clients, requests, "
                        "max_tokens and max_seconds must be set");
    r = check_loopback(o->url);
    if (r)
        return r;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    L.o = o;
    ul = strlen(o->url);
    L.url = rlhi_malloc(ul + 32);
    b = json_pack("{s:s,s:s,s:i,s:f,s:b}", "model", "bench", "prompt",
                  o->prompt ? o->prompt : "Once upon a time, there was a",
                  "max_tokens", o->max_tokens, "temperature", 1.0,
                  "ignore_eos", 1);
    L.body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    L.lat = rlhi_calloc((size_t)o->requests, sizeof *L.lat);
    th = rlhi_calloc((size_t)o->clients, sizeof *th);
    if (!L.url || !L.body || !L.lat || !th) {
        r = rlhi_err(RLHI_ENOMEM, "out of memory");
        goto out;
    }
    while (ul && o->url[ul - 1] == '/')
        ul--;
    snprintf(L.url, ul + 32, "%.*s%s", (int)ul, o->url,
             ul >= 3 && !strncmp(o->url + ul - 3, "/v1", 3)
                 ? "/completions" : "/v1/completions");
    if (o->api_key)
        snprintf(L.auth, sizeof L.auth, "Authorization: Bearer %s",
                 o->api_key);
    pthread_mutex_init(&L.mu, NULL);
    L.t0 = rlhi_time_now();
    for (i = 0; i < o->clients; i++)
        if (!pthread_create(&th[i], NULL, client, &L))
            started++;
        else
            break;
    for (i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    res->seconds = rlhi_time_now() - L.t0;
    pthread_mutex_destroy(&L.mu);
    if (!started) {
        r = rlhi_err_errno(RLHI_EIO, "bench serve: cannot start threads");
        goto out;
    }

    res->done = L.done;
    res->failed = L.failed;
    res->completion_tokens = L.tokens;
    res->req_per_s = L.done / res->seconds;
    res->tok_per_s = (double)L.tokens / res->seconds;
    if (L.done) {
        double s = 0;

        qsort(L.lat, (size_t)L.done, sizeof *L.lat, cmp_double);
        for (i = 0; i < L.done; i++)
            s += L.lat[i];
        res->latency_mean_s = s / L.done;
        res->latency_p50_s = L.lat[(L.done - 1) / 2];
        res->latency_p95_s = L.lat[(int)((L.done - 1) * 0.95)];
    }
out:
    free(L.body);
    rlhi_free(L.url);
    rlhi_free(L.lat);
    rlhi_free(th);
    return r;
}
