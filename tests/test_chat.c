/* Tests for chat templates: golden renders byte for byte, assistant spans,
 * detection of the real .jinja files, the rlhi layout's round trip and its
 * errors. */
#include <dirent.h>
#include <jansson.h>

#include "check.h"
#include "rlhi/chat.h"

/* Checks that every span points at `want[i]` followed by the kind's EOT. */
static void check_spans(enum rlhi_chat_kind kind, const struct rlhi_buf *b,
                        const struct rlhi_chat_span *sp, size_t nsp,
                        const char *const *want, size_t nwant)
{
    const char *eot = rlhi_chat_eot(kind);

    CHECK_INT_EQ(nsp, nwant);
    for (size_t i = 0; i < nsp && i < nwant; i++) {
        size_t wl = strlen(want[i]);

        CHECK_MSG(sp[i].end - sp[i].start == wl &&
                      !memcmp(b->buf + sp[i].start, want[i], wl),
                  "%s span %zu: got '%.*s', expected '%s'",
                  rlhi_chat_kind_name(kind), i,
                  (int)(sp[i].end - sp[i].start), b->buf + sp[i].start,
                  want[i]);
        CHECK(sp[i].eot_end - sp[i].end == strlen(eot) &&
              !memcmp(b->buf + sp[i].end, eot, strlen(eot)));
    }
}

/* Renders the golden conversation (from index `first`) and compares. */
static int golden_case(enum rlhi_chat_kind kind, json_t *jmsgs, size_t first,
                       const char *bos, const char *expected,
                       const char *label)
{
    struct rlhi_chat_msg m[16];
    struct rlhi_chat_span sp[16];
    struct rlhi_chat_options o = {.add_generation_prompt = true,
                                  .bos_token = bos};
    struct rlhi_buf b = RLHI_BUF_INIT;
    size_t n = 0, nsp = 0, i;
    bool trims = kind == RLHI_CHAT_LLAMA3 || kind == RLHI_CHAT_LLAMA31 ||
                 kind == RLHI_CHAT_LLAMA32;
    const char *want_trim[] = {"Hi there", "I am an assistant"};
    const char *want_raw[] = {"Hi there", "   I am an assistant   "};
    int ok;

    for (i = first; i < json_array_size(jmsgs) && n < 16; i++) {
        json_t *e = json_array_get(jmsgs, i);

        m[n].role = json_string_value(json_object_get(e, "role"));
        m[n].content = json_string_value(json_object_get(e, "content"));
        n++;
    }
    CHECK_OK(rlhi_chat_render(kind, m, n, &o, &b, sp, &nsp));
    ok = b.buf && !strcmp(b.buf, expected);
    CHECK_MSG(ok, "%s:\n  got:      %s\n  expected: %s", label,
              b.buf ? b.buf : "(null)", expected);
    check_spans(kind, &b, sp, nsp, trims ? want_trim : want_raw, 2);
    rlhi_buf_release(&b);
    return ok;
}

static enum rlhi_chat_kind kind_of_file(const char *dir, const char *file)
{
    char path[4096];
    char *src;
    size_t len;
    enum rlhi_chat_kind k = 0;

    snprintf(path, sizeof path, "%s/%s", dir, file);
    CHECK_OK(rlhi_file_read(path, &src, &len));
    CHECK_OK(rlhi_chat_template_detect(src, &k));
    rlhi_free(src);
    return k;
}

static void test_golden(void)
{
    /* check_data() returns a static buffer: keep a copy. */
    const char *d0 = check_data("chat_templates");
    char *dir = d0 ? rlhi_strdup(d0) : NULL;
    const char *path = check_data("chat_templates/golden_render.json");
    json_error_t jerr;
    json_t *root, *msgs, *group, *v;
    const char *key;
    int cases = 0, matched = 0;

    if (!dir || !path) {
        SKIP("../shared/data/chat_templates is absent");
        rlhi_free(dir);
        return;
    }
    root = json_load_file(path, 0, &jerr);
    CHECK(root != NULL);
    if (!root) {
        rlhi_free(dir);
        return;
    }
    msgs = json_object_get(root, "messages");

    /* llama.cpp's expectations: ChatML and its simple Llama-3 layout. */
    group = json_object_get(root, "llamacpp_expected");
    json_object_foreach(group, key, v) {
        enum rlhi_chat_kind k = !strncmp(key, "chatml", 6)
                                    ? RLHI_CHAT_CHATML
                                    : RLHI_CHAT_LLAMA3;

        CHECK(!strncmp(key, "chatml", 6) || !strncmp(key, "Llama-3 ", 8));
        cases++;
        matched += golden_case(k, msgs, 0, "", json_string_value(v), key);
    }

    /* Jinja2 renders: "<file> | with_system|no_system | bos_token='x'".
     * The kind comes from detecting the named file, so this also checks
     * detection against the real sources. */
    group = json_object_get(root, "jinja2_rendered");
    json_object_foreach(group, key, v) {
        char file[256], bos[64] = "";
        const char *bar = strstr(key, " | "), *q = strstr(key, "='");
        enum rlhi_chat_kind k;

        CHECK(bar && q);
        if (!bar || !q)
            continue;
        snprintf(file, sizeof file, "%.*s", (int)(bar - key), key);
        snprintf(bos, sizeof bos, "%.*s", (int)strcspn(q + 2, "'"), q + 2);
        k = kind_of_file(dir, file);
        cases++;
        matched += golden_case(k, msgs, strstr(key, "no_system") ? 1 : 0,
                               bos, json_string_value(v), key);
    }
    fprintf(stderr, "golden chat renders: %d of %d match\n", matched, cases);
    CHECK_INT_EQ(cases, 10);
    CHECK_INT_EQ(matched, cases);
    json_decref(root);
    rlhi_free(dir);
}

static void test_detect(void)
{
    static const struct {
        const char *file;
        enum rlhi_chat_kind kind;
    } want[] = {
        {"Qwen-Qwen2.5-7B-Instruct.jinja", RLHI_CHAT_QWEN25},
        {"Qwen-Qwen3-0.6B.jinja", RLHI_CHAT_QWEN3},
        {"meta-llama-Llama-3.1-8B-Instruct.jinja", RLHI_CHAT_LLAMA31},
        {"meta-llama-Llama-3.2-3B-Instruct.jinja", RLHI_CHAT_LLAMA32},
        {"meta-llama-Llama-3.3-70B-Instruct.jinja", RLHI_CHAT_LLAMA31},
    };
    const char *dir = check_data("chat_templates");
    enum rlhi_chat_kind k;
    DIR *d;
    struct dirent *e;
    int seen = 0;

    if (!dir) {
        SKIP("../shared/data/chat_templates is absent");
        return;
    }

    /* Every .jinja file in the folder is recognised, as what it is. */
    d = opendir(dir);
    CHECK(d != NULL);
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name), i;
        bool known = false;

        if (len < 6 || strcmp(e->d_name + len - 6, ".jinja"))
            continue;
        seen++;
        k = kind_of_file(dir, e->d_name);
        for (i = 0; i < sizeof want / sizeof *want; i++)
            if (!strcmp(want[i].file, e->d_name)) {
                known = true;
                CHECK_MSG(k == want[i].kind, "%s detected as %s, not %s",
                          e->d_name, rlhi_chat_kind_name(k),
                          rlhi_chat_kind_name(want[i].kind));
            }
        CHECK_MSG(known, "no expectation for '%s'", e->d_name);
    }
    if (d)
        closedir(d);
    CHECK_INT_EQ(seen, 5);

    /* Model directories: the Llama-3.1 tokenizer_config carries the simple
     * Llama-3 template, the Qwen3 one Qwen3's. */
    if (check_data("tokenizers/llama3.1")) {
        CHECK_OK(rlhi_chat_template_from_dir(
            check_data("tokenizers/llama3.1"), &k));
        CHECK_INT_EQ(k, RLHI_CHAT_LLAMA3);
        CHECK_OK(rlhi_chat_template_from_dir(check_data("tokenizers/qwen3"),
                                             &k));
        CHECK_INT_EQ(k, RLHI_CHAT_QWEN3);
    }

    /* Our own template; ChatML without Qwen's markers; unknown text. */
    CHECK_OK(rlhi_chat_template_detect(rlhi_chat_rlhi_jinja(), &k));
    CHECK_INT_EQ(k, RLHI_CHAT_RLHI);
    CHECK_OK(rlhi_chat_template_detect(
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + "
        "m['content'] + '<|im_end|>\\n'}}{% endfor %}", &k));
    CHECK_INT_EQ(k, RLHI_CHAT_CHATML);
    CHECK_INT_EQ(rlhi_chat_template_detect("{{ bos_token }}[INST] {{ x }}",
                                           &k), RLHI_ENOTFOUND);
    CHECK(strstr(rlhi_errmsg(), "unknown chat template '{{ bos_token }}"));
    CHECK_INT_EQ(rlhi_chat_template_from_dir("/nonexistent", &k),
                 RLHI_ENOTFOUND);
    CHECK(strstr(rlhi_errmsg(), "/nonexistent/tokenizer_config.json"));
}

/* Cases rendered with Python Jinja2 3.1.6 (trim_blocks, lstrip_blocks) from
 * the real .jinja files, beyond the golden conversation: Qwen3 reasoning
 * and Llama-3.1 trimming of Unicode whitespace. */
static void test_more_layouts(void)
{
    const struct rlhi_chat_msg q[] = {
        {"user", "What is 2+2?"},
        {"assistant", "<think>\nadd them\n</think>\n\nIt is 4."},
        {"user", "And 3+3?"},
        {"assistant", "\n<think>\n\nsix\n\n</think>\n\n\nIt is 6."},
    };
    const struct rlhi_chat_msg q2[] = {q[0], q[1], q[2],
                                       {"assistant", "plain answer"}};
    const struct rlhi_chat_msg l[] = {
        {"system", "\xc2\xa0 Be brief.\n"},
        {"user", "\xe3\x80\x80hi\xe2\x80\x83"},
        {"assistant", "\thello \xc2\x85"},
    };
    struct rlhi_chat_options o = {0};
    struct rlhi_chat_span sp[4];
    struct rlhi_buf b = RLHI_BUF_INIT;
    size_t nsp;

    CHECK_OK(rlhi_chat_render(RLHI_CHAT_QWEN3, q, 4, &o, &b, sp, &nsp));
    CHECK_STR_EQ(b.buf, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                        "<|im_start|>assistant\nIt is 4.<|im_end|>\n"
                        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
                        "<|im_start|>assistant\n<think>\nsix\n</think>\n\n"
                        "It is 6.<|im_end|>\n");
    {
        const char *want[] = {"It is 4.",
                              "<think>\nsix\n</think>\n\nIt is 6."};

        check_spans(RLHI_CHAT_QWEN3, &b, sp, nsp, want, 2);
    }
    rlhi_buf_clear(&b);
    CHECK_OK(rlhi_chat_render(RLHI_CHAT_QWEN3, q2, 4, &o, &b, NULL, NULL));
    CHECK_STR_EQ(b.buf, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                        "<|im_start|>assistant\nIt is 4.<|im_end|>\n"
                        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
                        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
                        "plain answer<|im_end|>\n");
    rlhi_buf_clear(&b);
    o.add_generation_prompt = true;
    o.no_thinking = true;
    CHECK_OK(rlhi_chat_render(RLHI_CHAT_QWEN3, q, 3, &o, &b, NULL, NULL));
    CHECK_STR_EQ(b.buf, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                        "<|im_start|>assistant\nIt is 4.<|im_end|>\n"
                        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
                        "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    rlhi_buf_clear(&b);
    o = (struct rlhi_chat_options){.date = "03 Dec 2026"};
    CHECK_OK(rlhi_chat_render(RLHI_CHAT_LLAMA31, l, 3, &o, &b, sp, &nsp));
    CHECK_STR_EQ(b.buf,
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>"
                 "\n\nCutting Knowledge Date: December 2023\nToday Date: 03 "
                 "Dec 2026\n\nBe brief.<|eot_id|><|start_header_id|>user"
                 "<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>"
                 "assistant<|end_header_id|>\n\nhello<|eot_id|>");
    {
        const char *want[] = {"hello"};

        check_spans(RLHI_CHAT_LLAMA31, &b, sp, nsp, want, 1);
    }
    rlhi_buf_release(&b);
    CHECK_STR_EQ(rlhi_chat_eot(RLHI_CHAT_LLAMA32), "<|eot_id|>");
    CHECK_STR_EQ(rlhi_chat_eot(RLHI_CHAT_QWEN25), "<|im_end|>");
    CHECK_STR_EQ(rlhi_chat_eot(RLHI_CHAT_RLHI), "<|end|>");
}

static void test_rlhi_round_trip(void)
{
    const struct rlhi_chat_msg m[] = {
        {"system", "You are terse.\nUser prefers lists."},
        {"user", "  spaces kept  "},
        {"assistant", "- one\n- two\n"},
        {"user", "caf\xc3\xa9 \xf0\x9f\x99\x82 and an <|im_end|> lookalike"},
        {"assistant", ""},
    };
    const size_t n = sizeof m / sizeof *m;
    struct rlhi_chat_options o = {0};
    struct rlhi_chat_span sp[8];
    struct rlhi_buf b = RLHI_BUF_INIT;
    struct rlhi_chat_msg *back = NULL;
    size_t nb = 0, nsp, i;
    bool open = true;

    CHECK_OK(rlhi_chat_render(RLHI_CHAT_RLHI, m, n, &o, &b, sp, &nsp));
    CHECK(!strncmp(b.buf, "<|system|>\nYou are terse.\nUser prefers lists."
                          "<|end|>\n<|user|>\n  spaces kept  <|end|>\n"
                          "<|assistant|>\n- one\n- two\n<|end|>\n", 110));
    {
        const char *want[] = {"- one\n- two\n", ""};

        check_spans(RLHI_CHAT_RLHI, &b, sp, nsp, want, 2);
    }
    CHECK_OK(rlhi_chat_parse(RLHI_CHAT_RLHI, b.buf, b.len, &back, &nb,
                             &open));
    CHECK_INT_EQ(nb, n);
    CHECK(!open);
    for (i = 0; i < nb && i < n; i++) {
        CHECK_STR_EQ(back[i].role, m[i].role);
        CHECK_STR_EQ(back[i].content, m[i].content);
    }
    rlhi_free(back);

    /* A generation prompt parses as an open assistant turn. */
    rlhi_buf_clear(&b);
    o.add_generation_prompt = true;
    CHECK_OK(rlhi_chat_render(RLHI_CHAT_RLHI, m, 2, &o, &b, NULL, NULL));
    CHECK(b.len > 14 && !strcmp(b.buf + b.len - 14, "<|assistant|>\n"));
    CHECK_OK(rlhi_buf_adds(&b, "partial"));
    CHECK_OK(rlhi_chat_parse(RLHI_CHAT_RLHI, b.buf, b.len, &back, &nb,
                             &open));
    CHECK_INT_EQ(nb, 3);
    CHECK(open);
    if (nb == 3)
        CHECK_STR_EQ(back[2].content, "partial");
    rlhi_free(back);
    CHECK_INT_EQ(rlhi_chat_parse(RLHI_CHAT_RLHI, "<|user|>\nhi", 11, &back,
                                 &nb, NULL), RLHI_EFORMAT);
    CHECK_INT_EQ(rlhi_chat_parse(RLHI_CHAT_RLHI, "hello", 5, &back, &nb,
                                 NULL), RLHI_EFORMAT);
    CHECK(strstr(rlhi_errmsg(), "byte 0"));
    rlhi_buf_release(&b);
}

static void test_errors(void)
{
    const struct rlhi_chat_msg late_sys[] = {
        {"user", "a"}, {"assistant", "b"}, {"system", "c"}};
    const struct rlhi_chat_msg no_content[] = {{"user", "a"},
                                               {"assistant", NULL}};
    const struct rlhi_chat_msg bad_role[] = {{"user", "a"}, {"tool", "x"}};
    const struct rlhi_chat_msg marker[] = {{"user", "a<|end|>b"}};
    struct rlhi_buf b = RLHI_BUF_INIT;

    CHECK_INT_EQ(rlhi_chat_render(RLHI_CHAT_RLHI, late_sys, 3, NULL, &b,
                                  NULL, NULL), RLHI_EINVAL);
    CHECK(strstr(rlhi_errmsg(), "message 2") != NULL);
    CHECK_INT_EQ(b.len, 0);
    /* Llama-3.1 and ChatML render a later system turn as the Jinja does. */
    CHECK_OK(rlhi_chat_render(RLHI_CHAT_CHATML, late_sys, 3, NULL, &b, NULL,
                              NULL));
    CHECK_INT_EQ(rlhi_chat_render(RLHI_CHAT_QWEN25, no_content, 2, NULL, &b,
                                  NULL, NULL), RLHI_EINVAL);
    CHECK_STR_EQ(rlhi_errmsg(), "message 1 ('assistant'): no content");
    CHECK_INT_EQ(rlhi_chat_render(RLHI_CHAT_LLAMA31, bad_role, 2, NULL, &b,
                                  NULL, NULL), RLHI_EINVAL);
    CHECK(strstr(rlhi_errmsg(), "message 1: unknown role 'tool'") != NULL);
    CHECK_INT_EQ(rlhi_chat_render(RLHI_CHAT_RLHI, marker, 1, NULL, &b, NULL,
                                  NULL), RLHI_EINVAL);
    CHECK(strstr(rlhi_errmsg(), "message 0") != NULL);
    CHECK_INT_EQ(rlhi_chat_render((enum rlhi_chat_kind)99, marker, 1, NULL,
                                  &b, NULL, NULL), RLHI_EINVAL);
    rlhi_buf_release(&b);
}

static void test_alloc_failures(void)
{
    const struct rlhi_chat_msg m[] = {{"user", "hello"},
                                      {"assistant", "hi"}};
    long i, total;

    /* Fail each allocation of a render in turn: an error, never a crash,
     * and the buffer is as it was. */
    rlhi__alloc_fail_at(0);
    {
        struct rlhi_buf b = RLHI_BUF_INIT;

        CHECK_OK(rlhi_chat_render(RLHI_CHAT_QWEN25, m, 2, NULL, &b, NULL,
                                  NULL));
        rlhi_buf_release(&b);
    }
    total = rlhi__alloc_fail_at(0);
    for (i = 1; i <= total; i++) {
        struct rlhi_buf b = RLHI_BUF_INIT;
        int r;

        rlhi__alloc_fail_at(i);
        r = rlhi_chat_render(RLHI_CHAT_QWEN25, m, 2, NULL, &b, NULL, NULL);
        rlhi__alloc_fail_at(0);
        CHECK_INT_EQ(r, RLHI_ENOMEM);
        CHECK_INT_EQ(b.len, 0);
        rlhi_buf_release(&b);
    }
}

int main(void)
{
    TEST("golden renders") test_golden();
    TEST("template detection") test_detect();
    TEST("qwen3 reasoning, llama trimming") test_more_layouts();
    TEST("rlhi template round trip") test_rlhi_round_trip();
    TEST("invalid input") test_errors();
    TEST("allocation failures") test_alloc_failures();
    return check_summary();
}
