/* safetensors files: a validating, memory-mapped reader and a writer.
 *
 * Format (https://github.com/huggingface/safetensors, README "Format"):
 *   8 bytes   N, the header length, unsigned little-endian
 *   N bytes   JSON object: {"NAME": {"dtype": "F32", "shape": [2, 3],
 *             "data_offsets": [BEGIN, END]}, ..., "__metadata__":
 *             {"key": "string value", ...}}; may be padded with spaces
 *   rest      the byte buffer; BEGIN/END are relative to its start
 * Tensors are row-major, little-endian.
 *
 * The reader checks everything before handing out a pointer: N within the
 * file, valid JSON, known dtypes, offsets inside the buffer and END - BEGIN
 * equal to the element count times the element size. Data pointers point
 * into the read-only mapping and may be unaligned.
 */
#ifndef RLHI_SAFETENSORS_H
#define RLHI_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"

/* Every dtype the format defines. The loader widens F32, BF16 and F16 to
 * fp32; the others can be read but not converted. */
enum rlhi_st_dtype {
    RLHI_ST_F32,
    RLHI_ST_BF16,
    RLHI_ST_F16,
    RLHI_ST_F64,
    RLHI_ST_I64,
    RLHI_ST_I32,
    RLHI_ST_I16,
    RLHI_ST_I8,
    RLHI_ST_U64,
    RLHI_ST_U32,
    RLHI_ST_U16,
    RLHI_ST_U8,
    RLHI_ST_BOOL,
    RLHI_ST_F8_E4M3,
    RLHI_ST_F8_E5M2,
};

/* The most dimensions a tensor may have; the format sets no limit, but no
 * model tensor has more than 5. */
#define RLHI_ST_MAX_DIMS 8

struct rlhi_st_tensor {
    const char *name;       /* owned by the file object */
    enum rlhi_st_dtype dtype;
    int ndim;               /* 0 for a scalar */
    int64_t shape[RLHI_ST_MAX_DIMS];
    uint64_t numel;         /* product of shape (1 for a scalar) */
    const void *data;       /* into the mapping; may be unaligned */
    size_t nbytes;
};

/* An open file. Fields are read-only for callers. */
struct rlhi_safetensors {
    char *path;
    struct rlhi_mmap map;
    struct rlhi_st_tensor *tensors; /* in the header's order */
    int n_tensors;
    char **meta;                    /* key, value, key, value, ... */
    int n_meta;                     /* number of pairs */
    int *by_name;                   /* indices sorted by name, for find */
};

/* The format's name for a dtype ("F32", "BF16", ...). */
const char *rlhi_st_dtype_name(enum rlhi_st_dtype dt);
/* Bytes per element (1 for BOOL and the 8-bit floats). */
size_t rlhi_st_dtype_size(enum rlhi_st_dtype dt);

/* Maps and validates `path`. On success *out is a new object that the
 * caller releases with rlhi_safetensors_close(). Errors: RLHI_EIO (cannot
 * open or map), RLHI_EFORMAT (anything wrong in the file, message names the
 * file and the tensor), RLHI_ENOMEM. */
int rlhi_safetensors_open(struct rlhi_safetensors **out, const char *path);

/* Unmaps and frees; NULL is allowed. Pointers into the file die with it. */
void rlhi_safetensors_close(struct rlhi_safetensors *st);

/* The tensor called `name`, or NULL (no message set). */
const struct rlhi_st_tensor *
rlhi_safetensors_find(const struct rlhi_safetensors *st, const char *name);

/* The value of metadata key `key`, or NULL. */
const char *rlhi_safetensors_meta(const struct rlhi_safetensors *st,
                                  const char *key);

/* Converts `t` to fp32 into `out` (t->numel floats): F32 is copied, BF16 and
 * F16 are widened exactly (every value of both is a float). Other dtypes
 * return RLHI_ENOTIMPL with a message naming the tensor and its dtype. */
int rlhi_st_tensor_to_f32(const struct rlhi_st_tensor *t, float *out);

/* Widening and narrowing of single values. bf16 narrowing rounds to
 * nearest, ties to even, as torch's .to(torch.bfloat16); NaN stays NaN. */
float rlhi_bf16_to_f32(uint16_t h);
uint16_t rlhi_f32_to_bf16(float f);
float rlhi_f16_to_f32(uint16_t h);

/* One tensor to write: fp32 data, stored as F32 or BF16. */
struct rlhi_st_out {
    const char *name;
    int ndim;
    int64_t shape[RLHI_ST_MAX_DIMS];
    const float *data; /* numel floats, row-major; the caller keeps it */
    bool bf16;         /* store as BF16 (rounded) instead of F32 */
};

/* Writes `n` tensors, in the given order, and `meta` (NULL, or n_meta
 * key/value string pairs as meta[2i], meta[2i+1]) to `path` atomically
 * (a temporary file, fsync, rename). The header is padded with spaces to a
 * multiple of 8 bytes as the reference implementation does, so the buffer
 * starts aligned. Errors: RLHI_EINVAL (bad shape, duplicate name), RLHI_EIO,
 * RLHI_ENOMEM; on error nothing is left at `path` or beside it. */
int rlhi_safetensors_write(const char *path, const struct rlhi_st_out *t,
                           int n, const char *const *meta, int n_meta);

#endif
