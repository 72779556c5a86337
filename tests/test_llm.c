/* Tests for the llm client against a real rlhi server on a loopback port
 * (and the in-process local backend): generation, scoring against
 * rlhi_score, retries with backoff (server test hook, closed port), the
 * SQLite cache (a rerun makes no HTTP request), and bad options. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "rlhi/generate.h"
#include "rlhi/llm.h"
#include "rlhi/pairs.h"
#include "rlhi/pipeline.h"
#include "rlhi/serve.h"
#include "rlhi/store.h"

/* A loopback port that nothing listens on: bind one, read it, close. */
static int closed_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) &&
        !getsockname(fd, (struct sockaddr *)&a, &len))
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

int main(void)
{
    const char *mp = check_data("models/llama2c-stories260K/stories260K.bin");
    char model_path[4096], tok_path[4096], url[128], local[4200];
    char cache_path[] = "/tmp/rlhi_test_llm_XXXXXX";
    struct rlhi_serve_options so;
    struct rlhi_server *srv = NULL;
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    struct rlhi_llm_options lo;
    struct rlhi_llm *l = NULL;
    const char *tp;
    int fd;

    if (!mp) {
        SKIP("../shared/data/models/llama2c-stories260K is absent");
        return check_summary();
    }
    snprintf(model_path, sizeof model_path, "%s", mp);
    tp = check_data("models/llama2c-stories260K/tok512.bin");
    snprintf(tok_path, sizeof tok_path, "%s", tp ? tp : "");
    snprintf(local, sizeof local, "local:%s", model_path);

    memset(&so, 0, sizeof so);
    so.engine.model_path = model_path;
    so.engine.tokenizer_path = tok_path;
    so.engine.max_tokens_limit = 256;
    CHECK_OK(rlhi_serve_start(&srv, &so));
    CHECK_OK(rlhi_generate_load(model_path, tok_path, &m, &tok));
    if (!srv || !m)
        return check_summary();
    snprintf(url, sizeof url, "http://127.0.0.1:%d", rlhi_serve_port(srv));

    rlhi_llm_options_default(&lo);
    lo.endpoint = url;
    lo.backoff_base_s = 0.01;
    lo.backoff_max_s = 0.05;
    lo.timeout_s = 30;

    TEST("completion and chat over HTTP equal the local backend") {
        struct rlhi_llm *loc = NULL;
        struct rlhi_llm_options o2 = lo;
        struct rlhi_chat_msg msgs[] = {{"user", "Tell me a story"}};
        char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

        CHECK_OK(rlhi_llm_open(&l, &lo));
        o2.endpoint = local;
        o2.tokenizer = tok_path;
        CHECK_OK(rlhi_llm_open(&loc, &o2));
        if (!l || !loc)
            break;
        CHECK_OK(rlhi_llm_complete(l, "Once upon a time", 30, 0, &a));
        CHECK_OK(rlhi_llm_complete(loc, "Once upon a time", 30, 0, &b));
        CHECK_STR_EQ(a, b);
        CHECK(a && strlen(a) > 10);
        CHECK_OK(rlhi_llm_chat(l, msgs, 1, 20, 0, &c));
        CHECK_OK(rlhi_llm_chat(loc, msgs, 1, 20, 0, &d));
        CHECK_STR_EQ(c, d);
        rlhi_free(a);
        rlhi_free(b);
        rlhi_free(c);
        rlhi_free(d);
        rlhi_llm_close(loc);
    }

    TEST("n choices, stops and seeds pass through") {
        struct rlhi_llm_request q;
        struct rlhi_llm_result res;
        const char *stop[] = {"."};

        rlhi_llm_request_init(&q, RLHI_LLM_COMPLETE);
        q.prompt = "The cat";
        q.max_tokens = 40;
        q.temperature = 1;
        q.seed = 7;
        q.n = 3;
        q.stop = stop;
        q.n_stop = 1;
        CHECK_OK(rlhi_llm_run(l, &q, 1, &res));
        CHECK_INT_EQ(res.n_texts, 3);
        CHECK_INT_EQ(res.attempts, 1);
        CHECK_INT_EQ(res.http_status, 200);
        for (int i = 0; i < res.n_texts; i++)
            CHECK(strchr(res.texts[i], '.') == NULL);
        rlhi_llm_result_release(&res);
    }

    TEST("scoring equals rlhi_score on the same tokens") {
        const char *prompt = "Once upon a time";
        const char *completion = ", there was a little girl named Lily.";
        char text[256];
        int32_t *pids = NULL, *all = NULL;
        size_t np = 0, na = 0;
        double got = 0, ref = 0;
        int n = 0;

        CHECK_OK(rlhi_llm_score(l, prompt, completion, &got, &n));
        snprintf(text, sizeof text, "%s%s", prompt, completion);
        CHECK_OK(rlhi_tokenizer_encode(tok, prompt, strlen(prompt),
                                       RLHI_ENC_BOS, &pids, &np));
        CHECK_OK(rlhi_tokenizer_encode(tok, text, strlen(text), RLHI_ENC_BOS,
                                       &all, &na));
        /* the prompt's tokens are a prefix of the whole text's here */
        CHECK(na > np && !memcmp(pids, all, np * sizeof *pids));
        CHECK_OK(rlhi_score(m, all, (int)np, all + np, (int)(na - np), NULL,
                            &ref));
        CHECK_INT_EQ(n, na - np);
        CHECK_NEAR(got, ref, 1e-4, 1e-5);
        CHECK(got < 0);
        rlhi_free(pids);
        rlhi_free(all);
    }

    TEST("scoring through the local backend agrees") {
        struct rlhi_llm *loc = NULL;
        struct rlhi_llm_options o2 = lo;
        double a = 0, b = 1;

        o2.endpoint = local;
        o2.tokenizer = tok_path;
        CHECK_OK(rlhi_llm_open(&loc, &o2));
        if (!loc)
            break;
        CHECK_OK(rlhi_llm_score(l, "The dog ran", " to the park.", &a, NULL));
        CHECK_OK(rlhi_llm_score(loc, "The dog ran", " to the park.", &b,
                                NULL));
        CHECK_NEAR(a, b, 1e-9, 0);
        rlhi_llm_close(loc);
    }

    TEST("503s are retried with backoff, then succeed") {
        struct rlhi_llm_stats s0, s1;
        char *t = NULL;
        double t0;

        rlhi_llm_get_stats(l, &s0);
        rlhi__serve_fail_next(srv, 2, 503);
        t0 = rlhi_time_now();
        CHECK_OK(rlhi_llm_complete(l, "Tom had a", 5, 0, &t));
        rlhi_llm_get_stats(l, &s1);
        CHECK_INT_EQ(s1.retries - s0.retries, 2);
        CHECK_INT_EQ(s1.http_requests - s0.http_requests, 3);
        /* waits of at least base/2 and base: 0.005 + 0.01 s */
        CHECK(rlhi_time_now() - t0 >= 0.015);
        rlhi_free(t);
    }

    TEST("retries give up after max_retries") {
        struct rlhi_llm_request q;
        struct rlhi_llm_result res;
        struct rlhi_llm *l2 = NULL;
        struct rlhi_llm_options o2 = lo;

        o2.max_retries = 2;
        CHECK_OK(rlhi_llm_open(&l2, &o2));
        if (!l2)
            break;
        rlhi__serve_fail_next(srv, 5, 503);
        rlhi_llm_request_init(&q, RLHI_LLM_COMPLETE);
        q.prompt = "x";
        q.max_tokens = 2;
        CHECK(rlhi_llm_run(l2, &q, 1, &res) == RLHI_ENET);
        CHECK_INT_EQ(res.attempts, 3);
        CHECK_INT_EQ(res.http_status, 503);
        CHECK(res.error && strstr(res.error, "HTTP 503") != NULL);
        rlhi_llm_result_release(&res);
        rlhi__serve_fail_next(srv, 0, 0);

        /* a 400 is the request's fault: not retried */
        q.max_tokens = 100000;
        CHECK(rlhi_llm_run(l2, &q, 1, &res) == RLHI_EINVAL);
        CHECK_INT_EQ(res.attempts, 1);
        CHECK_INT_EQ(res.http_status, 400);
        CHECK(res.error && strstr(res.error, "max_tokens") != NULL);
        rlhi_llm_result_release(&res);
        rlhi_llm_close(l2);
    }

    TEST("a closed port: connection errors, retried, then reported") {
        struct rlhi_llm_options o2 = lo;
        struct rlhi_llm *l2 = NULL;
        struct rlhi_llm_stats st;
        char u2[64], *t = NULL;
        int port = closed_port(), r;

        snprintf(u2, sizeof u2, "http://127.0.0.1:%d/v1/", port);
        o2.endpoint = u2;
        o2.max_retries = 3;
        CHECK(port > 0);
        CHECK_OK(rlhi_llm_open(&l2, &o2));
        if (!l2)
            break;
        r = rlhi_llm_complete(l2, "x", 2, 0, &t);
        CHECK_INT_EQ(r, RLHI_ENET);
        CHECK(strstr(rlhi_errmsg(), "cannot reach") != NULL);
        rlhi_llm_get_stats(l2, &st);
        CHECK_INT_EQ(st.http_requests, 4);
        CHECK_INT_EQ(st.retries, 3);
        CHECK_INT_EQ(st.failures, 1);
        rlhi_llm_close(l2);
    }

    TEST("cache: a rerun makes no HTTP request") {
        struct rlhi_llm_options o2 = lo;
        struct rlhi_llm *a = NULL, *b = NULL;
        struct rlhi_llm_request q[6];
        struct rlhi_llm_result r1[6], r2[6];
        struct rlhi_llm_stats st;
        struct rlhi_chat_msg msgs[] = {{"user", "Hello"}};
        uint64_t before;
        int i;

        fd = mkstemp(cache_path);
        CHECK(fd >= 0);
        close(fd);
        o2.cache_path = cache_path;
        o2.concurrency = 3;
        for (i = 0; i < 6; i++) {
            rlhi_llm_request_init(&q[i], i == 5 ? RLHI_LLM_SCORE
                                         : i == 4 ? RLHI_LLM_CHAT
                                                  : RLHI_LLM_COMPLETE);
            q[i].prompt = i == 0 ? "One day" : i == 1 ? "The sun"
                        : i == 2 ? "A frog" : "Once upon a time";
            q[i].completion = " there was";
            q[i].messages = msgs;
            q[i].n_messages = 1;
            q[i].max_tokens = 12;
            q[i].temperature = 1;
            q[i].seed = i;
        }
        CHECK_OK(rlhi_llm_open(&a, &o2));
        if (!a)
            break;
        CHECK_OK(rlhi_llm_run(a, q, 6, r1));
        rlhi_llm_get_stats(a, &st);
        CHECK_INT_EQ(st.cache_misses, 6);
        CHECK_INT_EQ(st.http_requests, 6);
        rlhi_llm_close(a);

        /* a new client on the same file: everything from the cache */
        before = rlhi_serve_requests(srv);
        CHECK_OK(rlhi_llm_open(&b, &o2));
        if (!b)
            break;
        CHECK_OK(rlhi_llm_run(b, q, 6, r2));
        rlhi_llm_get_stats(b, &st);
        CHECK_INT_EQ(st.cache_hits, 6);
        CHECK_INT_EQ(st.http_requests, 0);
        CHECK_INT_EQ(rlhi_serve_requests(srv), before);
        for (i = 0; i < 6; i++) {
            CHECK(r2[i].cached);
            CHECK_INT_EQ(r2[i].attempts, 0);
            if (i < 5)
                CHECK_STR_EQ(r2[i].texts[0], r1[i].texts[0]);
            else
                CHECK_NEAR(r2[i].logprob, r1[i].logprob, 0, 0);
            rlhi_llm_result_release(&r1[i]);
            rlhi_llm_result_release(&r2[i]);
        }
        rlhi_llm_close(b);

        /* the table is there for sqlite3 to inspect */
        {
            sqlite3 *db = NULL;
            sqlite3_stmt *stt = NULL;

            CHECK(sqlite3_open(cache_path, &db) == SQLITE_OK);
            CHECK(sqlite3_prepare_v2(db, "SELECT count(*) FROM llm_cache",
                                     -1, &stt, NULL) == SQLITE_OK);
            CHECK(sqlite3_step(stt) == SQLITE_ROW);
            CHECK_INT_EQ(sqlite3_column_int(stt, 0), 6);
            sqlite3_finalize(stt);
            sqlite3_close(db);
        }
        unlink(cache_path);
    }

    TEST("LLM feedback stage over HTTP: one batch, the server's refusal") {
        /* The 260K-parameter story model reads 512 tokens, fewer than the
         * detector's prompt: all 12 turns are sent as one batch, each is
         * refused (HTTP 400, not retried), and the run fails with the
         * server's message, storing nothing. (Verdicts, retries and
         * batches of 32 are tested with a scripted backend in
         * test_pairs.) */
        struct rlhi_llm_options o2 = lo;
        struct rlhi_llm *a = NULL;
        struct rlhi_store *s = NULL;
        struct rlhi_ask ask;
        struct rlhi_ingest_stats is;
        struct rlhi_feedback_stats fs;
        struct rlhi_buf log = RLHI_BUF_INIT;
        char dir[] = "/tmp/rlhi_test_llmfb_XXXXXX", path[128], db[128];
        const char *p = path;
        uint64_t before;
        int rc;

        CHECK(mkdtemp(dir) != NULL);
        snprintf(path, sizeof path, "%s/log.jsonl", dir);
        snprintf(db, sizeof db, "%s/s.db", dir);
        for (int i = 0; i < 12; i++)
            rlhi_buf_addf(&log, "{\"conversation_hash\": \"h%d\", "
                          "\"conversation\": [{\"role\": \"user\", "
                          "\"content\": \"Tell me a story %d\"}, "
                          "{\"role\": \"assistant\", \"content\": \"Once "
                          "upon a time.\"}, {\"role\": \"user\", "
                          "\"content\": \"shorter please\"}]}\n", i, i);
        o2.concurrency = 4;
        CHECK_OK(rlhi_file_write_atomic(path, log.buf, log.len));
        CHECK_OK(rlhi_store_open(&s, db));
        CHECK_OK(rlhi_llm_open(&a, &o2));
        if (!s || !a) {
            rlhi_llm_close(a);
            rlhi_store_close(s);
            rlhi_buf_release(&log);
            break;
        }
        CHECK_OK(rlhi_ingest(s, &p, 1, NULL, &is));
        rlhi_ask_from_llm(&ask, a, 24);
        before = rlhi_serve_requests(srv);
        rc = rlhi_llm_feedback_run(s, &ask, "llm", false, &fs);
        CHECK(rc < 0);
        CHECK_MSG(strstr(rlhi_errmsg(), "HTTP 400") &&
                  strstr(rlhi_errmsg(), "the limit is 512"), "%s",
                  rlhi_errmsg());
        CHECK_INT_EQ(rlhi_serve_requests(srv) - before, 12);
        CHECK_INT_EQ(fs.turns, 0);
        CHECK_INT_EQ(rlhi_store_count(s, "feedback"), 0);
        rlhi_llm_close(a);
        rlhi_store_close(s);
        rlhi_buf_release(&log);
        snprintf(path, sizeof path, "rm -rf '%s'", dir);
        CHECK(system(path) == 0);
    }

    TEST("API key: sent when given, 401 is final") {
        struct rlhi_serve_options o3 = so;
        struct rlhi_server *s3 = NULL;
        struct rlhi_llm_options o2 = lo;
        struct rlhi_llm *a = NULL, *b = NULL;
        struct rlhi_llm_request q;
        struct rlhi_llm_result res;
        char u3[64], *t = NULL;

        o3.api_key = "k-123";
        CHECK_OK(rlhi_serve_start(&s3, &o3));
        if (!s3)
            break;
        snprintf(u3, sizeof u3, "http://127.0.0.1:%d/v1",
                 rlhi_serve_port(s3));
        o2.endpoint = u3;
        o2.api_key = "k-123";
        CHECK_OK(rlhi_llm_open(&a, &o2));
        o2.api_key = "wrong";
        CHECK_OK(rlhi_llm_open(&b, &o2));
        if (a && b) {
            CHECK_OK(rlhi_llm_complete(a, "The", 3, 0, &t));
            rlhi_llm_request_init(&q, RLHI_LLM_COMPLETE);
            q.prompt = "The";
            CHECK(rlhi_llm_run(b, &q, 1, &res) < 0);
            CHECK_INT_EQ(res.http_status, 401);
            CHECK_INT_EQ(res.attempts, 1);
            rlhi_llm_result_release(&res);
        }
        rlhi_free(t);
        rlhi_llm_close(a);
        rlhi_llm_close(b);
        rlhi_serve_stop(s3);
    }

    TEST("cache key is SHA-256 of endpoint, model and body") {
        char a[65], b[65], ref[65];
        const char in[] = "http://x/v1\0m\0{}";

        rlhi_llm_cache_key("http://x/v1", "m", "{}", 2, a);
        rlhi_llm_cache_key("http://x/v1", "n", "{}", 2, b);
        rlhi_sha256_hex(in, sizeof in - 1, ref);
        CHECK_STR_EQ(a, ref);
        CHECK(strcmp(a, b) != 0);
    }

    TEST("bad options") {
        struct rlhi_llm_options o2 = lo;
        struct rlhi_llm *x = NULL;

        o2.endpoint = "ftp://host";
        CHECK(rlhi_llm_open(&x, &o2) == RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "ftp://host") != NULL);
        o2.endpoint = "local:/nonexistent/m.bin";
        CHECK(rlhi_llm_open(&x, &o2) < 0);
        o2.endpoint = url;
        o2.cache_path = "/nonexistent/dir/cache.db";
        CHECK(rlhi_llm_open(&x, &o2) == RLHI_EDB);
        CHECK(strstr(rlhi_errmsg(), "/nonexistent/dir/cache.db") != NULL);
    }

    rlhi_llm_close(l);
    rlhi_serve_stop(srv);
    rlhi_model_free(m);
    rlhi_tokenizer_free(tok);
    return check_summary();
}
