/* rlhi score: per-token log-probabilities of given completions.
 *
 * Reads JSONL {"prompt": "...", "completion": "..."} and writes one line
 * {"logprobs": [...], "tokens": [...], "sum": x} per good input line, in
 * order; "tokens" are the completion's ids.
 *
 * Tokenisation. The model is scored on the tokens it would see for the
 * whole text: prompt + completion is encoded once (BOS first when the
 * model wants one, special tokens such as "<|im_end|>" recognised), and
 * split where the prompt's own encoding stops matching it. Encoding the
 * completion alone would be wrong for SentencePiece vocabularies, which
 * put a dummy space in front of every text ("  there" for " there"). When
 * a token straddles the boundary (prompt "Hel", completion "lo") it is
 * scored as part of the completion, as TRL does.
 *
 * A malformed line is reported with its number and skipped; the exit
 * status is then 3.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/generate.h"
#include "rlhi/jsonl.h"

static const char usage[] =
    "usage: rlhi score --model PATH [--tokenizer PATH] [--input FILE]\n"
    "\n"
    "Reads JSONL lines {\"prompt\": ..., \"completion\": ...} (stdin by\n"
    "default) and writes {\"logprobs\": [...], \"tokens\": [...], \"sum\": x}\n"
    "per line: the log-probability of each completion token (natural log)\n"
    "given the prompt and the completion tokens before it, the completion's\n"
    "token ids, and the sum. prompt + completion is encoded as one text and\n"
    "split where the prompt's own tokens end (a token straddling the two\n"
    "counts as completion). Malformed lines are reported and skipped\n"
    "(exit status 3).";

/* Scores one parsed line and prints its result. 0, or a negative code
 * with the message set: RLHI_EFORMAT for a line that is not usable input,
 * other codes for failures of the engine. */
static int score_line(const struct rlhi_model *m,
                      const struct rlhi_tokenizer *tok, bool bos, json_t *v,
                      struct rlhi_buf *out)
{
    json_t *jp = json_is_object(v) ? json_object_get(v, "prompt") : NULL;
    json_t *jc = json_is_object(v) ? json_object_get(v, "completion") : NULL;
    int32_t *p = NULL, *f = NULL, *c;
    size_t np = 0, nf = 0, nc, i;
    float *lp = NULL;
    double sum = 0;
    char *all = NULL;
    int err, flags = RLHI_ENC_SPECIAL | (bos ? RLHI_ENC_BOS : 0);

    if (!json_is_string(jp) || !json_is_string(jc))
        return rlhi_err(RLHI_EFORMAT, "expected an object with string "
                        "fields \"prompt\" and \"completion\"");

    /* Encode the prompt and the whole text; split at their common start. */
    all = rlhi_malloc(json_string_length(jp) + json_string_length(jc) + 1);
    if (!all)
        return rlhi_err(RLHI_ENOMEM, "cannot allocate the text");
    memcpy(all, json_string_value(jp), json_string_length(jp));
    memcpy(all + json_string_length(jp), json_string_value(jc),
           json_string_length(jc) + 1);
    err = rlhi_tokenizer_encode(tok, json_string_value(jp),
                                json_string_length(jp), flags, &p, &np);
    if (!err)
        err = rlhi_tokenizer_encode(tok, all, json_string_length(jp) +
                                    json_string_length(jc), flags, &f, &nf);
    if (err)
        goto done;
    if (np == 0) {
        err = rlhi_err(RLHI_EFORMAT, "empty prompt and the tokenizer has no "
                       "BOS token: the first completion token has nothing "
                       "to be conditioned on");
        goto done;
    }
    for (i = 0; i < np && i < nf && p[i] == f[i]; i++)
        ;
    if (i == 0) {
        err = rlhi_err(RLHI_EFORMAT, "the prompt's only token merges with "
                       "the completion's first and the tokenizer has no BOS "
                       "token: nothing is left to condition on");
        goto done;
    }
    np = i;
    c = f + np;
    nc = nf - np;
    if (nf > (size_t)m->cfg.max_seq_len) {
        err = rlhi_err(RLHI_EFORMAT, "prompt (%zu tokens) and completion "
                       "(%zu tokens) exceed the model's context of %d", np,
                       nc, m->cfg.max_seq_len);
        goto done;
    }
    lp = rlhi_malloc((nc ? nc : 1) * sizeof *lp);
    if (!lp) {
        err = rlhi_err(RLHI_ENOMEM, "cannot allocate %zu log-probs", nc);
        goto done;
    }
    err = rlhi_score(m, f, (int)np, c, (int)nc, lp, &sum);
    if (err == RLHI_EINVAL) /* a token id the model does not have */
        err = RLHI_EFORMAT;
    if (err)
        goto done;

    /* %.9g round-trips a float; %.17g a double. */
    rlhi_buf_clear(out);
    rlhi_buf_adds(out, "{\"logprobs\": [");
    for (i = 0; i < nc; i++)
        rlhi_buf_addf(out, "%s%.9g", i ? ", " : "", (double)lp[i]);
    rlhi_buf_adds(out, "], \"tokens\": [");
    for (i = 0; i < nc; i++)
        rlhi_buf_addf(out, "%s%d", i ? ", " : "", (int)c[i]);
    err = rlhi_buf_addf(out, "], \"sum\": %.17g}\n", sum);
    if (err) {
        err = rlhi_err(RLHI_ENOMEM, "cannot format the result");
        goto done;
    }
    fwrite(out->buf, 1, out->len, stdout);

done:
    rlhi_free(all);
    rlhi_free(p);
    rlhi_free(f);
    rlhi_free(lp);
    return err;
}

int cmd_score(int argc, char **argv)
{
    const char *model_path = NULL, *tok_path = NULL, *input = "-";
    struct cli_opt opts[] = {
        {"model", CLI_STR, &model_path,
         "llama2.c .bin checkpoint or Hugging Face directory (required)"},
        {"tokenizer", CLI_STR, &tok_path,
         "tokenizer file or directory (default: beside/inside the model)"},
        {"input", CLI_STR, &input, "JSONL input, - for stdin (default)"},
        {NULL, 0, NULL, NULL},
    };
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    struct rlhi_jsonl *in = NULL;
    struct rlhi_buf out = RLHI_BUF_INIT;
    long good = 0, bad = 0;
    int rc, err;
    bool bos;

    rc = cli_parse(argc, argv, opts, usage, NULL, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!model_path) {
        fprintf(stderr, "rlhi: error: --model is required\n"
                        "hint: see 'rlhi score --help'\n");
        return EXIT_USAGE;
    }
    err = rlhi_generate_load(model_path, tok_path, &m, &tok);
    if (!err)
        err = rlhi_jsonl_open(&in, input);
    if (err) {
        rc = cli_fail(err, NULL);
        goto done;
    }
    /* run.c always starts with BOS; HF tokenizers say whether they do. */
    bos = !rlhi_path_is_dir(model_path) || rlhi_tokenizer_wants_bos(tok);

    for (;;) {
        json_t *v = NULL;
        uint64_t line;

        err = rlhi_jsonl_next(in, &v);
        if (err == 0)
            break;
        line = rlhi_jsonl_line_no(in);
        if (err == RLHI_EFORMAT) { /* the message has file and line */
            rlhi_warn("skipping line: %s", rlhi_errmsg());
            bad++;
            continue;
        }
        if (err < 0) {
            rc = cli_fail(err, "cannot read the input");
            goto done;
        }
        err = score_line(m, tok, bos, v, &out);
        json_decref(v);
        if (err == RLHI_EFORMAT) {
            rlhi_warn("skipping %s:%llu: %s",
                     rlhi_jsonl_path(in), (unsigned long long)line,
                     rlhi_errmsg());
            bad++;
            continue;
        }
        if (err) {
            rlhi_err_prefix(err, "%s:%llu", rlhi_jsonl_path(in),
                            (unsigned long long)line);
            rc = cli_fail(err, "scoring failed");
            goto done;
        }
        good++;
    }
    fflush(stdout);
    if (ferror(stdout)) {
        fprintf(stderr, "rlhi: error: cannot write to stdout\n");
        rc = EXIT_RUNTIME;
        goto done;
    }
    rlhi_info("scored %ld lines, skipped %ld", good, bad);
    rc = bad ? EXIT_DATA : EXIT_OK;

done:
    rlhi_buf_release(&out);
    rlhi_jsonl_close(in);
    rlhi_tokenizer_free(tok);
    rlhi_model_free(m);
    return rc;
}
