/* rlhi base layer: error codes, messages, logging, allocation, buffers,
 * seeded random numbers, hashing, timing and progress.
 *
 * Error model. Every library function that can fail returns 0 (or a
 * non-negative count) on success and a negative RLHI_E* code on failure.
 * On failure it leaves a human-readable message in a per-thread slot that
 * rlhi_errmsg() returns; the message names what failed first, then the
 * subject in quotes, then the system error, e.g.
 *     cannot open 'logs.jsonl': No such file or directory
 * The library never prints and never exits: it reports through this slot and
 * through the log hook (rlhi_log_set_hook). Only the command line decides
 * what to print and which exit status to use.
 */
#ifndef RLHI_BASE_H
#define RLHI_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- error codes ---------------------------------------------------- */

enum {
    RLHI_OK = 0,
    RLHI_ENOMEM = -1,    /* allocation failed */
    RLHI_EIO = -2,       /* a system call on a file or socket failed */
    RLHI_EFORMAT = -3,   /* input data is malformed (file, line, value) */
    RLHI_EINVAL = -4,    /* a caller passed an invalid argument or option */
    RLHI_ENOTIMPL = -5,  /* a path that is not implemented yet */
    RLHI_ENOTFOUND = -6, /* a named thing (file, tensor, key) is missing */
    RLHI_ENUMERIC = -7,  /* NaN or Inf where a finite number is needed */
    RLHI_EDB = -8,       /* the SQLite store reported an error */
    RLHI_ENET = -9,      /* an HTTP request failed */
    RLHI_ERANGE = -10,   /* a value or size is outside what is supported */
};

/* Returns a static one-line description of an RLHI_E* code. */
const char *rlhi_strerror(int code);

/* Returns the message left by the last failing call on this thread, or ""
 * when there is none. The pointer stays valid until the next failing call
 * on this thread. */
const char *rlhi_errmsg(void);

/* Sets this thread's message with printf formatting and returns `code`, so
 * that a failing path reads `return rlhi_err(RLHI_EIO, "cannot open '%s'",
 * path);`. */
int rlhi_err(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like rlhi_err() but appends ": <strerror(errno)>" to the message. */
int rlhi_err_errno(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes this thread's current message with "<prefix>: ", for adding
 * context on the way up (e.g. the file name). Returns `code`. */
int rlhi_err_prefix(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Clears this thread's message. */
void rlhi_err_clear(void);

/* An assertion that stays on in release builds: prints file, line and the
 * expression through the log hook and aborts. For broken invariants only,
 * never for bad input. */
#define RLHI_ASSERT(x)                                                      \
    do {                                                                    \
        if (!(x))                                                           \
            rlhi__assert_fail(__FILE__, __LINE__, #x);                      \
    } while (0)
_Noreturn void rlhi__assert_fail(const char *file, int line, const char *e);

/* ---- logging -------------------------------------------------------- */

enum rlhi_log_level {
    RLHI_LOG_ERROR = 0,
    RLHI_LOG_WARN = 1,
    RLHI_LOG_INFO = 2,
    RLHI_LOG_DEBUG = 3,
};

typedef void (*rlhi_log_fn)(enum rlhi_log_level level, const char *msg,
                            void *user);

/* Installs the function that receives every log line (no trailing newline).
 * The default hook drops everything: the library is silent unless a program
 * asks. `fn` may be NULL to go back to silence. Not thread-safe to change
 * while other threads log. */
void rlhi_log_set_hook(rlhi_log_fn fn, void *user);

/* Lines above this level are not formatted at all. Default RLHI_LOG_INFO. */
void rlhi_log_set_level(enum rlhi_log_level level);
enum rlhi_log_level rlhi_log_get_level(void);

void rlhi_log(enum rlhi_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define rlhi_warn(...) rlhi_log(RLHI_LOG_WARN, __VA_ARGS__)
#define rlhi_info(...) rlhi_log(RLHI_LOG_INFO, __VA_ARGS__)
#define rlhi_debug(...) rlhi_log(RLHI_LOG_DEBUG, __VA_ARGS__)

/* ---- allocation ----------------------------------------------------- */

/* All library allocations go through these so that tests can make any one
 * of them fail. They behave like the C library functions; rlhi_malloc(0)
 * returns a unique pointer. None sets the error message: callers do, with
 * RLHI_ENOMEM and what they were allocating. */
void *rlhi_malloc(size_t n);
void *rlhi_calloc(size_t count, size_t size);
void *rlhi_realloc(void *p, size_t n);
void rlhi_free(void *p);
char *rlhi_strdup(const char *s);
char *rlhi_strndup(const char *s, size_t n);
/* Aligned to `align` bytes (a power of two, at least sizeof(void *));
 * release with rlhi_free(). */
void *rlhi_malloc_aligned(size_t align, size_t n);

/* Test hook: the n-th allocation from now (1 = the next) fails, and every
 * one after it succeeds again. 0 turns injection off. Returns how many
 * allocations have been made since the last call, so a test can first count
 * a function's allocations and then fail each one in turn. */
long rlhi__alloc_fail_at(long n);

/* ---- growable byte buffer ------------------------------------------- */

/* Invariant: buf is NUL-terminated (buf[len] == 0) once anything has been
 * added, so it can be used as a C string; len excludes the NUL. */
struct rlhi_buf {
    char *buf;
    size_t len;
    size_t cap;
};
#define RLHI_BUF_INIT {NULL, 0, 0}

/* Ensures room for `extra` more bytes plus the NUL. 0 or RLHI_ENOMEM. */
int rlhi_buf_grow(struct rlhi_buf *b, size_t extra);
int rlhi_buf_add(struct rlhi_buf *b, const void *data, size_t n);
int rlhi_buf_adds(struct rlhi_buf *b, const char *s);
int rlhi_buf_addc(struct rlhi_buf *b, char c);
int rlhi_buf_addf(struct rlhi_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int rlhi_buf_vaddf(struct rlhi_buf *b, const char *fmt, va_list ap);
/* Appends `s` (n bytes) as a JSON string literal with quotes. */
int rlhi_buf_add_json_str(struct rlhi_buf *b, const char *s, size_t n);
/* Empties the buffer, keeping its memory. */
void rlhi_buf_clear(struct rlhi_buf *b);
/* Frees the memory and resets to RLHI_BUF_INIT. */
void rlhi_buf_release(struct rlhi_buf *b);
/* Hands the string to the caller (who frees it with rlhi_free) and resets
 * the buffer. Never NULL unless allocation fails. */
char *rlhi_buf_detach(struct rlhi_buf *b, size_t *len);

/* ---- files ---------------------------------------------------------- */

/* Reads a whole file. On success *data (NUL-terminated, caller frees with
 * rlhi_free) and *len are set. Errors name the file. */
int rlhi_file_read(const char *path, char **data, size_t *len);

/* Writes a whole file atomically: to "<path>.tmp", fsync, rename. */
int rlhi_file_write_atomic(const char *path, const void *data, size_t len);

/* A read-only memory mapping of a whole file. */
struct rlhi_mmap {
    void *data;
    size_t size;
};
/* Maps `path` read-only. An empty file maps to data=NULL, size=0. */
int rlhi_mmap_open(struct rlhi_mmap *m, const char *path);
void rlhi_mmap_close(struct rlhi_mmap *m);

bool rlhi_path_is_dir(const char *path);
bool rlhi_path_exists(const char *path);
/* Returns a new string "<dir>/<name>" (caller frees), NULL on no memory. */
char *rlhi_path_join(const char *dir, const char *name);
/* Creates a directory and its parents (like mkdir -p). */
int rlhi_mkdir_p(const char *path);

/* ---- random numbers ------------------------------------------------- */

/* A small, fast, seeded generator (xoshiro256** seeded by splitmix64).
 * Same seed, same sequence on every machine. The state is plain data, so
 * it can be saved in a checkpoint and restored. */
struct rlhi_rng {
    uint64_t s[4];
};
void rlhi_rng_seed(struct rlhi_rng *r, uint64_t seed);
uint64_t rlhi_rng_u64(struct rlhi_rng *r);
/* Uniform in [0, 1) with 24 random bits. */
float rlhi_rng_float(struct rlhi_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double rlhi_rng_double(struct rlhi_rng *r);
/* Uniform integer in [0, n); n > 0. Unbiased. */
uint64_t rlhi_rng_below(struct rlhi_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
double rlhi_rng_normal(struct rlhi_rng *r);

/* ---- hashing -------------------------------------------------------- */

/* 64-bit FNV-1a; `h` is the running value, start with RLHI_FNV64_INIT. */
#define RLHI_FNV64_INIT 0xcbf29ce484222325ULL
uint64_t rlhi_fnv64(uint64_t h, const void *data, size_t n);

/* SHA-256 (FIPS 180-4), for cache keys and content hashes that must not
 * collide by accident. */
struct rlhi_sha256 {
    uint32_t h[8];
    uint64_t nbytes;
    uint8_t block[64];
    size_t fill;
};
void rlhi_sha256_init(struct rlhi_sha256 *s);
void rlhi_sha256_update(struct rlhi_sha256 *s, const void *data, size_t n);
void rlhi_sha256_final(struct rlhi_sha256 *s, uint8_t out[32]);
/* Writes the 64 lowercase hex digits and a NUL into `hex`. */
void rlhi_sha256_hex(const void *data, size_t n, char hex[65]);

/* ---- time and progress ---------------------------------------------- */

/* Monotonic seconds since an arbitrary start. */
double rlhi_time_now(void);

/* Peak resident set size of this process in bytes (0 if unknown). */
size_t rlhi_peak_rss(void);

/* Progress of a long job, reported through the log hook at INFO level as
 * a line every few seconds ("label: 1200/5000 (24%), 310.2 it/s, eta 12s").
 * The command line may instead draw a bar on a terminal by installing a
 * progress hook. total may be 0 when unknown. */
struct rlhi_progress {
    const char *label;
    uint64_t total;
    uint64_t done;
    double t_start;
    double t_last;
    bool bytes; /* done/total count bytes: shown as MB and MB/s */
};
typedef void (*rlhi_progress_fn)(const struct rlhi_progress *p, bool final,
                                 void *user);
/* Replaces how progress is shown (NULL = the default log lines). */
void rlhi_progress_set_hook(rlhi_progress_fn fn, void *user);
void rlhi_progress_start(struct rlhi_progress *p, const char *label,
                         uint64_t total);
/* The same, counting bytes. */
void rlhi_progress_start_bytes(struct rlhi_progress *p, const char *label,
                               uint64_t total);
/* The state as text without the label, e.g. "1200/5000 (24%), 310.2/s,
 * eta 12s" or "12.0/100.0 MB (12%), 45.1 MB/s, eta 2s"; `final` gives the
 * totals and the elapsed time instead of the eta. For progress hooks. */
void rlhi_progress_text(const struct rlhi_progress *p, bool final, char *buf,
                        size_t cap);
void rlhi_progress_update(struct rlhi_progress *p, uint64_t done);
void rlhi_progress_finish(struct rlhi_progress *p);

#endif
