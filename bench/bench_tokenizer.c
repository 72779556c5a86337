/* Tokenizer speed: load time, encode and decode throughput on a text file.
 *
 * Build and run (no Makefile rule; bench/ is built by hand):
 *   make BUILD=build build/librlhi.a
 *   cc -O2 -march=native -Iinclude bench/bench_tokenizer.c build/librlhi.a \
 *      $(pkg-config --libs jansson libpcre2-8 libutf8proc) -lm \
 *      -o build/bench_tokenizer
 *   build/bench_tokenizer TOKENIZER TEXT_FILE [REPEAT]
 *
 * The text is repeated REPEAT times (default 1) and encoded in one call.
 * Times are CPU seconds of this process, so that a busy machine does not
 * blur them (the work is single-threaded). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "rlhi/tokenizer.h"

static double cpu_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    struct rlhi_tokenizer *t = NULL;
    struct rlhi_buf text = RLHI_BUF_INIT, out = RLHI_BUF_INIT;
    char *data;
    size_t len, n = 0;
    int32_t *ids = NULL;
    int rep = argc > 3 ? atoi(argv[3]) : 1, i;
    double t0, load, enc, dec;

    if (argc < 3) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER TEXT [REPEAT]\n");
        return 2;
    }
    t0 = cpu_now();
    if (rlhi_tokenizer_load(&t, argv[1]) < 0) {
        fprintf(stderr, "bench_tokenizer: %s\n", rlhi_errmsg());
        return 1;
    }
    load = cpu_now() - t0;
    if (rlhi_file_read(argv[2], &data, &len) < 0) {
        fprintf(stderr, "bench_tokenizer: %s\n", rlhi_errmsg());
        return 1;
    }
    for (i = 0; i < rep; i++)
        rlhi_buf_add(&text, data, len);
    rlhi_free(data);

    t0 = cpu_now();
    if (rlhi_tokenizer_encode(t, text.buf, text.len, 0, &ids, &n) < 0) {
        fprintf(stderr, "bench_tokenizer: %s\n", rlhi_errmsg());
        return 1;
    }
    enc = cpu_now() - t0;
    t0 = cpu_now();
    if (rlhi_tokenizer_decode(t, ids, n, false, &out) < 0) {
        fprintf(stderr, "bench_tokenizer: %s\n", rlhi_errmsg());
        return 1;
    }
    dec = cpu_now() - t0;
    printf("%s: load %.3f s; encode %.1f MB in %.3f s = %.2f MB/s "
           "(%.2f M tokens/s, %zu tokens); decode %.0f MB/s\n", argv[1], load,
           text.len / 1e6, enc, text.len / 1e6 / enc, n / enc / 1e6, n,
           out.len / 1e6 / dec);
    rlhi_free(ids);
    rlhi_buf_release(&text);
    rlhi_buf_release(&out);
    rlhi_tokenizer_free(t);
    return 0;
}
