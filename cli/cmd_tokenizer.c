/* rlhi tokenizer: train a byte-level BPE tokenizer (`rlhi tokenizer train`).
 *
 * Reads plain text or JSONL corpus files, learns merges, and writes a
 * Hugging Face tokenizer.json and tokenizer_config.json (with the rlhi chat
 * template when its special tokens are reserved) into --output_dir.
 * Progress and the timing summary go to stderr; stdout stays empty.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rlhi/bpe_train.h"
#include "rlhi/chat.h"

static const char usage[] =
    "usage: rlhi tokenizer train --data FILE [FILE...] --vocab_size N\n"
    "                            --output_dir DIR [--special_tokens a,b,c]\n"
    "\n"
    "Trains a byte-level BPE tokenizer (GPT-2 byte alphabet and split\n"
    "regex) and writes DIR/tokenizer.json and DIR/tokenizer_config.json.\n"
    "Input files are plain text, or JSONL whose lines hold \"text\" or\n"
    "\"messages\" (chats are counted as the rlhi chat template renders\n"
    "them). --vocab_size counts the 256 bytes, the merges and the special\n"
    "tokens. The same corpus and options always give the same files.";

/* Splits "a,b,c" into a new array of pointers into a copy of the text. */
static int split_list(const char *s, char **copy, const char ***items,
                      int *n)
{
    char *p, *save = NULL;
    int cap = 1;

    for (p = (char *)s; *p; p++)
        cap += *p == ',';
    *copy = rlhi_strdup(s);
    *items = rlhi_calloc((size_t)cap, sizeof **items);
    if (!*copy || !*items)
        return rlhi_err(RLHI_ENOMEM, "out of memory");
    *n = 0;
    for (p = strtok_r(*copy, ",", &save); p; p = strtok_r(NULL, ",", &save))
        (*items)[(*n)++] = p;
    return 0;
}

static bool has(const char **items, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(items[i], s))
            return true;
    return false;
}

static int train(int argc, char **argv)
{
    const char *data = NULL, *output_dir = NULL;
    const char *special = RLHI_CHAT_RLHI_SPECIALS;
    const char *bos = NULL, *eos = NULL, *pad = NULL, *tpl = "auto";
    int vocab_size = 0, npos = 0, nsp = 0, code, i, result = EXIT_OK;
    int64_t min_frequency = 2, skipped_all = 0;
    char **pos = NULL, *sp_copy = NULL;
    const char **sp = NULL;
    struct cli_opt opts[] = {
        {"data", CLI_STR, &data, "corpus file (more may follow as "
                                 "arguments)"},
        {"vocab_size", CLI_INT, &vocab_size, "ids in all (bytes, merges, "
                                             "special tokens)"},
        {"output_dir", CLI_STR, &output_dir, "where the files go"},
        {"special_tokens", CLI_STR, &special, "comma-separated (default: "
                                              "the rlhi template's)"},
        {"min_frequency", CLI_I64, &min_frequency, "never merge a pair "
                                                   "seen fewer times (2)"},
        {"bos_token", CLI_STR, &bos, "default <|endoftext|> if reserved"},
        {"eos_token", CLI_STR, &eos, "default <|end|> if reserved"},
        {"pad_token", CLI_STR, &pad, "default <|endoftext|> if reserved"},
        {"chat_template", CLI_STR, &tpl, "rlhi, none or auto (rlhi when "
                                         "its tokens are reserved)"},
        {NULL, 0, NULL, NULL},
    };
    struct rlhi_bpe_train_options o = {0};
    struct rlhi_bpe_trainer *t = NULL;
    struct rlhi_bpe_stats st;
    double t0 = rlhi_time_now();

    code = cli_parse(argc, argv, opts, usage, &npos, &pos);
    if (code)
        return code < 0 ? EXIT_OK : code;
    if ((!data && !npos) || vocab_size <= 0 || !output_dir) {
        fprintf(stderr, "rlhi: error: --data, --vocab_size and --output_dir "
                        "are required\nhint: see 'rlhi tokenizer train "
                        "--help'\n");
        return EXIT_USAGE;
    }
    if (strcmp(tpl, "auto") && strcmp(tpl, "rlhi") && strcmp(tpl, "none")) {
        fprintf(stderr, "rlhi: error: invalid value '%s' for "
                        "--chat_template (rlhi, none or auto)\n", tpl);
        return EXIT_USAGE;
    }
    if (split_list(special, &sp_copy, &sp, &nsp)) {
        result = cli_fail(RLHI_ENOMEM, NULL);
        goto out;
    }

    /* Defaults follow the rlhi template's tokens when they are there. */
    o.vocab_size = vocab_size;
    o.min_frequency = min_frequency;
    o.special_tokens = sp;
    o.n_special = nsp;
    o.bos_token = bos ? bos : has(sp, nsp, "<|endoftext|>") ? "<|endoftext|>"
                                                           : NULL;
    o.eos_token = eos ? eos : has(sp, nsp, "<|end|>") ? "<|end|>" : NULL;
    o.pad_token = pad ? pad : o.bos_token;
    if (!strcmp(tpl, "rlhi") ||
        (!strcmp(tpl, "auto") && has(sp, nsp, "<|system|>") &&
         has(sp, nsp, "<|user|>") && has(sp, nsp, "<|assistant|>") &&
         has(sp, nsp, "<|end|>")))
        o.chat_template = rlhi_chat_rlhi_jinja();
    code = rlhi_bpe_trainer_new(&t, &o);
    if (code) {
        result = cli_fail(code, "bad options");
        goto out;
    }

    for (i = -1; i < npos; i++) {
        const char *path = i < 0 ? data : pos[i];
        int64_t skipped = 0;

        if (!path)
            continue;
        code = rlhi_bpe_trainer_add_file(t, path, &skipped);
        if (code) {
            result = cli_fail(code, "cannot read the corpus");
            goto out;
        }
        skipped_all += skipped;
    }
    rlhi_bpe_trainer_stats(t, &st);
    if (!st.bytes) {
        fprintf(stderr, "rlhi: error: no text found in the corpus (%lld "
                        "lines skipped)\nhint: JSONL lines need a \"text\" "
                        "string or a \"messages\" list\n",
                (long long)skipped_all);
        result = EXIT_DATA;
        goto out;
    }
    code = rlhi_bpe_trainer_train(t);
    if (!code)
        code = rlhi_bpe_trainer_save(t, output_dir);
    if (code) {
        result = cli_fail(code, "training failed");
        goto out;
    }

    rlhi_bpe_trainer_stats(t, &st);
    fprintf(stderr,
            "rlhi: trained %d merges (vocabulary %d) on %llu bytes "
            "(%llu texts, %llu pretokens, %llu distinct) in %.2fs: counting "
            "%.2fs, merging %.2fs (%.0f merges/s)\n",
            st.merges, st.vocab_size, (unsigned long long)st.bytes,
            (unsigned long long)st.docs, (unsigned long long)st.pretokens,
            (unsigned long long)st.words, rlhi_time_now() - t0, st.count_s,
            st.merge_s, st.merge_s > 0 ? st.merges / st.merge_s : 0.0);
    if (st.vocab_size < vocab_size)
        rlhi_warn("the corpus ran out of pairs seen %lld times or more: "
                  "vocabulary %d instead of %d", (long long)min_frequency,
                  st.vocab_size, vocab_size);
    fprintf(stderr, "rlhi: wrote %s/tokenizer.json and "
                    "tokenizer_config.json\n", output_dir);
    if (skipped_all) {
        rlhi_warn("%lld corpus lines were skipped", (long long)skipped_all);
        result = EXIT_DATA;
    }
out:
    rlhi_bpe_trainer_free(t);
    rlhi_free(sp);
    rlhi_free(sp_copy);
    return result;
}

int cmd_tokenizer(int argc, char **argv)
{
    static char name[] = "tokenizer train";

    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: rlhi tokenizer train [options]   (rlhi tokenizer "
                "train --help)\n\ncommands:\n  train      train a byte-level "
                "BPE tokenizer on text or JSONL files\n");
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "train")) {
        argv[1] = name; /* so that hints read "rlhi tokenizer train" */
        return train(argc - 1, argv + 1);
    }
    fprintf(stderr, "rlhi: error: unknown command 'tokenizer %s'\n"
                    "hint: see 'rlhi tokenizer --help'\n", argv[1]);
    return EXIT_USAGE;
}
