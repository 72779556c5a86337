/* Engine internals shared by engine.c (the decoding thread) and oai.c (the
 * OpenAI schema around it).
 *
 * A job is one prompt with n choices. The engine thread prefills the
 * prompt once, copies the KV cache to the other choices, and appends each
 * sampled token to its choice: the token id, its log-probability under the
 * model (raw logits, temperature 1, as OpenAI reports them), the top-k
 * alternatives when asked, and its text. Every field below "state" is read
 * and written under the engine's mutex; each change bumps job->version and
 * signals job->cond, which the caller waiting on the job owns.
 */
#ifndef RLHI_LLM_ENGINE_INTERNAL_H
#define RLHI_LLM_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "rlhi/llm.h"
#include "rlhi/sampler.h"

/* OpenAI caps top_logprobs at 20 (chat) and logprobs at 5 (completions);
 * 20 bounds both and the per-token storage. */
#define RLHI__MAX_TOP 20

enum rlhi__finish {
    RLHI__RUNNING = 0,
    RLHI__STOP = 1,   /* end of sequence or a stop string */
    RLHI__LENGTH = 2, /* max_tokens or the context is full */
    RLHI__FAILED = 3, /* engine error or cancelled */
};

struct rlhi__top {
    int32_t id;
    float logprob;
};

struct rlhi__tok {
    int32_t id;
    float logprob;          /* NAN for the first prompt token */
    int ntop;
    struct rlhi__top *top;  /* ntop entries, most probable first; owned */
    size_t text_start;      /* bytes into the choice's text */
    size_t text_end;
};

struct rlhi__choice {
    struct rlhi_buf text;   /* everything generated (before stop cuts) */
    size_t final_len;       /* when finished: the length returned */
    struct rlhi__tok *toks;
    int ntoks, cap;
    enum rlhi__finish finish;
};

struct rlhi__job {
    /* request, fixed before it is queued */
    int32_t *prompt;
    int nprompt;
    int max_tokens;
    struct rlhi_sampler_params sp; /* seed of choice 0; choice i: + i */
    char **stops;
    int nstops;
    int n;
    int top_k;        /* -1: no log-probabilities; else 0..RLHI__MAX_TOP */
    bool echo_lp;     /* log-probabilities of the prompt's tokens */
    bool ignore_eos;
    bool chat;        /* also stop on the template's end-of-turn */
    bool wake_each;   /* signal the waiter on every token (streaming);
                         otherwise only when the job is done, which
                         saves a context switch per token */

    /* state, under the engine mutex */
    int refs;                   /* the engine's and the caller's */
    bool queued, cancel, done;
    int error;                  /* 0 or the code that failed it */
    char *errmsg;
    struct rlhi__choice *ch;    /* n */
    struct rlhi__tok *ptoks;    /* echo_lp: nprompt entries once filled */
    int pending;                /* choices still running */
    uint64_t version;
    pthread_cond_t *cond;       /* signalled on every change; may be NULL */
    struct rlhi__job *next;     /* queue link */
};

/* Makes a job for `n` choices with refs = 1 (the caller's). The caller
 * fills the request fields, then rlhi__engine_submit(). NULL on no memory. */
struct rlhi__job *rlhi__job_new(int n);

/* Queues `j` (takes a second reference for the engine). 0, or
 * RLHI_EINVAL ("engine is shutting down") when the engine is stopping. */
int rlhi__engine_submit(struct rlhi_engine *e, struct rlhi__job *j);

/* Cancels `j` if it is still running and drops the caller's reference. */
void rlhi__job_release(struct rlhi_engine *e, struct rlhi__job *j);

/* The engine's lock, for readers of job state. */
void rlhi__engine_lock(struct rlhi_engine *e);
void rlhi__engine_unlock(struct rlhi_engine *e);
pthread_mutex_t *rlhi__engine_mutex(struct rlhi_engine *e);

/* Engine facts the schema layer needs. */
struct rlhi__engine_info {
    const struct rlhi_tokenizer *tok;
    enum rlhi_chat_kind chat;
    const char *eot_str;  /* the template's end-of-turn text */
    int32_t eot_id;       /* its token id, -1 when it is not one token */
    int bos, eos;         /* -1 when none */
    int ctx;              /* context length */
    int vocab;            /* model vocabulary */
    int max_batch, max_prompt, max_tokens_limit;
};
const struct rlhi__engine_info *rlhi__engine_info(const struct rlhi_engine *e);

/* A fresh seed for a request that gave none. */
uint64_t rlhi__engine_next_seed(struct rlhi_engine *e);

/* Bytes of choice `c` that can be shown now: all of them once finished;
 * while running, the text less any tail that could still become a stop
 * string and less an incomplete UTF-8 character. Under the lock. */
size_t rlhi__choice_ready(const struct rlhi__job *j,
                          const struct rlhi__choice *c);

#endif
