/* Internals shared by the model loaders and savers (config.c, load.c,
 * save.c, formats/llama2c.c). Not installed; tests may include it. */
#ifndef RLHI_MODEL_IO_H
#define RLHI_MODEL_IO_H

#include "rlhi/model.h"

/* Makes a model with an owned block for `cfg` (zeroed when `zero`), views
 * bound, cfg copied. 0, RLHI_EINVAL (bad cfg) or RLHI_ENOMEM. */
int rlhi__model_alloc(struct rlhi_model **out,
                      const struct rlhi_model_config *cfg, bool zero);

/* Fills v with m's views in the canonical order of rlhi_model_tensor_list()
 * (v must hold that many entries) and returns their count. Works for
 * mapped models too, whose views do not follow the canonical offsets. */
int rlhi__model_views(const struct rlhi_model *m, float **v);

/* Loads a llama2.c checkpoint (formats/llama2c.c): views point into the
 * read-only mapping of the file. */
int rlhi__llama2c_load(struct rlhi_model **out, const char *path);

/* Reorders the rows of a (n_heads * hs, cols) projection between the two
 * rotary conventions. to_half: the rows of each head go from interleaved
 * pairs (2i, 2i+1) to halves (i, i + hs/2), the permutation of Hugging
 * Face's convert_llama_weights_to_hf.py; !to_half undoes it. `dst` and
 * `src` must not overlap. cols = 1 permutes a bias. */
void rlhi__rope_permute(float *dst, const float *src, int n_heads, int hs,
                        size_t cols, bool to_half);

#endif
