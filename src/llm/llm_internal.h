/* The llm client's internals shared between llm.c and cache.c. */
#ifndef RLHI_LLM_INTERNAL_H
#define RLHI_LLM_INTERNAL_H

#include "rlhi/llm.h"

struct rlhi__cache;

/* Opens (creating when missing) the llm_cache table in SQLite file
 * `path`. 0 or RLHI_EDB naming the file; RLHI_ENOMEM. */
int rlhi__cache_open(struct rlhi__cache **out, const char *path);
void rlhi__cache_close(struct rlhi__cache *c);

/* 1 and a new *response (caller frees) on a hit, 0 on a miss, or
 * RLHI_EDB. */
int rlhi__cache_get(struct rlhi__cache *c, const char *key, char **response);

/* Stores a response under `key` (replacing any). 0 or RLHI_EDB. */
int rlhi__cache_put(struct rlhi__cache *c, const char *key,
                    const char *endpoint, const char *model,
                    const char *request, const char *response);

#endif
