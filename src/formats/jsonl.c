/* Streaming JSONL reader over plain, gzip and zstd input.
 *
 * Two buffers. `raw` holds bytes as read from the file (compressed or not);
 * `text` holds uncompressed bytes, of which [start, end) are not yet
 * returned. A line is found with memchr from `scan` (so a long line is
 * scanned once, not once per refill), its '\n' is overwritten with NUL and
 * a pointer into `text` is handed out. `base` is the uncompressed offset of
 * text[0]; it moves when consumed bytes are compacted away. `text` grows
 * (doubling) only when one line does not fit, so memory is bounded by the
 * longest line.
 */
#include "rlhi/jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

/* 256 KiB reads: large enough that syscalls vanish from profiles, small
 * enough to stay in L2 next to the text buffer. */
#define RAW_CAP (256u << 10)
/* Starting text buffer; most chat-log lines are well under 1 MiB. */
#define TEXT_CAP0 (1u << 20)

struct rlhi_jsonl {
    char *path;
    int fd;
    enum rlhi_jsonl_compression comp;

    unsigned char *raw;
    size_t raw_pos, raw_end;
    bool raw_eof;
    uint64_t raw_total;

    char *text;
    size_t cap, start, end, scan;
    uint64_t base;
    bool eof;      /* no more uncompressed bytes will come */
    int pend;      /* an error to report once the complete lines are out */
    char *pend_msg;

    z_stream zs;
    bool zs_init, zs_ended;
    ZSTD_DStream *zd;
    bool zd_frame_done;

    uint64_t line_no, line_off, end_off;
    bool started;
};

static int raw_fill(struct rlhi_jsonl *r)
{
    ssize_t n;

    if (r->raw_pos < r->raw_end || r->raw_eof)
        return 0;
    do
        n = read(r->fd, r->raw, RAW_CAP);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return rlhi_err_errno(RLHI_EIO, "cannot read '%s'", r->path);
    r->raw_pos = 0;
    r->raw_end = (size_t)n;
    r->raw_total += (uint64_t)n;
    if (n == 0)
        r->raw_eof = true;
    return 0;
}

/* Records a decompression error to be returned after the complete lines. */
static void pending(struct rlhi_jsonl *r, int code, const char *what)
{
    char msg[512];

    snprintf(msg, sizeof msg, "cannot decompress '%s': %s", r->path, what);
    rlhi_free(r->pend_msg);
    r->pend_msg = rlhi_strdup(msg);
    r->pend = code;
    r->eof = true;
}

/* Produces at most `room` uncompressed bytes at `dst`; returns how many
 * (0 only at the end or after an error was made pending), or a negative
 * code for a read error. */
static long produce(struct rlhi_jsonl *r, char *dst, size_t room)
{
    int rc;

    for (;;) {
        if ((rc = raw_fill(r)) < 0)
            return rc;
        if (r->comp == RLHI_JSONL_PLAIN) {
            size_t n = r->raw_end - r->raw_pos;

            if (r->raw_eof)
                return 0;
            if (n > room)
                n = room;
            memcpy(dst, r->raw + r->raw_pos, n);
            r->raw_pos += n;
            return (long)n;
        }
        if (r->comp == RLHI_JSONL_GZIP) {
            size_t got;

            if (r->raw_eof) {
                if (!r->zs_ended)
                    pending(r, RLHI_EFORMAT, "truncated gzip data");
                return 0;
            }
            if (r->zs_ended) {
                /* Another member follows (as `cat a.gz b.gz` makes). */
                inflateReset(&r->zs);
                r->zs_ended = false;
            }
            r->zs.next_in = r->raw + r->raw_pos;
            r->zs.avail_in = (uInt)(r->raw_end - r->raw_pos);
            r->zs.next_out = (Bytef *)dst;
            r->zs.avail_out = (uInt)room;
            rc = inflate(&r->zs, Z_NO_FLUSH);
            r->raw_pos = r->raw_end - r->zs.avail_in;
            got = room - r->zs.avail_out;
            if (rc == Z_STREAM_END) {
                r->zs_ended = true;
            } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
                pending(r, RLHI_EFORMAT,
                        r->zs.msg ? r->zs.msg : "corrupt gzip data");
                return (long)got;
            }
            if (got)
                return (long)got;
            continue;
        }
        /* zstd */
        {
            ZSTD_inBuffer in = {r->raw, r->raw_end, r->raw_pos};
            ZSTD_outBuffer out = {dst, room, 0};
            size_t ret;

            if (r->raw_eof) {
                if (!r->zd_frame_done)
                    pending(r, RLHI_EFORMAT, "truncated zstd data");
                return 0;
            }
            ret = ZSTD_decompressStream(r->zd, &out, &in);
            r->raw_pos = in.pos;
            if (ZSTD_isError(ret)) {
                pending(r, RLHI_EFORMAT, ZSTD_getErrorName(ret));
                return (long)out.pos;
            }
            r->zd_frame_done = ret == 0;
            if (out.pos)
                return (long)out.pos;
        }
    }
}

/* Adds uncompressed bytes after `end`, compacting or growing `text` first.
 * Returns bytes added, 0 at the end, or a negative code. */
static long fill(struct rlhi_jsonl *r)
{
    long n;

    if (r->eof)
        return 0;
    if (r->start > 0 && (r->start == r->end || r->end + 1 >= r->cap)) {
        memmove(r->text, r->text + r->start, r->end - r->start);
        r->base += r->start;
        r->end -= r->start;
        r->scan -= r->start;
        r->start = 0;
    }
    if (r->end + 1 >= r->cap) {
        size_t ncap = r->cap * 2;
        char *t = rlhi_realloc(r->text, ncap);

        if (!t)
            return rlhi_err(RLHI_ENOMEM, "cannot hold a %zu-byte line of "
                            "'%s'", r->end, r->path);
        r->text = t;
        r->cap = ncap;
    }
    /* One byte stays free for the NUL after an unterminated last line. */
    n = produce(r, r->text + r->end, r->cap - r->end - 1);
    if (n < 0)
        return n;
    if (n == 0)
        r->eof = true;
    r->end += (size_t)n;
    return n;
}

int rlhi_jsonl_open(struct rlhi_jsonl **out, const char *path)
{
    struct rlhi_jsonl *r = rlhi_calloc(1, sizeof *r);
    int rc;

    *out = NULL;
    if (!r)
        return rlhi_err(RLHI_ENOMEM, "cannot open '%s'", path);
    r->fd = -1;
    r->path = rlhi_strdup(path);
    r->raw = rlhi_malloc(RAW_CAP);
    r->cap = TEXT_CAP0;
    r->text = rlhi_malloc(r->cap);
    if (!r->path || !r->raw || !r->text) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot open '%s'", path);
        goto fail;
    }
    if (!strcmp(path, "-")) {
        r->fd = 0;
    } else {
        struct stat st;

        r->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (r->fd < 0) {
            rc = rlhi_err_errno(RLHI_EIO, "cannot open '%s'", path);
            goto fail;
        }
        if (fstat(r->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            rc = rlhi_err(RLHI_EIO, "cannot read '%s': Is a directory",
                          path);
            goto fail;
        }
    }

    /* Sniff the magic bytes (a short first read is fine: too short for a
     * magic number means plain text). */
    if ((rc = raw_fill(r)) < 0)
        goto fail;
    if (r->raw_end >= 2 && r->raw[0] == 0x1f && r->raw[1] == 0x8b) {
        r->comp = RLHI_JSONL_GZIP;
        /* 15 + 32: largest window, and accept gzip or zlib headers. */
        if (inflateInit2(&r->zs, 15 + 32) != Z_OK) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot start gzip for '%s'", path);
            goto fail;
        }
        r->zs_init = true;
    } else if (r->raw_end >= 4 && r->raw[0] == 0x28 && r->raw[1] == 0xb5 &&
               r->raw[2] == 0x2f && r->raw[3] == 0xfd) {
        r->comp = RLHI_JSONL_ZSTD;
        r->zd = ZSTD_createDStream();
        if (!r->zd || ZSTD_isError(ZSTD_initDStream(r->zd))) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot start zstd for '%s'", path);
            goto fail;
        }
    }
    *out = r;
    return 0;

fail:
    rlhi_jsonl_close(r);
    return rc;
}

void rlhi_jsonl_close(struct rlhi_jsonl *r)
{
    if (!r)
        return;
    if (r->fd > 0)
        close(r->fd);
    if (r->zs_init)
        inflateEnd(&r->zs);
    if (r->zd)
        ZSTD_freeDStream(r->zd);
    rlhi_free(r->pend_msg);
    rlhi_free(r->raw);
    rlhi_free(r->text);
    rlhi_free(r->path);
    rlhi_free(r);
}

static bool is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

int rlhi_jsonl_next_line(struct rlhi_jsonl *r, const char **line,
                         size_t *len)
{
    r->started = true;
    for (;;) {
        char *p = r->text + r->start, *nl = NULL;
        size_t n;
        long got;

        if (r->scan < r->end)
            nl = memchr(r->text + r->scan, '\n', r->end - r->scan);
        if (!nl) {
            r->scan = r->end;
            got = fill(r);
            if (got < 0)
                return (int)got;
            if (got > 0)
                continue;
            if (r->pend) {
                /* The partial line before corrupt data is not a line. */
                r->start = r->end = r->scan;
                rlhi_err(r->pend, "%s", r->pend_msg);
                return r->pend;
            }
            if (r->start == r->end)
                return 0;
            nl = r->text + r->end; /* last line without '\n' */
        }
        n = (size_t)(nl - p);
        r->line_no++;
        r->line_off = r->base + r->start;
        r->end_off = r->line_off + n + (nl < r->text + r->end);
        r->start = r->scan = (size_t)(nl - r->text) + (nl < r->text + r->end);
        *nl = 0;
        if (n && p[n - 1] == '\r')
            p[--n] = 0;
        if (r->line_off == 0 && n >= 3 && !memcmp(p, "\xef\xbb\xbf", 3)) {
            p += 3;
            n -= 3;
        }
        if (is_blank(p, n))
            continue;
        *line = p;
        *len = n;
        return 1;
    }
}

int rlhi_jsonl_next(struct rlhi_jsonl *r, json_t **value)
{
    const char *line;
    size_t len;
    json_error_t jerr;
    int rc;

    *value = NULL;
    rc = rlhi_jsonl_next_line(r, &line, &len);
    if (rc <= 0)
        return rc;
    *value = json_loadb(line, len, 0, &jerr);
    if (!*value)
        return rlhi_err(RLHI_EFORMAT, "%s:%llu: %s", r->path,
                        (unsigned long long)r->line_no, jerr.text);
    return 1;
}

int rlhi_jsonl_skip_to(struct rlhi_jsonl *r, uint64_t offset,
                       uint64_t line_no)
{
    struct stat st;

    if (r->started)
        return rlhi_err(RLHI_EINVAL, "cannot skip in '%s' after reading",
                        r->path);
    r->started = true;
    if (r->comp == RLHI_JSONL_PLAIN && r->fd > 0 && fstat(r->fd, &st) == 0 &&
        S_ISREG(st.st_mode)) {
        if ((uint64_t)st.st_size < offset)
            return rlhi_err(RLHI_EFORMAT, "'%s' is shorter than the resume "
                            "offset %llu", r->path,
                            (unsigned long long)offset);
        if (lseek(r->fd, (off_t)offset, SEEK_SET) < 0)
            return rlhi_err_errno(RLHI_EIO, "cannot seek in '%s'", r->path);
        r->raw_pos = r->raw_end = 0;
        r->raw_eof = false;
        r->base = offset;
    } else {
        /* Decompress and drop whole buffers until `offset` is in view. */
        while (r->base + r->end < offset) {
            long got;

            r->start = r->scan = r->end;
            got = fill(r);
            if (got < 0)
                return (int)got;
            if (got == 0) {
                if (r->pend)
                    return rlhi_err(r->pend, "%s", r->pend_msg);
                return rlhi_err(RLHI_EFORMAT, "'%s' is shorter than the "
                                "resume offset %llu", r->path,
                                (unsigned long long)offset);
            }
        }
        r->start = r->scan = (size_t)(offset - r->base);
    }
    r->line_no = line_no;
    r->line_off = r->end_off = offset;
    return 0;
}

uint64_t rlhi_jsonl_line_no(const struct rlhi_jsonl *r)
{
    return r->line_no;
}

uint64_t rlhi_jsonl_offset(const struct rlhi_jsonl *r)
{
    return r->line_off;
}

uint64_t rlhi_jsonl_end_offset(const struct rlhi_jsonl *r)
{
    return r->end_off;
}

uint64_t rlhi_jsonl_raw_bytes(const struct rlhi_jsonl *r)
{
    return r->raw_total;
}

const char *rlhi_jsonl_path(const struct rlhi_jsonl *r)
{
    return r->path;
}

enum rlhi_jsonl_compression rlhi_jsonl_compression(const struct rlhi_jsonl *r)
{
    return r->comp;
}
