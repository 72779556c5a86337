/* Tests for BPE training: merges equal a naive from-scratch reference,
 * round trips on real held-out text, the written tokenizer.json loads in
 * the tokenizer and segments as the trainer does, determinism, corpus
 * files and errors. */
#include <jansson.h>
#include <unistd.h>

#include "check.h"
#include "rlhi/bpe_train.h"
#include "rlhi/chat.h"
#include "rlhi/tokenizer.h"

static const char *const specials[] = {"<|endoftext|>", "<|system|>",
                                       "<|user|>", "<|assistant|>",
                                       "<|end|>"};
#define NSPECIAL 5

static struct rlhi_bpe_train_options options(int vocab_size)
{
    struct rlhi_bpe_train_options o = {0};

    o.vocab_size = vocab_size;
    o.special_tokens = specials;
    o.n_special = NSPECIAL;
    o.bos_token = "<|endoftext|>";
    o.eos_token = "<|end|>";
    o.pad_token = "<|endoftext|>";
    o.chat_template = rlhi_chat_rlhi_jinja();
    return o;
}

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/rlhi-bpe-XXXXXX";
    char *d = mkdtemp(tmpl);

    return d ? rlhi_strdup(d) : NULL;
}

static void rm_dir(const char *dir)
{
    const char *names[] = {"tokenizer.json", "tokenizer_config.json",
                           "corpus.jsonl", "corpus.txt"};

    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *p = rlhi_path_join(dir, names[i]);

        unlink(p);
        rlhi_free(p);
    }
    rmdir(dir);
}

/* ---- a naive reference trainer ---------------------------------------- */

/* Words of symbol ids with counts; every merge recounts all pairs from
 * scratch, which is slow and obviously right. Symbols: GPT-2 ids of single
 * bytes (letters 'a'.. = c - 33, space = 220, as in GPT-2's encoder.json
 * where "a" is 64 and "Ġ" is 220), then 256 + merge index. */
#define REF_MAXW 64
#define REF_MAXLEN 16
#define REF_MAXSYM 1024
struct ref {
    int nw;
    int len[REF_MAXW];
    int sym[REF_MAXW][REF_MAXLEN];
    long count[REF_MAXW];
    char str[REF_MAXSYM][64]; /* token text in the byte-level alphabet */
    char merge[REF_MAXSYM][130]; /* "left right" that made token i */
    int nsym;
};

static void ref_add(struct ref *r, const char *w, bool space)
{
    char buf[REF_MAXLEN + 1];
    int i, n;

    snprintf(buf, sizeof buf, "%s%s", space ? " " : "", w);
    for (i = 0; i < r->nw; i++) {
        bool same = r->len[i] == (int)strlen(buf);

        for (n = 0; same && buf[n]; n++)
            same = r->sym[i][n] == (buf[n] == ' ' ? 220 : buf[n] - 33);
        if (same) {
            r->count[i]++;
            return;
        }
    }
    RLHI_ASSERT(r->nw < REF_MAXW);
    for (n = 0; buf[n]; n++)
        r->sym[r->nw][n] = buf[n] == ' ' ? 220 : buf[n] - 33;
    r->len[r->nw] = n;
    r->count[r->nw++] = 1;
}

/* Runs merges until nsym == target or no pair is seen twice. */
static void ref_train(struct ref *r, int target)
{
    static long cnt[REF_MAXSYM][REF_MAXSYM];
    int i, k;

    for (i = 0; i < 256; i++)
        r->str[i][0] = 0;
    for (i = 'a'; i <= 'z'; i++)
        snprintf(r->str[i - 33], 64, "%c", i);
    snprintf(r->str[220], 64, "\xc4\xa0"); /* U+0120 'Ġ' */
    r->nsym = 256;
    while (r->nsym < target) {
        long best = 0;
        int ba = -1, bb = -1, a, b;

        memset(cnt, 0, sizeof cnt);
        for (i = 0; i < r->nw; i++)
            for (k = 0; k + 1 < r->len[i]; k++)
                cnt[r->sym[i][k]][r->sym[i][k + 1]] += r->count[i];
        /* Highest count; ties to the smallest (left, right). */
        for (a = 0; a < r->nsym; a++)
            for (b = 0; b < r->nsym; b++)
                if (cnt[a][b] > best)
                    best = cnt[a][b], ba = a, bb = b;
        if (best < 2)
            break;
        {
            /* Words are at most 16 bytes, so 31 is plenty for a side. */
            char left[32], right[32];

            memcpy(left, r->str[ba], sizeof left);
            memcpy(right, r->str[bb], sizeof right);
            left[31] = right[31] = 0;
            snprintf(r->str[r->nsym], 64, "%s%s", left, right);
            snprintf(r->merge[r->nsym], sizeof r->merge[0], "%s %s", left,
                     right);
        }
        for (i = 0; i < r->nw; i++) {
            int j = 0;

            for (k = 0; k < r->len[i];) {
                if (k + 1 < r->len[i] && r->sym[i][k] == ba &&
                    r->sym[i][k + 1] == bb) {
                    r->sym[i][j++] = r->nsym;
                    k += 2;
                } else {
                    r->sym[i][j++] = r->sym[i][k++];
                }
            }
            r->len[i] = j;
        }
        r->nsym++;
    }
}

static json_t *load_json(const char *dir, const char *name)
{
    char *p = rlhi_path_join(dir, name);
    json_error_t jerr;
    json_t *j = json_load_file(p, 0, &jerr);

    CHECK_MSG(j != NULL, "cannot parse '%s': line %d: %s", p, jerr.line,
              jerr.text);
    rlhi_free(p);
    return j;
}

static void test_against_reference(void)
{
    /* Words built to exercise overlapping pairs ("aaaa", "abab") and ties. */
    static const char *vocab[] = {
        "aaaa", "abab", "aab", "baa", "lower", "low", "newest", "widest",
        "ab", "ba", "aaab", "bbbb", "cab", "abc", "eded", "deed", "a", "e",
        "bababa", "newer", "wide", "lowest", "dew", "wed"};
    const int nv = sizeof vocab / sizeof *vocab;
    struct ref *r = rlhi_calloc(1, sizeof *r);
    struct rlhi_buf text = RLHI_BUF_INIT;
    struct rlhi_rng rng;
    struct rlhi_bpe_trainer *t = NULL;
    struct rlhi_bpe_train_options o = options(256 + 200 + NSPECIAL);
    struct rlhi_bpe_stats st;
    char *dir = tmpdir();
    json_t *tj = NULL, *merges;
    int i, mismatches = 0;

    /* A Zipf-like stream of the words, joined by single spaces, so the
     * GPT-2 regex cuts exactly at the spaces (" ?\p{L}+"). */
    rlhi_rng_seed(&rng, 7);
    for (i = 0; i < 4000; i++) {
        int k = (int)(rlhi_rng_double(&rng) * rlhi_rng_double(&rng) * nv);

        rlhi_buf_adds(&text, i ? " " : "");
        rlhi_buf_adds(&text, vocab[k]);
        ref_add(r, vocab[k], i > 0);
    }
    ref_train(r, 256 + 200);

    CHECK_OK(rlhi_bpe_trainer_new(&t, &o));
    CHECK_OK(rlhi_bpe_trainer_add_text(t, text.buf, text.len));
    CHECK_OK(rlhi_bpe_trainer_train(t));
    rlhi_bpe_trainer_stats(t, &st);
    CHECK_INT_EQ(st.merges, r->nsym - 256);
    CHECK_INT_EQ(st.vocab_size, r->nsym + NSPECIAL);
    CHECK_INT_EQ(st.words, r->nw);
    CHECK_INT_EQ(st.pretokens, 4000);
    CHECK_OK(rlhi_bpe_trainer_save(t, dir));

    /* The merges in tokenizer.json are the reference's, in order. */
    tj = load_json(dir, "tokenizer.json");
    merges = json_object_get(json_object_get(tj, "model"), "merges");
    CHECK_INT_EQ(json_array_size(merges), r->nsym - 256);
    for (i = 256; i < r->nsym && i - 256 < (int)json_array_size(merges);
         i++) {
        const char *got = json_string_value(json_array_get(merges, i - 256));
        json_t *vocabj = json_object_get(json_object_get(tj, "model"),
                                         "vocab");

        if (!got || strcmp(got, r->merge[i]) ||
            json_integer_value(json_object_get(vocabj, r->str[i])) != i) {
            if (mismatches < 5)
                fprintf(stderr, "merge %d: got '%s', reference '%s'\n",
                        i - 256, got ? got : "(none)", r->merge[i]);
            mismatches++;
        }
    }
    CHECK_INT_EQ(mismatches, 0);

    /* Each word segments as the reference left it. */
    for (i = 0; i < r->nw; i++) {
        char w[REF_MAXLEN + 1];
        int32_t *ids = NULL;
        size_t n = 0, k;
        bool same;

        /* Rebuild the word's text from its final symbols. */
        w[0] = 0;
        for (k = 0; k < (size_t)r->len[i]; k++) {
            const char *s = r->str[r->sym[i][k]];

            if (!strncmp(s, "\xc4\xa0", 2))
                snprintf(w + strlen(w), sizeof w - strlen(w), " %s", s + 2);
            else
                snprintf(w + strlen(w), sizeof w - strlen(w), "%s", s);
        }
        CHECK_OK(rlhi_bpe_trainer_encode(t, w, strlen(w), &ids, &n));
        same = n == (size_t)r->len[i];
        for (k = 0; same && k < n; k++)
            same = ids[k] == r->sym[i][k];
        CHECK_MSG(same, "word '%s' segments differently", w);
        rlhi_free(ids);
    }
    json_decref(tj);
    rlhi_bpe_trainer_free(t);
    rlhi_buf_release(&text);
    rlhi_free(r);
    rm_dir(dir);
    rlhi_free(dir);
}

/* ---- real text -------------------------------------------------------- */

/* GSM8K test questions and answers: `train` gets the first `ntrain`
 * lines, `held` the rest (as separate documents, NUL-separated). */
static int read_gsm8k(const char *path, size_t ntrain, struct rlhi_buf *train,
                      size_t *ntrain_docs, struct rlhi_buf *held,
                      size_t *nheld)
{
    char *data;
    size_t len, pos = 0, line = 0;
    int r = rlhi_file_read(path, &data, &len);

    if (r)
        return r;
    *ntrain_docs = *nheld = 0;
    while (pos < len) {
        char *e = memchr(data + pos, '\n', len - pos);
        size_t n = e ? (size_t)(e - (data + pos)) : len - pos;
        json_error_t jerr;
        json_t *j = json_loadb(data + pos, n, 0, &jerr);
        const char *keys[] = {"question", "answer"};

        for (int k = 0; j && k < 2; k++) {
            json_t *v = json_object_get(j, keys[k]);
            struct rlhi_buf *b = line < ntrain ? train : held;

            if (!json_is_string(v))
                continue;
            rlhi_buf_add(b, json_string_value(v), json_string_length(v) + 1);
            if (line < ntrain)
                ++*ntrain_docs;
            else
                ++*nheld;
        }
        json_decref(j);
        line++;
        pos += n + 1;
    }
    rlhi_free(data);
    return 0;
}

/* Trains on NUL-separated documents, forwards or backwards. */
static struct rlhi_bpe_trainer *train_docs(const struct rlhi_buf *docs,
                                           size_t ndocs, bool backwards,
                                           int vocab_size)
{
    struct rlhi_bpe_trainer *t = NULL;
    struct rlhi_bpe_train_options o = options(vocab_size);
    const char **starts = rlhi_malloc((ndocs + 1) * sizeof *starts);
    size_t i = 0, pos = 0;

    while (pos < docs->len && i < ndocs) {
        starts[i++] = docs->buf + pos;
        pos += strlen(docs->buf + pos) + 1;
    }
    ndocs = i;
    CHECK_OK(rlhi_bpe_trainer_new(&t, &o));
    for (i = 0; t && i < ndocs; i++) {
        const char *d = starts[backwards ? ndocs - 1 - i : i];

        CHECK_OK(rlhi_bpe_trainer_add_text(t, d, strlen(d)));
    }
    if (t)
        CHECK_OK(rlhi_bpe_trainer_train(t));
    rlhi_free(starts);
    return t;
}

static bool same_file(const char *d1, const char *d2, const char *name)
{
    char *p1 = rlhi_path_join(d1, name), *p2 = rlhi_path_join(d2, name);
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    bool same;

    CHECK_OK(rlhi_file_read(p1, &a, &la));
    CHECK_OK(rlhi_file_read(p2, &b, &lb));
    same = a && b && la == lb && !memcmp(a, b, la);
    rlhi_free(a);
    rlhi_free(b);
    rlhi_free(p1);
    rlhi_free(p2);
    return same;
}

/* The written files have the structure Hugging Face tokenizers expects. */
static void check_structure(const char *dir, const struct rlhi_bpe_stats *st)
{
    json_t *tj = load_json(dir, "tokenizer.json");
    json_t *cj = load_json(dir, "tokenizer_config.json");
    json_t *model = json_object_get(tj, "model");
    json_t *pre = json_object_get(tj, "pre_tokenizer");
    json_t *dec = json_object_get(tj, "decoder");
    json_t *added = json_object_get(tj, "added_tokens");
    json_t *vocab = json_object_get(model, "vocab");
    size_t i;

    CHECK_STR_EQ(json_string_value(json_object_get(model, "type")), "BPE");
    CHECK_STR_EQ(json_string_value(json_object_get(pre, "type")),
                 "ByteLevel");
    CHECK(json_is_false(json_object_get(pre, "add_prefix_space")));
    CHECK(json_is_true(json_object_get(pre, "use_regex")));
    CHECK_STR_EQ(json_string_value(json_object_get(dec, "type")),
                 "ByteLevel");
    CHECK_INT_EQ(json_object_size(vocab), st->vocab_size - NSPECIAL);
    CHECK_INT_EQ(json_array_size(json_object_get(model, "merges")),
                 st->merges);
    /* GPT-2's first ids: "!" 0, "a" 64, "Ġ" (space) 220. */
    CHECK_INT_EQ(json_integer_value(json_object_get(vocab, "!")), 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(vocab, "a")), 64);
    CHECK_INT_EQ(json_integer_value(json_object_get(vocab, "\xc4\xa0")),
                 220);
    /* Every merge "A B" joins two earlier tokens into token 256 + i. */
    {
        json_t *merges = json_object_get(model, "merges");
        int bad = 0;

        for (i = 0; i < json_array_size(merges); i++) {
            const char *m = json_string_value(json_array_get(merges, i));
            const char *sp = m ? strchr(m, ' ') : NULL;
            char left[256], right[256], joined[512];
            json_int_t id = (json_int_t)i + 256;

            if (!sp || strlen(m) >= sizeof left) {
                bad++;
                continue;
            }
            snprintf(left, sizeof left, "%.*s", (int)(sp - m), m);
            snprintf(right, sizeof right, "%s", sp + 1);
            snprintf(joined, sizeof joined, "%s%s", left, right);
            bad += !(json_integer_value(json_object_get(vocab, left)) < id &&
                     json_integer_value(json_object_get(vocab, right)) < id &&
                     json_integer_value(json_object_get(vocab, joined)) ==
                         id);
        }
        CHECK_INT_EQ(bad, 0);
    }
    CHECK_INT_EQ(json_array_size(added), NSPECIAL);
    for (i = 0; i < json_array_size(added); i++) {
        json_t *e = json_array_get(added, i);

        CHECK_STR_EQ(json_string_value(json_object_get(e, "content")),
                     specials[i]);
        CHECK_INT_EQ(json_integer_value(json_object_get(e, "id")),
                     st->vocab_size - NSPECIAL + (int)i);
        CHECK(json_is_true(json_object_get(e, "special")));
    }
    CHECK_STR_EQ(json_string_value(json_object_get(cj, "chat_template")),
                 rlhi_chat_rlhi_jinja());
    CHECK_STR_EQ(json_string_value(json_object_get(cj, "bos_token")),
                 "<|endoftext|>");
    CHECK_STR_EQ(json_string_value(json_object_get(cj, "eos_token")),
                 "<|end|>");
    json_decref(tj);
    json_decref(cj);
}

static void test_real_text(void)
{
    const char *path = check_data("eval/gsm8k_test.jsonl");
    struct rlhi_buf train = RLHI_BUF_INIT, held = RLHI_BUF_INIT;
    struct rlhi_bpe_trainer *t, *t2;
    struct rlhi_bpe_stats st;
    struct rlhi_tokenizer *tok = NULL;
    size_t ntrain = 0, nheld = 0, pos, held_bytes = 0, held_tokens = 0;
    int docs_differ = 0, loader_differ = 0, loader_decode_differ = 0;
    char *d1 = tmpdir(), *d2 = tmpdir();
    double t0;

    if (!path) {
        SKIP("../shared/data/eval/gsm8k_test.jsonl is absent");
        goto out;
    }
    CHECK_OK(read_gsm8k(path, 1200, &train, &ntrain, &held, &nheld));
    CHECK(ntrain == 2400 && nheld > 200);

    t0 = rlhi_time_now();
    t = train_docs(&train, ntrain, false, 4096);
    rlhi_bpe_trainer_stats(t, &st);
    fprintf(stderr, "gsm8k: %llu bytes, %llu distinct pretokens, %d merges "
            "in %.2fs (count %.2fs, merge %.2fs)\n",
            (unsigned long long)st.bytes, (unsigned long long)st.words,
            st.merges, rlhi_time_now() - t0, st.count_s, st.merge_s);
    CHECK_INT_EQ(st.vocab_size, 4096);
    CHECK_OK(rlhi_bpe_trainer_save(t, d1));
    check_structure(d1, &st);

    /* Same corpus, documents in the opposite order: identical files. */
    t2 = train_docs(&train, ntrain, true, 4096);
    CHECK_OK(rlhi_bpe_trainer_save(t2, d2));
    CHECK(same_file(d1, d2, "tokenizer.json"));
    CHECK(same_file(d1, d2, "tokenizer_config.json"));
    rlhi_bpe_trainer_free(t2);

    CHECK_OK(rlhi_tokenizer_load(&tok, d1));

    /* Held-out text: the trainer's segmentation decodes back to the text,
     * and the loader's encoder gives the same ids. */
    for (pos = 0; pos < held.len; pos += strlen(held.buf + pos) + 1) {
        const char *doc = held.buf + pos;
        size_t len = strlen(doc), n = 0, n2 = 0, i;
        int32_t *ids = NULL, *ids2 = NULL;
        struct rlhi_buf back = RLHI_BUF_INIT;

        CHECK_OK(rlhi_bpe_trainer_encode(t, doc, len, &ids, &n));
        CHECK_OK(rlhi_bpe_trainer_decode(t, ids, n, &back));
        docs_differ += !(back.len == len && !memcmp(back.buf, doc, len));
        held_bytes += len;
        held_tokens += n;
        if (tok) {
            rlhi_buf_clear(&back);
            CHECK_OK(rlhi_tokenizer_encode(tok, doc, len, RLHI_ENC_SPECIAL,
                                           &ids2, &n2));
            bool same = n == n2;

            for (i = 0; same && i < n; i++)
                same = ids[i] == ids2[i];
            loader_differ += !same;
            CHECK_OK(rlhi_tokenizer_decode(tok, ids, n, false, &back));
            loader_decode_differ +=
                !(back.len == len && !memcmp(back.buf, doc, len));
            rlhi_free(ids2);
        }
        rlhi_free(ids);
        rlhi_buf_release(&back);
    }
    CHECK_INT_EQ(docs_differ, 0);
    CHECK_INT_EQ(loader_differ, 0);
    CHECK_INT_EQ(loader_decode_differ, 0);
    /* Byte-level BPE with 3.8k merges on in-domain English: 0.316 tokens a
     * byte measured here; 0.35 leaves room, and bytes alone would be 1. */
    fprintf(stderr, "gsm8k held out: %.3f tokens per byte\n",
            (double)held_tokens / (double)held_bytes);
    CHECK(held_tokens < 0.35 * (double)held_bytes);

    /* llama.cpp's tokenizer test strings (Unicode, runs of spaces and
     * newlines): trainer and loader agree and both round trip. */
    if (check_data("tokenizers/golden/llamacpp-ggml-vocab-gpt-2.inp")) {
        char *inp = NULL;
        size_t ilen = 0, nstr = 0, bad = 0;
        /* Strings end with "\n__ggml_vocab_test__", then a newline unless
         * at the end of the file. */
        const char *sep = "\n__ggml_vocab_test__";

        CHECK_OK(rlhi_file_read(
            check_data("tokenizers/golden/llamacpp-ggml-vocab-gpt-2.inp"),
            &inp, &ilen));
        for (char *p = inp, *e; p < inp + ilen;
             p = e + 20 + (e[20] == '\n')) {
            int32_t *ids = NULL, *ids2 = NULL;
            size_t n = 0, n2 = 0, k;
            struct rlhi_buf back = RLHI_BUF_INIT;
            bool ok;

            e = strstr(p, sep);
            k = e ? (size_t)(e - p) : 0;
            if (!e)
                break;
            nstr++;
            CHECK_OK(rlhi_bpe_trainer_encode(t, p, k, &ids, &n));
            CHECK_OK(rlhi_bpe_trainer_decode(t, ids, n, &back));
            ok = back.len == k && (!k || !memcmp(back.buf, p, k));
            if (tok) {
                CHECK_OK(rlhi_tokenizer_encode(tok, p, k, 0, &ids2, &n2));
                ok = ok && n == n2;
                for (size_t q = 0; ok && q < n; q++)
                    ok = ids[q] == ids2[q];
            }
            bad += !ok;
            rlhi_free(ids);
            rlhi_free(ids2);
            rlhi_buf_release(&back);
        }
        CHECK_INT_EQ(nstr, 46); /* as many as the .out file's lines */
        CHECK_INT_EQ(bad, 0);
        rlhi_free(inp);
    }

    /* Special tokens in chat text, and bytes that are not UTF-8. */
    {
        static const char chat[] = "<|user|>\nHow many eggs? \xff\xfe ok"
                                   "<|end|>\n<|assistant|>\n  12 eggs.\n\n"
                                   "<|end|>\n";
        int32_t *ids = NULL, *ids2 = NULL;
        size_t n = 0, n2 = 0, i;
        struct rlhi_buf back = RLHI_BUF_INIT;
        bool same;

        CHECK_OK(rlhi_bpe_trainer_encode(t, chat, sizeof chat - 1, &ids, &n));
        CHECK(n > 0 && ids[0] == 4096 - NSPECIAL + 2);
        CHECK_OK(rlhi_bpe_trainer_decode(t, ids, n, &back));
        CHECK_STR_EQ(back.buf, chat);
        if (tok) {
            CHECK_INT_EQ(rlhi_tokenizer_token_id(tok, "<|end|>"), 4095);
            CHECK_INT_EQ(rlhi_tokenizer_vocab_size(tok), 4096);
            CHECK_INT_EQ(rlhi_tokenizer_bos(tok), 4091);
            CHECK_INT_EQ(rlhi_tokenizer_eos(tok), 4095);
            CHECK_OK(rlhi_tokenizer_encode(tok, chat, sizeof chat - 1,
                                           RLHI_ENC_SPECIAL, &ids2, &n2));
            same = n == n2;
            for (i = 0; same && i < n; i++)
                same = ids[i] == ids2[i];
            CHECK_MSG(same, "loader segments the chat text differently");
            rlhi_free(ids2);
        }
        rlhi_free(ids);
        rlhi_buf_release(&back);
    }
    rlhi_tokenizer_free(tok);
    rlhi_bpe_trainer_free(t);
out:
    rlhi_buf_release(&train);
    rlhi_buf_release(&held);
    rm_dir(d1);
    rm_dir(d2);
    rlhi_free(d1);
    rlhi_free(d2);
}

/* ---- corpus files and errors ------------------------------------------ */

static void test_files_and_errors(void)
{
    char *dir = tmpdir();
    char *jl = rlhi_path_join(dir, "corpus.jsonl");
    char *txt = rlhi_path_join(dir, "corpus.txt");
    static const char jsonl[] =
        "{\"text\": \"plain text line\"}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
        "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n"
        "\n"
        "{oops\n"
        "{\"other\": 1}\n"
        "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}\n";
    static const char plain[] = "just some text, not JSON\n{\"text\": 1}\n";
    struct rlhi_bpe_trainer *t = NULL;
    struct rlhi_bpe_train_options o = options(300);
    struct rlhi_bpe_stats st;
    int64_t skipped = -1;

    CHECK_OK(rlhi_file_write_atomic(jl, jsonl, sizeof jsonl - 1));
    CHECK_OK(rlhi_file_write_atomic(txt, plain, sizeof plain - 1));
    CHECK_OK(rlhi_bpe_trainer_new(&t, &o));
    CHECK_OK(rlhi_bpe_trainer_add_file(t, jl, &skipped));
    CHECK_INT_EQ(skipped, 2);
    rlhi_bpe_trainer_stats(t, &st);
    /* The text line, the rendered chat, the tool message's content. */
    CHECK_INT_EQ(st.docs, 3);
    CHECK_INT_EQ(st.bytes, 15 + strlen("<|user|>\nhi<|end|>\n<|assistant|>\n"
                                       "hello<|end|>\n") + 1);
    CHECK_OK(rlhi_bpe_trainer_add_file(t, txt, NULL));
    rlhi_bpe_trainer_stats(t, &st);
    CHECK_INT_EQ(st.docs, 4);
    CHECK_INT_EQ(rlhi_bpe_trainer_add_file(t, "/nonexistent/c.txt", NULL),
                 RLHI_EIO);
    CHECK(strstr(rlhi_errmsg(), "/nonexistent/c.txt") != NULL);
    CHECK_OK(rlhi_bpe_trainer_train(t));
    CHECK_INT_EQ(rlhi_bpe_trainer_add_text(t, "x", 1), RLHI_EINVAL);
    CHECK_INT_EQ(rlhi_bpe_trainer_train(t), RLHI_EINVAL);
    {
        int32_t bad = 99999;
        struct rlhi_buf b = RLHI_BUF_INIT;

        CHECK_INT_EQ(rlhi_bpe_trainer_decode(t, &bad, 1, &b), RLHI_EINVAL);
        rlhi_buf_release(&b);
    }
    rlhi_bpe_trainer_free(t);

    /* Options. */
    o = options(260);
    CHECK_INT_EQ(rlhi_bpe_trainer_new(&t, &o), RLHI_EINVAL);
    CHECK(strstr(rlhi_errmsg(), "vocab_size 260") != NULL);
    o = options(1000);
    o.eos_token = "</s>";
    CHECK_INT_EQ(rlhi_bpe_trainer_new(&t, &o), RLHI_EINVAL);
    CHECK_STR_EQ(rlhi_errmsg(), "eos_token '</s>' is not one of the special "
                                "tokens");
    {
        const char *dup[] = {"<a>", "<a>"};

        o = options(1000);
        o.special_tokens = dup;
        o.n_special = 2;
        o.bos_token = o.eos_token = o.pad_token = NULL;
        CHECK_INT_EQ(rlhi_bpe_trainer_new(&t, &o), RLHI_EINVAL);
    }

    /* A corpus too small for the vocabulary stops early, and says so. */
    o = options(5000);
    CHECK_OK(rlhi_bpe_trainer_new(&t, &o));
    CHECK_OK(rlhi_bpe_trainer_add_text(t, "ab ab ab cd", 11));
    CHECK_OK(rlhi_bpe_trainer_train(t));
    rlhi_bpe_trainer_stats(t, &st);
    CHECK_INT_EQ(st.merges, 2); /* "a b" (3), then "Ġ ab" (2) */
    CHECK_INT_EQ(st.vocab_size, 256 + 2 + NSPECIAL);
    rlhi_bpe_trainer_free(t);

    unlink(jl);
    unlink(txt);
    rlhi_free(jl);
    rlhi_free(txt);
    rm_dir(dir);
    rlhi_free(dir);
}

/* One whole run on a small text; returns the first error. */
static int small_run(const char *dir)
{
    static const char text[] =
        "the cat sat on the mat; the cat ate the rat. <|end|> 12 + 30 = 42\n"
        "a mat, a rat and a cat \xf0\x9f\x90\x88\n\n   spaced   out\n";
    struct rlhi_bpe_trainer *t = NULL;
    struct rlhi_bpe_train_options o = options(300);
    int32_t *ids = NULL;
    size_t n;
    int r;

    r = rlhi_bpe_trainer_new(&t, &o);
    if (!r)
        r = rlhi_bpe_trainer_add_text(t, text, sizeof text - 1);
    if (!r)
        r = rlhi_bpe_trainer_train(t);
    if (!r)
        r = rlhi_bpe_trainer_encode(t, text, sizeof text - 1, &ids, &n);
    if (!r)
        r = rlhi_bpe_trainer_save(t, dir);
    rlhi_free(ids);
    rlhi_bpe_trainer_free(t);
    return r;
}

static void test_alloc_failures(void)
{
    char *dir = tmpdir();
    long total, i, bad = 0;

    /* Count the run's allocations, then fail each one in turn: every
     * failure is reported (never a crash; ASan checks for leaks). */
    rlhi__alloc_fail_at(0);
    CHECK_OK(small_run(dir));
    total = rlhi__alloc_fail_at(0);
    CHECK(total > 20);
    for (i = 1; i <= total; i++) {
        int r;

        rlhi__alloc_fail_at(i);
        r = small_run(dir);
        rlhi__alloc_fail_at(0);
        if (r != RLHI_ENOMEM && r != RLHI_EIO) {
            if (bad < 5)
                fprintf(stderr, "allocation %ld of %ld failed: got %d "
                        "(%s)\n", i, total, r, rlhi_errmsg());
            bad++;
        }
    }
    CHECK_INT_EQ(bad, 0);
    rm_dir(dir);
    rlhi_free(dir);
}

int main(void)
{
    TEST("merges equal a naive reference") test_against_reference();
    TEST("real text: round trip, loader, determinism") test_real_text();
    TEST("corpus files and errors") test_files_and_errors();
    TEST("allocation failures") test_alloc_failures();
    return check_summary();
}
