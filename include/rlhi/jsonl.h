/* Streaming JSONL reader: one JSON value per line from a file or stdin,
 * plain, gzip or zstd (chosen by the magic bytes, not the file name).
 *
 * Lines may be of any length; "\r\n" endings and a UTF-8 byte-order mark on
 * the first line are accepted; blank lines are skipped but still counted, so
 * line numbers (1-based) match what an editor shows. Byte offsets are
 * positions in the *uncompressed* stream and let a caller resume a file
 * where an earlier run stopped (rlhi_jsonl_skip_to).
 *
 * A reader is used by one thread at a time.
 */
#ifndef RLHI_JSONL_H
#define RLHI_JSONL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rlhi/base.h"

struct rlhi_jsonl;

enum rlhi_jsonl_compression {
    RLHI_JSONL_PLAIN = 0,
    RLHI_JSONL_GZIP = 1,
    RLHI_JSONL_ZSTD = 2,
};

/* Opens `path` ("-" reads stdin) and detects its compression. On success
 * *out is a new reader the caller closes with rlhi_jsonl_close(). Errors
 * (RLHI_EIO, RLHI_ENOMEM) name the file. */
int rlhi_jsonl_open(struct rlhi_jsonl **out, const char *path);

/* Closes the file (not stdin) and frees the reader. NULL is fine. */
void rlhi_jsonl_close(struct rlhi_jsonl *r);

/* Reads the next non-blank line. Returns 1 and sets *line (NUL-terminated,
 * without the line ending and without a leading BOM on line 1; owned by the
 * reader and valid until the next call) and *len; 0 at the end of the input;
 * a negative code on a read or decompression error (RLHI_EIO, RLHI_EFORMAT
 * for corrupt or truncated compressed data, RLHI_ENOMEM), after which the
 * reader should be closed. Every line complete before a decompression error
 * is returned first. */
int rlhi_jsonl_next_line(struct rlhi_jsonl *r, const char **line,
                         size_t *len);

/* Reads and parses the next non-blank line with jansson. Returns 1 and a
 * new reference in *value (the caller json_decref()s it); 0 at the end;
 * RLHI_EFORMAT for a line that is not a JSON object or array, with the
 * message "FILE:LINE: <jansson message>" — the reader stays usable and the
 * next call reads the following line; any other negative code as
 * rlhi_jsonl_next_line(). */
int rlhi_jsonl_next(struct rlhi_jsonl *r, json_t **value);

/* Skips forward to uncompressed byte `offset`, which must be the start of a
 * line that an earlier reader of the same file reported (via
 * rlhi_jsonl_end_offset), and numbers the next line `line_no + 1`. Only
 * before the first read. Plain files seek; compressed input and pipes are
 * decompressed and discarded. RLHI_EFORMAT when the input is shorter than
 * `offset`; RLHI_EINVAL after a read. */
int rlhi_jsonl_skip_to(struct rlhi_jsonl *r, uint64_t offset,
                       uint64_t line_no);

/* The 1-based number of the line last returned (0 before any). */
uint64_t rlhi_jsonl_line_no(const struct rlhi_jsonl *r);

/* Uncompressed byte offset of the start of the line last returned. */
uint64_t rlhi_jsonl_offset(const struct rlhi_jsonl *r);

/* Uncompressed byte offset just past the line last returned and its line
 * ending: where a resumed reader should start. */
uint64_t rlhi_jsonl_end_offset(const struct rlhi_jsonl *r);

/* Bytes read from the file so far (compressed bytes for compressed input),
 * for progress against the file size. */
uint64_t rlhi_jsonl_raw_bytes(const struct rlhi_jsonl *r);

/* The path given to rlhi_jsonl_open ("-" for stdin). */
const char *rlhi_jsonl_path(const struct rlhi_jsonl *r);

enum rlhi_jsonl_compression rlhi_jsonl_compression(const struct rlhi_jsonl *r);

#endif
