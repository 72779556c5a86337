/* Tests for the inference forward pass: BLAS against the plain kernels,
 * the KV cache against whole-sequence runs, batched decoding against
 * single-sequence decoding, and logits against the independent PyTorch
 * reference (tests/ref/llama_ref.py fixtures). */
#include <jansson.h>

#include "check.h"
#include "model/kernels.h"
#include "rlhi/model.h"

static void randomize(struct rlhi_model *m, uint64_t seed)
{
    struct rlhi_rng rng;
    size_t i;

    rlhi_rng_seed(&rng, seed);
    for (i = 0; i < m->n_params; i++)
        m->params[i] = (float)(0.1 * rlhi_rng_normal(&rng));
}

static struct rlhi_model_config small_cfg(enum rlhi_rope_style rope,
                                          bool bias, bool tied)
{
    struct rlhi_model_config c = {
        .dim = 48, .hidden_dim = 96, .n_layers = 2, .n_heads = 6,
        .n_kv_heads = 2, .head_dim = 8, .vocab_size = 97,
        .max_seq_len = 64, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
        .rope = rope, .tied_embeddings = tied, .qkv_bias = bias,
        .bos_id = 1, .eos_id = 2,
    };
    return c;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    size_t i;

    for (i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > d)
            d = fabs((double)a[i] - b[i]);
    return d;
}

/* Runs all of `toks` at once with all logits; returns a new array. */
static float *run_all(struct rlhi_model *m, const int32_t *toks, int n)
{
    struct rlhi_infer *s;
    float *lg = rlhi_malloc(sizeof(float) * (size_t)n * m->cfg.vocab_size);

    CHECK_OK(rlhi_infer_new(&s, m, 0));
    CHECK_OK(rlhi_infer_forward(s, toks, n, lg, true));
    rlhi_infer_free(s);
    return lg;
}

static void check_model_consistency(const char *label,
                                    struct rlhi_model_config cfg)
{
    struct rlhi_model *m;
    struct rlhi_infer *s, *b[3];
    int32_t toks[20];
    int V = cfg.vocab_size, i;
    float *all, *ref, *one = rlhi_malloc(sizeof(float) * V * 3);

    (void)label;
    CHECK_OK(rlhi_model_new(&m, &cfg));
    randomize(m, 7);
    for (i = 0; i < 20; i++)
        toks[i] = (i * 31 + 5) % V;

    /* BLAS against the plain kernels: rounding order only. */
    all = run_all(m, toks, 20);
    rlhi__kernels_use_ref(true);
    ref = run_all(m, toks, 20);
    rlhi__kernels_use_ref(false);
    CHECK_NEAR(max_abs_diff(all, ref, (size_t)20 * V), 0, 1e-4, 0);

    /* Token by token through the cache equals the whole sequence. */
    CHECK_OK(rlhi_infer_new(&s, m, 0));
    for (i = 0; i < 20; i++) {
        CHECK_OK(rlhi_infer_forward(s, toks + i, 1, one, false));
        CHECK_NEAR(max_abs_diff(one, all + (size_t)i * V, V), 0, 1e-4, 0);
    }
    CHECK_INT_EQ(rlhi_infer_pos(s), 20);

    /* Prefix then chunk, and truncate-and-redo. */
    rlhi_infer_truncate(s, 12);
    CHECK_OK(rlhi_infer_forward(s, toks + 12, 8, one, false));
    CHECK_NEAR(max_abs_diff(one, all + (size_t)19 * V, V), 0, 1e-4, 0);

    /* A long chunk after a kept prefix takes the blocked attention path
     * (16 rows or more) with a non-zero start position. */
    rlhi_infer_truncate(s, 2);
    CHECK_OK(rlhi_infer_forward(s, toks + 2, 18, one, false));
    CHECK_NEAR(max_abs_diff(one, all + (size_t)19 * V, V), 0, 1e-4, 0);

    /* Three copies of a 10-token prefix decoded as a batch, each with its
     * own next token, equal single runs. */
    rlhi_infer_truncate(s, 10);
    for (i = 0; i < 3; i++) {
        CHECK_OK(rlhi_infer_new(&b[i], m, 32));
        CHECK_OK(rlhi_infer_copy(b[i], s));
    }
    {
        int32_t next[3] = {toks[10], 3, 50};
        float *batch = rlhi_malloc(sizeof(float) * V * 3);

        CHECK_OK(rlhi_infer_forward_batch(b, 3, next, batch));
        CHECK_NEAR(max_abs_diff(batch, all + (size_t)10 * V, V), 0, 1e-4, 0);
        for (i = 1; i < 3; i++) {
            rlhi_infer_truncate(s, 10);
            CHECK_OK(rlhi_infer_forward(s, &next[i], 1, one, false));
            CHECK_NEAR(max_abs_diff(one, batch + (size_t)i * V, V), 0, 1e-4,
                       0);
        }
        rlhi_free(batch);
    }
    for (i = 0; i < 3; i++)
        rlhi_infer_free(b[i]);

    /* Errors: a token outside the vocabulary, and overflow. */
    rlhi_infer_truncate(s, 0);
    {
        int32_t bad = V;

        CHECK_INT_EQ(rlhi_infer_forward(s, &bad, 1, one, false),
                     RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "outside the vocabulary") != NULL);
        CHECK_INT_EQ(rlhi_infer_pos(s), 0);
    }
    {
        int32_t many[65] = {0};

        CHECK_INT_EQ(rlhi_infer_forward(s, many, 65, NULL, false),
                     RLHI_ERANGE);
    }
    rlhi_infer_free(s);
    rlhi_free(all);
    rlhi_free(ref);
    rlhi_free(one);
    rlhi_model_free(m);
}

/* Compares logits with a fixture written by tests/ref/make_fixtures.py:
 * logits.json lists prompts (token ids, offset and shape into logits.bin,
 * float32 logits of the float64 PyTorch reference). `model` is the file
 * or directory to load. */
static void check_fixture(const char *dir, const char *model)
{
    char path[512];
    json_error_t jerr;
    json_t *root, *prompts, *c;
    struct rlhi_model *m;
    char *bin = NULL;
    size_t binlen = 0, i;

    snprintf(path, sizeof path, "%s/logits.json", dir);
    root = json_load_file(path, 0, &jerr);
    CHECK_MSG(root != NULL, "cannot read '%s': %s", path, jerr.text);
    if (!root)
        return;
    snprintf(path, sizeof path, "%s/logits.bin", dir);
    CHECK_OK(rlhi_file_read(path, &bin, &binlen));
    CHECK_OK(rlhi_model_load(&m, model));
    prompts = json_object_get(root, "prompts");
    CHECK(json_array_size(prompts) >= 3);
    json_array_foreach(prompts, i, c) {
        json_t *ids = json_object_get(c, "tokens");
        size_t off = (size_t)json_integer_value(json_object_get(c, "offset"));
        int n = (int)json_array_size(ids), V = m->cfg.vocab_size, t;
        int32_t *toks = rlhi_malloc(sizeof(int32_t) * (size_t)n);
        const float *want = (const float *)bin + off;
        float *out;
        double worst = 0, scale = 0;

        CHECK((off + (size_t)n * V) * sizeof(float) <= binlen);
        for (t = 0; t < n; t++)
            toks[t] = (int32_t)json_integer_value(json_array_get(ids, t));
        out = run_all(m, toks, n);
        for (t = 0; t < n * V; t++) {
            double d = fabs((double)want[t] - out[t]);

            if (d > worst)
                worst = d;
            if (fabs(want[t]) > scale)
                scale = fabs(want[t]);
        }
        /* fp32 against a float64 reference over a 2-layer model: 1e-4 of
         * the logit scale leaves room for accumulation order only. */
        CHECK_MSG(worst <= 1e-4 * (scale > 1 ? scale : 1),
                  "%s prompt %zu (%d tokens): max |diff| %.3g (scale %.3g)",
                  dir, i, n, worst, scale);
        rlhi_free(out);
        rlhi_free(toks);
    }
    rlhi_model_free(m);
    rlhi_free(bin);
    json_decref(root);
}

/* Every fast path of rlhi__matmul (streaming kernel for few rows, sgemv,
 * sgemm) against the plain loop, over row counts on both sides of the
 * switch and widths that are and are not multiples of 8. */
static void check_kernels(void)
{
    static const int ns[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 33};
    static const int ins[] = {8, 64, 200};
    struct rlhi_rng rng;
    size_t a, b, i;

    rlhi_rng_seed(&rng, 3);
    for (a = 0; a < sizeof ns / sizeof *ns; a++)
        for (b = 0; b < sizeof ins / sizeof *ins; b++) {
            int n = ns[a], in = ins[b], out = 37;
            float *x = rlhi_malloc(sizeof(float) * (size_t)n * in);
            float *W = rlhi_malloc(sizeof(float) * (size_t)out * in);
            float *y = rlhi_malloc(sizeof(float) * (size_t)n * out);
            float *r = rlhi_malloc(sizeof(float) * (size_t)n * out);
            double worst = 0;

            for (i = 0; i < (size_t)n * in; i++)
                x[i] = (float)rlhi_rng_normal(&rng);
            for (i = 0; i < (size_t)out * in; i++)
                W[i] = (float)rlhi_rng_normal(&rng);
            rlhi__matmul(y, x, W, n, in, out);
            rlhi__matmul_ref(r, x, W, n, in, out);
            for (i = 0; i < (size_t)n * out; i++)
                if (fabs((double)y[i] - r[i]) > worst)
                    worst = fabs((double)y[i] - r[i]);
            /* Sums of `in` products of unit normals: rounding order only,
             * a few ulps of sqrt(in) ~ 1e-5. */
            CHECK_MSG(worst < 1e-4, "matmul n=%d in=%d: max |diff| %.3g", n,
                      in, worst);
            rlhi_free(x);
            rlhi_free(W);
            rlhi_free(y);
            rlhi_free(r);
        }
}

int main(void)
{
    TEST("fast matrix kernels against the plain loop") {
        check_kernels();
    }
    TEST("interleaved rope, untied, no bias") {
        check_model_consistency("a", small_cfg(RLHI_ROPE_INTERLEAVED, false,
                                               false));
    }
    TEST("half rope, tied, qkv bias") {
        check_model_consistency("b", small_cfg(RLHI_ROPE_HALF, true, true));
    }
    TEST("logits match the PyTorch reference: tiny-llama") {
        check_fixture("tests/fixtures/tiny-llama", "tests/fixtures/tiny-llama");
    }
    TEST("logits match the PyTorch reference: tiny-qwen") {
        check_fixture("tests/fixtures/tiny-qwen", "tests/fixtures/tiny-qwen");
    }
    TEST("logits match the PyTorch reference: llama2.c checkpoint") {
        check_fixture("tests/fixtures/tiny-llama2c",
                      "tests/fixtures/tiny-llama2c/model.bin");
    }
    return check_summary();
}
