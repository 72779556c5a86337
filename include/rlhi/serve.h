/* rlhi serve: an OpenAI-compatible HTTP server over the local engine.
 *
 * Endpoints: POST /v1/completions and /v1/chat/completions (the schema of
 * rlhi/llm.h's oai layer: n, seed, stop, logprobs, echo for scoring,
 * stream as server-sent events), GET /v1/models and GET /health.
 *
 * Threads: libmicrohttpd runs one thread per connection; each hands its
 * request to the engine's queue and waits on a condition variable, so all
 * clients share the engine's batched forward passes. A client that closes
 * its connection while waiting (streaming or not) cancels its sequences,
 * which the engine frees at its next step.
 *
 * Limits: request bodies over max_body_bytes get 413; prompts over the
 * prompt limit and max_tokens over its limit get 400 naming the field;
 * malformed JSON gets 400 with jansson's message (line and column); a
 * wrong method gets 405 with Allow; an unknown path 404; with an API key,
 * a request without "Authorization: Bearer KEY" gets 401 (/health needs
 * none). A request still unanswered after timeout_s is cancelled (504, or
 * an error event when streaming). Every error body has OpenAI's shape
 * {"error": {"message", "type", "param", "code"}}.
 */
#ifndef RLHI_SERVE_H
#define RLHI_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"
#include "rlhi/llm.h"

struct rlhi_server;

struct rlhi_serve_options {
    struct rlhi_engine_options engine; /* model, limits, batch size */
    const char *host;        /* address to bind; NULL: 127.0.0.1 */
    int port;                /* 0: any free port (see rlhi_serve_port) */
    const char *api_key;     /* NULL: no authentication */
    double timeout_s;        /* per request; 0: 600 */
    size_t max_body_bytes;   /* 0: 1 MiB */
    int max_connections;     /* 0: 64 */
};

/* Loads the engine's model and starts serving. On success *out is a new
 * server (stop it with rlhi_serve_stop). Errors: the engine's, RLHI_EINVAL
 * for a bad host, RLHI_EIO when the address cannot be bound (naming it). */
int rlhi_serve_start(struct rlhi_server **out,
                     const struct rlhi_serve_options *o);

/* Like rlhi_serve_start() over an engine the caller already has (o->engine
 * is ignored). The engine is borrowed: the caller closes it after
 * rlhi_serve_stop(). */
int rlhi_serve_start_with(struct rlhi_server **out, struct rlhi_engine *e,
                          const struct rlhi_serve_options *o);

/* The port actually bound. */
int rlhi_serve_port(const struct rlhi_server *s);

/* The engine serving the requests. */
struct rlhi_engine *rlhi_serve_engine(struct rlhi_server *s);

/* HTTP requests received since start (every method and path). */
uint64_t rlhi_serve_requests(const struct rlhi_server *s);

/* Stops accepting, fails the requests in flight (their clients get an
 * error) when the server opened the engine (over a borrowed engine they
 * finish instead), waits for the connection threads and frees the server,
 * and the engine when the server opened it. NULL is ignored. */
void rlhi_serve_stop(struct rlhi_server *s);

/* Test hook: the next `n` requests to /v1/ completions endpoints are
 * answered with `status` (e.g. 503) and an error body, without reaching
 * the engine. */
void rlhi__serve_fail_next(struct rlhi_server *s, int n, int status);

/* ---- load test -------------------------------------------------------- */

struct rlhi_bench_serve_options {
    const char *url;     /* base URL of a running server ("http://127.0.0.1:
                            8080"); loopback addresses only */
    const char *api_key; /* NULL: none */
    int clients;         /* concurrent clients */
    int requests;        /* requests in all (stops at this count) */
    double max_seconds;  /* or at this time, whichever comes first */
    int max_tokens;      /* per request (ignore_eos is set, so each request
                            generates exactly this many) */
    const char *prompt;  /* NULL: a short fixed prompt */
};

struct rlhi_bench_serve_result {
    int done;            /* requests answered with 200 */
    int failed;
    double seconds;
    double req_per_s;
    double tok_per_s;    /* completion tokens per second, all clients */
    double latency_mean_s, latency_p50_s, latency_p95_s;
    long long completion_tokens;
};

/* Runs a bounded load test against a running server with `clients`
 * threads posting /v1/completions until `requests` are answered or
 * max_seconds pass. Refuses any host that is not loopback (RLHI_EINVAL).
 * Returns 0 and fills *res (even when some requests failed), or an
 * error. */
int rlhi_bench_serve(const struct rlhi_bench_serve_options *o,
                     struct rlhi_bench_serve_result *res);

#endif
