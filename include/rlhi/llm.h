/* One way to ask a model for text or a score: the local engine in process,
 * or any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp's server, rlhi
 * serve).
 *
 * Three parts, bottom up:
 *
 *   engine   a model, its tokenizer and chat template, and one thread that
 *            owns them. Requests queue up; the thread advances every active
 *            sequence by one token per rlhi_infer_forward_batch() call, so
 *            concurrent callers share each pass over the weights. A request
 *            with n > 1 prefills its prompt once and copies the KV cache to
 *            the other n - 1 sequences (rlhi_infer_copy).
 *
 *   oai      the OpenAI schema over the engine: a request body for
 *            /v1/completions or /v1/chat/completions goes in, the response
 *            body (or its server-sent events when "stream" is set) comes out.
 *            `rlhi serve` puts HTTP around it; the llm client's local
 *            backend calls it directly, so both speak exactly the same JSON.
 *
 *   llm      the client: chat, completion and scoring requests against
 *            "local:PATH" or an http(s) base URL, run concurrently by a small
 *            thread pool, retried with exponential backoff and jitter on 429,
 *            5xx and connection errors, and cached in a SQLite table
 *            (llm_cache) keyed by SHA-256 of (endpoint, model, body), so that
 *            a rerun makes no request at all.
 *
 * Extensions to the OpenAI schema, accepted by the engine: "ignore_eos"
 * (vLLM's: keep going past the end-of-sequence token) and prompts given as
 * token ids. Sampling: choice i of a request with seed s uses seed s + i,
 * so choice 0 of an n = 3 request equals the single choice of n = 1.
 */
#ifndef RLHI_LLM_H
#define RLHI_LLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"
#include "rlhi/chat.h"
#include "rlhi/model.h"
#include "rlhi/tokenizer.h"

/* ---- engine ----------------------------------------------------------- */

struct rlhi_engine;

struct rlhi_engine_options {
    const char *model_path;     /* llama2.c .bin or Hugging Face dir */
    const char *tokenizer_path; /* NULL: the model directory */
    const char *chat_template;  /* name (rlhi_chat_kind_from_name); NULL:
                                   detect from the model directory, else
                                   the rlhi template */
    const char *model_id;       /* NULL: the last part of model_path */
    int max_batch;              /* sequences per forward pass; 0: 16 */
    int max_prompt_tokens;      /* 0: the model's context length */
    int max_tokens_limit;       /* largest max_tokens accepted; 0: 4096 */
    /* An already loaded model and tokenizer to serve instead of loading
     * model_path (both or neither). Borrowed: they must outlive the
     * engine, which does not free them; model_path then only names the
     * model (its id) and may be NULL when model_id is given. */
    struct rlhi_model *model;
    struct rlhi_tokenizer *tokenizer;
};

/* Loads the model and tokenizer and starts the engine thread. On success
 * *out is a new engine the caller frees with rlhi_engine_close(). Errors are
 * those of the loaders (naming the file), RLHI_EINVAL for bad options,
 * RLHI_ENOMEM, RLHI_EIO when the thread cannot start. */
int rlhi_engine_open(struct rlhi_engine **out,
                     const struct rlhi_engine_options *opt);

/* Stops the engine thread and fails every request in flight or queued
 * ("engine is shutting down"), waking their waiters; later requests are
 * refused. The memory stays, so calls still open can be ended. Idempotent. */
void rlhi_engine_shutdown(struct rlhi_engine *e);

/* Shuts down (as above) and frees everything. Every struct rlhi_oai_call
 * must have been ended first. NULL is ignored. */
void rlhi_engine_close(struct rlhi_engine *e);

/* The model's id as /v1/models reports it. Valid while the engine lives. */
const char *rlhi_engine_model_id(const struct rlhi_engine *e);

struct rlhi_engine_stats {
    int active;          /* sequences being decoded now */
    int queued;          /* requests waiting for their prefill */
    uint64_t requests;   /* requests admitted since start */
    uint64_t tokens;     /* tokens generated since start */
    uint64_t steps;      /* batched forward passes since start */
    uint64_t cancelled;  /* requests cancelled (disconnect, timeout) */
    uint64_t interleaved; /* steps run between two chunks of a prefill */
};
void rlhi_engine_get_stats(struct rlhi_engine *e, struct rlhi_engine_stats *s);

/* ---- oai: the OpenAI schema over the engine --------------------------- */

struct rlhi_oai_call;

/* Parses and checks `body` (`len` bytes of JSON) for `path`
 * ("/v1/completions" or "/v1/chat/completions") and queues its work on the
 * engine. Returns 0 and sets *out (the caller ends it with rlhi_oai_end()),
 * or a negative code when the request is refused: then *http_status is the
 * status to answer (400 bad request, 404 unknown path, 503 shutting down)
 * and `err` holds the JSON error body in OpenAI's shape
 * {"error": {"message", "type", "param", "code"}}. */
int rlhi_oai_start(struct rlhi_engine *e, const char *path, const char *body,
                   size_t len, struct rlhi_oai_call **out, int *http_status,
                   struct rlhi_buf *err);

/* True when the request asked for server-sent events ("stream": true). */
bool rlhi_oai_is_stream(const struct rlhi_oai_call *c);

/* Waits up to `timeout_s` seconds (< 0: no limit) for output and appends
 * it to `out`. Without streaming, the whole response body comes at once
 * when the work is done; with streaming, each wait returns the events that
 * became ready ("data: {...}\n\n"), the last one "data: [DONE]\n\n".
 * *done is set once everything has been appended. Returns 0 (perhaps with
 * nothing appended), 1 when the time ran out first (the call goes on; end
 * it to cancel), RLHI_ENOMEM. The response's HTTP status is
 * rlhi_oai_status() once *done (200, or 500/503 with an error body when
 * the engine failed or is shutting down). */
int rlhi_oai_wait(struct rlhi_oai_call *c, double timeout_s,
                  struct rlhi_buf *out, bool *done);

int rlhi_oai_status(const struct rlhi_oai_call *c);

/* Ends a call: cancels its sequences if they are still running (the
 * engine frees them at its next step) and frees the call. NULL is ignored. */
void rlhi_oai_end(struct rlhi_oai_call *c);

/* Writes {"error": {"message", "type", "param", "code"}} into `out`
 * (cleared first). `param` and `code` may be NULL (JSON null). */
int rlhi_oai_error_json(struct rlhi_buf *out, const char *message,
                        const char *type, const char *param,
                        const char *code);

/* Runs a whole non-streaming call: start, wait up to timeout_s (< 0: no
 * limit), end. *http_status and `out` (cleared first) get the status and
 * body, whatever they are; a timeout gives 504 with an error body. Returns
 * 0 when a status and body were produced, RLHI_ENOMEM otherwise. */
int rlhi_oai_call(struct rlhi_engine *e, const char *path, const char *body,
                  size_t len, double timeout_s, int *http_status,
                  struct rlhi_buf *out);

/* ---- llm: the client -------------------------------------------------- */

struct rlhi_llm;

struct rlhi_llm_options {
    const char *endpoint;   /* "local:PATH", or a base URL such as
                               "http://127.0.0.1:8080/v1" ("/v1" is added
                               when the URL does not end in it) */
    const char *model;      /* "model" sent in requests; NULL: "default"
                               (HTTP) or the engine's id (local) */
    const char *api_key;    /* sent as "Authorization: Bearer KEY"; NULL */
    const char *tokenizer;  /* local: tokenizer path (NULL: model dir) */
    const char *chat_template; /* local: template name (NULL: detect) */
    int concurrency;        /* requests in flight at once; 0: 4 */
    int max_retries;        /* retries after the first try; < 0: 0;
                               default (0 in a zeroed struct) is taken as
                               given, so set it */
    double backoff_base_s;  /* first retry waits about this; 0: 0.5 */
    double backoff_max_s;   /* longest wait between tries; 0: 30 */
    double timeout_s;       /* one try, whole request; 0: 300 */
    const char *cache_path; /* SQLite file for the llm_cache table; NULL:
                               no cache */
};

/* Fills `o` with the defaults above (max_retries 5). */
void rlhi_llm_options_default(struct rlhi_llm_options *o);

/* Opens a client. For "local:PATH" this loads the model (an engine in this
 * process); for a URL it only checks the form (nothing is sent). Opens or
 * creates the cache table when cache_path is set. Errors: RLHI_EINVAL
 * naming a bad option, the engine's, RLHI_EDB naming the cache file. *out
 * is freed with rlhi_llm_close(). */
int rlhi_llm_open(struct rlhi_llm **out, const struct rlhi_llm_options *o);
void rlhi_llm_close(struct rlhi_llm *l);

enum rlhi_llm_kind {
    RLHI_LLM_CHAT = 1,     /* messages -> text (/v1/chat/completions) */
    RLHI_LLM_COMPLETE = 2, /* prompt -> text (/v1/completions) */
    RLHI_LLM_SCORE = 3,    /* prompt + completion -> log-probabilities
                              (/v1/completions with echo, max_tokens 0) */
};

/* One request. Pointers are borrowed for the duration of the call. */
struct rlhi_llm_request {
    enum rlhi_llm_kind kind;
    const struct rlhi_chat_msg *messages; /* chat */
    size_t n_messages;
    const char *prompt;     /* complete, score */
    const char *completion; /* score: the text scored after prompt */
    int max_tokens;         /* chat, complete; 0: the server's default */
    float temperature;      /* < 0: the server's default */
    float top_p;            /* <= 0: the server's default */
    int64_t seed;           /* < 0: none */
    int n;                  /* choices; 0: 1 */
    const char *const *stop; /* n_stop stop strings */
    int n_stop;
};

/* Fills `r` for `kind` with the server defaults (temperature -1, top_p 0,
 * seed -1, n 1). */
void rlhi_llm_request_init(struct rlhi_llm_request *r, enum rlhi_llm_kind k);

struct rlhi_llm_result {
    int status;           /* 0, or the negative code of the failure */
    char *error;          /* the failure's message, else NULL */
    int http_status;      /* last HTTP status (200 for local), 0 if none */
    int attempts;         /* tries made (0 when answered from the cache) */
    bool cached;          /* answered from the cache */
    int n_texts;          /* chat, complete: the choices' texts */
    char **texts;
    char **finish_reasons;
    double logprob;       /* score: sum over the completion's tokens */
    int n_tokens;         /* score: the completion's tokens ... */
    double *token_logprobs; /* ... and their log-probabilities */
    bool boundary_merged; /* score: a token spans prompt and completion
                             (it is counted with the completion) */
    int prompt_tokens, completion_tokens; /* usage */
    char *response;       /* the raw response body */
};

/* Runs `n` requests, up to `concurrency` at a time, and fills results[i]
 * for reqs[i] (each released with rlhi_llm_result_release). Every request
 * gets a result: a failing one has status < 0 and error set, and does not
 * stop the others. Returns 0 when all succeeded, else the code of the
 * first failure (by index) with its message, RLHI_ENOMEM. */
int rlhi_llm_run(struct rlhi_llm *l, const struct rlhi_llm_request *reqs,
                 size_t n, struct rlhi_llm_result *results);

void rlhi_llm_result_release(struct rlhi_llm_result *r);

/* Conveniences for one request. *text (caller frees with rlhi_free) is
 * the first choice. Errors as rlhi_llm_run(). */
int rlhi_llm_chat(struct rlhi_llm *l, const struct rlhi_chat_msg *msgs,
                  size_t n, int max_tokens, float temperature, char **text);
int rlhi_llm_complete(struct rlhi_llm *l, const char *prompt, int max_tokens,
                      float temperature, char **text);
/* Sum of log-probabilities of `completion` after `prompt`; *n_tokens (may
 * be NULL) gets the number of tokens summed. */
int rlhi_llm_score(struct rlhi_llm *l, const char *prompt,
                   const char *completion, double *logprob, int *n_tokens);

struct rlhi_llm_stats {
    uint64_t requests;     /* requests asked for */
    uint64_t http_requests; /* HTTP tries sent (local: engine calls) */
    uint64_t retries;      /* tries after a failed one */
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t failures;     /* requests that failed after all tries */
};
void rlhi_llm_get_stats(struct rlhi_llm *l, struct rlhi_llm_stats *s);

/* The cache key: SHA-256 hex of endpoint, NUL, model, NUL, body. */
void rlhi_llm_cache_key(const char *endpoint, const char *model,
                        const char *body, size_t len, char hex[65]);

#endif
