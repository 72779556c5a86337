/* Tests for the base layer: errors, buffers, hashing, RNG, allocation
 * failure injection, files. */
#include <unistd.h>

#include "check.h"

int main(void)
{
    TEST("sha256 known answers (FIPS 180-4 examples)") {
        char hex[65];

        rlhi_sha256_hex("abc", 3, hex);
        CHECK_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223"
                          "b00361a396177a9cb410ff61f20015ad");
        rlhi_sha256_hex("", 0, hex);
        CHECK_STR_EQ(hex, "e3b0c44298fc1c149afbf4c8996fb924"
                          "27ae41e4649b934ca495991b7852b855");
        rlhi_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnop"
                        "nopq", 56, hex);
        CHECK_STR_EQ(hex, "248d6a61d20638b8e5c026930c3e6039"
                          "a33ce45964ff2167f6ecedd419db06c1");
    }

    TEST("fnv64 known answer") {
        /* FNV-1a 64 of "a" from the reference test vectors. */
        CHECK(rlhi_fnv64(RLHI_FNV64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
    }

    TEST("rng is deterministic and uniform enough") {
        struct rlhi_rng a, b;
        double sum = 0;
        int i, same = 1;

        rlhi_rng_seed(&a, 42);
        rlhi_rng_seed(&b, 42);
        for (i = 0; i < 100000; i++) {
            double x = rlhi_rng_double(&a);

            same &= x == rlhi_rng_double(&b);
            sum += x;
        }
        CHECK(same);
        /* Mean of 1e5 uniforms: sd 0.29/sqrt(1e5) ~ 0.0009; 5 sd. */
        CHECK_NEAR(sum / 100000, 0.5, 0.0046, 0);
        CHECK(rlhi_rng_below(&a, 7) < 7);
    }

    TEST("buffer and json escaping") {
        struct rlhi_buf b = RLHI_BUF_INIT;

        CHECK_OK(rlhi_buf_addf(&b, "%d-%s", 12, "x"));
        CHECK_OK(rlhi_buf_add_json_str(&b, "a\"b\n\x01", 5));
        CHECK_STR_EQ(b.buf, "12-x\"a\\\"b\\n\\u0001\"");
        rlhi_buf_release(&b);
    }

    TEST("errors carry the subject and system message") {
        char *data;
        size_t len;
        int r = rlhi_file_read("/nonexistent/x.jsonl", &data, &len);

        CHECK_INT_EQ(r, RLHI_EIO);
        CHECK_STR_EQ(rlhi_errmsg(), "cannot open '/nonexistent/x.jsonl': "
                                    "No such file or directory");
        rlhi_err_prefix(r, "loading model");
        CHECK(strncmp(rlhi_errmsg(), "loading model: cannot open", 26) == 0);
    }

    TEST("allocation failure injection") {
        void *p;

        rlhi__alloc_fail_at(2);
        p = rlhi_malloc(8);
        CHECK(p != NULL);
        CHECK(rlhi_malloc(8) == NULL);
        rlhi_free(p);
        p = rlhi_malloc(8);
        CHECK(p != NULL);
        rlhi_free(p);
        rlhi__alloc_fail_at(0);
    }

    TEST("atomic write and read back") {
        char path[] = "/tmp/rlhi-test-XXXXXX";
        int fd = mkstemp(path);
        char *data;
        size_t len;

        close(fd);
        CHECK_OK(rlhi_file_write_atomic(path, "hello", 5));
        CHECK_OK(rlhi_file_read(path, &data, &len));
        CHECK_INT_EQ(len, 5);
        CHECK_STR_EQ(data, "hello");
        rlhi_free(data);
        unlink(path);
    }
    TEST("progress text: items and bytes") {
        struct rlhi_progress p;
        char t[160];

        rlhi_progress_start(&p, "x", 5000);
        p.t_start -= 10; /* ten seconds in */
        p.done = 1200;
        rlhi_progress_text(&p, false, t, sizeof t);
        CHECK(!strncmp(t, "1200/5000 (24%), 120.0/s, eta 32s", 33));
        rlhi_progress_text(&p, true, t, sizeof t);
        CHECK(!strncmp(t, "1200 done, 120.0/s, 10.0s", 25));
        rlhi_progress_start_bytes(&p, "f", 100000000);
        p.t_start -= 10;
        p.done = 12000000;
        rlhi_progress_text(&p, false, t, sizeof t);
        CHECK(!strncmp(t, "12.0/100.0 MB (12%), 1.2 MB/s, eta 73s", 38));
        p.total = 0;
        rlhi_progress_text(&p, false, t, sizeof t);
        CHECK(!strncmp(t, "12.0 MB so far, 1.2 MB/s, 10.0s", 31));
        /* a small buffer is cut, not overrun */
        rlhi_progress_text(&p, false, t, 8);
        CHECK_INT_EQ((long long)strlen(t), 7);
    }

    return check_summary();
}
