/* Tests for the tokenizers: llama.cpp and transformers.js golden vectors
 * for GPT-2, Llama-3 and Qwen2 (ids and decoded text), llama2.c's tok512
 * (ids computed by a transcription of run.c's encode(), the piece rule),
 * special tokens, the fast merge loops against their plain twins, bad
 * files, and load time / encode speed printed for the record. */
#include <jansson.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "rlhi/tokenizer.h"
#include "text/tok_internal.h"

#define SEP "\n__ggml_vocab_test__\n"

static struct rlhi_tokenizer *load(const char *rel, double *secs)
{
    const char *path = check_data(rel);
    struct rlhi_tokenizer *t = NULL;
    double t0 = rlhi_time_now();

    if (!path)
        return NULL;
    if (rlhi_tokenizer_load(&t, path) < 0) {
        fprintf(stderr, "FAIL load %s: %s\n", path, rlhi_errmsg());
        check__failed++;
        return NULL;
    }
    if (secs)
        *secs = rlhi_time_now() - t0;
    return t;
}

/* ids == the space-separated numbers in `line` */
static bool ids_match(const int32_t *ids, size_t n, const char *line,
                      size_t len)
{
    const char *p = line, *end = line + len;
    size_t i = 0;

    for (;;) {
        char *e;
        long v;

        while (p < end && *p == ' ')
            p++;
        if (p >= end)
            break;
        v = strtol(p, &e, 10);
        if (e == p || i >= n || ids[i] != v)
            return false;
        i++;
        p = e;
    }
    return i == n;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    size_t i;

    fprintf(stderr, "  %s:", what);
    for (i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

static bool roundtrip(const struct rlhi_tokenizer *t, const int32_t *ids,
                      size_t n, const char *s, size_t len)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    bool ok = rlhi_tokenizer_decode(t, ids, n, false, &b) == 0 &&
              b.len == len && !memcmp(b.buf, s, len);

    rlhi_buf_release(&b);
    return ok;
}

/* The llama.cpp vocab test: .inp strings split on SEP, .out one line of
 * ids per string, no BOS. Returns the number of strings checked. */
static int golden_llamacpp(const struct rlhi_tokenizer *t, const char *name)
{
    char rel[256], *inp = NULL, *outp = NULL;
    const char *pin, *pout;
    size_t lin, lout;
    char *p, *q, *end, *oend;
    int count = 0, bad = 0;

    snprintf(rel, sizeof rel, "tokenizers/golden/llamacpp-ggml-vocab-%s.inp",
             name);
    pin = check_data(rel);
    if (!pin || rlhi_file_read(pin, &inp, &lin) < 0) {
        SKIP("golden vectors absent");
        return 0;
    }
    snprintf(rel, sizeof rel, "tokenizers/golden/llamacpp-ggml-vocab-%s.out",
             name);
    pout = check_data(rel);
    if (!pout || rlhi_file_read(pout, &outp, &lout) < 0) {
        SKIP("golden vectors absent");
        rlhi_free(inp);
        return 0;
    }
    /* The last string is followed by SEP without its final newline. */
    end = inp + lin;
    if (lin >= strlen(SEP) - 1 &&
        !memcmp(end - (strlen(SEP) - 1), SEP, strlen(SEP) - 1))
        end -= strlen(SEP) - 1;
    else if (lin >= strlen(SEP) && !memcmp(end - strlen(SEP), SEP,
                                           strlen(SEP)))
        end -= strlen(SEP);
    p = inp;
    q = outp;
    oend = outp + lout;
    while (p <= end) {
        char *s_end = memmem(p, (size_t)(end - p), SEP, strlen(SEP));
        char *nl = memchr(q, '\n', (size_t)(oend - q));
        size_t slen, olen;
        int32_t *ids = NULL;
        size_t n = 0;

        if (!s_end)
            s_end = end;
        slen = (size_t)(s_end - p);
        olen = nl ? (size_t)(nl - q) : (size_t)(oend - q);
        CHECK_OK(rlhi_tokenizer_encode(t, p, slen, 0, &ids, &n));
        if (!ids_match(ids, n, q, olen)) {
            CHECK__FAIL("%s vector %d: '%.*s'", name, count, (int)slen, p);
            print_ids("got", ids, n);
            fprintf(stderr, "  expected: %.*s\n", (int)olen, q);
            bad++;
        } else {
            check__passed++;
        }
        CHECK_MSG(roundtrip(t, ids, n, p, slen),
                  "%s vector %d: decode(encode(s)) != s", name, count);
        rlhi_free(ids);
        count++;
        if (s_end == end || !nl)
            break;
        p = s_end + strlen(SEP);
        q = nl + 1;
    }
    if (bad == 0)
        fprintf(stderr, "  %s: %d/%d llama.cpp vectors match\n", name, count,
                count);
    rlhi_free(inp);
    rlhi_free(outp);
    return count;
}

/* Hugging Face's clean_up_tokenization(), applied by transformers.js to
 * "decoded" for tokenizers whose config sets clean_up_tokenization_spaces
 * (GPT-2 by default, Llama-3). */
static void cleanup(struct rlhi_buf *b)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ",
                                       " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'",
                                     "n't", "'m", "'s", "'ve", "'re"};
    size_t k;

    for (k = 0; k < sizeof from / sizeof *from; k++) {
        struct rlhi_buf o = RLHI_BUF_INIT;
        size_t lf = strlen(from[k]), i = 0;

        while (i < b->len) {
            if (i + lf <= b->len && !memcmp(b->buf + i, from[k], lf)) {
                rlhi_buf_adds(&o, to[k]);
                i += lf;
            } else {
                rlhi_buf_addc(&o, b->buf[i++]);
            }
        }
        rlhi_buf_add(&o, "", 0);
        rlhi_buf_release(b);
        *b = o;
    }
}

static void golden_transformersjs(struct rlhi_tokenizer *gpt2,
                                  struct rlhi_tokenizer *llama3,
                                  struct rlhi_tokenizer *qwen)
{
    const char *path =
        check_data("tokenizers/golden/transformersjs_tokenizer_vectors.jsonl");
    char *data, *line, *save = NULL;
    size_t len;
    int rows = 0, checked = 0, unmapped = 0;

    if (!path) {
        SKIP("transformers.js vectors absent");
        return;
    }
    CHECK_OK(rlhi_file_read(path, &data, &len));
    for (line = strtok_r(data, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t *row = json_loads(line, JSON_ALLOW_NUL, &e), *ids, *v;
        const char *src =
            json_string_value(json_object_get(row, "source_tokenizer"));
        json_t *text = json_object_get(row, "text");
        json_t *dec = json_object_get(row, "decoded");
        struct rlhi_tokenizer *t = NULL;
        int flags = 0;
        bool clean = true;
        int32_t *got = NULL;
        size_t n = 0, i;
        struct rlhi_buf b = RLHI_BUF_INIT;
        bool same;

        rows++;
        CHECK_MSG(row && src && json_is_string(text), "bad row %d", rows);
        if (!row || !src || !json_is_string(text)) {
            json_decref(row);
            continue;
        }
        if (!strcmp(src, "Xenova/gpt2"))
            t = gpt2;
        else if (!strcmp(src, "Xenova/llama3-tokenizer"))
            t = llama3;
        else if (!strcmp(src, "Xenova/llama3-tokenizer-new"))
            t = llama3, flags = RLHI_ENC_BOS;
        else if (!strcmp(src, "Xenova/Qwen1.5-0.5B-Chat"))
            t = qwen, clean = false;
        if (!t) {
            unmapped++;
            json_decref(row);
            continue;
        }
        CHECK_OK(rlhi_tokenizer_encode(t, json_string_value(text),
                                       json_string_length(text), flags, &got,
                                       &n));
        ids = json_object_get(row, "ids");
        same = json_array_size(ids) == n;
        json_array_foreach(ids, i, v)
            same = same && i < n && json_integer_value(v) == got[i];
        if (!same) {
            CHECK__FAIL("%s %s: ids differ", src,
                        json_string_value(json_object_get(row, "case")));
            print_ids("got", got, n);
        } else {
            check__passed++;
        }
        CHECK_OK(rlhi_tokenizer_decode(t, got, n, false, &b));
        if (clean)
            cleanup(&b);
        CHECK_MSG(json_is_string(dec) && b.len == json_string_length(dec) &&
                      !memcmp(b.buf, json_string_value(dec), b.len),
                  "%s %s: decoded '%s'", src,
                  json_string_value(json_object_get(row, "case")), b.buf);
        checked++;
        rlhi_buf_release(&b);
        rlhi_free(got);
        json_decref(row);
    }
    fprintf(stderr, "  transformers.js: %d of %d rows checked, %d unmapped\n",
            checked, rows, unmapped);
    CHECK_INT_EQ(unmapped, 0);
    rlhi_free(data);
}

static void check_ids(const struct rlhi_tokenizer *t, const char *s, int flags,
                      const int32_t *want, size_t nwant)
{
    int32_t *ids = NULL;
    size_t n = 0, i;
    bool same;

    CHECK_OK(rlhi_tokenizer_encode(t, s, strlen(s), flags, &ids, &n));
    same = n == nwant;
    for (i = 0; same && i < n; i++)
        same = ids[i] == want[i];
    CHECK_MSG(same, "encode '%s' (flags %d)", s, flags);
    if (!same) {
        print_ids("got", ids, n);
        print_ids("want", want, nwant);
    }
    rlhi_free(ids);
}

/* Text for speed figures: every golden string and eval text we can find,
 * repeated to about `target` bytes. */
static char *bench_text(size_t target, size_t *len)
{
    static const char *const files[] = {
        "tokenizers/golden/llamacpp-ggml-vocab-gpt-2.inp",
        "tokenizers/golden/transformersjs_tokenizer_vectors.jsonl",
        "eval/mt_bench_question.jsonl", "eval/arena_hard_v2.0_question.jsonl",
        "eval/gsm8k_test.jsonl", "eval/math500_test.jsonl", NULL};
    struct rlhi_buf src = RLHI_BUF_INIT, out = RLHI_BUF_INIT;
    int i;

    for (i = 0; files[i]; i++) {
        const char *p = check_data(files[i]);
        char *d;
        size_t n;

        if (p && rlhi_file_read(p, &d, &n) == 0) {
            rlhi_buf_add(&src, d, n < (4u << 20) ? n : (4u << 20));
            rlhi_free(d);
        }
    }
    if (!src.len)
        rlhi_buf_adds(&src, "The quick brown fox jumps over the lazy dog. ");
    while (out.len < target)
        rlhi_buf_add(&out, src.buf, src.len);
    rlhi_buf_release(&src);
    return rlhi_buf_detach(&out, len);
}

static void speed(const char *name, const struct rlhi_tokenizer *t,
                  double load_s, const char *text, size_t len, bool rt)
{
    int32_t *ids = NULL;
    size_t n = 0;
    double t0 = rlhi_time_now(), dt;

    CHECK_OK(rlhi_tokenizer_encode(t, text, len, 0, &ids, &n));
    dt = rlhi_time_now() - t0;
    fprintf(stderr, "  %-8s load %.3f s, encode %.1f MB in %.3f s = %.1f MB/s"
            " (%zu tokens, %.2f bytes/token)\n", name, load_s, len / 1e6, dt,
            len / 1e6 / dt, n, (double)len / (double)n);
    if (rt)
        CHECK(roundtrip(t, ids, n, text, len));
    rlhi_free(ids);
}

/* The per-call piece cache must not change a single id. */
static void cache_same(const char *name, const struct rlhi_tokenizer *t,
                       const char *text, size_t len)
{
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    size_t keep = rlhi__bpe_cache_min;

    rlhi__bpe_cache_min = 0;
    CHECK_OK(rlhi_tokenizer_encode(t, text, len, 0, &a, &na));
    rlhi__bpe_cache_min = (size_t)-1;
    CHECK_OK(rlhi_tokenizer_encode(t, text, len, 0, &b, &nb));
    rlhi__bpe_cache_min = keep;
    CHECK_MSG(na == nb && !memcmp(a, b, na * sizeof *a),
              "%s: cached and uncached encodings differ", name);
    rlhi_free(a);
    rlhi_free(b);
}

static const char *tmpdir(void)
{
    static char dir[] = "/tmp/rlhi-test-tok-XXXXXX";
    static bool made;

    if (!made)
        made = mkdtemp(dir) != NULL;
    return dir;
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    size_t w;

    if (!f)
        return -1;
    w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

/* Loading `content` as a tokenizer.json must fail with RLHI_EFORMAT and a
 * message holding `want`. */
static void bad_json(const char *content, const char *want)
{
    char path[512];
    struct rlhi_tokenizer *t = NULL;
    int r;

    snprintf(path, sizeof path, "%s/bad.json", tmpdir());
    CHECK(write_file(path, content, strlen(content)) == 0);
    r = rlhi_tokenizer_load(&t, path);
    CHECK_INT_EQ(r, RLHI_EFORMAT);
    CHECK_MSG(strstr(rlhi_errmsg(), want) && strstr(rlhi_errmsg(), "bad.json"),
              "message '%s' lacks '%s'", rlhi_errmsg(), want);
    CHECK(t == NULL);
    unlink(path);
}

/* Runs `rlhi tokenize ARGS < input`; returns the exit status and the
 * stdout and stderr text (caller frees), or -1 when it cannot run. */
static int run_cli(const char *rlhi, const char *args, const char *input,
                   char **out, char **err)
{
    char in[600], o[600], e[600], cmd[4096];
    size_t n;
    int st;

    snprintf(in, sizeof in, "%s/cli.in", tmpdir());
    snprintf(o, sizeof o, "%s/cli.out", tmpdir());
    snprintf(e, sizeof e, "%s/cli.err", tmpdir());
    if (write_file(in, input, strlen(input)))
        return -1;
    snprintf(cmd, sizeof cmd, "'%s' tokenize %s <'%s' >'%s' 2>'%s'", rlhi,
             args, in, o, e);
    st = system(cmd);
    if (st < 0 || !WIFEXITED(st) || rlhi_file_read(o, out, &n) ||
        rlhi_file_read(e, err, &n))
        return -1;
    unlink(in);
    unlink(o);
    unlink(e);
    return WEXITSTATUS(st);
}

int main(int argc, char **argv)
{
    struct rlhi_tokenizer *gpt2, *llama3, *qwen, *tok512 = NULL;
    double lg = 0, ll = 0, lq = 0;
    /* check_data's buffer is static: keep a copy. */
    char *p512 = check_data("models/llama2c-stories260K/tok512.bin")
                     ? rlhi_strdup(check_data(
                           "models/llama2c-stories260K/tok512.bin"))
                     : NULL;

    gpt2 = load("tokenizers/gpt2", &lg);
    llama3 = load("tokenizers/llama3.1", &ll);
    qwen = load("tokenizers/qwen3/tokenizer.json", &lq);
    if (p512)
        CHECK_OK(rlhi_tokenizer_load(&tok512, p512));

    TEST("vocabulary sizes, bos/eos") {
        if (!gpt2 || !llama3 || !qwen) {
            SKIP("tokenizers absent");
            break;
        }
        CHECK_INT_EQ(rlhi_tokenizer_kind(gpt2), RLHI_TOK_BYTE_BPE);
        CHECK_INT_EQ(rlhi_tokenizer_vocab_size(gpt2), 50257);
        CHECK_INT_EQ(rlhi_tokenizer_bos(gpt2), 50256);
        CHECK_INT_EQ(rlhi_tokenizer_eos(gpt2), 50256);
        CHECK_INT_EQ(rlhi_tokenizer_vocab_size(llama3), 128256);
        CHECK_INT_EQ(rlhi_tokenizer_bos(llama3), 128000);
        CHECK_INT_EQ(rlhi_tokenizer_eos(llama3), 128009); /* config */
        CHECK(rlhi_tokenizer_wants_bos(llama3));
        CHECK_INT_EQ(rlhi_tokenizer_vocab_size(qwen), 151669);
        CHECK_INT_EQ(rlhi_tokenizer_bos(qwen), -1); /* config: null */
        CHECK_INT_EQ(rlhi_tokenizer_eos(qwen), 151645); /* <|im_end|> */
        CHECK(!rlhi_tokenizer_wants_bos(qwen));
        CHECK_INT_EQ(rlhi_tokenizer_token_id(llama3, "<|eot_id|>"), 128009);
        CHECK_INT_EQ(rlhi_tokenizer_token_id(gpt2, "Ġthe"), 262);
        CHECK_INT_EQ(rlhi_tokenizer_token_id(gpt2, "no such token"), -1);
        CHECK(rlhi_tokenizer_is_special(qwen, 151644));
        CHECK(!rlhi_tokenizer_is_special(qwen, 151667)); /* <think> */
    }

    TEST("llama.cpp golden vectors") {
        /* Each .inp holds 46 strings (splitting on the separator leaves an
         * empty 47th chunk after the final one) and each .out 46 lines. */
        if (gpt2)
            CHECK_INT_EQ(golden_llamacpp(gpt2, "gpt-2"), 46);
        if (llama3)
            CHECK_INT_EQ(golden_llamacpp(llama3, "llama-bpe"), 46);
        if (qwen)
            CHECK_INT_EQ(golden_llamacpp(qwen, "qwen2"), 46);
        /* llama-spm is the 32000-token Llama-2 SentencePiece vocabulary,
         * which is not in the data folder (tok512 is a different one). */
        SKIP("llamacpp-ggml-vocab-llama-spm: needs the Llama-2 32k vocab, "
             "absent");
    }

    TEST("transformers.js vectors") {
        if (!gpt2 || !llama3 || !qwen) {
            SKIP("tokenizers absent");
            break;
        }
        golden_transformersjs(gpt2, llama3, qwen);
    }

    TEST("special tokens only with RLHI_ENC_SPECIAL") {
        int32_t *ids = NULL;
        size_t n = 0;
        struct rlhi_buf b = RLHI_BUF_INIT;
        static const char s[] = "<|start_header_id|>user<|end_header_id|>"
                                "\n\nhi<|eot_id|>";

        if (!llama3 || !qwen) {
            SKIP("tokenizers absent");
            break;
        }
        check_ids(llama3, "<|eot_id|>", RLHI_ENC_SPECIAL,
                  (const int32_t[]){128009}, 1);
        CHECK_OK(rlhi_tokenizer_encode(llama3, "<|eot_id|>", 10, 0, &ids,
                                       &n));
        CHECK(n > 1);
        for (size_t i = 0; i < n; i++)
            CHECK(ids[i] < 128000);
        CHECK(roundtrip(llama3, ids, n, "<|eot_id|>", 10));
        rlhi_free(ids);
        check_ids(llama3, s, RLHI_ENC_SPECIAL | RLHI_ENC_BOS,
                  (const int32_t[]){128000, 128006, 882, 128007, 271, 6151,
                                    128009}, 7);
        /* decode writes special tokens unless told to skip them */
        CHECK_OK(rlhi_tokenizer_decode(llama3, (const int32_t[]){128000,
                 6151, 128009}, 3, true, &b));
        CHECK_STR_EQ(b.buf, "hi");
        rlhi_buf_clear(&b);
        CHECK_OK(rlhi_tokenizer_decode(llama3, (const int32_t[]){6151,
                 128009}, 2, false, &b));
        CHECK_STR_EQ(b.buf, "hi<|eot_id|>");
        rlhi_buf_release(&b);
        /* Qwen's <think> is an added token that is not special: matched
         * always, as in Hugging Face. */
        check_ids(qwen, "<think>", 0, (const int32_t[]){151667}, 1);
        check_ids(qwen, "<|im_start|>", RLHI_ENC_SPECIAL,
                  (const int32_t[]){151644}, 1);
        check_ids(qwen, "hi", RLHI_ENC_EOS, (const int32_t[]){6023, 151645},
                  2);
        check_ids(gpt2, "a<|endoftext|>", RLHI_ENC_SPECIAL,
                  (const int32_t[]){64, 50256}, 2);
    }

    TEST("NFC normalisation (Qwen) and invalid UTF-8") {
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;

        if (!qwen || !llama3) {
            SKIP("tokenizers absent");
            break;
        }
        /* "é" decomposed (e + U+0301) encodes as the composed one. */
        CHECK_OK(rlhi_tokenizer_encode(qwen, "caf\xc3\xa9", 5, 0, &a, &na));
        CHECK_OK(rlhi_tokenizer_encode(qwen, "cafe\xcc\x81", 6, 0, &b, &nb));
        CHECK(na == nb && !memcmp(a, b, na * sizeof *a));
        rlhi_free(a);
        rlhi_free(b);
        /* Llama-3 has no normalizer: the two stay different. */
        CHECK_OK(rlhi_tokenizer_encode(llama3, "caf\xc3\xa9", 5, 0, &a, &na));
        CHECK_OK(rlhi_tokenizer_encode(llama3, "cafe\xcc\x81", 6, 0, &b,
                                       &nb));
        CHECK(!(na == nb && !memcmp(a, b, na * sizeof *a)));
        rlhi_free(a);
        rlhi_free(b);
        /* Bytes that are not UTF-8 still encode, byte by byte, and come
         * back unchanged. */
        CHECK_OK(rlhi_tokenizer_encode(qwen, "a\xff\xfe b\xc3", 6, 0, &a,
                                       &na));
        CHECK(roundtrip(qwen, a, na, "a\xff\xfe b\xc3", 6));
        rlhi_free(a);
        CHECK_OK(rlhi_tokenizer_encode(gpt2, "\x80x\xc0", 3, 0, &a, &na));
        CHECK(roundtrip(gpt2, a, na, "\x80x\xc0", 3));
        rlhi_free(a);
    }

    TEST("heap merge equals linear merge") {
        struct rlhi_rng rng;
        static const char alpha[] = "abcdefghijklmnopqrstuvwxyz eeetttaaa"
                                    "\xc3\xa9\xe2\x80\x99";
        int k, diff = 0;

        if (!gpt2 || !qwen) {
            SKIP("tokenizers absent");
            break;
        }
        rlhi_rng_seed(&rng, 7);
        for (k = 0; k < 400; k++) {
            struct rlhi_tokenizer *t = k & 1 ? gpt2 : qwen;
            uint8_t s[128];
            size_t n = 1 + rlhi_rng_below(&rng, sizeof s), i;
            struct rlhi__ids a = {NULL, 0, 0}, b = {NULL, 0, 0};

            for (i = 0; i < n; i++)
                s[i] = (uint8_t)alpha[rlhi_rng_below(&rng, sizeof alpha - 1)];
            CHECK_OK(rlhi__bpe_word(t, s, n, 0, &a));
            CHECK_OK(rlhi__bpe_word(t, s, n, 1, &b));
            diff += a.n != b.n || memcmp(a.v, b.v, a.n * sizeof *a.v);
            rlhi_free(a.v);
            rlhi_free(b.v);
        }
        CHECK_INT_EQ(diff, 0);
    }

    TEST("long pieces: a megabyte of one letter, of spaces") {
        size_t n = 1 << 20;
        char *s = rlhi_malloc(n);
        int32_t *ids = NULL;
        size_t nid = 0;
        double t0;

        if (!gpt2 || !llama3) {
            SKIP("tokenizers absent");
            rlhi_free(s);
            break;
        }
        memset(s, 'a', n);
        t0 = rlhi_time_now();
        CHECK_OK(rlhi_tokenizer_encode(llama3, s, n, 0, &ids, &nid));
        CHECK(roundtrip(llama3, ids, nid, s, n));
        rlhi_free(ids);
        memset(s, ' ', n);
        CHECK_OK(rlhi_tokenizer_encode(gpt2, s, n, 0, &ids, &nid));
        CHECK(roundtrip(gpt2, ids, nid, s, n));
        rlhi_free(ids);
        /* n log n takes ~0.5 s for both here (ASan: a few); the n^2 of
         * a plain rescan would take hours. */
        fprintf(stderr, "  1 MiB pieces: %.2f s\n", rlhi_time_now() - t0);
        CHECK(rlhi_time_now() - t0 < 60);
        rlhi_free(s);
    }

    TEST("llama2.c tok512: encode as run.c, pieces, decode") {
        struct rlhi_buf b = RLHI_BUF_INIT;
        char scratch[8];
        size_t len;
        const char *pc;
        int32_t *ids = NULL;
        size_t n = 0;

        if (!tok512) {
            SKIP("tok512.bin absent");
            break;
        }
        CHECK_INT_EQ(rlhi_tokenizer_kind(tok512), RLHI_TOK_SPM_BPE);
        CHECK_INT_EQ(rlhi_tokenizer_vocab_size(tok512), 512);
        CHECK_INT_EQ(rlhi_tokenizer_bos(tok512), 1);
        CHECK_INT_EQ(rlhi_tokenizer_eos(tok512), 2);
        /* Expected ids from a line-by-line Python transcription of
         * llama2.c run.c encode() run on tok512.bin. */
        check_ids(tok512, "Once upon a time, there was a little girl named "
                  "Lily.", RLHI_ENC_BOS | RLHI_ENC_EOS,
                  (const int32_t[]){1, 403, 407, 261, 378, 432, 383, 286,
                                    261, 376, 298, 315, 421, 395, 317, 426,
                                    2}, 17);
        check_ids(tok512, "", RLHI_ENC_BOS | RLHI_ENC_EOS,
                  (const int32_t[]){1, 2}, 2);
        check_ids(tok512, "", 0, NULL, 0);
        /* ✨ (E2 9C A8) is not in the vocabulary: byte fallback + 3. */
        check_ids(tok512, "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\xa8",
                  RLHI_ENC_BOS | RLHI_ENC_EOS,
                  (const int32_t[]){1, 270, 485, 306, 414, 263, 198, 185,
                                    420, 341, 410, 229, 159, 171, 2}, 15);
        check_ids(tok512, "Tom said: \"Hi!\"\n", RLHI_ENC_BOS,
                  (const int32_t[]){1, 274, 287, 336, 467, 313, 440, 417,
                                    443, 436, 13}, 11);
        /* piece: leading space dropped after BOS only; <0x0A> is '\n' */
        pc = rlhi_tokenizer_piece(tok512, 1, 403, scratch, &len);
        CHECK(pc && len == 4 && !memcmp(pc, "Once", 4));
        pc = rlhi_tokenizer_piece(tok512, 403, 403, scratch, &len);
        CHECK(pc && len == 5 && !memcmp(pc, " Once", 5));
        pc = rlhi_tokenizer_piece(tok512, 5, 13, scratch, &len);
        CHECK(pc && len == 1 && pc[0] == '\n');
        pc = rlhi_tokenizer_piece(tok512, -1, 3 + 0xe2, scratch, &len);
        CHECK(pc && len == 1 && (uint8_t)pc[0] == 0xe2);
        CHECK(rlhi_tokenizer_piece(tok512, -1, 512, scratch, &len) == NULL);
        /* decode = run.c's pieces joined: round trip after BOS */
        {
            static const char *const texts[] = {
                "Once upon a time, there was a little girl named Lily.",
                "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\xa8", "a\n\nb  c\t"};
            for (size_t i = 0; i < 3; i++) {
                CHECK_OK(rlhi_tokenizer_encode(tok512, texts[i],
                                               strlen(texts[i]),
                                               RLHI_ENC_BOS, &ids, &n));
                rlhi_buf_clear(&b);
                CHECK_OK(rlhi_tokenizer_decode(tok512, ids, n, true, &b));
                CHECK_STR_EQ(b.buf, texts[i]);
                rlhi_free(ids);
            }
        }
        /* without BOS the dummy prefix space stays */
        CHECK_OK(rlhi_tokenizer_encode(tok512, "Lily", 4, 0, &ids, &n));
        rlhi_buf_clear(&b);
        CHECK_OK(rlhi_tokenizer_decode(tok512, ids, n, false, &b));
        CHECK_STR_EQ(b.buf, " Lily");
        rlhi_free(ids);
        /* special pieces are kept unless skipped */
        rlhi_buf_clear(&b);
        CHECK_OK(rlhi_tokenizer_decode(tok512, (const int32_t[]){1, 403, 2},
                                       3, false, &b));
        CHECK_STR_EQ(b.buf, "\n<s>\nOnce\n</s>\n");
        rlhi_buf_release(&b);
    }

    TEST("tok512: heap encode equals run.c's loop") {
        struct rlhi_rng rng;
        static const char *const words[] = {
            "Once", " upon", " a", " time", ",", " Lily", " saw", " the",
            " big", " dog", ".", "\n", " \xc3\xa9", "\xe2\x9c\xa8", "  ",
            "ing", "ed", " happy", "!", "\"", "q", "z"};
        int k, diff = 0;

        if (!tok512) {
            SKIP("tok512.bin absent");
            break;
        }
        rlhi_rng_seed(&rng, 11);
        for (k = 0; k < 200; k++) {
            struct rlhi_buf s = RLHI_BUF_INIT;
            struct rlhi__ids a = {NULL, 0, 0}, b = {NULL, 0, 0};
            int w, nw = 1 + (int)rlhi_rng_below(&rng, 60);

            for (w = 0; w < nw; w++)
                rlhi_buf_adds(&s, words[rlhi_rng_below(&rng, 22)]);
            if (k & 1)
                rlhi__ids_push(&a, 1), rlhi__ids_push(&b, 1);
            CHECK_OK(rlhi__spm_encode(tok512, s.buf, s.len, &a));
            CHECK_OK(rlhi__spm_encode_plain(tok512, s.buf, s.len, &b));
            diff += a.n != b.n || memcmp(a.v, b.v, a.n * sizeof *a.v);
            rlhi_free(a.v);
            rlhi_free(b.v);
            rlhi_buf_release(&s);
        }
        CHECK_INT_EQ(diff, 0);
    }

    TEST("tok512: truncated and corrupt copies") {
        char path[512], *data;
        size_t len;
        struct rlhi_tokenizer *t = NULL;
        int32_t bad = -5;

        if (!p512) {
            SKIP("tok512.bin absent");
            break;
        }
        CHECK_OK(rlhi_file_read(p512, &data, &len));
        snprintf(path, sizeof path, "%s/tok512-cut.bin", tmpdir());
        /* cut inside the bytes of a token: 4 + 3 records of "<unk>" etc.
         * are 4 + (8+5) + (8+5) + (8+6) = 44 bytes; 46 is inside token 3 */
        CHECK(write_file(path, data, 46) == 0);
        CHECK_INT_EQ(rlhi_tokenizer_load(&t, path), RLHI_EFORMAT);
        CHECK_MSG(strstr(rlhi_errmsg(), "token 3") &&
                      strstr(rlhi_errmsg(), "tok512-cut.bin"),
                  "message: %s", rlhi_errmsg());
        CHECK(write_file(path, data, len - 3) == 0);
        CHECK_INT_EQ(rlhi_tokenizer_load(&t, path), RLHI_EFORMAT);
        CHECK_MSG(strstr(rlhi_errmsg(), "token 511"), "message: %s",
                  rlhi_errmsg());
        /* a negative length in token 1 */
        memcpy(data + 4 + 13 + 4, &bad, 4);
        CHECK(write_file(path, data, len) == 0);
        CHECK_INT_EQ(rlhi_tokenizer_load(&t, path), RLHI_EFORMAT);
        CHECK_MSG(strstr(rlhi_errmsg(), "token 1") &&
                      strstr(rlhi_errmsg(), "-5"),
                  "message: %s", rlhi_errmsg());
        CHECK(t == NULL);
        /* reading a fixed count stops there, as run.c does */
        CHECK(write_file(path, data, 0) == 0);
        CHECK_INT_EQ(rlhi_tokenizer_load(&t, path), RLHI_EFORMAT);
        unlink(path);
        rlhi_free(data);
        CHECK_OK(rlhi_tokenizer_load_llama2c(&t, p512, 300));
        if (t) {
            CHECK_INT_EQ(rlhi_tokenizer_vocab_size(t), 300);
            rlhi_tokenizer_free(t);
        }
        CHECK_INT_EQ(rlhi_tokenizer_load_llama2c(&t, p512, 600),
                     RLHI_EFORMAT);
        CHECK_MSG(strstr(rlhi_errmsg(), "token 512"), "message: %s",
                  rlhi_errmsg());
    }

    TEST("bad tokenizer files") {
        struct rlhi_tokenizer *t = NULL;
        char path[512];

        CHECK_INT_EQ(rlhi_tokenizer_load(&t, "/nonexistent/tokenizer.json"),
                     RLHI_ENOTFOUND);
        CHECK(strstr(rlhi_errmsg(), "/nonexistent/tokenizer.json") != NULL);
        CHECK_INT_EQ(rlhi_tokenizer_load(&t, tmpdir()), RLHI_ENOTFOUND);
        /* syntax errors inside the big members and inside jansson's */
        bad_json("{\n\"model\": {\n\"vocab\": {\"a\": 0,, \"b\": 1},\n"
                 "\"merges\": []}}", "line 3");
        bad_json("{\"added_tokens\": [],\n\n \"normalizer\": {\"type\": "
                 "\"NFC\",\n \"x\" 1}, \"model\": {}}", "line 4");
        bad_json("{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}",
                 "not of the form");
        bad_json("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"},\n"
                 "\"model\": {\"vocab\": {\"a\": 0, \"b\": 1},\n"
                 "\"merges\": [\"a b\"]}}", "not in the vocabulary");
        bad_json("{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}",
                 "line 1");
        bad_json("{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}} x",
                 "unexpected data");
        /* a model type we do not implement says so */
        snprintf(path, sizeof path, "%s/wp.json", tmpdir());
        {
            static const char wp[] = "{\"model\": {\"type\": \"WordPiece\", "
                                     "\"vocab\": {}, \"merges\": []}}";

            CHECK(write_file(path, wp, strlen(wp)) == 0);
        }
        CHECK_INT_EQ(rlhi_tokenizer_load(&t, path), RLHI_ENOTIMPL);
        CHECK(strstr(rlhi_errmsg(), "WordPiece") != NULL);
        unlink(path);
        /* a minimal hand-made file works */
        snprintf(path, sizeof path, "%s/tiny.json", tmpdir());
        {
            static const char tiny[] =
                "{\"added_tokens\": [{\"id\": 5, \"content\": \"<e>\", "
                "\"special\": true}],\n \"pre_tokenizer\": {\"type\": "
                "\"ByteLevel\", \"use_regex\": true},\n \"model\": {\"type\": "
                "\"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, "
                "\"\\u0120\": 3, \"\\u0120ab\": 4},\n \"merges\": [[\"a\", "
                "\"b\"], \"\\u0120 ab\"]}}";

            CHECK(write_file(path, tiny, strlen(tiny)) == 0);
            CHECK_OK(rlhi_tokenizer_load(&t, path));
            if (t) {
                check_ids(t, "ab ab<e>", RLHI_ENC_SPECIAL,
                          (const int32_t[]){2, 4, 5}, 3);
                CHECK_INT_EQ(rlhi_tokenizer_vocab_size(t), 6);
                CHECK_INT_EQ(rlhi_tokenizer_encode(t, "c", 1, 0,
                                                   &(int32_t *){NULL},
                                                   &(size_t){0}),
                             RLHI_EFORMAT);
                rlhi_tokenizer_free(t);
            }
        }
        unlink(path);
    }

    TEST("rlhi tokenize (the command, beside this test program)") {
        /* BUILD/tests/test_tokenizer -> BUILD/rlhi */
        char rlhi[4096], args[4096], *out = NULL, *err = NULL;
        const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
        const char *g = check_data("tokenizers/gpt2");
        int st;

        if (!slash || !g) {
            SKIP("no path to the rlhi command or no GPT-2 files");
            break;
        }
        snprintf(rlhi, sizeof rlhi, "%.*s/../rlhi", (int)(slash - argv[0]),
                 argv[0]);
        if (access(rlhi, X_OK)) {
            SKIP("rlhi command not built");
            break;
        }
        snprintf(args, sizeof args, "--tokenizer '%s' --special --eos", g);
        st = run_cli(rlhi, args,
                     "{\"text\": \"Hello world\"}\n\n{\"text\": 1}\n"
                     "oops\n{\"text\": \"a<|endoftext|>\\u0000\"}\n",
                     &out, &err);
        CHECK_INT_EQ(st, 3);
        CHECK_STR_EQ(out, "{\"ids\": [15496, 995, 50256]}\n"
                          "{\"ids\": [64, 50256, 188, 50256]}\n");
        CHECK_MSG(err && strstr(err, "rlhi: error: <stdin>:3: ") &&
                      strstr(err, "rlhi: error: <stdin>:4: "),
                  "stderr: %s", err);
        rlhi_free(out);
        rlhi_free(err);
        snprintf(args, sizeof args, "--tokenizer '%s' --decode", g);
        st = run_cli(rlhi, args,
                     "{\"ids\": [15496, 995, 50256]}\n"
                     "{\"ids\": [163, 242, 64, 10]}\n", &out, &err);
        CHECK_INT_EQ(st, 0);
        /* a split character comes out as U+FFFD, escapes as JSON */
        CHECK_STR_EQ(out, "{\"text\": \"Hello world<|endoftext|>\"}\n"
                          "{\"text\": \"\xef\xbf\xbd" "a+\"}\n");
        rlhi_free(out);
        rlhi_free(err);
        st = run_cli(rlhi, args, "{\"ids\": [50257]}\n", &out, &err);
        CHECK_INT_EQ(st, 3);
        CHECK_MSG(err && strstr(err, "<stdin>:1: ids[0] = 50257"),
                  "stderr: %s", err);
        rlhi_free(out);
        rlhi_free(err);
    }

    TEST("load time and encode speed (figures, not limits)") {
        size_t len;
        char *text = bench_text(4u << 20, &len);
        double t0 = rlhi_time_now(), l512 = 0;

        if (tok512) {
            struct rlhi_tokenizer *t = NULL;

            CHECK_OK(rlhi_tokenizer_load(&t, p512));
            l512 = rlhi_time_now() - t0;
            rlhi_tokenizer_free(t);
        }
        if (gpt2)
            cache_same("gpt2", gpt2, text, len / 8);
        if (llama3)
            cache_same("llama3", llama3, text, len / 8);
        if (qwen)
            cache_same("qwen2", qwen, text, len / 8);
        if (gpt2)
            speed("gpt2", gpt2, lg, text, len, true);
        if (llama3)
            speed("llama3", llama3, ll, text, len, true);
        if (qwen)
            speed("qwen2", qwen, lq, text, len, false);
        /* tok512 without BOS decodes with the dummy prefix: no round trip;
         * and its merges rescan strings, so a smaller sample. */
        if (tok512)
            speed("tok512", tok512, l512, text, len / 8, false);
        rlhi_free(text);
    }

    rlhi_tokenizer_free(gpt2);
    rlhi_tokenizer_free(llama3);
    rlhi_tokenizer_free(qwen);
    rlhi_tokenizer_free(tok512);
    rlhi_free(p512);
    rmdir(tmpdir());
    return check_summary();
}
