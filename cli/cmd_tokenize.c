/* rlhi tokenize: text to token ids and back, JSONL on stdin and stdout.
 *
 * Encode: each line {"text": "..."} gives {"ids": [...]}. Decode (--decode):
 * each line {"ids": [...]} gives {"text": "..."}, with bytes that are not
 * UTF-8 (ids that split a character) written as U+FFFD, since JSON text
 * must be UTF-8. One output line per good
 * input line, in order; blank lines are passed over. A malformed line is
 * reported on stderr as "rlhi: error: <stdin>:LINE: <what>" and skipped,
 * and the exit status is then 3.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rlhi/tokenizer.h"

static const char usage[] =
    "usage: rlhi tokenize --tokenizer PATH [--decode] [--bos] [--eos]\n"
    "                     [--special] [--skip_special]\n"
    "\n"
    "Reads JSONL from stdin. Each line {\"text\": \"...\"} is written as\n"
    "{\"ids\": [...]}; with --decode each line {\"ids\": [...]} is written as\n"
    "{\"text\": \"...\"}. PATH is a tokenizer.json, a directory holding one\n"
    "(or GPT-2's encoder.json + vocab.bpe), or a llama2.c tokenizer .bin.\n"
    "Decoded bytes that are not UTF-8 (ids that split a character) are\n"
    "written as U+FFFD.\n"
    "Malformed lines are reported and skipped (exit status 3).";

struct opts {
    const char *tokenizer;
    bool decode, bos, eos, special, skip_special;
};

static bool is_blank(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

/* Encodes one parsed line into `out`; RLHI_EFORMAT with the message set
 * for a line that is not {"text": string}. */
static int encode_line(const struct rlhi_tokenizer *t, const struct opts *o,
                       json_t *v, struct rlhi_buf *out)
{
    json_t *text = json_is_object(v) ? json_object_get(v, "text") : NULL;
    int flags = (o->bos ? RLHI_ENC_BOS : 0) | (o->eos ? RLHI_ENC_EOS : 0) |
                (o->special ? RLHI_ENC_SPECIAL : 0);
    int32_t *ids = NULL;
    size_t n = 0, i;
    int r;

    if (!json_is_string(text))
        return rlhi_err(RLHI_EFORMAT, "expected an object with a string "
                        "field \"text\"");
    r = rlhi_tokenizer_encode(t, json_string_value(text),
                              json_string_length(text), flags, &ids, &n);
    if (r)
        return r;
    r = rlhi_buf_adds(out, "{\"ids\": [");
    for (i = 0; i < n && !r; i++)
        r = rlhi_buf_addf(out, i ? ", %d" : "%d", (int)ids[i]);
    if (!r)
        r = rlhi_buf_adds(out, "]}\n");
    rlhi_free(ids);
    return r ? rlhi_err(RLHI_ENOMEM, "out of memory") : 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid; with
 * *bad set to how many bytes the invalid prefix spans (the "maximal
 * subpart" of Unicode ch. 3, as Rust's from_utf8_lossy replaces). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len, i;

    *bad = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    for (i = 1; i < len; i++) {
        if (i >= n || s[i] < (i == 1 ? lo : 0x80) ||
            s[i] > (i == 1 ? hi : 0xbf)) {
            *bad = i;
            return 0;
        }
    }
    return len;
}

/* Appends s as a JSON string; bytes that are not UTF-8 (ids that split a
 * character) become U+FFFD, as Hugging Face's decode writes them. */
static int add_text(struct rlhi_buf *out, const char *s, size_t n)
{
    struct rlhi_buf clean = RLHI_BUF_INIT;
    size_t i = 0;
    int r = 0;

    while (i < n && !r) {
        size_t bad, k = utf8_seq((const unsigned char *)s + i, n - i, &bad);

        if (k) {
            r = rlhi_buf_add(&clean, s + i, k);
            i += k;
        } else {
            r = rlhi_buf_add(&clean, "\xef\xbf\xbd", 3);
            i += bad;
        }
    }
    if (!r)
        r = rlhi_buf_add_json_str(out, clean.buf ? clean.buf : "", clean.len);
    rlhi_buf_release(&clean);
    return r;
}

/* Decodes one parsed line {"ids": [...]} into `out`. */
static int decode_line(const struct rlhi_tokenizer *t, const struct opts *o,
                       json_t *v, struct rlhi_buf *out)
{
    json_t *ja = json_is_object(v) ? json_object_get(v, "ids") : NULL, *e;
    struct rlhi_buf text = RLHI_BUF_INIT;
    size_t n = json_array_size(ja), i;
    int32_t *ids;
    int r;

    if (!json_is_array(ja))
        return rlhi_err(RLHI_EFORMAT, "expected an object with an array "
                        "field \"ids\"");
    ids = rlhi_malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
        return rlhi_err(RLHI_ENOMEM, "out of memory");
    json_array_foreach(ja, i, e) {
        json_int_t id = json_integer_value(e);

        if (!json_is_integer(e) || id < 0 ||
            id >= rlhi_tokenizer_vocab_size(t)) {
            rlhi_free(ids);
            if (!json_is_integer(e))
                return rlhi_err(RLHI_EFORMAT, "ids[%zu] is not an integer",
                                i);
            return rlhi_err(RLHI_EFORMAT, "ids[%zu] = %lld is outside the "
                            "vocabulary (%d ids)", i, (long long)id,
                            rlhi_tokenizer_vocab_size(t));
        }
        ids[i] = (int32_t)id;
    }
    r = rlhi_tokenizer_decode(t, ids, n, o->skip_special, &text);
    rlhi_free(ids);
    if (r) {
        rlhi_buf_release(&text);
        /* an id that names no token (a hole in the table) is bad input */
        return r == RLHI_EINVAL ? RLHI_EFORMAT : r;
    }
    r = rlhi_buf_adds(out, "{\"text\": ");
    if (!r)
        r = add_text(out, text.buf ? text.buf : "", text.len);
    if (!r)
        r = rlhi_buf_adds(out, "}\n");
    rlhi_buf_release(&text);
    return r ? rlhi_err(RLHI_ENOMEM, "out of memory") : 0;
}

int cmd_tokenize(int argc, char **argv)
{
    struct opts o = {0};
    const struct cli_opt opts[] = {
        {"tokenizer", CLI_STR, &o.tokenizer,
         "tokenizer.json, a directory, or a llama2.c .bin (required)"},
        {"decode", CLI_BOOL, &o.decode, "ids to text instead of text to ids"},
        {"bos", CLI_BOOL, &o.bos, "prepend the BOS token"},
        {"eos", CLI_BOOL, &o.eos, "append the EOS token"},
        {"special", CLI_BOOL, &o.special,
         "recognise special tokens written in the text (\"<|eot_id|>\")"},
        {"skip_special", CLI_BOOL, &o.skip_special,
         "with --decode: leave special tokens out of the text"},
        {NULL, 0, NULL, NULL},
    };
    struct rlhi_tokenizer *t = NULL;
    struct rlhi_buf out = RLHI_BUF_INIT;
    char *line = NULL;
    size_t cap = 0, lineno = 0, skipped = 0;
    ssize_t len;
    int r, status = EXIT_OK;

    r = cli_parse(argc, argv, opts, usage, NULL, NULL);
    if (r)
        return r < 0 ? EXIT_OK : r;
    if (!o.tokenizer) {
        fprintf(stderr, "rlhi: error: --tokenizer is required\n"
                        "hint: see 'rlhi tokenize --help'\n");
        return EXIT_USAGE;
    }
    r = rlhi_tokenizer_load(&t, o.tokenizer);
    if (r)
        return cli_fail(r, NULL);

    while ((len = getline(&line, &cap, stdin)) >= 0) {
        json_error_t jerr;
        json_t *v;

        lineno++;
        if (is_blank(line, (size_t)len))
            continue;
        v = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &jerr);
        if (!v) {
            fprintf(stderr, "rlhi: error: <stdin>:%zu: invalid JSON: %s "
                    "(column %d)\n", lineno, jerr.text, jerr.column);
            skipped++;
            continue;
        }
        rlhi_buf_clear(&out);
        r = o.decode ? decode_line(t, &o, v, &out)
                     : encode_line(t, &o, v, &out);
        json_decref(v);
        if (r == RLHI_EFORMAT) {
            fprintf(stderr, "rlhi: error: <stdin>:%zu: %s\n", lineno,
                    rlhi_errmsg());
            skipped++;
            continue;
        }
        if (r) {
            fprintf(stderr, "rlhi: error: <stdin>:%zu: %s\n", lineno,
                    rlhi_errmsg());
            status = cli_exit_code(r);
            break;
        }
        fwrite(out.buf, 1, out.len, stdout);
    }
    if (status == EXIT_OK && ferror(stdin)) {
        fprintf(stderr, "rlhi: error: cannot read <stdin>\n");
        status = EXIT_RUNTIME;
    }
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "rlhi: error: cannot write <stdout>\n");
        status = EXIT_RUNTIME;
    }
    if (status == EXIT_OK && skipped) {
        fprintf(stderr, "rlhi: warning: %zu of %zu lines skipped\n", skipped,
                lineno);
        status = EXIT_DATA;
    }
    free(line); /* getline's buffer comes from malloc */
    rlhi_buf_release(&out);
    rlhi_tokenizer_free(t);
    return status;
}
