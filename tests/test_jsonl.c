/* Tests for the streaming JSONL reader: line endings, BOM, blank lines,
 * long lines, offsets and resume, gzip (single and multi-member) and zstd
 * made here with zlib and libzstd, truncated and corrupt compressed input,
 * malformed lines with their exact messages. */
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "check.h"
#include "rlhi/jsonl.h"

static char dir[] = "/tmp/rlhi-jsonl-XXXXXX";

static const char *tmp(const char *name)
{
    static char p[4][512];
    static int k;

    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void put(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");

    fwrite(data, 1, n, f);
    fclose(f);
}

/* gzip of `data` as one member (zlib with a gzip header: windowBits 31). */
static size_t gzip(const void *data, size_t n, unsigned char *out,
                   size_t cap)
{
    z_stream z;

    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    deflate(&z, Z_FINISH);
    n = z.total_out;
    deflateEnd(&z);
    return n;
}

/* Reads every line of `path` into one string "LINE:text\n..." plus the
 * final status. */
static int slurp(const char *path, struct rlhi_buf *out)
{
    struct rlhi_jsonl *r;
    const char *line;
    size_t len;
    int rc;

    rlhi_buf_clear(out);
    if ((rc = rlhi_jsonl_open(&r, path)))
        return rc;
    while ((rc = rlhi_jsonl_next_line(r, &line, &len)) == 1)
        rlhi_buf_addf(out, "%llu:%s\n",
                      (unsigned long long)rlhi_jsonl_line_no(r), line);
    rlhi_jsonl_close(r);
    return rc;
}

int main(void)
{
    struct rlhi_buf got = RLHI_BUF_INIT;
    static const char text[] =
        "\xef\xbb\xbf{\"a\": 1}\r\n"
        "\n"
        "   \r\n"
        "{\"b\": \"x\"}\n"
        "{\"c\": [1, 2]}"; /* no final newline */
    static const char want[] =
        "1:{\"a\": 1}\n4:{\"b\": \"x\"}\n5:{\"c\": [1, 2]}\n";

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }

    TEST("plain: BOM, CRLF, blank lines, last line without newline") {
        put(tmp("plain.jsonl"), text, sizeof text - 1);
        CHECK_INT_EQ(slurp(tmp("plain.jsonl"), &got), 0);
        CHECK_STR_EQ(got.buf, want);
    }

    TEST("empty file and blank-only file") {
        put(tmp("empty.jsonl"), "", 0);
        CHECK_INT_EQ(slurp(tmp("empty.jsonl"), &got), 0);
        CHECK_INT_EQ(got.len, 0);
        put(tmp("blank.jsonl"), "\n\r\n  \n", 6);
        CHECK_INT_EQ(slurp(tmp("blank.jsonl"), &got), 0);
        CHECK_INT_EQ(got.len, 0);
    }

    TEST("gzip, multi-member gzip and zstd read the same lines") {
        unsigned char z[4096], z2[8192];
        size_t n = gzip(text, sizeof text - 1, z, sizeof z), n2;

        put(tmp("a.jsonl.gz"), z, n);
        CHECK_INT_EQ(slurp(tmp("a.jsonl.gz"), &got), 0);
        CHECK_STR_EQ(got.buf, want);

        /* `cat a.gz b.gz`: two members, read as one stream. */
        n2 = gzip("{\"d\": 4}\n", 9, z2, sizeof z2);
        {
            unsigned char both[16384];
            /* first member must end with a newline to keep lines apart */
            size_t k = gzip("{\"a\": 1}\n{\"b\": 2}\n", 18, both,
                            sizeof both);

            memcpy(both + k, z2, n2);
            put(tmp("multi.gz"), both, k + n2);
            CHECK_INT_EQ(slurp(tmp("multi.gz"), &got), 0);
            CHECK_STR_EQ(got.buf, "1:{\"a\": 1}\n2:{\"b\": 2}\n3:{\"d\": 4}\n");
        }

        n = ZSTD_compress(z, sizeof z, text, sizeof text - 1, 3);
        CHECK(!ZSTD_isError(n));
        put(tmp("a.jsonl.zst"), z, n);
        CHECK_INT_EQ(slurp(tmp("a.jsonl.zst"), &got), 0);
        CHECK_STR_EQ(got.buf, want);
    }

    TEST("truncated and corrupt compressed input: lines first, then error") {
        struct rlhi_buf big = RLHI_BUF_INIT;
        static unsigned char z[1 << 20];
        size_t n;
        char msg[1024];

        for (int i = 0; i < 20000; i++)
            rlhi_buf_addf(&big, "{\"i\": %d, \"pad\": \"%08x\"}\n", i,
                          (unsigned)(i * 2654435761u));
        n = gzip(big.buf, big.len, z, sizeof z);
        put(tmp("trunc.gz"), z, n / 2);
        CHECK_INT_EQ(slurp(tmp("trunc.gz"), &got), RLHI_EFORMAT);
        snprintf(msg, sizeof msg, "cannot decompress '%s': truncated gzip "
                 "data", tmp("trunc.gz"));
        CHECK_STR_EQ(rlhi_errmsg(), msg);
        /* every line returned is whole and in order */
        CHECK(got.len > 1000 && !strncmp(got.buf, "1:{\"i\": 0, ", 11));
        CHECK(got.buf[got.len - 1] == '\n' &&
              got.buf[got.len - 2] == '}');

        n = ZSTD_compress(z, sizeof z, big.buf, big.len, 3);
        put(tmp("trunc.zst"), z, n - 10);
        CHECK_INT_EQ(slurp(tmp("trunc.zst"), &got), RLHI_EFORMAT);
        snprintf(msg, sizeof msg, "cannot decompress '%s': truncated zstd "
                 "data", tmp("trunc.zst"));
        CHECK_STR_EQ(rlhi_errmsg(), msg);

        /* corrupt deflate data right after the gzip header */
        n = gzip(big.buf, big.len, z, sizeof z);
        memset(z + 10, 0xff, 64);
        put(tmp("bad.gz"), z, n);
        CHECK_INT_EQ(slurp(tmp("bad.gz"), &got), RLHI_EFORMAT);
        snprintf(msg, sizeof msg, "cannot decompress '%s': invalid block "
                 "type", tmp("bad.gz"));
        CHECK_STR_EQ(rlhi_errmsg(), msg);
        rlhi_buf_release(&big);
    }

    TEST("a 3 MB line and many short ones") {
        struct rlhi_buf b = RLHI_BUF_INIT;
        struct rlhi_jsonl *r;
        json_t *v;
        size_t big = 3u << 20;

        rlhi_buf_adds(&b, "{\"s\": \"");
        for (size_t i = 0; i < big; i++)
            rlhi_buf_addc(&b, (char)('a' + i % 26));
        rlhi_buf_adds(&b, "\"}\n");
        for (int i = 0; i < 1000; i++)
            rlhi_buf_addf(&b, "{\"i\": %d}\n", i);
        put(tmp("long.jsonl"), b.buf, b.len);
        CHECK_OK(rlhi_jsonl_open(&r, tmp("long.jsonl")));
        CHECK_INT_EQ(rlhi_jsonl_next(r, &v), 1);
        CHECK_INT_EQ(json_string_length(json_object_get(v, "s")), big);
        json_decref(v);
        for (int i = 0; i < 1000; i++) {
            CHECK_INT_EQ(rlhi_jsonl_next(r, &v), 1);
            if (i == 999) {
                CHECK_INT_EQ(json_integer_value(json_object_get(v, "i")),
                             999);
                CHECK_INT_EQ(rlhi_jsonl_line_no(r), 1001);
                CHECK_INT_EQ(rlhi_jsonl_end_offset(r), b.len);
            }
            json_decref(v);
        }
        CHECK_INT_EQ(rlhi_jsonl_next(r, &v), 0);
        rlhi_jsonl_close(r);
        rlhi_buf_release(&b);
    }

    TEST("malformed lines: exact messages, reader goes on") {
        static const char bad[] =
            "{\"ok\": 1}\n"
            "{\"truncated\": \n"
            "not json\n"
            "{\"utf8\": \"\xff\xfe\"}\n"
            "42\n"
            "{\"ok\": 2} trailing\n"
            "{\"ok\": 3}\n";
        static const char *const msgs[] = {
            ":2: unexpected token near end of file",
            ":3: '[' or '{' expected near 'not'",
            ":4: unable to decode byte 0xff near '\"'",
            ":5: '[' or '{' expected near '42'",
            ":6: end of file expected near 'trailing'",
        };
        struct rlhi_jsonl *r;
        json_t *v;
        char want_msg[1024];

        put(tmp("bad.jsonl"), bad, sizeof bad - 1);
        CHECK_OK(rlhi_jsonl_open(&r, tmp("bad.jsonl")));
        CHECK_INT_EQ(rlhi_jsonl_next(r, &v), 1);
        json_decref(v);
        for (int i = 0; i < 5; i++) {
            CHECK_INT_EQ(rlhi_jsonl_next(r, &v), RLHI_EFORMAT);
            CHECK(v == NULL);
            snprintf(want_msg, sizeof want_msg, "%s%s", tmp("bad.jsonl"),
                     msgs[i]);
            CHECK_STR_EQ(rlhi_errmsg(), want_msg);
        }
        CHECK_INT_EQ(rlhi_jsonl_next(r, &v), 1);
        CHECK_INT_EQ(json_integer_value(json_object_get(v, "ok")), 3);
        CHECK_INT_EQ(rlhi_jsonl_line_no(r), 7);
        json_decref(v);
        CHECK_INT_EQ(rlhi_jsonl_next(r, &v), 0);
        rlhi_jsonl_close(r);
    }

    TEST("resume from an offset: plain and gzip") {
        static const char *const names[] = {"plain.jsonl", "a.jsonl.gz",
                                            "a.jsonl.zst"};

        for (int k = 0; k < 3; k++) {
            struct rlhi_jsonl *r;
            const char *line;
            size_t len;
            uint64_t off, lno;

            /* read the first line, note where the next starts */
            CHECK_OK(rlhi_jsonl_open(&r, tmp(names[k])));
            CHECK_INT_EQ(rlhi_jsonl_next_line(r, &line, &len), 1);
            CHECK_INT_EQ(rlhi_jsonl_offset(r), 0);
            off = rlhi_jsonl_end_offset(r);
            lno = rlhi_jsonl_line_no(r);
            CHECK_INT_EQ(off, 3 + 8 + 2); /* BOM, {"a": 1}, CRLF */
            rlhi_jsonl_close(r);

            CHECK_OK(rlhi_jsonl_open(&r, tmp(names[k])));
            CHECK_OK(rlhi_jsonl_skip_to(r, off, lno));
            CHECK_INT_EQ(rlhi_jsonl_next_line(r, &line, &len), 1);
            CHECK_STR_EQ(line, "{\"b\": \"x\"}");
            CHECK_INT_EQ(rlhi_jsonl_line_no(r), 4);
            CHECK_INT_EQ(rlhi_jsonl_next_line(r, &line, &len), 1);
            CHECK_STR_EQ(line, "{\"c\": [1, 2]}");
            CHECK_INT_EQ(rlhi_jsonl_next_line(r, &line, &len), 0);
            rlhi_jsonl_close(r);

            /* an offset past the end is an error, not a silent skip */
            CHECK_OK(rlhi_jsonl_open(&r, tmp(names[k])));
            CHECK_INT_EQ(rlhi_jsonl_skip_to(r, 100000, 5), RLHI_EFORMAT);
            rlhi_jsonl_close(r);
        }
    }

    TEST("missing file and directory") {
        struct rlhi_jsonl *r;

        CHECK_INT_EQ(rlhi_jsonl_open(&r, "/nonexistent/x.jsonl"), RLHI_EIO);
        CHECK_STR_EQ(rlhi_errmsg(), "cannot open '/nonexistent/x.jsonl': "
                                    "No such file or directory");
        CHECK_INT_EQ(rlhi_jsonl_open(&r, dir), RLHI_EIO);
        CHECK(strstr(rlhi_errmsg(), "Is a directory") != NULL);
    }

    TEST("allocation failures are reported, never crash") {
        for (long k = 1; k <= 6; k++) {
            struct rlhi_jsonl *r = NULL;
            int rc;

            rlhi__alloc_fail_at(k);
            rc = rlhi_jsonl_open(&r, tmp("plain.jsonl"));
            rlhi__alloc_fail_at(0);
            CHECK(rc == 0 || rc == RLHI_ENOMEM);
            rlhi_jsonl_close(r);
        }
    }

    rlhi_buf_release(&got);
    {
        char cmd[600];

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd))
            fprintf(stderr, "could not remove %s\n", dir);
    }
    return check_summary();
}
