/* Tests for model files: the safetensors reader and writer, llama2.c
 * checkpoints, Hugging Face directories (single and sharded), saving, the
 * rotary permutation, error messages for broken files, and allocation
 * failures while loading.
 *
 * Fixtures (tests/fixtures, made by tests/ref/make_fixtures.py with an
 * independent safetensors writer and a plain-PyTorch forward) and the real
 * stories260K checkpoint from the shared data folder.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "model/model_io.h"
#include "rlhi/model.h"
#include "rlhi/safetensors.h"

#define TINY_LLAMA "tests/fixtures/tiny-llama"
#define TINY_QWEN "tests/fixtures/tiny-qwen"
#define TINY_L2C "tests/fixtures/tiny-llama2c/model.bin"

static char tmpdir[64];

static char *tmp(const char *name)
{
    static char path[8][256];
    static int k;

    k = (k + 1) % 8;
    snprintf(path[k], sizeof path[k], "%s/%s", tmpdir, name);
    return path[k];
}

static int write_text(const char *path, const char *s)
{
    return rlhi_file_write_atomic(path, s, strlen(s));
}

static int copy_file(const char *from, const char *to, long cut, long add)
{
    char *data;
    size_t len;
    int r = rlhi_file_read(from, &data, &len);
    struct rlhi_buf b = RLHI_BUF_INIT;

    if (r)
        return r;
    if (cut > 0 && (size_t)cut <= len)
        len -= (size_t)cut;
    rlhi_buf_add(&b, data, len);
    while (add-- > 0)
        rlhi_buf_addc(&b, 0);
    r = rlhi_file_write_atomic(to, b.buf, b.len);
    rlhi_buf_release(&b);
    rlhi_free(data);
    return r;
}

/* Loads `path`, which must fail with `code` and a message containing
 * `want`. */
static void expect_fail(const char *path, int code, const char *want)
{
    struct rlhi_model *m = NULL;
    int r = rlhi_model_load(&m, path);

    CHECK_MSG(r == code, "loading '%s' returned %d (%s), expected %d: %s",
              path, r, rlhi_strerror(r), code, rlhi_errmsg());
    CHECK_MSG(strstr(rlhi_errmsg(), want), "message for '%s':\n  got:  %s\n"
              "  want: ...%s...", path, rlhi_errmsg(), want);
    CHECK(m == NULL);
    rlhi_model_free(m);
}

/* Same for opening a safetensors file. */
static void expect_st_fail(const char *path, const char *want)
{
    struct rlhi_safetensors *st = NULL;
    int r = rlhi_safetensors_open(&st, path);

    CHECK_INT_EQ(r, RLHI_EFORMAT);
    CHECK_MSG(strstr(rlhi_errmsg(), want), "message for '%s':\n  got:  %s\n"
              "  want: ...%s...", path, rlhi_errmsg(), want);
    CHECK(st == NULL);
}

/* Writes a raw safetensors file: 8-byte length, header, `pad` data bytes. */
static void write_raw_st(const char *path, uint64_t len, const char *hdr,
                         size_t pad)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    int i;

    for (i = 0; i < 8; i++)
        rlhi_buf_addc(&b, (char)(len >> (8 * i)));
    rlhi_buf_adds(&b, hdr);
    while (pad--)
        rlhi_buf_addc(&b, 0);
    CHECK_OK(rlhi_file_write_atomic(path, b.buf, b.len));
    rlhi_buf_release(&b);
}

/* Fills outs[] with m's tensors (canonical names and shapes). Returns n;
 * *info is allocated. */
static int model_outs(const struct rlhi_model *m, struct rlhi_st_out *outs,
                      struct rlhi_tensor_info **info, bool bf16)
{
    float *views[64];
    size_t total;
    int n, i;

    if (rlhi_model_tensor_list(&m->cfg, info, &n, &total) || n > 64)
        return 0;
    rlhi__model_views(m, views);
    for (i = 0; i < n; i++) {
        memset(&outs[i], 0, sizeof outs[i]);
        outs[i].name = (*info)[i].name;
        outs[i].ndim = (*info)[i].ndim;
        outs[i].shape[0] = (*info)[i].shape[0];
        outs[i].shape[1] = (*info)[i].shape[1];
        outs[i].data = views[i];
        outs[i].bf16 = bf16;
    }
    return n;
}

static bool same_floats(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

static bool same_config(const struct rlhi_model_config *a,
                        const struct rlhi_model_config *b)
{
    return a->dim == b->dim && a->hidden_dim == b->hidden_dim &&
           a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->vocab_size == b->vocab_size &&
           a->max_seq_len == b->max_seq_len && a->norm_eps == b->norm_eps &&
           a->rope_theta == b->rope_theta && a->rope == b->rope &&
           a->tied_embeddings == b->tied_embeddings &&
           a->qkv_bias == b->qkv_bias && a->bos_id == b->bos_id &&
           a->eos_id == b->eos_id;
}

/* Compares every canonical tensor of two models bit for bit. */
static bool same_weights(const struct rlhi_model *a,
                         const struct rlhi_model *b)
{
    struct rlhi_tensor_info *info;
    float *va[64], *vb[64];
    size_t total;
    bool ok = true;
    int n, i;

    if (rlhi_model_tensor_list(&a->cfg, &info, &n, &total) || n > 64)
        return false;
    rlhi__model_views(a, va);
    rlhi__model_views(b, vb);
    for (i = 0; i < n; i++) {
        if (!same_floats(va[i], vb[i], info[i].numel)) {
            fprintf(stderr, "  tensor '%s' differs\n", info[i].name);
            ok = false;
        }
    }
    rlhi_free(info);
    return ok;
}

/* Max |logits - reference| over a fixture's prompts, relative to the
 * reference's largest magnitude; -1 when the forward fails. */
static double fixture_logit_err(const struct rlhi_model *m, const char *dir)
{
    char path[512], *bin = NULL;
    json_t *root, *prompts;
    size_t len, i;
    double worst = 0;

    snprintf(path, sizeof path, "%s/logits.json", dir);
    root = json_load_file(path, 0, NULL);
    snprintf(path, sizeof path, "%s/logits.bin", dir);
    if (!root || rlhi_file_read(path, &bin, &len)) {
        json_decref(root);
        return -1;
    }
    prompts = json_object_get(root, "prompts");
    for (i = 0; i < json_array_size(prompts); i++) {
        json_t *p = json_array_get(prompts, i);
        json_t *tk = json_object_get(p, "tokens");
        size_t off = (size_t)json_integer_value(json_object_get(p, "offset"));
        int T = (int)json_array_size(tk), V = m->cfg.vocab_size, t;
        int32_t *toks = calloc((size_t)T, sizeof *toks);
        float *lg = calloc((size_t)T * V, sizeof *lg);
        const float *ref = (const float *)(void *)bin + off;
        struct rlhi_infer *s = NULL;
        double scale = 0, err = 0;
        long k;

        for (t = 0; t < T; t++)
            toks[t] = (int32_t)json_integer_value(json_array_get(tk, t));
        if (rlhi_infer_new(&s, m, 0) ||
            rlhi_infer_forward(s, toks, T, lg, true)) {
            worst = -1;
        } else {
            for (k = 0; k < (long)T * V; k++) {
                scale = fmax(scale, fabs(ref[k]));
                err = fmax(err, fabs(lg[k] - ref[k]));
            }
            if (worst >= 0)
                worst = fmax(worst, err / scale);
        }
        rlhi_infer_free(s);
        free(toks);
        free(lg);
    }
    json_decref(root);
    rlhi_free(bin);
    return worst;
}

int main(void)
{
    double t0;

    /* tmpfs when there is one: the fuzz loop writes thousands of files */
    snprintf(tmpdir, sizeof tmpdir, "%s/rlhi-test-loader-XXXXXX",
             rlhi_path_is_dir("/dev/shm") ? "/dev/shm" : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }

    TEST("bf16 and f16 conversions") {
        float f;
        uint32_t u;

        CHECK_INT_EQ(rlhi_f32_to_bf16(1.0f), 0x3f80);
        /* ties go to even: 0x3f808000 is halfway between 0x3f80 and 0x3f81 */
        u = 0x3f808000u, memcpy(&f, &u, 4);
        CHECK_INT_EQ(rlhi_f32_to_bf16(f), 0x3f80);
        u = 0x3f818000u, memcpy(&f, &u, 4);
        CHECK_INT_EQ(rlhi_f32_to_bf16(f), 0x3f82);
        u = 0x3f808001u, memcpy(&f, &u, 4);
        CHECK_INT_EQ(rlhi_f32_to_bf16(f), 0x3f81);
        u = 0x7f7fffffu, memcpy(&f, &u, 4); /* FLT_MAX rounds to inf */
        CHECK_INT_EQ(rlhi_f32_to_bf16(f), 0x7f80);
        CHECK(isnan(rlhi_bf16_to_f32(rlhi_f32_to_bf16(NAN))));
        CHECK(rlhi_bf16_to_f32(rlhi_f32_to_bf16(-INFINITY)) == -INFINITY);
        CHECK(rlhi_bf16_to_f32(0xc040) == -3.0f);
        CHECK(rlhi_f16_to_f32(0x3c00) == 1.0f);
        CHECK(rlhi_f16_to_f32(0x7bff) == 65504.0f);
        CHECK(rlhi_f16_to_f32(0x0001) == ldexpf(1, -24));
        CHECK(rlhi_f16_to_f32(0x03ff) == 1023 * ldexpf(1, -24));
        CHECK(rlhi_f16_to_f32(0xfc00) == -INFINITY);
        CHECK(isnan(rlhi_f16_to_f32(0x7e00)));
        CHECK(rlhi_f16_to_f32(0xc500) == -5.0f);
    }

    TEST("safetensors writer and reader round trip") {
        float a[6] = {1, -2, 3.5f, 1e-8f, 65504, -0.0f}, b[3] = {0.1f, 2, 3};
        float back[6];
        struct rlhi_st_out outs[2] = {
            {"a.weight", 2, {2, 3}, a, false},
            {"b", 1, {3}, b, true},
        };
        const char *meta[] = {"format", "pt", "note", "q\"uote"};
        struct rlhi_safetensors *st = NULL;
        const struct rlhi_st_tensor *t;
        char *data;
        size_t len;

        CHECK_OK(rlhi_safetensors_write(tmp("rt.safetensors"), outs, 2, meta,
                                        2));
        CHECK(!rlhi_path_exists(tmp("rt.safetensors.tmp")));
        CHECK_OK(rlhi_file_read(tmp("rt.safetensors"), &data, &len));
        /* header padded to 8 with spaces; data = 24 + 6 bytes */
        CHECK_INT_EQ((uint8_t)data[0] % 8, 0);
        CHECK_INT_EQ(len, 8 + (size_t)(uint8_t)data[0] + 30);
        CHECK(strncmp(data + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30)
              == 0);
        rlhi_free(data);
        CHECK_OK(rlhi_safetensors_open(&st, tmp("rt.safetensors")));
        if (st) {
            CHECK_INT_EQ(st->n_tensors, 2);
            CHECK_STR_EQ(st->tensors[0].name, "a.weight");
            CHECK_STR_EQ(rlhi_safetensors_meta(st, "note"), "q\"uote");
            CHECK(rlhi_safetensors_meta(st, "nope") == NULL);
            CHECK(rlhi_safetensors_find(st, "c") == NULL);
            t = rlhi_safetensors_find(st, "a.weight");
            CHECK(t && t->dtype == RLHI_ST_F32 && t->ndim == 2 &&
                  t->shape[1] == 3 && t->numel == 6);
            if (t) {
                CHECK_OK(rlhi_st_tensor_to_f32(t, back));
                CHECK(same_floats(a, back, 6));
            }
            t = rlhi_safetensors_find(st, "b");
            CHECK(t && t->dtype == RLHI_ST_BF16 && t->nbytes == 6);
            if (t) {
                CHECK_OK(rlhi_st_tensor_to_f32(t, back));
                CHECK(back[0] == rlhi_bf16_to_f32(rlhi_f32_to_bf16(0.1f)));
                CHECK(back[1] == 2 && back[2] == 3);
            }
            rlhi_safetensors_close(st);
        }
        outs[1].name = "a.weight";
        CHECK_INT_EQ(rlhi_safetensors_write(tmp("dup.safetensors"), outs, 2,
                                            NULL, 0), RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "appears twice"));
        CHECK(!rlhi_path_exists(tmp("dup.safetensors")));
    }

    TEST("safetensors: broken files give their message") {
        const char *ok = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],"
                         "\"data_offsets\":[0,8]}}";
        struct rlhi_safetensors *st = NULL;
        const char *hdr;

        write_raw_st(tmp("ok.st"), strlen(ok), ok, 8);
        CHECK_OK(rlhi_safetensors_open(&st, tmp("ok.st")));
        rlhi_safetensors_close(st);

        write_raw_st(tmp("garbage.st"), 10, "not json!!", 0);
        expect_st_fail(tmp("garbage.st"), "header is not valid JSON");
        write_raw_st(tmp("long.st"), 1u << 30, ok, 8);
        expect_st_fail(tmp("long.st"), "header length 1073741824 is larger "
                                       "than the file");
        CHECK_OK(write_text(tmp("short.st"), "abc"));
        expect_st_fail(tmp("short.st"), "too short");
        hdr = "{\"x\":{\"dtype\":\"Q4_K\",\"shape\":[2],"
              "\"data_offsets\":[0,8]}}";
        write_raw_st(tmp("dtype.st"), strlen(hdr), hdr, 8);
        expect_st_fail(tmp("dtype.st"), "tensor 'x' has unknown dtype 'Q4_K'");
        write_raw_st(tmp("bounds.st"), strlen(ok), ok, 4);
        expect_st_fail(tmp("bounds.st"), "data_offsets [0, 8] outside the "
                                         "4-byte buffer");
        hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],"
              "\"data_offsets\":[0,8]}}";
        write_raw_st(tmp("span.st"), strlen(hdr), hdr, 8);
        expect_st_fail(tmp("span.st"), "span 8 bytes, shape and dtype F32 "
                                       "need 12");
        write_raw_st(tmp("array.st"), 2, "[]", 0);
        expect_st_fail(tmp("array.st"), "not a JSON object");
        hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],"
              "\"data_offsets\":[0,8]}}";
        write_raw_st(tmp("shape.st"), strlen(hdr), hdr, 8);
        expect_st_fail(tmp("shape.st"), "shape[0] is not a size");
        /* I64 is a valid dtype: it opens, but cannot become floats. */
        hdr = "{\"x\":{\"dtype\":\"I64\",\"shape\":[1],"
              "\"data_offsets\":[0,8]}}";
        write_raw_st(tmp("i64.st"), strlen(hdr), hdr, 8);
        CHECK_OK(rlhi_safetensors_open(&st, tmp("i64.st")));
        if (st) {
            float f;

            CHECK_INT_EQ(rlhi_st_tensor_to_f32(&st->tensors[0], &f),
                         RLHI_ENOTIMPL);
            rlhi_safetensors_close(st);
        }
    }

    TEST("stories260K llama2.c checkpoint") {
        const char *path =
            check_data("models/llama2c-stories260K/stories260K.bin");
        struct rlhi_model *m = NULL;
        struct rlhi_tensor_info *info = NULL;
        size_t total = 0;
        int n = 0;

        if (!path) {
            SKIP("shared data 'models/llama2c-stories260K' is absent");
            break;
        }
        t0 = rlhi_time_now();
        CHECK_OK(rlhi_model_load(&m, path));
        fprintf(stderr, "info: loaded stories260K in %.3f ms\n",
                (rlhi_time_now() - t0) * 1e3);
        if (!m)
            break;
        CHECK_INT_EQ(m->cfg.dim, 64);
        CHECK_INT_EQ(m->cfg.hidden_dim, 172);
        CHECK_INT_EQ(m->cfg.n_layers, 5);
        CHECK_INT_EQ(m->cfg.n_heads, 8);
        CHECK_INT_EQ(m->cfg.n_kv_heads, 4);
        CHECK_INT_EQ(m->cfg.head_dim, 8);
        CHECK_INT_EQ(m->cfg.vocab_size, 512);
        CHECK_INT_EQ(m->cfg.max_seq_len, 512);
        CHECK(m->cfg.tied_embeddings && !m->cfg.qkv_bias);
        CHECK(m->cfg.rope == RLHI_ROPE_INTERLEAVED);
        CHECK(m->cfg.norm_eps == 1e-5f && m->cfg.rope_theta == 10000.0f);
        CHECK_INT_EQ(m->cfg.bos_id, 1);
        CHECK_INT_EQ(m->cfg.eos_id, 2);
        /* 1,056,540 bytes = 28 + 4 * (260,032 weights + 4,096 freq_cis) */
        CHECK_INT_EQ(m->n_params, 260032);
        CHECK_OK(rlhi_model_tensor_list(&m->cfg, &info, &n, &total));
        CHECK_INT_EQ(total, 260032);
        CHECK_INT_EQ(n, 1 + 5 * 9 + 1);
        rlhi_free(info);
        CHECK(!m->params_owned);
        CHECK(m->w.lm_head == m->w.tok_embed);
        /* the views point into the file: the embedding starts at byte 28,
         * the final norm right before the 4,096 freq_cis floats */
        CHECK((char *)m->w.tok_embed == (char *)m->map.data + 28);
        CHECK((char *)(m->w.final_norm + 64 + 4096) ==
              (char *)m->map.data + m->map.size);
        CHECK(m->w.layers[4].w_up + 172 * 64 == m->w.final_norm);
        /* RMSNorm gains of a trained model: positive, order 1 */
        CHECK(m->w.final_norm[0] > 0.1f && m->w.final_norm[0] < 10);

        /* owning: same weights, canonical layout, mapping gone */
        {
            struct rlhi_model *o = NULL;

            CHECK_OK(rlhi_model_load(&o, path));
            if (o) {
                CHECK_OK(rlhi_model_own(o));
                CHECK(o->params_owned && o->map.data == NULL);
                CHECK(same_weights(m, o));
                CHECK(o->w.layers[0].attn_norm == o->params + 512 * 64);
                CHECK_OK(rlhi_model_own(o)); /* no-op */
                rlhi_model_free(o);
            }
        }

        /* saved as HF: q/k rows permuted to half-split, the rest equal */
        CHECK_OK(rlhi_model_save_hf(m, tmp("s260"), false));
        {
            struct rlhi_model *h = NULL;
            float *buf = malloc(64 * 64 * sizeof(float));
            int l;

            CHECK_OK(rlhi_model_load(&h, tmp("s260")));
            if (h) {
                struct rlhi_model_config c = m->cfg;

                c.rope = RLHI_ROPE_HALF;
                CHECK(same_config(&h->cfg, &c));
                for (l = 0; l < 5; l++) {
                    rlhi__rope_permute(buf, h->w.layers[l].wq, 8, 8, 64,
                                       false);
                    CHECK(same_floats(buf, m->w.layers[l].wq, 64 * 64));
                    rlhi__rope_permute(buf, h->w.layers[l].wk, 4, 8, 64,
                                       false);
                    CHECK(same_floats(buf, m->w.layers[l].wk, 32 * 64));
                    CHECK(!same_floats(h->w.layers[l].wq, m->w.layers[l].wq,
                                       64 * 64));
                    CHECK(same_floats(h->w.layers[l].wv, m->w.layers[l].wv,
                                      32 * 64));
                    CHECK(same_floats(h->w.layers[l].w_down,
                                      m->w.layers[l].w_down, 64 * 172));
                }
                CHECK(same_floats(h->w.tok_embed, m->w.tok_embed, 512 * 64));
                CHECK(same_floats(h->w.final_norm, m->w.final_norm, 64));

                /* and the two compute the same logits */
                {
                    int32_t toks[6] = {1, 403, 407, 261, 378, 410};
                    float *la = calloc(6 * 512, sizeof(float));
                    float *lb = calloc(6 * 512, sizeof(float));
                    struct rlhi_infer *sa = NULL, *sb = NULL;
                    double d = 0;
                    int k;

                    CHECK_OK(rlhi_infer_new(&sa, m, 16));
                    CHECK_OK(rlhi_infer_new(&sb, h, 16));
                    if (sa && sb) {
                        CHECK_OK(rlhi_infer_forward(sa, toks, 6, la, true));
                        CHECK_OK(rlhi_infer_forward(sb, toks, 6, lb, true));
                        for (k = 0; k < 6 * 512; k++)
                            d = fmax(d, fabs(la[k] - lb[k]));
                        /* the same sums in another order: fp32 rounding
                         * only, logits are O(10) */
                        CHECK_NEAR(d, 0, 1e-4, 0);
                    }
                    rlhi_infer_free(sa);
                    rlhi_infer_free(sb);
                    free(la);
                    free(lb);
                }
                rlhi_model_free(h);
            }
            free(buf);
        }

        /* truncated and oversized copies */
        CHECK_OK(copy_file(path, tmp("trunc.bin"), 100, 0));
        expect_fail(tmp("trunc.bin"), RLHI_EFORMAT,
                    "trunc.bin': expected 1056540 bytes for dim=64 "
                    "hidden_dim=172 n_layers=5 n_heads=8 n_kv_heads=4 "
                    "vocab_size=512 seq_len=512, found 1056440 (truncated?)");
        CHECK_OK(copy_file(path, tmp("long.bin"), 0, 4));
        expect_fail(tmp("long.bin"), RLHI_EFORMAT,
                    "expected 1056540 bytes for dim=64");
        CHECK(strstr(rlhi_errmsg(), "found 1056544"));
        rlhi_model_free(m);
    }

    TEST("llama2.c: headers of other versions and garbage") {
        unsigned char v1[256] = {0x32, 0x34, 0x6b, 0x61, 1, 0, 0, 0};
        int32_t bad[7] = {64, 172, 5, 7, 4, 512, 512};

        CHECK_OK(rlhi_file_write_atomic(tmp("v1.bin"), v1, sizeof v1));
        expect_fail(tmp("v1.bin"), RLHI_ENOTIMPL,
                    "llama2.c checkpoint version 1 (magic \"ak42\") is not "
                    "supported yet; hint:");
        CHECK_OK(rlhi_file_write_atomic(tmp("tiny.bin"), bad, 10));
        expect_fail(tmp("tiny.bin"), RLHI_EFORMAT, "too short");
        CHECK_OK(rlhi_file_write_atomic(tmp("heads.bin"), bad, sizeof bad));
        expect_fail(tmp("heads.bin"), RLHI_EFORMAT, "dim = 64 is not a "
                                                    "positive multiple of "
                                                    "n_heads = 7");
        bad[3] = 8;
        bad[4] = 3;
        CHECK_OK(rlhi_file_write_atomic(tmp("kv.bin"), bad, sizeof bad));
        expect_fail(tmp("kv.bin"), RLHI_EFORMAT, "n_heads = 8 is not a "
                                                 "multiple of n_kv_heads = 3");
        bad[4] = 4;
        bad[5] = INT32_MIN;
        CHECK_OK(rlhi_file_write_atomic(tmp("vocab.bin"), bad, sizeof bad));
        expect_fail(tmp("vocab.bin"), RLHI_EFORMAT, "vocab_size = 0");
        expect_fail(tmp("nonexistent.bin"), RLHI_EIO, "cannot open");
        expect_fail(tmp("nonexistent"), RLHI_EIO, "No such file");
    }

    TEST("fixtures load with their configs") {
        struct rlhi_model *a = NULL, *q = NULL, *c = NULL;
        int l;

        t0 = rlhi_time_now();
        CHECK_OK(rlhi_model_load(&a, TINY_LLAMA));
        fprintf(stderr, "info: loaded tiny-llama (F32) in %.3f ms\n",
                (rlhi_time_now() - t0) * 1e3);
        t0 = rlhi_time_now();
        CHECK_OK(rlhi_model_load(&q, TINY_QWEN));
        fprintf(stderr, "info: loaded tiny-qwen (BF16) in %.3f ms\n",
                (rlhi_time_now() - t0) * 1e3);
        t0 = rlhi_time_now();
        CHECK_OK(rlhi_model_load(&c, TINY_L2C));
        fprintf(stderr, "info: loaded tiny-llama2c in %.3f ms\n",
                (rlhi_time_now() - t0) * 1e3);
        if (!a || !q || !c) {
            rlhi_model_free(a);
            rlhi_model_free(q);
            rlhi_model_free(c);
            break;
        }
        {
            struct rlhi_model_config want = {
                64, 160, 2, 4, 2, 16, 300, 128, 1e-5f, 10000.0f,
                RLHI_ROPE_HALF, false, false, 1, 2};

            CHECK(same_config(&a->cfg, &want));
            CHECK(a->params_owned);
            CHECK_INT_EQ(a->n_params, 300 * 64 * 2 + 64 +
                                          2 * (2 * 64 + 64 * 64 * 2 +
                                               32 * 64 * 2 + 3 * 160 * 64));
            CHECK(a->w.lm_head == a->params + a->n_params - 300 * 64);
            want.rope = RLHI_ROPE_INTERLEAVED;
            CHECK(same_config(&c->cfg, &want));
            CHECK(!c->params_owned && c->w.lm_head != c->w.tok_embed);
            CHECK_INT_EQ(c->n_params, a->n_params);
            /* unshared classifier: the last V*C floats of the file */
            CHECK((char *)(c->w.lm_head + 300 * 64) ==
                  (char *)c->map.data + c->map.size);
        }
        {
            struct rlhi_model_config want = {
                64, 160, 2, 4, 2, 16, 300, 128, 1e-6f, 1e6f,
                RLHI_ROPE_HALF, true, true, 1, 2};

            CHECK(same_config(&q->cfg, &want));
            CHECK(q->w.lm_head == q->w.tok_embed);
            CHECK(q->w.layers[1].bv != NULL);
            CHECK_INT_EQ(q->n_params,
                         300 * 64 + 64 +
                             2 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 +
                                  3 * 160 * 64 + 64 + 32 * 2));
        }

        /* Python wrote tiny-llama2c with q/k rows un-permuted: permuting
         * them back gives tiny-llama's rows exactly. */
        {
            float buf[64 * 64];

            for (l = 0; l < 2; l++) {
                rlhi__rope_permute(buf, c->w.layers[l].wq, 4, 16, 64, true);
                CHECK(same_floats(buf, a->w.layers[l].wq, 64 * 64));
                rlhi__rope_permute(buf, c->w.layers[l].wk, 2, 16, 64, true);
                CHECK(same_floats(buf, a->w.layers[l].wk, 32 * 64));
                CHECK(same_floats(c->w.layers[l].w_gate, a->w.layers[l].w_gate,
                                  160 * 64));
                CHECK(same_floats(c->w.layers[l].w_up, a->w.layers[l].w_up,
                                  160 * 64));
                CHECK(same_floats(c->w.layers[l].w_down,
                                  a->w.layers[l].w_down, 160 * 64));
            }
            CHECK(same_floats(c->w.lm_head, a->w.lm_head, 300 * 64));
        }

        /* reference logits (float64 PyTorch forward) through our forward:
         * fp32 arithmetic on O(1) activations, 1e-4 relative to the
         * largest logit is ~1000x the expected rounding */
        {
            double e;

            e = fixture_logit_err(a, TINY_LLAMA);
            CHECK_MSG(e >= 0 && e < 1e-4, "tiny-llama logits: rel err %g", e);
            e = fixture_logit_err(q, TINY_QWEN);
            CHECK_MSG(e >= 0 && e < 1e-4, "tiny-qwen logits: rel err %g", e);
            e = fixture_logit_err(c, "tests/fixtures/tiny-llama2c");
            CHECK_MSG(e >= 0 && e < 1e-4, "tiny-llama2c logits: rel err %g",
                      e);
        }
        rlhi_model_free(a);
        rlhi_model_free(q);
        rlhi_model_free(c);
    }

    TEST("bf16 fixture: widened values are the bits shifted left by 16") {
        struct rlhi_safetensors *st = NULL;
        struct rlhi_tensor_info *info = NULL;
        struct rlhi_model *q = NULL;
        size_t total, bad = 0, i;
        int n = 0, k;

        CHECK_OK(rlhi_model_load(&q, TINY_QWEN));
        CHECK_OK(rlhi_safetensors_open(&st, TINY_QWEN "/model.safetensors"));
        if (q && st &&
            !rlhi_model_tensor_list(&q->cfg, &info, &n, &total)) {
            for (k = 0; k < n; k++) {
                const struct rlhi_st_tensor *t =
                    rlhi_safetensors_find(st, info[k].name);
                const unsigned char *p;

                CHECK_MSG(t && t->dtype == RLHI_ST_BF16, "%s", info[k].name);
                if (!t)
                    continue;
                p = t->data;
                for (i = 0; i < info[k].numel; i++) {
                    uint32_t u = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8)
                                 << 16, v;

                    memcpy(&v, q->params + info[k].offset + i, 4);
                    bad += u != v;
                }
            }
            CHECK_INT_EQ(bad, 0);
            CHECK_INT_EQ(total, q->n_params);
        }
        rlhi_free(info);
        rlhi_safetensors_close(st);
        rlhi_model_free(q);
    }

    TEST("save_hf round trips: fp32 exact, bf16 rounded") {
        struct rlhi_model *a = NULL, *b = NULL, *q = NULL;
        char *cfg = NULL;
        size_t len, i, bad = 0;

        CHECK_OK(rlhi_model_load(&a, TINY_LLAMA));
        CHECK_OK(rlhi_model_load(&q, TINY_QWEN));
        if (!a || !q)
            goto save_done;
        CHECK_OK(rlhi_model_save_hf(a, tmp("llama32"), false));
        CHECK_OK(rlhi_model_load(&b, tmp("llama32")));
        if (b) {
            CHECK(same_config(&a->cfg, &b->cfg));
            CHECK(same_weights(a, b));
            rlhi_model_free(b);
            b = NULL;
        }
        CHECK_OK(rlhi_file_read(tmp("llama32/config.json"), &cfg, &len));
        if (cfg) {
            CHECK(strstr(cfg, "\"LlamaForCausalLM\""));
            CHECK(strstr(cfg, "\"rms_norm_eps\": 1e-05,"));
            CHECK(strstr(cfg, "\"rope_theta\": 10000.0,"));
            CHECK(strstr(cfg, "\"torch_dtype\": \"float32\""));
            rlhi_free(cfg);
            cfg = NULL;
        }

        CHECK_OK(rlhi_model_save_hf(a, tmp("llama16"), true));
        CHECK_OK(rlhi_model_load(&b, tmp("llama16")));
        if (b) {
            CHECK(same_config(&a->cfg, &b->cfg));
            for (i = 0; i < a->n_params; i++) {
                float x = a->params[i], y = b->params[i];

                /* exactly torch's rounding: 8 significant bits, so within half
                 * an ulp, 2^-8 relative */
                bad += y != rlhi_bf16_to_f32(rlhi_f32_to_bf16(x)) ||
                       fabsf(y - x) > fabsf(x) * (1.0f / 256);
            }
            CHECK_INT_EQ(bad, 0);
            rlhi_model_free(b);
            b = NULL;
        }

        /* a bf16 model survives bf16 and fp32 saves bit for bit */
        CHECK_OK(rlhi_model_save_hf(q, tmp("qwen16"), true));
        CHECK_OK(rlhi_model_load(&b, tmp("qwen16")));
        if (b) {
            CHECK(same_config(&q->cfg, &b->cfg));
            CHECK(same_weights(q, b));
            rlhi_model_free(b);
            b = NULL;
        }
        CHECK_OK(rlhi_model_save_hf(q, tmp("qwen16"), false));
        CHECK_OK(rlhi_model_load(&b, tmp("qwen16")));
        if (b) {
            CHECK(same_weights(q, b));
            rlhi_model_free(b);
            b = NULL;
        }
        CHECK_OK(rlhi_file_read(tmp("qwen16/config.json"), &cfg, &len));
        if (cfg) {
            CHECK(strstr(cfg, "\"Qwen2ForCausalLM\""));
            CHECK(strstr(cfg, "\"rope_theta\": 1000000.0,"));
            CHECK(strstr(cfg, "\"tie_word_embeddings\": true,"));
            rlhi_free(cfg);
        }
        CHECK(!rlhi_path_exists(tmp("qwen16/model.safetensors.tmp")));
    save_done:
        rlhi_model_free(a);
        rlhi_model_free(q);
    }

    TEST("sharded directory equals the single file") {
        struct rlhi_model *a = NULL, *b = NULL;
        struct rlhi_tensor_info *info = NULL;
        struct rlhi_st_out outs[64];
        struct rlhi_buf idx = RLHI_BUF_INIT;
        char *good;
        const char *shard[2] = {"model-00001-of-00002.safetensors",
                                "model-00002-of-00002.safetensors"};
        int n, i, half;

        CHECK_OK(rlhi_model_load(&a, TINY_LLAMA));
        if (!a)
            break;
        n = model_outs(a, outs, &info, false);
        half = n / 2;
        CHECK_OK(rlhi_mkdir_p(tmp("sharded")));
        /* shard 2 first in the map's order, tensors in reverse in shard 1,
         * to show that no order is assumed */
        for (i = 0; i < half / 2; i++) {
            struct rlhi_st_out t = outs[i];

            outs[i] = outs[half - 1 - i];
            outs[half - 1 - i] = t;
        }
        CHECK_OK(rlhi_safetensors_write(tmp("sharded/model-00001-of-00002."
                                            "safetensors"),
                                        outs, half, NULL, 0));
        CHECK_OK(rlhi_safetensors_write(tmp("sharded/model-00002-of-00002."
                                            "safetensors"),
                                        outs + half, n - half, NULL, 0));
        rlhi_buf_adds(&idx, "{\"metadata\": {\"total_size\": 0},\n"
                            " \"weight_map\": {\n");
        for (i = n - 1; i >= 0; i--)
            rlhi_buf_addf(&idx, "  \"%s\": \"%s\"%s\n", outs[i].name,
                          shard[i >= half], i ? "," : "");
        rlhi_buf_adds(&idx, "}}\n");
        CHECK_OK(write_text(tmp("sharded/model.safetensors.index.json"),
                            idx.buf));
        CHECK_OK(copy_file(TINY_LLAMA "/config.json",
                           tmp("sharded/config.json"), 0, 0));
        CHECK_OK(rlhi_model_load(&b, tmp("sharded")));
        if (b) {
            CHECK(same_config(&a->cfg, &b->cfg));
            CHECK(same_weights(a, b));
            rlhi_model_free(b);
            b = NULL;
        }
        good = rlhi_strdup(idx.buf);

        /* the index names a tensor the shard does not hold */
        rlhi_buf_clear(&idx);
        rlhi_buf_adds(&idx, "{\"weight_map\": {");
        for (i = 0; i < n; i++)
            rlhi_buf_addf(&idx, "\"%s\": \"%s\"%s", outs[i].name,
                          shard[i < half], i < n - 1 ? "," : "");
        rlhi_buf_adds(&idx, "}}");
        CHECK_OK(write_text(tmp("sharded/model.safetensors.index.json"),
                            idx.buf));
        expect_fail(tmp("sharded"), RLHI_EFORMAT,
                    "(listed in model.safetensors.index.json)");
        CHECK_OK(write_text(tmp("sharded/model.safetensors.index.json"),
                            "{\"weight_map\": {\"x\": \"../../etc/passwd\"}}"));
        expect_fail(tmp("sharded"), RLHI_EFORMAT, "invalid file name");
        CHECK_OK(write_text(tmp("sharded/model.safetensors.index.json"),
                            "{\"weight_map\": "));
        expect_fail(tmp("sharded"), RLHI_EFORMAT, "cannot parse '");
        CHECK_OK(write_text(tmp("sharded/model.safetensors.index.json"),
                            good));
        rlhi_free(good);
        rlhi_buf_release(&idx);
        rlhi_free(info);
        rlhi_model_free(a);
    }

    TEST("hf directories: broken files give their message") {
        struct rlhi_model *a = NULL;
        struct rlhi_tensor_info *info = NULL;
        struct rlhi_st_out outs[64];
        char *cfg = NULL, *p;
        size_t len;
        int n, i;

        CHECK_OK(rlhi_model_load(&a, TINY_LLAMA));
        CHECK_OK(rlhi_file_read(TINY_LLAMA "/config.json", &cfg, &len));
        if (!a || !cfg)
            goto hf_done;
        n = model_outs(a, outs, &info, false);
        CHECK_OK(rlhi_mkdir_p(tmp("bad")));
        CHECK_OK(write_text(tmp("bad/config.json"), cfg));

        /* missing tensor: layer 1's up_proj left out */
        for (i = 0; i < n; i++)
            if (strcmp(outs[i].name, "model.layers.1.mlp.up_proj.weight")
                == 0)
                break;
        CHECK(i < n);
        outs[i] = outs[n - 1];
        CHECK_OK(rlhi_safetensors_write(tmp("bad/model.safetensors"), outs,
                                        n - 1, NULL, 0));
        expect_fail(tmp("bad"), RLHI_EFORMAT,
                    "/bad': missing tensor 'model.layers.1.mlp.up_proj."
                    "weight'");

        /* wrong shape: the last tensor (lm_head) with half its columns */
        rlhi_free(info);
        n = model_outs(a, outs, &info, false);
        outs[n - 1].shape[1] = 32;
        CHECK_OK(rlhi_safetensors_write(tmp("bad/model.safetensors"), outs,
                                        n, NULL, 0));
        expect_fail(tmp("bad"), RLHI_EFORMAT,
                    "/bad/model.safetensors': tensor 'lm_head.weight' has "
                    "shape [300, 32], expected [300, 64]");

        /* a tied config may lack lm_head; an untied one may not */
        CHECK_OK(rlhi_safetensors_write(tmp("bad/model.safetensors"), outs,
                                        n - 1, NULL, 0));
        expect_fail(tmp("bad"), RLHI_EFORMAT, "missing tensor "
                                              "'lm_head.weight'");

        /* config.json problems */
        p = strstr(cfg, "\"rope_scaling\": null");
        CHECK(p != NULL);
        if (p) {
            struct rlhi_buf b = RLHI_BUF_INIT;

            rlhi_buf_add(&b, cfg, (size_t)(p - cfg));
            rlhi_buf_adds(&b, "\"rope_scaling\": {\"rope_type\": \"llama3\", "
                              "\"factor\": 8.0}");
            rlhi_buf_adds(&b, p + strlen("\"rope_scaling\": null"));
            CHECK_OK(write_text(tmp("bad/config.json"), b.buf));
            expect_fail(tmp("bad"), RLHI_ENOTIMPL,
                        "config.json': not implemented: rope_scaling "
                        "'llama3'");
            rlhi_buf_release(&b);
        }
        CHECK_OK(write_text(tmp("bad/config.json"),
                            "{\"model_type\": \"llama\", "
                            "\"hidden_size\": 64}"));
        expect_fail(tmp("bad"), RLHI_EFORMAT,
                    "config.json': missing \"intermediate_size\"");
        CHECK_OK(write_text(tmp("bad/config.json"),
                            "{\"model_type\": \"gpt2\"}"));
        expect_fail(tmp("bad"), RLHI_ENOTIMPL, "model_type 'gpt2'");
        CHECK_OK(write_text(tmp("bad/config.json"), "{\"model_type\": "));
        expect_fail(tmp("bad"), RLHI_EFORMAT, "cannot parse '");
        CHECK_OK(write_text(tmp("bad/config.json"),
                            "{\"model_type\": \"llama\", \"hidden_size\": 64,"
                            "\"intermediate_size\": 160, "
                            "\"num_hidden_layers\": 2, "
                            "\"num_attention_heads\": 6, \"vocab_size\": 300,"
                            "\"max_position_embeddings\": 128}"));
        expect_fail(tmp("bad"), RLHI_EFORMAT, "hidden_size 64 is not a "
                                              "multiple of "
                                              "num_attention_heads 6");
        CHECK_OK(rlhi_mkdir_p(tmp("empty")));
        expect_fail(tmp("empty"), RLHI_ENOTFOUND, "no config.json");
        CHECK_OK(write_text(tmp("empty/config.json"), cfg));
        expect_fail(tmp("empty"), RLHI_ENOTFOUND,
                    "no model.safetensors or model.safetensors.index.json");
        expect_fail(TINY_LLAMA "/model.safetensors", RLHI_EINVAL,
                    "give the model's directory");
    hf_done:
        rlhi_free(info);
        rlhi_free(cfg);
        rlhi_model_free(a);
    }

    TEST("config checks name the field") {
        struct rlhi_model_config c = {
            64, 160, 2, 4, 2, 16, 300, 128, 1e-5f, 10000.0f,
            RLHI_ROPE_HALF, false, false, 1, 2};
        struct rlhi_model *m = NULL;

        CHECK_OK(rlhi_model_config_check(&c));
        c.head_dim = 15;
        CHECK_INT_EQ(rlhi_model_config_check(&c), RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "head_dim = 15"));
        c.head_dim = 16;
        c.n_kv_heads = 3;
        CHECK_INT_EQ(rlhi_model_new(&m, &c), RLHI_EINVAL);
        CHECK(m == NULL && strstr(rlhi_errmsg(), "n_kv_heads = 3"));
        c.n_kv_heads = 2;
        c.eos_id = 300;
        CHECK_INT_EQ(rlhi_model_config_check(&c), RLHI_EINVAL);
        CHECK(strstr(rlhi_errmsg(), "eos_id = 300"));
        c.eos_id = 2;
        c.qkv_bias = true;
        CHECK_OK(rlhi_model_new(&m, &c));
        if (m) {
            struct rlhi_tensor_info *info;
            size_t total, i;
            float *v[64];
            int n, k;
            bool zero = true;

            for (i = 0; i < m->n_params; i++)
                zero &= m->params[i] == 0;
            CHECK(zero && m->params_owned);
            /* every view lands on its listed offset */
            CHECK_OK(rlhi_model_tensor_list(&c, &info, &n, &total));
            CHECK_INT_EQ(rlhi__model_views(m, v), n);
            for (k = 0; k < n; k++)
                CHECK_MSG(v[k] == m->params + info[k].offset, "%s",
                          info[k].name);
            CHECK_STR_EQ(info[5].name, "model.layers.0.self_attn.q_proj.bias");
            CHECK_INT_EQ(total, m->n_params);
            rlhi_free(info);
            rlhi_model_free(m);
        }
    }

    TEST("corrupted files never crash, and fail with a message") {
        float a[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        struct rlhi_st_out outs[3] = {
            {"a", 2, {3, 2}, a, false},
            {"b", 1, {4}, a, true},
            {"c", 0, {0}, a, false},
        };
        struct rlhi_rng rng;
        char *orig, *cfg;
        size_t len, cfglen;
        long bad = 0;
        int it, i;

        rlhi_rng_seed(&rng, 7);
        CHECK_OK(rlhi_safetensors_write(tmp("fz.st"), outs, 3, NULL, 0));
        CHECK_OK(rlhi_file_read(tmp("fz.st"), &orig, &len));
        /* 3000 header mutations (1-4 bytes), then every truncation */
        for (it = 0; it < 3000 + (int)len && orig; it++) {
            struct rlhi_safetensors *st = NULL;
            size_t n = len;
            FILE *f;
            int r, k = 1 + (int)rlhi_rng_below(&rng, 4);
            char *d = malloc(len);

            memcpy(d, orig, len);
            if (it < 3000)
                for (i = 0; i < k; i++)
                    d[rlhi_rng_below(&rng, len - 24)] =
                        (char)rlhi_rng_below(&rng, 256);
            else
                n = (size_t)(it - 3000);
            f = fopen(tmp("fz2.st"), "wb");
            fwrite(d, 1, n, f);
            fclose(f);
            r = rlhi_safetensors_open(&st, tmp("fz2.st"));
            if (r == 0) {
                for (i = 0; i < st->n_tensors; i++) {
                    float *o = malloc(st->tensors[i].numel * 4 + 4);

                    rlhi_st_tensor_to_f32(&st->tensors[i], o);
                    free(o);
                }
                rlhi_safetensors_close(st);
            } else if (r != RLHI_EFORMAT || !strstr(rlhi_errmsg(), "fz2")) {
                bad++;
            }
            free(d);
        }
        CHECK_INT_EQ(bad, 0);
        rlhi_free(orig);

        /* 1000 random llama2.c headers of small values */
        for (it = 0; it < 1000; it++) {
            int32_t h[16];
            struct rlhi_model *m = NULL;
            FILE *f = fopen(tmp("fz.bin"), "wb");
            int r;

            for (i = 0; i < 16; i++)
                h[i] = (int32_t)rlhi_rng_below(&rng, 80) - 8;
            fwrite(h, 4, 16, f);
            fclose(f);
            r = rlhi_model_load(&m, tmp("fz.bin"));
            bad += r != RLHI_EFORMAT || m != NULL;
            rlhi_model_free(m);
        }
        CHECK_INT_EQ(bad, 0);

        /* 300 config.json mutations over the F32 fixture's weights */
        CHECK_OK(rlhi_file_read(TINY_LLAMA "/config.json", &cfg, &cfglen));
        CHECK_OK(rlhi_mkdir_p(tmp("fzdir")));
        CHECK_OK(copy_file(TINY_LLAMA "/model.safetensors",
                           tmp("fzdir/model.safetensors"), 0, 0));
        for (it = 0; it < 300 && cfg; it++) {
            struct rlhi_model *m = NULL;
            char *d = malloc(cfglen);
            FILE *f = fopen(tmp("fzdir/config.json"), "wb");
            int r;

            memcpy(d, cfg, cfglen);
            d[rlhi_rng_below(&rng, cfglen)] = "0123456789-.e,:{}[]\"x "
                [rlhi_rng_below(&rng, 23)];
            fwrite(d, 1, cfglen, f);
            fclose(f);
            r = rlhi_model_load(&m, tmp("fzdir"));
            bad += (r == 0) != (m != NULL) ||
                   (r && !strstr(rlhi_errmsg(), "fzdir"));
            rlhi_model_free(m);
            free(d);
        }
        CHECK_INT_EQ(bad, 0);
        rlhi_free(cfg);
    }

    TEST("allocation failures while loading return RLHI_ENOMEM cleanly") {
        const char *paths[3] = {TINY_QWEN, TINY_L2C, NULL};
        int p;

        paths[2] = tmp("sharded");
        for (p = 0; p < 3; p++) {
            struct rlhi_model *m = NULL;
            long count, k, wrong = 0;

            rlhi__alloc_fail_at(0);
            CHECK_OK(rlhi_model_load(&m, paths[p]));
            count = rlhi__alloc_fail_at(0);
            rlhi_model_free(m);
            CHECK(count >= 3);
            for (k = 1; k <= count; k++) {
                int r;

                m = NULL;
                rlhi__alloc_fail_at(k);
                r = rlhi_model_load(&m, paths[p]);
                if (r != RLHI_ENOMEM || m) {
                    fprintf(stderr, "  '%s' alloc %ld: %d %s\n", paths[p], k,
                            r, rlhi_errmsg());
                    wrong++;
                }
                rlhi_model_free(m);
            }
            rlhi__alloc_fail_at(0);
            CHECK_INT_EQ(wrong, 0);
        }
        /* and saving */
        {
            struct rlhi_model *m = NULL;
            long count, k, wrong = 0;

            CHECK_OK(rlhi_model_load(&m, TINY_QWEN));
            rlhi__alloc_fail_at(0);
            CHECK_OK(rlhi_model_save_hf(m, tmp("oom"), true));
            count = rlhi__alloc_fail_at(0);
            for (k = 1; k <= count; k++) {
                rlhi__alloc_fail_at(k);
                if (rlhi_model_save_hf(m, tmp("oom"), true) != RLHI_ENOMEM)
                    wrong++;
            }
            rlhi__alloc_fail_at(0);
            CHECK_INT_EQ(wrong, 0);
            rlhi_model_free(m);
        }
    }

    {
        char cmd[128];

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd))
            fprintf(stderr, "warning: could not remove '%s'\n", tmpdir);
    }
    return check_summary();
}
