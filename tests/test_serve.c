/* Tests for rlhi serve: a real server on an ephemeral loopback port over
 * the real stories260K model, driven with libcurl. Generated text is
 * checked against the library's own generation (rlhi_generate) and echo
 * log-probabilities against its scoring (rlhi_score). */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <unistd.h>

#include "check.h"
#include "rlhi/generate.h"
#include "rlhi/serve.h"

static int port;

struct resp {
    long status;
    struct rlhi_buf body;
    struct rlhi_buf headers;
    int abort_after; /* > 0: fail the transfer after this many writes */
    int writes;
};

static size_t on_body(char *p, size_t sz, size_t n, void *user)
{
    struct resp *r = user;

    r->writes++;
    if (r->abort_after > 0 && r->writes > r->abort_after)
        return 0;
    rlhi_buf_add(&r->body, p, sz * n);
    return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *user)
{
    rlhi_buf_add(&((struct resp *)user)->headers, p, sz * n);
    return sz * n;
}

/* Sends one request to the server under test; body NULL means no body. */
static CURLcode http(struct resp *r, const char *method, const char *path,
                     const char *body, const char *auth)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char url[256];
    CURLcode cr;

    r->status = 0;
    rlhi_buf_clear(&r->body);
    rlhi_buf_clear(&r->headers);
    r->writes = 0;
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    h = curl_slist_append(h, "Content-Type: application/json");
    if (auth)
        h = curl_slist_append(h, auth);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    cr = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r->body.buf)
        rlhi_buf_adds(&r->body, "");
    return cr;
}

static json_t *post_json(const char *path, const char *body, long *status)
{
    struct resp r = {0};
    json_t *j;

    http(&r, "POST", path, body, NULL);
    *status = r.status;
    j = json_loads(r.body.buf, 0, NULL);
    if (!j)
        fprintf(stderr, "not JSON (%ld): %s\n", r.status, r.body.buf);
    rlhi_buf_release(&r.body);
    rlhi_buf_release(&r.headers);
    return j;
}

static const char *choice_text(json_t *j, size_t i)
{
    json_t *c = json_array_get(json_object_get(j, "choices"), i);
    json_t *t = json_object_get(c, "text");

    if (!t)
        t = json_object_get(json_object_get(c, "message"), "content");
    return json_string_value(t) ? json_string_value(t) : "(none)";
}

static const char *err_field(json_t *j, const char *k)
{
    const char *s =
        json_string_value(json_object_get(json_object_get(j, "error"), k));

    return s ? s : "(none)";
}

/* Joins the text of a server-sent event stream; counts events; checks it
 * ends with [DONE]. */
static int sse_join(const char *s, bool chat, struct rlhi_buf *text,
                    bool *done, const char **finish)
{
    int n = 0;
    static char fin[32];

    *done = false;
    fin[0] = 0;
    *finish = fin;
    while ((s = strstr(s, "data: "))) {
        const char *end = strstr(s, "\n\n");
        json_t *j, *c;
        const char *t;

        s += 6;
        if (!end)
            break;
        if (!strncmp(s, "[DONE]", 6)) {
            *done = true;
            break;
        }
        j = json_loadb(s, (size_t)(end - s), 0, NULL);
        c = json_array_get(json_object_get(j, "choices"), 0);
        t = json_string_value(chat ? json_object_get(
                                         json_object_get(c, "delta"),
                                         "content")
                                   : json_object_get(c, "text"));
        if (t)
            rlhi_buf_adds(text, t);
        if (json_is_string(json_object_get(c, "finish_reason")))
            snprintf(fin, sizeof fin, "%s",
                     json_string_value(json_object_get(c, "finish_reason")));
        json_decref(j);
        n++;
        s = end;
    }
    return n;
}

/* The library's greedy continuation of `prompt`, as the server encodes
 * it. */
static char *lib_greedy(struct rlhi_model *m, struct rlhi_tokenizer *tok,
                        const char *prompt, int max_tokens)
{
    struct rlhi_gen_opts o;
    struct rlhi_gen_result res = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    char *out = NULL;

    if (rlhi_tokenizer_encode(tok, prompt, strlen(prompt),
                              RLHI_ENC_BOS | RLHI_ENC_SPECIAL, &ids, &n))
        return NULL;
    rlhi_gen_opts_default(&o);
    o.sampler.temperature = 0;
    o.max_tokens = max_tokens;
    if (!rlhi_generate(m, tok, ids, (int)n, &o, &res))
        out = rlhi_strndup(res.text, res.text_len);
    rlhi_gen_result_release(&res);
    rlhi_free(ids);
    return out;
}

#define N_CLIENTS 8

struct client {
    char body[256];
    char *text;
    long status;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    json_t *j = post_json("/v1/completions", c->body, &c->status);

    c->text = rlhi_strdup(choice_text(j, 0));
    json_decref(j);
    return NULL;
}

struct stream_arg {
    struct resp r;
    const char *body; /* NULL: 16 choices of 390 tokens */
};

#define GREEDY_200 "{\"prompt\":\"Once\",\"max_tokens\":200," \
                   "\"temperature\":0,\"ignore_eos\":true"

static void *stream_main(void *arg)
{
    struct stream_arg *a = arg;

    http(&a->r, "POST", "/v1/completions",
         a->body ? a->body
                 : "{\"prompt\":\"x\",\"max_tokens\":390,\"n\":16,"
                   "\"ignore_eos\":true,\"stream\":true}", NULL);
    return NULL;
}

int main(void)
{
    const char *mp = check_data("models/llama2c-stories260K/stories260K.bin");
    char model_path[4096], tok_path[4096];
    struct rlhi_serve_options so;
    struct rlhi_server *srv = NULL;
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    const char *tp;

    if (!mp) {
        SKIP("../shared/data/models/llama2c-stories260K is absent");
        return check_summary();
    }
    snprintf(model_path, sizeof model_path, "%s", mp);
    tp = check_data("models/llama2c-stories260K/tok512.bin");
    snprintf(tok_path, sizeof tok_path, "%s", tp ? tp : "");
    curl_global_init(CURL_GLOBAL_DEFAULT);

    memset(&so, 0, sizeof so);
    so.engine.model_path = model_path;
    so.engine.tokenizer_path = tok_path;
    so.engine.max_batch = 16;
    so.engine.max_prompt_tokens = 128;
    so.engine.max_tokens_limit = 400;
    so.max_body_bytes = 8192;
    so.port = 0;
    CHECK_OK(rlhi_serve_start(&srv, &so));
    CHECK_OK(rlhi_generate_load(model_path, tok_path, &m, &tok));
    if (!srv || !m)
        return check_summary();
    port = rlhi_serve_port(srv);
    CHECK(port > 0);

    TEST("health and models") {
        struct resp r = {0};
        json_t *j;

        http(&r, "GET", "/health", NULL, NULL);
        CHECK_INT_EQ(r.status, 200);
        CHECK_STR_EQ(r.body.buf, "{\"status\":\"ok\"}");
        http(&r, "GET", "/v1/models", NULL, NULL);
        CHECK_INT_EQ(r.status, 200);
        j = json_loads(r.body.buf, 0, NULL);
        CHECK_STR_EQ(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "data"), 0), "id")),
                     "stories260K.bin");
        json_decref(j);
        rlhi_buf_release(&r.body);
        rlhi_buf_release(&r.headers);
    }

    TEST("greedy completion equals the library's generation") {
        long st;
        json_t *j = post_json("/v1/completions",
                              "{\"model\":\"x\",\"prompt\":\"Once upon a "
                              "time\",\"max_tokens\":40,\"temperature\":0}",
                              &st);
        char *ref = lib_greedy(m, tok, "Once upon a time", 40);
        json_t *u = json_object_get(j, "usage");

        CHECK_INT_EQ(st, 200);
        CHECK_STR_EQ(choice_text(j, 0), ref);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "object")),
                     "text_completion");
        CHECK_INT_EQ(json_integer_value(json_object_get(u, "prompt_tokens")),
                     5); /* BOS, Once, upon, a, time */
        CHECK(json_integer_value(json_object_get(u, "completion_tokens")) >
              0);
        rlhi_free(ref);
        json_decref(j);
    }

    TEST("completion stream joins to the non-stream text, stop strings") {
#define B "{\"prompt\":\"Once upon a time\",\"max_tokens\":60," \
          "\"temperature\":0,\"stop\":[\"Lily\", \"xyz\"]%s}"
        char body[256];
        struct resp r = {0};
        struct rlhi_buf text = RLHI_BUF_INIT;
        long st;
        json_t *j;
        bool done;
        const char *fin;
        int nev;

        snprintf(body, sizeof body, B, "");
        j = post_json("/v1/completions", body, &st);
        CHECK_INT_EQ(st, 200);
        snprintf(body, sizeof body, B, ",\"stream\":true");
        http(&r, "POST", "/v1/completions", body, NULL);
        CHECK_INT_EQ(r.status, 200);
        CHECK(strstr(r.headers.buf, "text/event-stream") != NULL);
        nev = sse_join(r.body.buf, false, &text, &done, &fin);
        CHECK(nev >= 1); /* events coalesce when the engine is ahead */
        CHECK(done);
        CHECK_STR_EQ(text.buf ? text.buf : "", choice_text(j, 0));
        /* The greedy story names Lily: the stop cuts just before it. */
        CHECK_STR_EQ(choice_text(j, 0), ", there was a little girl named ");
        CHECK_STR_EQ(fin, "stop");
        CHECK_STR_EQ(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "choices"), 0),
                         "finish_reason")), "stop");
        json_decref(j);
        rlhi_buf_release(&text);
        rlhi_buf_release(&r.body);
        rlhi_buf_release(&r.headers);
#undef B
    }

    TEST("chat completion, stream and non-stream agree") {
#define B "{\"messages\":[{\"role\":\"system\",\"content\":" \
          "\"Tell stories.\"},{\"role\":\"user\",\"content\":" \
          "\"A story about a cat\"}],\"max_tokens\":30," \
          "\"temperature\":0%s}"
        char body[512];
        struct resp r = {0};
        struct rlhi_buf text = RLHI_BUF_INIT;
        long st;
        json_t *j, *msg;
        bool done;
        const char *fin;

        snprintf(body, sizeof body, B, "");
        j = post_json("/v1/chat/completions", body, &st);
        CHECK_INT_EQ(st, 200);
        CHECK_STR_EQ(json_string_value(json_object_get(j, "object")),
                     "chat.completion");
        msg = json_object_get(json_array_get(json_object_get(j, "choices"),
                                             0), "message");
        CHECK_STR_EQ(json_string_value(json_object_get(msg, "role")),
                     "assistant");
        CHECK(strlen(choice_text(j, 0)) > 0);
        snprintf(body, sizeof body, B, ",\"stream\":true");
        http(&r, "POST", "/v1/chat/completions", body, NULL);
        CHECK_INT_EQ(r.status, 200);
        CHECK(strstr(r.body.buf, "\"role\":\"assistant\"") != NULL);
        CHECK(strstr(r.body.buf, "chat.completion.chunk") != NULL);
        sse_join(r.body.buf, true, &text, &done, &fin);
        CHECK(done);
        CHECK_STR_EQ(text.buf ? text.buf : "", choice_text(j, 0));
        json_decref(j);
        rlhi_buf_release(&text);
        rlhi_buf_release(&r.body);
        rlhi_buf_release(&r.headers);
#undef B
    }

    TEST("n=3 with a seed: shared prefill, each choice = its own seed") {
        long st;
        json_t *a = post_json("/v1/completions",
                              "{\"prompt\":\"The dog\",\"max_tokens\":24,"
                              "\"temperature\":1,\"n\":3,\"seed\":42}", &st);
        json_t *b = post_json("/v1/completions",
                              "{\"prompt\":\"The dog\",\"max_tokens\":24,"
                              "\"temperature\":1,\"n\":3,\"seed\":42}", &st);
        json_t *s42 = post_json("/v1/completions",
                                "{\"prompt\":\"The dog\",\"max_tokens\":24,"
                                "\"temperature\":1,\"seed\":42}", &st);
        json_t *s43 = post_json("/v1/completions",
                                "{\"prompt\":\"The dog\",\"max_tokens\":24,"
                                "\"temperature\":1,\"seed\":43}", &st);
        int i, distinct;

        CHECK_INT_EQ(json_array_size(json_object_get(a, "choices")), 3);
        for (i = 0; i < 3; i++) {
            CHECK_STR_EQ(choice_text(a, (size_t)i), choice_text(b, (size_t)i));
            CHECK_INT_EQ(json_integer_value(json_object_get(
                             json_array_get(json_object_get(a, "choices"),
                                            (size_t)i), "index")), i);
        }
        CHECK_STR_EQ(choice_text(a, 0), choice_text(s42, 0));
        CHECK_STR_EQ(choice_text(a, 1), choice_text(s43, 0));
        distinct = strcmp(choice_text(a, 0), choice_text(a, 1)) != 0 ||
                   strcmp(choice_text(a, 1), choice_text(a, 2)) != 0;
        CHECK_MSG(distinct, "the three samples are identical");
        /* usage counts the prompt once */
        CHECK_INT_EQ(json_integer_value(json_object_get(
                         json_object_get(a, "usage"), "prompt_tokens")),
                     json_integer_value(json_object_get(
                         json_object_get(s42, "usage"), "prompt_tokens")));
        CHECK_INT_EQ(json_integer_value(json_object_get(
                         json_object_get(a, "usage"), "completion_tokens")),
                     72);
        json_decref(a);
        json_decref(b);
        json_decref(s42);
        json_decref(s43);
    }

    TEST("echo + logprobs scores the prompt as rlhi_score does") {
        const char *text = "Once upon a time, there was a big red ball.";
        long st;
        char body[256];
        json_t *j, *lp, *tl, *top, *off;
        int32_t *ids = NULL;
        size_t n = 0, i;
        float *ref = NULL;
        double sum = 0, got = 0;

        snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"max_tokens\":0,"
                 "\"echo\":true,\"logprobs\":3}", text);
        j = post_json("/v1/completions", body, &st);
        CHECK_INT_EQ(st, 200);
        CHECK_STR_EQ(choice_text(j, 0), text);
        lp = json_object_get(json_array_get(json_object_get(j, "choices"), 0),
                             "logprobs");
        tl = json_object_get(lp, "token_logprobs");
        top = json_object_get(lp, "top_logprobs");
        off = json_object_get(lp, "text_offset");
        CHECK_OK(rlhi_tokenizer_encode(tok, text, strlen(text),
                                       RLHI_ENC_BOS | RLHI_ENC_SPECIAL, &ids,
                                       &n));
        CHECK_INT_EQ(json_array_size(tl), n);
        CHECK(json_is_null(json_array_get(tl, 0)));
        CHECK(json_is_null(json_array_get(top, 0)));
        ref = rlhi_calloc(n, sizeof *ref);
        CHECK_OK(rlhi_score(m, ids, 1, ids + 1, (int)n - 1, ref, &sum));
        for (i = 1; i < n && i < json_array_size(tl); i++) {
            double v = json_number_value(json_array_get(tl, i));

            /* both are float log-softmax of the same logits in double:
             * equal to float rounding */
            CHECK_NEAR(v, ref[i - 1], 1e-5, 1e-5);
            got += v;
            CHECK_INT_EQ(json_object_size(json_array_get(top, i)), 3);
        }
        CHECK_NEAR(got, sum, 1e-4, 1e-5);
        /* "Once" starts the text, " upon" follows it */
        CHECK_INT_EQ(json_integer_value(json_array_get(off, 1)), 0);
        CHECK_INT_EQ(json_integer_value(json_array_get(off, 2)), 4);
        CHECK_INT_EQ(json_integer_value(json_object_get(
                         json_object_get(j, "usage"), "completion_tokens")),
                     0);
        rlhi_free(ref);
        rlhi_free(ids);
        json_decref(j);
    }

    TEST("echo of a prompt longer than one prefill chunk (64 tokens)") {
        const char *unit = "The cat sat on the mat and looked at the sun. ";
        char text[1024] = "", body[1200];
        long st;
        json_t *j, *tl;
        int32_t *ids = NULL;
        size_t n = 0, i;
        float *ref = NULL;
        double sum = 0, got = 0;

        for (i = 0; i < 5; i++)
            strcat(text, unit);
        CHECK_OK(rlhi_tokenizer_encode(tok, text, strlen(text),
                                       RLHI_ENC_BOS | RLHI_ENC_SPECIAL, &ids,
                                       &n));
        CHECK_MSG(n > 64 && n <= 128, "%zu tokens", n);
        snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"max_tokens\":0,"
                 "\"echo\":true,\"logprobs\":0}", text);
        j = post_json("/v1/completions", body, &st);
        CHECK_INT_EQ(st, 200);
        tl = json_object_get(json_object_get(json_array_get(
                 json_object_get(j, "choices"), 0), "logprobs"),
                             "token_logprobs");
        CHECK_INT_EQ(json_array_size(tl), n);
        ref = rlhi_calloc(n, sizeof *ref);
        CHECK_OK(rlhi_score(m, ids, 1, ids + 1, (int)n - 1, ref, &sum));
        for (i = 1; i < n && i < json_array_size(tl); i++) {
            /* chunk boundaries may round differently: 1e-4 */
            CHECK_NEAR(json_number_value(json_array_get(tl, i)), ref[i - 1],
                       1e-4, 1e-4);
            got += json_number_value(json_array_get(tl, i));
        }
        CHECK_NEAR(got, sum, 1e-3, 1e-5);

        /* Again while another client is decoding: its steps run between
         * the chunks, and neither answer changes. */
        {
            struct stream_arg sa = {{0}, NULL};
            struct rlhi_buf t1 = RLHI_BUF_INIT;
            pthread_t th;
            long st2;
            json_t *j2, *alone;
            bool done;
            const char *fin;

            alone = post_json("/v1/completions", GREEDY_200 "}", &st2);
            sa.body = GREEDY_200 ",\"stream\":true}";
            pthread_create(&th, NULL, stream_main, &sa);
            usleep(2000);
            j2 = post_json("/v1/completions", body, &st2);
            pthread_join(th, NULL);
            if (getenv("RLHI_TEST_VERBOSE")) {
                struct rlhi_engine_stats es;

                rlhi_engine_get_stats(rlhi_serve_engine(srv), &es);
                fprintf(stderr, "steps between prefill chunks: %llu\n",
                        (unsigned long long)es.interleaved);
            }
            CHECK_INT_EQ(st2, 200);
            CHECK(json_equal(json_object_get(json_object_get(json_array_get(
                                 json_object_get(j2, "choices"), 0),
                                 "logprobs"), "token_logprobs"), tl));
            sse_join(sa.r.body.buf, false, &t1, &done, &fin);
            CHECK(done);
            CHECK_STR_EQ(t1.buf ? t1.buf : "", choice_text(alone, 0));
            json_decref(j2);
            json_decref(alone);
            rlhi_buf_release(&t1);
            rlhi_buf_release(&sa.r.body);
            rlhi_buf_release(&sa.r.headers);
        }
        rlhi_free(ref);
        rlhi_free(ids);
        json_decref(j);
    }

    TEST("chat logprobs with top_logprobs") {
        long st;
        json_t *j = post_json(
            "/v1/chat/completions",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
            "\"max_tokens\":5,\"temperature\":0,\"logprobs\":true,"
            "\"top_logprobs\":2}", &st);
        json_t *c = json_object_get(json_object_get(json_array_get(
                        json_object_get(j, "choices"), 0), "logprobs"),
                                    "content");
        json_t *e0 = json_array_get(c, 0);
        json_t *t0 = json_array_get(json_object_get(e0, "top_logprobs"), 0);

        CHECK_INT_EQ(st, 200);
        CHECK_INT_EQ(json_array_size(c), 5);
        CHECK_INT_EQ(json_array_size(json_object_get(e0, "top_logprobs")), 2);
        /* greedy: the chosen token is the most probable one */
        CHECK_STR_EQ(json_string_value(json_object_get(e0, "token")),
                     json_string_value(json_object_get(t0, "token")));
        CHECK(json_number_value(json_object_get(e0, "logprob")) <= 0);
        json_decref(j);
    }

    TEST("bad requests: JSON, types, limits, method, path, size") {
        struct resp r = {0};
        long st;
        json_t *j;
        char *big;

        j = post_json("/v1/completions", "{\"prompt\": \"x\",\n \"n\": }",
                      &st);
        CHECK_INT_EQ(st, 400);
        CHECK(strstr(err_field(j, "message"), "line 2, column") != NULL);
        CHECK_STR_EQ(err_field(j, "type"), "invalid_request_error");
        json_decref(j);

        j = post_json("/v1/completions", "[1, 2]", &st);
        CHECK_INT_EQ(st, 400);
        json_decref(j);

        j = post_json("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":"
                      "\"ten\",\"unknown_field\":1}", &st);
        CHECK_INT_EQ(st, 400);
        CHECK_STR_EQ(err_field(j, "param"), "max_tokens");
        json_decref(j);

        j = post_json("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":"
                      "401}", &st);
        CHECK_INT_EQ(st, 400);
        CHECK_STR_EQ(err_field(j, "param"), "max_tokens");
        CHECK(strstr(err_field(j, "message"), "400") != NULL);
        json_decref(j);

        j = post_json("/v1/completions", "{\"prompt\":\"x\",\"temperature\":"
                      "true}", &st);
        CHECK_INT_EQ(st, 400);
        CHECK_STR_EQ(err_field(j, "param"), "temperature");
        json_decref(j);

        j = post_json("/v1/chat/completions", "{\"messages\":\"hi\"}", &st);
        CHECK_INT_EQ(st, 400);
        CHECK_STR_EQ(err_field(j, "param"), "messages");
        json_decref(j);

        /* unknown fields are ignored */
        j = post_json("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2,"
                      "\"frequency_penalty\":0,\"user\":\"u\"}", &st);
        CHECK_INT_EQ(st, 200);
        json_decref(j);

        /* a prompt over max_prompt_tokens (128): "a a a ..." */
        big = rlhi_malloc(8000);
        {
            int i;

            strcpy(big, "{\"prompt\":\"");
            for (i = 0; i < 300; i++)
                strcat(big, "a ");
            strcat(big, "\"}");
        }
        j = post_json("/v1/completions", big, &st);
        CHECK_INT_EQ(st, 400);
        CHECK_STR_EQ(err_field(j, "param"), "prompt");
        CHECK_STR_EQ(err_field(j, "code"), "context_length_exceeded");
        json_decref(j);

        /* a body over max_body_bytes (8192) */
        big = rlhi_realloc(big, 20000);
        memset(big, ' ', 19999);
        big[19999] = 0;
        big[0] = '{';
        big[19998] = '}';
        http(&r, "POST", "/v1/completions", big, NULL);
        CHECK_INT_EQ(r.status, 413);
        CHECK(strstr(r.body.buf, "\"error\"") != NULL);
        rlhi_free(big);

        http(&r, "GET", "/v1/completions", NULL, NULL);
        CHECK_INT_EQ(r.status, 405);
        CHECK(strstr(r.headers.buf, "Allow: POST") != NULL);
        http(&r, "DELETE", "/v1/models", NULL, NULL);
        CHECK_INT_EQ(r.status, 405);
        http(&r, "GET", "/v2/nothing", NULL, NULL);
        CHECK_INT_EQ(r.status, 404);
        CHECK(strstr(r.body.buf, "\"error\"") != NULL);
        rlhi_buf_release(&r.body);
        rlhi_buf_release(&r.headers);
    }

    TEST("concurrent clients are batched and answered correctly") {
        static const char *prompts[N_CLIENTS] = {
            "Once upon a time", "The cat", "Tom and Sue", "One day",
            "Lily saw a", "The big dog", "A little bird", "Mom said",
        };
        struct client cl[N_CLIENTS];
        pthread_t th[N_CLIENTS];
        struct rlhi_engine_stats s0, s1;
        int i;

        rlhi_engine_get_stats(rlhi_serve_engine(srv), &s0);
        for (i = 0; i < N_CLIENTS; i++) {
            snprintf(cl[i].body, sizeof cl[i].body,
                     "{\"prompt\":\"%s\",\"max_tokens\":48,\"temperature\":0,"
                     "\"ignore_eos\":true}", prompts[i]);
            cl[i].text = NULL;
            pthread_create(&th[i], NULL, client_main, &cl[i]);
        }
        for (i = 0; i < N_CLIENTS; i++)
            pthread_join(th[i], NULL);
        rlhi_engine_get_stats(rlhi_serve_engine(srv), &s1);
        for (i = 0; i < N_CLIENTS; i++) {
            char *ref = lib_greedy(m, tok, prompts[i], 48);

            CHECK_INT_EQ(cl[i].status, 200);
            /* the reference stops at EOS; the server ignores it */
            CHECK_MSG(ref && !strncmp(cl[i].text, ref, strlen(ref)),
                      "client %d: '%s' vs library '%s'", i, cl[i].text,
                      ref ? ref : "(null)");
            rlhi_free(ref);
            rlhi_free(cl[i].text);
        }
        /* One at a time would take 8 x 47 = 376 decode steps; batched
         * clients share them. */
        CHECK_MSG(s1.steps - s0.steps < 300, "%llu steps for 8 clients",
                  (unsigned long long)(s1.steps - s0.steps));
    }

    TEST("a client that disconnects mid-stream is cancelled") {
        struct resp r = {0};
        struct rlhi_engine_stats s0, s1;
        double t0;
        long st;
        json_t *j;

        rlhi_engine_get_stats(rlhi_serve_engine(srv), &s0);
        r.abort_after = 2;
        http(&r, "POST", "/v1/completions",
             "{\"prompt\":\"Once\",\"max_tokens\":400,\"temperature\":1,"
             "\"ignore_eos\":true,\"stream\":true}", NULL);
        r.abort_after = 0;
        t0 = rlhi_time_now();
        do {
            usleep(20000);
            rlhi_engine_get_stats(rlhi_serve_engine(srv), &s1);
        } while ((s1.active > 0 || s1.cancelled == s0.cancelled) &&
                 rlhi_time_now() - t0 < 10);
        CHECK_INT_EQ(s1.active, 0);
        CHECK_INT_EQ(s1.cancelled, s0.cancelled + 1);
        CHECK_MSG(s1.tokens - s0.tokens < 400, "%llu tokens generated",
                  (unsigned long long)(s1.tokens - s0.tokens));
        /* and the server goes on serving */
        j = post_json("/v1/completions", "{\"prompt\":\"Once\","
                      "\"max_tokens\":4}", &st);
        CHECK_INT_EQ(st, 200);
        json_decref(j);
        rlhi_buf_release(&r.body);
        rlhi_buf_release(&r.headers);
    }

    TEST("prompt lists and token-id prompts") {
        long st;
        json_t *a = post_json("/v1/completions",
                              "{\"prompt\":[\"The cat\",\"One day\"],"
                              "\"max_tokens\":6,\"temperature\":0,\"n\":2}",
                              &st);
        json_t *b = post_json("/v1/completions",
                              "{\"prompt\":\"One day\",\"max_tokens\":6,"
                              "\"temperature\":0}", &st);
        json_t *c = post_json("/v1/completions",
                              "{\"prompt\":[[1,403],[1,403]],\"max_tokens\":3,"
                              "\"temperature\":0,\"echo\":true}", &st);
        int32_t *ids = NULL;
        size_t n = 0;

        CHECK_INT_EQ(json_array_size(json_object_get(a, "choices")), 4);
        /* choice index = prompt * n + choice */
        CHECK_STR_EQ(choice_text(a, 2), choice_text(b, 0));
        CHECK_STR_EQ(choice_text(a, 3), choice_text(b, 0));
        CHECK_INT_EQ(st, 200);
        CHECK_STR_EQ(choice_text(c, 0), choice_text(c, 1));
        /* the echo of ids is their text, BOS left out */
        CHECK_OK(rlhi_tokenizer_encode(tok, choice_text(c, 0),
                                       strlen(choice_text(c, 0)),
                                       RLHI_ENC_BOS, &ids, &n));
        CHECK(n >= 2 && ids[1] == 403);
        rlhi_free(ids);
        json_decref(a);
        json_decref(b);
        json_decref(c);
        a = post_json("/v1/completions", "{\"prompt\":[1,99999]}", &st);
        CHECK_INT_EQ(st, 400);
        CHECK_STR_EQ(err_field(a, "param"), "prompt");
        json_decref(a);
    }

    TEST("mutated request bodies never crash (seeded fuzz, 400 cases)") {
        static const char *seeds[] = {
            "{\"prompt\":[\"ab\",[1,5]],\"max_tokens\":3,\"n\":2,"
            "\"stop\":[\"x\"],\"logprobs\":2,\"echo\":true}",
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
            "\"text\",\"text\":\"hi\"}]}],\"max_tokens\":3,\"logprobs\":"
            "true,\"top_logprobs\":1,\"stream\":true}",
        };
        struct rlhi_rng rng;
        struct rlhi_buf out = RLHI_BUF_INIT;
        int i, bad = 0;

        rlhi_rng_seed(&rng, 7);
        for (i = 0; i < 400; i++) {
            int which = i & 1, k, status = 0;
            char body[512];
            size_t len;

            snprintf(body, sizeof body, "%s", seeds[which]);
            len = strlen(body);
            for (k = 0; k < 1 + (int)rlhi_rng_below(&rng, 4) && len; k++) {
                size_t at = (size_t)rlhi_rng_below(&rng, len);

                switch (rlhi_rng_below(&rng, 3)) {
                case 0: /* replace a byte */
                    body[at] = (char)"{}[]\",:0123456789-eE.tfn\\\xff"
                        [rlhi_rng_below(&rng, 27)];
                    break;
                case 1: /* cut */
                    len = at;
                    break;
                default: /* drop a byte */
                    memmove(body + at, body + at + 1, len - at);
                    len--;
                }
            }
            if (rlhi_oai_call(rlhi_serve_engine(srv),
                              which ? "/v1/chat/completions"
                                    : "/v1/completions",
                              body, len, 20, &status, &out) < 0 ||
                (status != 200 && status != 400) || !out.buf ||
                (status == 400 && !strstr(out.buf, "\"error\"")))
                bad++;
        }
        CHECK_INT_EQ(bad, 0);
        rlhi_buf_release(&out);
    }

    TEST("test hook: injected 503s") {
        long st;
        json_t *j;

        rlhi__serve_fail_next(srv, 1, 503);
        j = post_json("/v1/completions", "{\"prompt\":\"x\"}", &st);
        CHECK_INT_EQ(st, 503);
        CHECK_STR_EQ(err_field(j, "type"), "server_error");
        json_decref(j);
        j = post_json("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1}",
                      &st);
        CHECK_INT_EQ(st, 200);
        json_decref(j);
    }

    rlhi_serve_stop(srv);

    TEST("API key") {
        struct resp r = {0};

        so.api_key = "sekret";
        srv = NULL;
        CHECK_OK(rlhi_serve_start(&srv, &so));
        if (!srv)
            break;
        port = rlhi_serve_port(srv);
        http(&r, "POST", "/v1/completions", "{\"prompt\":\"x\"}", NULL);
        CHECK_INT_EQ(r.status, 401);
        CHECK(strstr(r.body.buf, "invalid_api_key") != NULL);
        http(&r, "POST", "/v1/completions", "{\"prompt\":\"x\"}",
             "Authorization: Bearer wrong");
        CHECK_INT_EQ(r.status, 401);
        http(&r, "GET", "/v1/models", NULL, "Authorization: Bearer sekre");
        CHECK_INT_EQ(r.status, 401);
        http(&r, "POST", "/v1/completions",
             "{\"prompt\":\"x\",\"max_tokens\":2}",
             "Authorization: Bearer sekret");
        CHECK_INT_EQ(r.status, 200);
        http(&r, "GET", "/health", NULL, NULL);
        CHECK_INT_EQ(r.status, 200);
        rlhi_serve_stop(srv);
        rlhi_buf_release(&r.body);
        rlhi_buf_release(&r.headers);
    }

    TEST("per-request timeout") {
        struct rlhi_server *s2 = NULL;
        struct rlhi_serve_options o2 = so;
        struct resp r = {0};

        o2.api_key = NULL;
        o2.timeout_s = 0.001; /* no request of 400 tokens ends this soon */
        CHECK_OK(rlhi_serve_start(&s2, &o2));
        if (!s2)
            break;
        port = rlhi_serve_port(s2);
        http(&r, "POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens"
             "\":400,\"n\":16,\"ignore_eos\":true}", NULL);
        CHECK_INT_EQ(r.status, 504);
        CHECK(strstr(r.body.buf, "timed out") != NULL);
        http(&r, "POST", "/v1/completions", "{\"prompt\":\"x\",\"max_tokens"
             "\":400,\"n\":16,\"ignore_eos\":true,\"stream\":true}", NULL);
        CHECK_INT_EQ(r.status, 200);
        CHECK(strstr(r.body.buf, "timed out") != NULL);
        CHECK(strstr(r.body.buf, "data: [DONE]") != NULL);
        rlhi_serve_stop(s2);
        rlhi_buf_release(&r.body);
        rlhi_buf_release(&r.headers);
    }

    TEST("shutdown with a stream in flight") {
        struct rlhi_server *s2 = NULL;
        struct stream_arg sa = {{0}, NULL};
        struct rlhi_engine_stats st;
        pthread_t th;
        double t0;

        so.api_key = NULL;
        so.timeout_s = 0;
        CHECK_OK(rlhi_serve_start(&s2, &so));
        if (!s2)
            break;
        port = rlhi_serve_port(s2);
        pthread_create(&th, NULL, stream_main, &sa);
        t0 = rlhi_time_now();
        do {
            usleep(2000);
            rlhi_engine_get_stats(rlhi_serve_engine(s2), &st);
        } while (st.tokens == 0 && rlhi_time_now() - t0 < 10);
        rlhi_serve_stop(s2);
        pthread_join(th, NULL);
        CHECK(rlhi_time_now() - t0 < 10);
        CHECK_INT_EQ(sa.r.status, 200);
        /* either the engine finished first or the client was told */
        CHECK_MSG(strstr(sa.r.body.buf, "shutting down") ||
                  strstr(sa.r.body.buf, "\"finish_reason\":\"length\""),
                  "stream ended without a reason: %.200s", sa.r.body.buf);
        rlhi_buf_release(&sa.r.body);
        rlhi_buf_release(&sa.r.headers);
    }

    TEST("bad model path and busy port") {
        struct rlhi_server *s2 = NULL;
        struct rlhi_serve_options o2 = so;

        o2.engine.model_path = "/nonexistent/model.bin";
        CHECK(rlhi_serve_start(&s2, &o2) < 0);
        CHECK(strstr(rlhi_errmsg(), "/nonexistent/model.bin") != NULL);
        o2 = so;
        o2.host = "not-an-address";
        CHECK(rlhi_serve_start(&s2, &o2) == RLHI_EINVAL);
    }

    rlhi_model_free(m);
    rlhi_tokenizer_free(tok);
    curl_global_cleanup();
    return check_summary();
}
