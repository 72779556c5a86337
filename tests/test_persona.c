/* Tests for personas and redaction: each redaction kind with near misses
 * that must stay, persona derivation from small histories, and the stage
 * over a store (made / unchanged counts, history hash, export, redact). */
#include <jansson.h>
#include <unistd.h>

#include "check.h"
#include "rlhi/pipeline.h"
#include "rlhi/store.h"

struct red_case {
    const char *in, *out;
};

static const struct red_case red_cases[] = {
    /* e-mail */
    {"mail me at john.smith+tag@example.co.uk today",
     "mail me at [EMAIL] today"},
    {"Contact: ANNA_K@Mail.Example.org.", "Contact: [EMAIL]."},
    /* phone */
    {"call +1 (555) 123-4567 now", "call [PHONE] now"},
    {"my number is 555-123-4567", "my number is [PHONE]"},
    {"office: (212) 555-0199", "office: [PHONE]"},
    {"ring +44 20 7946 0958 after 5", "ring [PHONE] after 5"},
    {"or 020 7946 0958", "or [PHONE]"},
    {"Tel. +33 1 23 45 67 89", "Tel. [PHONE]"},
    /* secrets */
    {"key = sk-proj-abcdefghijklmnop1234567890XYZ",
     "key = [SECRET]"},
    {"export OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx1234",
     "export OPENAI_API_KEY=[SECRET]"},
    {"aws AKIAIOSFODNN7EXAMPLE in config", "aws [SECRET] in config"},
    {"token ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked",
     "token [SECRET] leaked"},
    {"password: hunter2", "password: [SECRET]"},
    {"my Password = \"s3cr3t!\" ok", "my Password = \"[SECRET]\" ok"},
    {"api_key: 'abcd1234efgh'", "api_key: '[SECRET]'"},
    {"hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
     "hash [SECRET]"},
    {"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0 sent",
     "Bearer [SECRET] sent"},
    /* URLs */
    {"see https://example.com/a/b?x=1&y=2.", "see [URL]."},
    {"(docs at http://docs.python.org/3/)", "(docs at [URL])"},
    {"visit www.example.org/page now", "visit [URL] now"},
    {"https://user@host.com/x has an @", "[URL] has an @"},
    /* near misses that must stay */
    {"the date is 2023-04-09 at 12:30", NULL},
    {"version 1.2.3 and IP 192.168.1.1", NULL},
    {"ISBN 978-3-16-148410-0", NULL},
    {"follow @john_doe on twitter", NULL},
    {"ssh user@localhost", NULL},
    {"open config.yaml and index.html, then Node.js", NULL},
    {"color #ff00aa and commit a1b2c3d", NULL},
    {"pneumonoultramicroscopicsilicovolcanoconiosis is long", NULL},
    {"a_very_long_snake_case_identifier_name_in_code", NULL},
    {"/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3", NULL},
    {"reset your password and the token count", NULL},
    {"I paid 1,000,000 dollars in 2021", NULL},
    {"call 911 or 112", NULL},
    {"price is $12.99 (about 11 euros)", NULL},
    {"sk-learn is a typo for scikit-learn", NULL},
    {"", NULL},
};

struct hist {
    const char *msgs[6];
    const char *labels[6];
    const char *want[4];
    const char *text;
};

static const struct hist hists[] = {
    {{"Explain how a hash map handles collisions, including time "
      "complexity and the trade-offs of open addressing.",
      "too simple, skip the basics",
      "Compare the memory model of C++ and Rust in detail."},
     {NULL, "reattempt_feedback", NULL},
     /* two carefully written messages are 2 points: not yet a tone */
     {"expert", "detailed", "no signal", "no signal"},
     "Prefers expert-level, detailed answers."},
    {{"what is a variable? explain like i'm 5 lol",
      "shorter pls",
      "can u give me a quick answer, what's python"},
     {NULL, "reattempt_feedback", NULL},
     {"novice", "concise", "casual", "no signal"},
     "Prefers beginner-friendly, concise answers in a casual tone."},
    {{"Give me 5 tips for sleeping better.",
      "can you put that in a table",
      "List the steps to bake bread."},
     {NULL, "reattempt_feedback", NULL},
     {"no signal", "no signal", "no signal", "structured"},
     "Prefers answers, structured as lists or tables."},
    {{"hi", "ok"}, {NULL, NULL},
     {"no signal", "no signal", "no signal", "no signal"},
     "No clear preferences yet."},
    {{"Write a story about a dragon in paragraphs, no bullet points.",
      "less formal please, more fun"},
     {NULL, "reattempt_feedback"},
     {"no signal", "no signal", "casual", "prose"},
     "Prefers answers in a casual tone, written as flowing prose."},
};

/* A log with three users of known habits; `extra` adds one more
 * conversation for user b. */
static void write_log(const char *path, bool extra)
{
    FILE *f = fopen(path, "w");

    fputs("{\"conversation_hash\": \"a1\", \"hashed_ip\": \"a\", "
          "\"conversation\": [{\"role\": \"user\", \"content\": \"Explain "
          "TCP congestion control in detail.\"}, {\"role\": \"assistant\", "
          "\"content\": \"TCP uses...\"}, {\"role\": \"user\", \"content\": "
          "\"too short, more details please\"}]}\n", f);
    fputs("{\"conversation_hash\": \"b1\", \"hashed_ip\": \"b\", "
          "\"conversation\": [{\"role\": \"user\", \"content\": \"give me "
          "tips for studying\"}, {\"role\": \"assistant\", \"content\": "
          "\"Here are tips...\"}, {\"role\": \"user\", \"content\": \"put "
          "it in a list, and my email is bob@example.com\"}]}\n", f);
    fputs("{\"conversation_hash\": \"c1\", \"hashed_ip\": \"c\", "
          "\"conversation\": [{\"role\": \"user\", \"content\": \"hello\"}]}"
          "\n", f);
    if (extra)
        fputs("{\"conversation_hash\": \"b2\", \"hashed_ip\": \"b\", "
              "\"conversation\": [{\"role\": \"user\", \"content\": \"List "
              "10 ways to save money, as bullet points\"}]}\n", f);
    fclose(f);
}

int main(void)
{
    char dir[] = "/tmp/rlhi-persona-XXXXXX";
    char logp[256], db[256], cmd[512];

    TEST("redaction: each kind, and near misses that must stay") {
        struct rlhi_buf out = RLHI_BUF_INIT;

        for (size_t i = 0; i < sizeof red_cases / sizeof red_cases[0];
             i++) {
            const struct red_case *c = &red_cases[i];
            const char *want = c->out ? c->out : c->in;
            int n = rlhi_redact(c->in, strlen(c->in), &out);

            CHECK_MSG(n >= 0 && !strcmp(out.buf, want),
                      "redact \"%s\":\n  got:      \"%s\"\n  expected: "
                      "\"%s\"", c->in, out.buf ? out.buf : "(null)", want);
            CHECK_MSG((n > 0) == (c->out != NULL), "redact \"%s\": %d "
                      "replacements", c->in, n);
        }
        rlhi_buf_release(&out);
    }

    TEST("redaction keeps arbitrary bytes and is idempotent") {
        struct rlhi_buf a = RLHI_BUF_INIT, b = RLHI_BUF_INIT;
        const char bin[] = "x\xff\xfe a@b.co \x00 tail";

        CHECK_INT_EQ(rlhi_redact(bin, sizeof bin - 1, &a), 1);
        CHECK_INT_EQ(a.len, sizeof bin - 1 - 6 + 7);
        CHECK(!memcmp(a.buf, "x\xff\xfe [EMAIL] \x00 tail", a.len));
        CHECK_INT_EQ(rlhi_redact(a.buf, a.len, &b), 0);
        CHECK(a.len == b.len && !memcmp(a.buf, b.buf, a.len));
        rlhi_buf_release(&a);
        rlhi_buf_release(&b);
    }

    TEST("persona derivation from small histories") {
        for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
            struct rlhi_persona_msg m[6];
            struct rlhi_persona p;
            char ids[6][16];
            size_t n = 0;

            for (; n < 6 && hists[h].msgs[n]; n++) {
                snprintf(ids[n], sizeof ids[n], "h%zu#%zu", h, n);
                m[n].id = ids[n];
                m[n].text = hists[h].msgs[n];
                m[n].label = hists[h].labels[n];
            }
            CHECK_OK(rlhi_persona_derive(m, n, false, &p));
            for (int d = 0; d < RLHI_DIM_N; d++)
                CHECK_MSG(!strcmp(p.value[d], hists[h].want[d]),
                          "history %zu: %s is '%s', expected '%s'; "
                          "evidence %s", h, rlhi_persona_dim_name(d),
                          p.value[d], hists[h].want[d], p.evidence[d]);
            CHECK_STR_EQ(p.text, hists[h].text);
            /* evidence is valid JSON naming the messages */
            for (int d = 0; d < RLHI_DIM_N; d++) {
                json_error_t e;
                json_t *v = json_loads(p.evidence[d], 0, &e);

                CHECK_MSG(json_is_array(v), "evidence %s: %s",
                          p.evidence[d], e.text);
                json_decref(v);
            }
            rlhi_persona_release(&p);
        }
    }

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(logp, sizeof logp, "%s/log.jsonl", dir);
    snprintf(db, sizeof db, "%s/s.db", dir);

    TEST("stage: made, unchanged, remade on new history, export, redact") {
        struct rlhi_store *s = NULL;
        struct rlhi_ingest_stats is;
        struct rlhi_feedback_stats fs;
        struct rlhi_persona_stats ps;
        struct rlhi_persona_opts po = {0};
        const char *paths[1] = {logp};
        char *buf = NULL;
        size_t len = 0;
        uint64_t n = 0;
        FILE *m;

        write_log(logp, false);
        CHECK_OK(rlhi_store_open(&s, db));
        if (!s)
            break;
        CHECK_OK(rlhi_ingest(s, paths, 1, NULL, &is));
        CHECK_OK(rlhi_feedback_run(s, NULL, &fs));
        CHECK_OK(rlhi_persona_run(s, &po, &ps));
        CHECK_INT_EQ(ps.users, 3);
        CHECK_INT_EQ(ps.made, 3);
        CHECK_OK(rlhi_persona_run(s, &po, &ps));
        CHECK_INT_EQ(ps.made, 0);
        CHECK_INT_EQ(ps.unchanged, 3);

        /* a new conversation for b: only b is remade */
        write_log(logp, true);
        CHECK_OK(rlhi_ingest(s, paths, 1, NULL, &is));
        CHECK_INT_EQ(is.inserted, 1);
        CHECK_OK(rlhi_persona_run(s, &po, &ps));
        CHECK_INT_EQ(ps.made, 1);
        CHECK_INT_EQ(ps.unchanged, 2);

        m = open_memstream(&buf, &len);
        CHECK_OK(rlhi_persona_export(s, "builtin", m, &n));
        fclose(m);
        CHECK_INT_EQ(n, 3);
        CHECK(buf && strstr(buf, "\"user\": \"a\"") &&
              strstr(buf, "\"informativeness\": {\"value\": \"detailed\""));
        CHECK(buf && strstr(buf, "\"user\": \"b\"") &&
              strstr(buf, "\"structure\": {\"value\": \"structured\""));
        CHECK(buf && strstr(buf, "Prefers detailed answers."));
        /* every line is JSON */
        for (char *p = buf, *nl; p && (nl = strchr(p, '\n')); p = nl + 1) {
            json_error_t e;
            json_t *v = json_loadb(p, (size_t)(nl - p), 0, &e);

            CHECK_MSG(json_is_object(v), "export line: %s", e.text);
            json_decref(v);
        }
        free(buf);

        /* --redact changes the hash, so every persona is remade */
        po.redact = true;
        CHECK_OK(rlhi_persona_run(s, &po, &ps));
        CHECK_INT_EQ(ps.made, 3);
        rlhi_store_close(s);

        po.backend = "llm";
        CHECK_OK(rlhi_store_open(&s, db));
        CHECK_INT_EQ(rlhi_persona_run(s, &po, &ps), RLHI_ENOTIMPL);
        CHECK_STR_EQ(rlhi_errmsg(), "not implemented: backend 'llm'");
        rlhi_store_close(s);
    }

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd))
        fprintf(stderr, "could not remove %s\n", dir);
    return check_summary();
}
