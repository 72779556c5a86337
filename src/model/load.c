/* Model loading: dispatch on what `path` is, Hugging Face directories, and
 * turning a mapped model into an owned one.
 *
 * Choices:
 *   - llama2.c files (formats/llama2c.c) are not copied: the per-layer
 *     views point into the read-only mapping, whose grouped layout is not
 *     the canonical block (params_owned is false). rlhi_model_own() copies
 *     into a canonical, writable block when a trainer needs one.
 *   - Hugging Face directories are copied into an owned canonical block:
 *     bf16/fp16 must be widened anyway, and one code path for every dtype
 *     is simpler than mapping fp32 files whose tensor order is arbitrary.
 *     Peak memory is the block plus the (shared, evictable) file pages.
 *   - config.json fields follow transformers' LlamaConfig, Qwen2Config and
 *     MistralConfig, including their defaults for absent keys.
 */
#include "model/model_io.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rlhi/safetensors.h"

/* ---- config.json ---------------------------------------------------- */

/* Reads integer `key` into *out; absent or null keeps *out when `dflt`,
 * otherwise it is an error. */
static int get_int(json_t *o, const char *key, int *out, bool dflt,
                   const char *file)
{
    json_t *v = json_object_get(o, key);

    if (!v || json_is_null(v)) {
        if (dflt)
            return 0;
        return rlhi_err(RLHI_EFORMAT, "'%s': missing \"%s\"", file, key);
    }
    if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN ||
        json_integer_value(v) > INT32_MAX)
        return rlhi_err(RLHI_EFORMAT, "'%s': \"%s\" is not a 32-bit integer",
                        file, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *o, const char *key, float *out, const char *file)
{
    json_t *v = json_object_get(o, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return rlhi_err(RLHI_EFORMAT, "'%s': \"%s\" is not a number", file,
                        key);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(json_t *o, const char *key, bool *out, const char *file)
{
    json_t *v = json_object_get(o, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return rlhi_err(RLHI_EFORMAT, "'%s': \"%s\" is not true or false",
                        file, key);
    *out = json_is_true(v);
    return 0;
}

/* bos/eos ids: an integer, a list (the first is used: generation stops on
 * it; the others, e.g. Llama 3's <|eot_id|>, are the chat template's
 * business) or null. */
static int get_token_id(json_t *o, const char *key, int *out,
                        const char *file)
{
    json_t *v = json_object_get(o, key);

    if (json_is_array(v)) {
        if (json_array_size(v) > 1)
            rlhi_debug("'%s': \"%s\" lists %zu ids; using the first", file,
                       key, json_array_size(v));
        v = json_array_get(v, 0);
    }
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > INT32_MAX)
        return rlhi_err(RLHI_EFORMAT, "'%s': \"%s\" is not a token id", file,
                        key);
    *out = (int)json_integer_value(v);
    return 0;
}

/* Refuses what the forward pass does not compute. */
static int check_unsupported(json_t *root, const char *type, const char *file)
{
    json_t *rs = json_object_get(root, "rope_scaling");
    json_t *rp = json_object_get(root, "rope_parameters");
    json_t *act = json_object_get(root, "hidden_act");
    bool b = false;

    if (rs && !json_is_null(rs)) {
        json_t *t = json_object_get(rs, "rope_type");

        if (!json_is_string(t))
            t = json_object_get(rs, "type");
        /* some exports spell "no scaling" as {"rope_type": "default"} */
        if (!json_is_string(t) || strcmp(json_string_value(t), "default"))
            return rlhi_err(RLHI_ENOTIMPL, "'%s': not implemented: "
                            "rope_scaling '%s'", file,
                            json_is_string(t) ? json_string_value(t) : "?");
    }
    /* transformers >= 4.56 moves theta and scaling into rope_parameters. */
    if (json_is_object(rp)) {
        json_t *t = json_object_get(rp, "rope_type");

        if (json_is_string(t) && strcmp(json_string_value(t), "default"))
            return rlhi_err(RLHI_ENOTIMPL, "'%s': not implemented: "
                            "rope_scaling '%s'", file, json_string_value(t));
    }
    if (act && (!json_is_string(act) ||
                strcmp(json_string_value(act), "silu")))
        return rlhi_err(RLHI_ENOTIMPL, "'%s': not implemented: hidden_act "
                        "'%s' (only silu)", file,
                        json_is_string(act) ? json_string_value(act) : "?");
    if (get_bool(root, "mlp_bias", &b, file))
        return RLHI_EFORMAT;
    if (b)
        return rlhi_err(RLHI_ENOTIMPL, "'%s': not implemented: mlp_bias",
                        file);
    /* Llama's attention_bias also puts a bias on o_proj, which rlhi's
     * layer has no room for; Qwen2's q/k/v biases are always on. */
    if (strcmp(type, "qwen2") && get_bool(root, "attention_bias", &b, file))
        return RLHI_EFORMAT;
    if (strcmp(type, "qwen2") && b)
        return rlhi_err(RLHI_ENOTIMPL, "'%s': not implemented: "
                        "attention_bias (o_proj bias) for model_type '%s'",
                        file, type);
    return 0;
}

static int parse_config(json_t *root, struct rlhi_model_config *c,
                        const char *file)
{
    json_t *jt = json_object_get(root, "model_type");
    json_t *rp = json_object_get(root, "rope_parameters");
    const char *type;
    bool swa = false;
    int window = 0, r;

    if (!json_is_string(jt))
        return rlhi_err(RLHI_EFORMAT, "'%s': missing \"model_type\"", file);
    type = json_string_value(jt);
    if (strcmp(type, "llama") && strcmp(type, "qwen2") &&
        strcmp(type, "mistral"))
        return rlhi_err(RLHI_ENOTIMPL, "'%s': not implemented: model_type "
                        "'%s' (supported: llama, qwen2, mistral)", file,
                        type);
    r = check_unsupported(root, type, file);
    if (r)
        return r;

    /* Defaults are transformers' for these three configs. */
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->rope = RLHI_ROPE_HALF;
    c->bos_id = c->eos_id = -1;
    c->qkv_bias = strcmp(type, "qwen2") == 0;
    c->n_kv_heads = -1;
    c->head_dim = -1;
    if ((r = get_int(root, "hidden_size", &c->dim, false, file)) ||
        (r = get_int(root, "intermediate_size", &c->hidden_dim, false,
                     file)) ||
        (r = get_int(root, "num_hidden_layers", &c->n_layers, false, file)) ||
        (r = get_int(root, "num_attention_heads", &c->n_heads, false,
                     file)) ||
        (r = get_int(root, "num_key_value_heads", &c->n_kv_heads, true,
                     file)) ||
        (r = get_int(root, "head_dim", &c->head_dim, true, file)) ||
        (r = get_int(root, "vocab_size", &c->vocab_size, false, file)) ||
        (r = get_int(root, "max_position_embeddings", &c->max_seq_len, false,
                     file)) ||
        (r = get_float(root, "rms_norm_eps", &c->norm_eps, file)) ||
        (r = get_float(root, "rope_theta", &c->rope_theta, file)) ||
        (json_is_object(rp) &&
         (r = get_float(rp, "rope_theta", &c->rope_theta, file))) ||
        (r = get_bool(root, "tie_word_embeddings", &c->tied_embeddings,
                      file)) ||
        (r = get_token_id(root, "bos_token_id", &c->bos_id, file)) ||
        (r = get_token_id(root, "eos_token_id", &c->eos_id, file)))
        return r;
    if (c->n_kv_heads < 0)
        c->n_kv_heads = c->n_heads;
    if (c->head_dim < 0) {
        if (c->n_heads <= 0 || c->dim % c->n_heads)
            return rlhi_err(RLHI_EFORMAT, "'%s': hidden_size %d is not a "
                            "multiple of num_attention_heads %d and there "
                            "is no head_dim", file, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }

    /* Sliding-window attention equals full attention while the context
     * fits the window, so the model is exact up to the window's length. */
    if (strcmp(type, "mistral") == 0)
        swa = true;
    else if ((r = get_bool(root, "use_sliding_window", &swa, file)))
        return r;
    if (swa && (r = get_int(root, "sliding_window", &window, true, file)))
        return r;
    if (swa && window > 0 && window < c->max_seq_len) {
        rlhi_info("'%s': sliding window %d: context limited to %d tokens",
                  file, window, window);
        c->max_seq_len = window;
    }
    /* Ids outside the vocabulary (some configs carry stale ones) are
     * dropped rather than refused: they only matter for generation. */
    if (c->bos_id >= c->vocab_size)
        c->bos_id = -1;
    if (c->eos_id >= c->vocab_size)
        c->eos_id = -1;
    r = rlhi_model_config_check(c);
    if (r)
        return rlhi_err_prefix(RLHI_EFORMAT, "'%s'", file);
    return 0;
}

static int read_json(const char *file, json_t **out)
{
    json_error_t jerr;
    char *data = NULL;
    size_t len;
    int r = rlhi_file_read(file, &data, &len);

    *out = NULL;
    if (r)
        return r;
    *out = json_loadb(data, len, 0, &jerr);
    rlhi_free(data);
    if (!*out)
        return rlhi_err(RLHI_EFORMAT, "cannot parse '%s': line %d: %s", file,
                        jerr.line, jerr.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return rlhi_err(RLHI_EFORMAT, "cannot parse '%s': not a JSON object",
                        file);
    }
    return 0;
}

/* ---- weights -------------------------------------------------------- */

/* The safetensors files of a directory, opened on first use. */
struct shards {
    const char *dir;
    json_t *weight_map;   /* NULL for a single model.safetensors */
    char **names;         /* file names relative to dir */
    struct rlhi_safetensors **files;
    int n;
};

static void shards_release(struct shards *s)
{
    int i;

    for (i = 0; i < s->n; i++) {
        rlhi_free(s->names[i]);
        rlhi_safetensors_close(s->files[i]);
    }
    rlhi_free(s->names);
    rlhi_free(s->files);
    json_decref(s->weight_map);
}

static int shards_init(struct shards *s, const char *dir)
{
    char *single = rlhi_path_join(dir, "model.safetensors");
    char *index = rlhi_path_join(dir, "model.safetensors.index.json");
    char *bin = rlhi_path_join(dir, "pytorch_model.bin");
    json_t *root = NULL;
    const char *key;
    json_t *v;
    int r = 0;

    memset(s, 0, sizeof *s);
    s->dir = dir;
    if (!single || !index || !bin) {
        r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", dir);
        goto out;
    }
    s->names = rlhi_calloc(1, sizeof(char *));
    s->files = rlhi_calloc(1, sizeof(void *));
    if (!s->names || !s->files) {
        r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", dir);
        goto out;
    }
    if (rlhi_path_exists(single)) {
        s->names[0] = rlhi_strdup("model.safetensors");
        if (!s->names[0]) {
            r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", dir);
            goto out;
        }
        s->n = 1;
        goto out;
    }
    if (!rlhi_path_exists(index)) {
        if (rlhi_path_exists(bin))
            r = rlhi_err(RLHI_ENOTIMPL, "'%s': not implemented: "
                         "pytorch_model.bin weights; hint: save them as "
                         "safetensors (transformers: save_pretrained(dir, "
                         "safe_serialization=True))", dir);
        else
            r = rlhi_err(RLHI_ENOTFOUND, "'%s': no model.safetensors or "
                         "model.safetensors.index.json", dir);
        goto out;
    }

    /* A sharded model: collect the distinct file names of weight_map. */
    r = read_json(index, &root);
    if (r)
        goto out;
    s->weight_map = json_incref(json_object_get(root, "weight_map"));
    if (!json_is_object(s->weight_map)) {
        r = rlhi_err(RLHI_EFORMAT, "'%s': missing \"weight_map\" object",
                     index);
        goto out;
    }
    rlhi_free(s->names);
    rlhi_free(s->files);
    s->names = rlhi_calloc(json_object_size(s->weight_map) + 1,
                           sizeof(char *));
    s->files = rlhi_calloc(json_object_size(s->weight_map) + 1,
                           sizeof(void *));
    if (!s->names || !s->files) {
        r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", dir);
        goto out;
    }
    json_object_foreach(s->weight_map, key, v) {
        const char *f = json_string_value(v);
        int i;

        if (!f || !*f || f[0] == '/' || strstr(f, "..")) {
            r = rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s' maps to an invalid "
                         "file name", index, key);
            goto out;
        }
        for (i = 0; i < s->n && strcmp(s->names[i], f); i++)
            ;
        if (i < s->n)
            continue;
        s->names[s->n] = rlhi_strdup(f);
        if (!s->names[s->n]) {
            r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", dir);
            goto out;
        }
        s->n++;
    }
out:
    json_decref(root);
    rlhi_free(single);
    rlhi_free(index);
    rlhi_free(bin);
    return r;
}

/* Finds tensor `name`; *t is NULL when no file holds it. *file is the
 * shard it should be in (for messages). */
static int shards_find(struct shards *s, const char *name,
                       const struct rlhi_st_tensor **t,
                       struct rlhi_safetensors **file)
{
    int i = 0;

    *t = NULL;
    *file = NULL;
    if (s->weight_map) {
        const char *f = json_string_value(json_object_get(s->weight_map,
                                                          name));

        if (!f)
            return 0;
        while (strcmp(s->names[i], f))
            i++;
    }
    if (!s->files[i]) {
        char *path = rlhi_path_join(s->dir, s->names[i]);
        int r;

        if (!path)
            return rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory",
                            s->dir);
        r = rlhi_safetensors_open(&s->files[i], path);
        rlhi_free(path);
        if (r)
            return r;
    }
    *file = s->files[i];
    *t = rlhi_safetensors_find(s->files[i], name);
    return 0;
}

static void fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = 0;
    int d;

    k += (size_t)snprintf(buf, n, "[");
    for (d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "",
                              (long long)shape[d]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

static int load_tensor(struct shards *s, const struct rlhi_tensor_info *ti,
                       float *dst)
{
    const struct rlhi_st_tensor *t;
    struct rlhi_safetensors *f;
    int r = shards_find(s, ti->name, &t, &f);
    bool same;
    int d;

    if (r)
        return r;
    if (!t && f && s->weight_map)
        return rlhi_err(RLHI_EFORMAT, "'%s': missing tensor '%s' (listed in "
                        "model.safetensors.index.json)", f->path, ti->name);
    if (!t)
        return rlhi_err(RLHI_EFORMAT, "'%s': missing tensor '%s'", s->dir,
                        ti->name);
    same = t->ndim == ti->ndim;
    for (d = 0; d < ti->ndim && same; d++)
        same = t->shape[d] == ti->shape[d];
    if (!same) {
        char want[64], got[64 + 20 * RLHI_ST_MAX_DIMS];

        fmt_shape(want, sizeof want, ti->ndim, ti->shape);
        fmt_shape(got, sizeof got, t->ndim, t->shape);
        return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s' has shape %s, "
                        "expected %s", f->path, ti->name, got, want);
    }
    r = rlhi_st_tensor_to_f32(t, dst);
    if (r)
        return rlhi_err_prefix(r, "'%s'", f->path);
    return 0;
}

static int load_hf(struct rlhi_model **out, const char *dir)
{
    struct rlhi_model_config cfg;
    struct rlhi_tensor_info *info = NULL;
    struct rlhi_model *m = NULL;
    struct shards s;
    json_t *root = NULL;
    char *file = rlhi_path_join(dir, "config.json");
    size_t total;
    int r, n, i;

    memset(&s, 0, sizeof s);
    if (!file)
        return rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", dir);
    if (!rlhi_path_exists(file)) {
        r = rlhi_err(RLHI_ENOTFOUND, "'%s': no config.json; hint: a model is "
                     "a Hugging Face directory or a llama2.c .bin file", dir);
        goto out;
    }
    r = read_json(file, &root);
    if (!r)
        r = parse_config(root, &cfg, file);
    if (!r)
        r = shards_init(&s, dir);
    if (!r)
        r = rlhi__model_alloc(&m, &cfg, false);
    if (!r)
        r = rlhi_model_tensor_list(&cfg, &info, &n, &total);
    for (i = 0; !r && i < n; i++)
        r = load_tensor(&s, &info[i], m->params + info[i].offset);
    if (!r && !(m->path = rlhi_strdup(dir)))
        r = rlhi_err(RLHI_ENOMEM, "cannot load '%s': out of memory", dir);
    if (!r) {
        *out = m;
        m = NULL;
    }
out:
    rlhi_model_free(m);
    rlhi_free(info);
    shards_release(&s);
    json_decref(root);
    rlhi_free(file);
    return r;
}

/* ---- entry points --------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int rlhi_model_load(struct rlhi_model **out, const char *path)
{
    unsigned char magic[4] = {0};
    FILE *f;

    *out = NULL;
    if (rlhi_path_is_dir(path))
        return load_hf(out, path);

    /* A file: refuse what looks like another format, by its magic. */
    f = fopen(path, "rb");
    if (!f)
        return rlhi_err_errno(RLHI_EIO, "cannot open '%s'", path);
    if (fread(magic, 1, 4, f) != 4)
        memset(magic, 0, 4);
    fclose(f);
    if (memcmp(magic, "GGUF", 4) == 0)
        return rlhi_err(RLHI_ENOTIMPL, "'%s': not implemented: loading GGUF "
                        "models", path);
    if (ends_with(path, ".safetensors") || ends_with(path, "config.json"))
        return rlhi_err(RLHI_EINVAL, "'%s': give the model's directory, not "
                        "one of its files", path);
    return rlhi__llama2c_load(out, path);
}

int rlhi_model_own(struct rlhi_model *m)
{
    struct rlhi_tensor_info *info = NULL;
    struct rlhi_model *t = NULL;
    float **src = NULL, **dst = NULL;
    size_t total;
    int r, n, i;

    if (m->params_owned)
        return 0;
    r = rlhi_model_tensor_list(&m->cfg, &info, &n, &total);
    if (!r)
        r = rlhi__model_alloc(&t, &m->cfg, false);
    if (r)
        goto out;
    src = rlhi_calloc((size_t)n, sizeof *src);
    dst = rlhi_calloc((size_t)n, sizeof *dst);
    if (!src || !dst) {
        r = rlhi_err(RLHI_ENOMEM, "cannot copy model weights: out of memory");
        goto out;
    }
    rlhi__model_views(m, src);
    rlhi__model_views(t, dst);
    for (i = 0; i < n; i++)
        memcpy(dst[i], src[i], info[i].numel * sizeof(float));

    /* Swap the owned block in, the mapping out. */
    rlhi_free(m->w.layers);
    rlhi_mmap_close(&m->map);
    m->w = t->w;
    m->params = t->params;
    m->n_params = t->n_params;
    m->params_owned = true;
    t->w.layers = NULL;
    t->params_owned = false;
out:
    rlhi_model_free(t);
    rlhi_free(src);
    rlhi_free(dst);
    rlhi_free(info);
    return r;
}
