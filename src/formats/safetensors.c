/* safetensors reader (mapped, validated) and writer (streamed, atomic).
 *
 * The reader parses the JSON header with jansson, checks every entry
 * against the file, and keeps a name-sorted index for lookups. Tensor data
 * is never copied: rlhi_st_tensor.data points into the read-only mapping.
 * The writer builds the header as the reference implementation does
 * (compact JSON, "__metadata__" first, padded with spaces to a multiple of
 * 8) and streams the tensors through a small conversion buffer, so saving
 * a model needs no second copy of its weights.
 */
#include "rlhi/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The reference implementation refuses headers above 100 MB
 * (MAX_HEADER_SIZE in safetensors/src/tensor.rs); a larger length is a
 * corrupt or hostile file, not a big model. */
#define HEADER_MAX 100000000ULL

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [RLHI_ST_F32] = {"F32", 4},         [RLHI_ST_BF16] = {"BF16", 2},
    [RLHI_ST_F16] = {"F16", 2},         [RLHI_ST_F64] = {"F64", 8},
    [RLHI_ST_I64] = {"I64", 8},         [RLHI_ST_I32] = {"I32", 4},
    [RLHI_ST_I16] = {"I16", 2},         [RLHI_ST_I8] = {"I8", 1},
    [RLHI_ST_U64] = {"U64", 8},         [RLHI_ST_U32] = {"U32", 4},
    [RLHI_ST_U16] = {"U16", 2},         [RLHI_ST_U8] = {"U8", 1},
    [RLHI_ST_BOOL] = {"BOOL", 1},       [RLHI_ST_F8_E4M3] = {"F8_E4M3", 1},
    [RLHI_ST_F8_E5M2] = {"F8_E5M2", 1},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

const char *rlhi_st_dtype_name(enum rlhi_st_dtype dt)
{
    return (int)dt >= 0 && (int)dt < N_DTYPES ? dtypes[dt].name : "?";
}

size_t rlhi_st_dtype_size(enum rlhi_st_dtype dt)
{
    return (int)dt >= 0 && (int)dt < N_DTYPES ? dtypes[dt].size : 0;
}

/* ---- value conversions ---------------------------------------------- */

float rlhi_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;

    memcpy(&f, &u, 4);
    return f;
}

uint16_t rlhi_f32_to_bf16(float f)
{
    uint32_t u;

    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet, keep sign */
        return (uint16_t)((u >> 16) | 0x40);
    /* Round to nearest even: add 0x7fff plus the lowest kept bit. */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float rlhi_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t u;
    float f;

    if (exp == 0x1f) { /* Inf or NaN */
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else { /* subnormal half: man * 2^-24, normal as a float */
        f = (float)man * (1.0f / 16777216.0f);
        memcpy(&u, &f, 4);
        u |= sign;
    }
    memcpy(&f, &u, 4);
    return f;
}

int rlhi_st_tensor_to_f32(const struct rlhi_st_tensor *t, float *out)
{
    const unsigned char *p = t->data;
    uint64_t i;

    switch (t->dtype) {
    case RLHI_ST_F32:
        if (t->numel)
            memcpy(out, p, t->numel * 4);
        return 0;
    case RLHI_ST_BF16:
    case RLHI_ST_F16:
        for (i = 0; i < t->numel; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));

            out[i] = t->dtype == RLHI_ST_BF16 ? rlhi_bf16_to_f32(h)
                                              : rlhi_f16_to_f32(h);
        }
        return 0;
    default:
        return rlhi_err(RLHI_ENOTIMPL,
                        "not implemented: tensor '%s' has dtype %s "
                        "(only F32, BF16 and F16 can be loaded)",
                        t->name, rlhi_st_dtype_name(t->dtype));
    }
}

/* ---- reader --------------------------------------------------------- */

void rlhi_safetensors_close(struct rlhi_safetensors *st)
{
    int i;

    if (!st)
        return;
    for (i = 0; i < st->n_tensors; i++)
        rlhi_free((char *)st->tensors[i].name);
    for (i = 0; i < 2 * st->n_meta; i++)
        rlhi_free(st->meta[i]);
    rlhi_free(st->tensors);
    rlhi_free(st->meta);
    rlhi_free(st->by_name);
    rlhi_mmap_close(&st->map);
    rlhi_free(st->path);
    rlhi_free(st);
}

static int parse_dtype(const char *s, enum rlhi_st_dtype *dt)
{
    int i;

    for (i = 0; i < N_DTYPES; i++) {
        if (strcmp(s, dtypes[i].name) == 0) {
            *dt = (enum rlhi_st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* Fills t from one header entry; `buf`/`size` is the byte buffer. */
static int parse_entry(struct rlhi_safetensors *st, struct rlhi_st_tensor *t,
                       const char *name, json_t *v,
                       const unsigned char *buf, uint64_t size)
{
    const char *path = st->path;
    json_t *dt = json_object_get(v, "dtype");
    json_t *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    json_int_t begin, end;
    uint64_t nbytes;
    size_t i;

    if (!json_is_object(v))
        return rlhi_err(RLHI_EFORMAT, "'%s': header entry '%s' is not an "
                        "object", path, name);
    if (!json_is_string(dt))
        return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s' has no dtype",
                        path, name);
    if (parse_dtype(json_string_value(dt), &t->dtype))
        return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s' has unknown dtype "
                        "'%s'", path, name, json_string_value(dt));
    if (!json_is_array(shape) || json_array_size(shape) > RLHI_ST_MAX_DIMS)
        return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s' has no valid shape "
                        "(an array of at most %d sizes)", path, name,
                        RLHI_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    t->numel = 1;
    for (i = 0; i < json_array_size(shape); i++) {
        json_t *d = json_array_get(shape, i);

        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s': shape[%zu] is "
                            "not a size", path, name, i);
        t->shape[i] = json_integer_value(d);
        if (__builtin_mul_overflow(t->numel, (uint64_t)t->shape[i],
                                   &t->numel))
            return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s': shape "
                            "overflows", path, name);
    }
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_is_integer(json_array_get(offs, 0)) ||
        !json_is_integer(json_array_get(offs, 1)))
        return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s' has no valid "
                        "data_offsets", path, name);
    begin = json_integer_value(json_array_get(offs, 0));
    end = json_integer_value(json_array_get(offs, 1));
    if (begin < 0 || end < begin || (uint64_t)end > size)
        return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s': data_offsets "
                        "[%lld, %lld] outside the %llu-byte buffer", path,
                        name, (long long)begin, (long long)end,
                        (unsigned long long)size);
    if (__builtin_mul_overflow(t->numel, (uint64_t)dtypes[t->dtype].size,
                               &nbytes) ||
        nbytes != (uint64_t)(end - begin))
        return rlhi_err(RLHI_EFORMAT, "'%s': tensor '%s': data_offsets "
                        "span %lld bytes, shape and dtype %s need %llu",
                        path, name, (long long)(end - begin),
                        dtypes[t->dtype].name,
                        (unsigned long long)t->numel *
                            dtypes[t->dtype].size);
    t->data = buf + begin;
    t->nbytes = (size_t)nbytes;
    t->name = rlhi_strdup(name);
    if (!t->name)
        return rlhi_err(RLHI_ENOMEM, "cannot read '%s': out of memory",
                        path);
    return 0;
}

static int parse_meta(struct rlhi_safetensors *st, json_t *v)
{
    const char *key;
    json_t *val;

    if (!json_is_object(v))
        return rlhi_err(RLHI_EFORMAT, "'%s': __metadata__ is not an object",
                        st->path);
    st->meta = rlhi_calloc(2 * json_object_size(v) + 1, sizeof(char *));
    if (!st->meta)
        return rlhi_err(RLHI_ENOMEM, "cannot read '%s': out of memory",
                        st->path);
    json_object_foreach(v, key, val) {
        char **kv = st->meta + 2 * st->n_meta;

        if (!json_is_string(val))
            return rlhi_err(RLHI_EFORMAT, "'%s': __metadata__ value '%s' is "
                            "not a string", st->path, key);
        kv[0] = rlhi_strdup(key);
        kv[1] = kv[0] ? rlhi_strdup(json_string_value(val)) : NULL;
        if (kv[0])
            st->n_meta++; /* so close() frees the pair even if kv[1] fails */
        if (!kv[1])
            return rlhi_err(RLHI_ENOMEM, "cannot read '%s': out of memory",
                            st->path);
    }
    return 0;
}

/* Merge-sorts by_name[lo, hi) by tensor name. C11's qsort passes no
 * context to its comparator and the index holds positions, not names. */
static void sort_by_name(struct rlhi_safetensors *st, int *tmp, int lo,
                         int hi)
{
    int mid = (lo + hi) / 2, i = lo, j, k = lo;

    if (hi - lo < 2)
        return;
    sort_by_name(st, tmp, lo, mid);
    sort_by_name(st, tmp, mid, hi);
    j = mid;
    while (i < mid || j < hi) {
        if (j >= hi || (i < mid && strcmp(st->tensors[st->by_name[i]].name,
                                          st->tensors[st->by_name[j]].name)
                                       <= 0))
            tmp[k++] = st->by_name[i++];
        else
            tmp[k++] = st->by_name[j++];
    }
    memcpy(st->by_name + lo, tmp + lo, (size_t)(hi - lo) * sizeof(int));
}

static int parse_header(struct rlhi_safetensors *st)
{
    const unsigned char *p = st->map.data;
    uint64_t n = 0, size;
    json_error_t jerr;
    json_t *root = NULL, *v;
    const char *key;
    int *tmp = NULL;
    int result = 0, i;

    if (st->map.size < 8)
        return rlhi_err(RLHI_EFORMAT, "'%s': %zu bytes is too short for a "
                        "safetensors header", st->path, st->map.size);
    for (i = 7; i >= 0; i--)
        n = n << 8 | p[i];
    if (n > st->map.size - 8)
        return rlhi_err(RLHI_EFORMAT, "'%s': header length %llu is larger "
                        "than the file (%zu bytes); hint: truncated or not a "
                        "safetensors file", st->path, (unsigned long long)n,
                        st->map.size);
    if (n > HEADER_MAX)
        return rlhi_err(RLHI_EFORMAT, "'%s': header length %llu is over "
                        "the format's limit of %llu bytes", st->path,
                        (unsigned long long)n, HEADER_MAX);
    size = st->map.size - 8 - n;

    root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES,
                      &jerr);
    if (!root)
        return rlhi_err(RLHI_EFORMAT, "'%s': header is not valid JSON: "
                        "column %d: %s", st->path, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        result = rlhi_err(RLHI_EFORMAT, "'%s': header is not a JSON object",
                          st->path);
        goto out;
    }

    st->tensors = rlhi_calloc(json_object_size(root) + 1,
                              sizeof *st->tensors);
    st->by_name = rlhi_calloc(json_object_size(root) + 1, sizeof(int));
    tmp = rlhi_calloc(json_object_size(root) + 1, sizeof(int));
    if (!st->tensors || !st->by_name || !tmp) {
        result = rlhi_err(RLHI_ENOMEM, "cannot read '%s': out of memory",
                          st->path);
        goto out;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            result = parse_meta(st, v);
        } else {
            result = parse_entry(st, &st->tensors[st->n_tensors], key, v,
                                 p + 8 + n, size);
            if (result == 0) {
                st->by_name[st->n_tensors] = st->n_tensors;
                st->n_tensors++;
            }
        }
        if (result)
            goto out;
    }
    sort_by_name(st, tmp, 0, st->n_tensors);
out:
    rlhi_free(tmp);
    json_decref(root);
    return result;
}

int rlhi_safetensors_open(struct rlhi_safetensors **out, const char *path)
{
    struct rlhi_safetensors *st = rlhi_calloc(1, sizeof *st);
    int result;

    *out = NULL;
    if (!st || !(st->path = rlhi_strdup(path))) {
        rlhi_free(st);
        return rlhi_err(RLHI_ENOMEM, "cannot open '%s': out of memory",
                        path);
    }
    result = rlhi_mmap_open(&st->map, path);
    /* Loading reads each tensor once, mostly front to back: ask the kernel
     * to read ahead, which matters for files not yet in the page cache. */
    if (result == 0 && st->map.data) {
        madvise(st->map.data, st->map.size, MADV_SEQUENTIAL);
        madvise(st->map.data, st->map.size, MADV_WILLNEED);
    }
    if (result == 0)
        result = parse_header(st);
    if (result) {
        rlhi_safetensors_close(st);
        return result;
    }
    *out = st;
    return 0;
}

const struct rlhi_st_tensor *
rlhi_safetensors_find(const struct rlhi_safetensors *st, const char *name)
{
    int lo = 0, hi = st->n_tensors;

    while (lo < hi) {
        int mid = (lo + hi) / 2;
        const struct rlhi_st_tensor *t = &st->tensors[st->by_name[mid]];
        int c = strcmp(name, t->name);

        if (c == 0)
            return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *rlhi_safetensors_meta(const struct rlhi_safetensors *st,
                                  const char *key)
{
    int i;

    for (i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i], key) == 0)
            return st->meta[2 * i + 1];
    return NULL;
}

/* ---- writer --------------------------------------------------------- */

static int write_all(int fd, const void *data, size_t len, const char *tmp)
{
    const char *p = data;

    while (len) {
        ssize_t k = write(fd, p, len);

        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return rlhi_err_errno(RLHI_EIO, "cannot write '%s'", tmp);
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static uint64_t out_numel(const struct rlhi_st_out *t)
{
    uint64_t n = 1;
    int d;

    for (d = 0; d < t->ndim; d++)
        n *= (uint64_t)t->shape[d];
    return n;
}

/* Checks the tensors and builds the padded header (without the length). */
static int build_header(struct rlhi_buf *h, const char *path,
                        const struct rlhi_st_out *t, int n,
                        const char *const *meta, int n_meta)
{
    uint64_t off = 0;
    int i, j, d;

    if (rlhi_buf_addc(h, '{'))
        goto nomem;
    if (n_meta > 0) {
        if (rlhi_buf_adds(h, "\"__metadata__\":{"))
            goto nomem;
        for (i = 0; i < n_meta; i++) {
            if ((i && rlhi_buf_addc(h, ',')) ||
                rlhi_buf_add_json_str(h, meta[2 * i], strlen(meta[2 * i])) ||
                rlhi_buf_addc(h, ':') ||
                rlhi_buf_add_json_str(h, meta[2 * i + 1],
                                      strlen(meta[2 * i + 1])))
                goto nomem;
        }
        if (rlhi_buf_addc(h, '}'))
            goto nomem;
    }
    for (i = 0; i < n; i++) {
        uint64_t numel = 1, nb;

        if (!t[i].name || !*t[i].name ||
            strcmp(t[i].name, "__metadata__") == 0 || t[i].ndim < 0 ||
            t[i].ndim > RLHI_ST_MAX_DIMS || (!t[i].data && out_numel(&t[i])))
            return rlhi_err(RLHI_EINVAL, "cannot write '%s': tensor %d "
                            "('%s') has no valid name, shape or data", path,
                            i, t[i].name ? t[i].name : "");
        for (j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0)
                return rlhi_err(RLHI_EINVAL, "cannot write '%s': tensor "
                                "name '%s' appears twice", path, t[i].name);
        for (d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0 ||
                __builtin_mul_overflow(numel, (uint64_t)t[i].shape[d],
                                       &numel))
                return rlhi_err(RLHI_EINVAL, "cannot write '%s': tensor "
                                "'%s' has an invalid shape", path, t[i].name);
        }
        nb = numel * (t[i].bf16 ? 2 : 4);
        if ((n_meta > 0 || i) && rlhi_buf_addc(h, ','))
            goto nomem;
        if (rlhi_buf_add_json_str(h, t[i].name, strlen(t[i].name)) ||
            rlhi_buf_addf(h, ":{\"dtype\":\"%s\",\"shape\":[",
                          t[i].bf16 ? "BF16" : "F32"))
            goto nomem;
        for (d = 0; d < t[i].ndim; d++)
            if (rlhi_buf_addf(h, "%s%lld", d ? "," : "",
                              (long long)t[i].shape[d]))
                goto nomem;
        if (rlhi_buf_addf(h, "],\"data_offsets\":[%llu,%llu]}",
                          (unsigned long long)off,
                          (unsigned long long)(off + nb)))
            goto nomem;
        off += nb;
    }
    if (rlhi_buf_addc(h, '}'))
        goto nomem;
    while (h->len % 8)
        if (rlhi_buf_addc(h, ' '))
            goto nomem;
    return 0;
nomem:
    return rlhi_err(RLHI_ENOMEM, "cannot write '%s': out of memory", path);
}

/* Writes one tensor's data, converting through `chunk` (CHUNK floats'
 * worth of bytes). */
#define CHUNK 16384 /* elements per write: 64 KiB of fp32, few syscalls */
static int write_tensor(int fd, const struct rlhi_st_out *t,
                        unsigned char *chunk, const char *tmp)
{
    uint64_t numel = out_numel(t), i = 0;

    while (i < numel) {
        size_t k = numel - i < CHUNK ? (size_t)(numel - i) : CHUNK, j;
        int r;

        if (t->bf16) {
            for (j = 0; j < k; j++) {
                uint16_t h = rlhi_f32_to_bf16(t->data[i + j]);

                chunk[2 * j] = (unsigned char)h;
                chunk[2 * j + 1] = (unsigned char)(h >> 8);
            }
            r = write_all(fd, chunk, 2 * k, tmp);
        } else {
            /* x86-64 and aarch64 are little-endian, as the format is. */
            r = write_all(fd, t->data + i, 4 * k, tmp);
        }
        if (r)
            return r;
        i += k;
    }
    return 0;
}

int rlhi_safetensors_write(const char *path, const struct rlhi_st_out *t,
                           int n, const char *const *meta, int n_meta)
{
    struct rlhi_buf h = RLHI_BUF_INIT;
    unsigned char len8[8], *chunk = NULL;
    char *tmp = NULL;
    int fd = -1, result, i;

    result = build_header(&h, path, t, n, meta, n_meta);
    if (result)
        goto out;
    chunk = rlhi_malloc(2 * CHUNK);
    tmp = rlhi_malloc(strlen(path) + 5);
    if (!chunk || !tmp) {
        result = rlhi_err(RLHI_ENOMEM, "cannot write '%s': out of memory",
                          path);
        goto out;
    }
    sprintf(tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        result = rlhi_err_errno(RLHI_EIO, "cannot create '%s'", tmp);
        goto out;
    }
    for (i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    result = write_all(fd, len8, 8, tmp);
    if (!result)
        result = write_all(fd, h.buf, h.len, tmp);
    for (i = 0; i < n && !result; i++)
        result = write_tensor(fd, &t[i], chunk, tmp);
    if (!result && fsync(fd))
        result = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", tmp);
    if (close(fd) && !result)
        result = rlhi_err_errno(RLHI_EIO, "cannot write '%s'", tmp);
    fd = -1;
    if (!result && rename(tmp, path))
        result = rlhi_err_errno(RLHI_EIO, "cannot rename '%s' to '%s'", tmp,
                                path);
    if (result)
        unlink(tmp);
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    rlhi_free(tmp);
    rlhi_free(chunk);
    rlhi_buf_release(&h);
    return result;
}
