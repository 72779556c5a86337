/* rlhi generate: text from a model, streamed to stdout.
 *
 * A llama2.c checkpoint (a file) runs run.c's generate() with its sampler
 * and defaults (temperature 1.0, top_p 0.9, 256 steps counting the
 * prompt), so the output matches `./run model.bin -z tok.bin` byte for
 * byte. A Hugging Face directory uses the modern sampler, its own
 * tokenizer and, with --chat, its chat template; --steps then counts new
 * tokens. stdout carries only the text (and a final newline, as run.c);
 * timing goes to stderr.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "rlhi/chat.h"
#include "rlhi/generate.h"

static const char usage[] =
    "usage: rlhi generate --model PATH [--tokenizer PATH] [--prompt TEXT]\n"
    "                     [--temperature T] [--top_p P] [--top_k K]\n"
    "                     [--min_p P] [--seed S] [--steps N]\n"
    "                     [--chat] [--system TEXT]\n"
    "\n"
    "Generates text and prints it to stdout. A llama2.c .bin model behaves\n"
    "as llama2.c's run (defaults: temperature 1.0, top_p 0.9, 256 steps\n"
    "including the prompt, tokenizer.bin beside the model); a Hugging Face\n"
    "directory uses its tokenizer, --steps new tokens, and with --chat its\n"
    "chat template.";

static int put_piece(int seq, const char *text, size_t len, void *user)
{
    (void)seq;
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return ferror(stdout) ? 1 : 0;
}

/* Renders the chat prompt of a Hugging Face directory and encodes it. The
 * end-of-turn token becomes a stop id (or a stop string when the
 * vocabulary has no such token). */
static int chat_prompt(const char *dir, const struct rlhi_tokenizer *tok,
                       const char *system, const char *prompt,
                       int32_t **ids, size_t *n, int32_t *eot,
                       const char **eot_text)
{
    struct rlhi_chat_msg msgs[2];
    struct rlhi_chat_options copt = {0};
    struct rlhi_buf text = RLHI_BUF_INIT;
    enum rlhi_chat_kind kind;
    size_t nm = 0;
    int err, bos = rlhi_tokenizer_bos(tok);

    err = rlhi_chat_template_from_dir(dir, &kind);
    if (err)
        return err;
    if (system)
        msgs[nm++] = (struct rlhi_chat_msg){"system", system};
    msgs[nm++] = (struct rlhi_chat_msg){"user", prompt};
    copt.add_generation_prompt = true;
    err = rlhi_chat_render(kind, msgs, nm, &copt, &text, NULL, NULL);
    if (!err)
        err = rlhi_tokenizer_encode(tok, text.buf, text.len,
                                    RLHI_ENC_SPECIAL, ids, n);
    rlhi_buf_release(&text);
    if (err)
        return err;

    /* Templates that write BOS themselves (Llama 3.1) must not get a
     * second one; those that leave it to the tokenizer get it here. */
    if (rlhi_tokenizer_wants_bos(tok) && bos >= 0 &&
        (*n == 0 || (*ids)[0] != bos)) {
        int32_t *t = rlhi_realloc(*ids, (*n + 1) * sizeof **ids);

        if (!t)
            return rlhi_err(RLHI_ENOMEM, "cannot allocate the prompt");
        memmove(t + 1, t, *n * sizeof *t);
        t[0] = bos;
        *ids = t;
        (*n)++;
    }
    *eot_text = rlhi_chat_eot(kind);
    *eot = *eot_text ? rlhi_tokenizer_token_id(tok, *eot_text) : -1;
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    const char *model_path = NULL, *tok_path = NULL, *prompt = NULL;
    const char *system = NULL, *eot_text = NULL;
    float temperature = NAN, top_p = NAN, min_p = 0.0f;
    int top_k = 0, steps = INT_MIN, err, rc;
    int64_t seed = 0;
    bool chat = false, l2c;
    struct cli_opt opts[] = {
        {"model", CLI_STR, &model_path,
         "llama2.c .bin checkpoint or Hugging Face directory (required)"},
        {"tokenizer", CLI_STR, &tok_path,
         "tokenizer file or directory (default: beside/inside the model)"},
        {"prompt", CLI_STR, &prompt, "text to continue (default: empty)"},
        {"temperature", CLI_FLOAT, &temperature,
         "sampling temperature, 0 = greedy (default 1.0)"},
        {"top_p", CLI_FLOAT, &top_p,
         "nucleus sampling mass in [0, 1] (default: 0.9 llama2.c, 1.0 "
         "otherwise)"},
        {"top_k", CLI_INT, &top_k, "keep the K most likely tokens, 0 = off"},
        {"min_p", CLI_FLOAT, &min_p,
         "keep tokens with p >= min_p * p_max, 0 = off"},
        {"seed", CLI_I64, &seed,
         "random seed, 0 = the fixed default (133742)"},
        {"steps", CLI_INT, &steps,
         "llama2.c: positions including the prompt, 0 = context; "
         "otherwise new tokens (default 256)"},
        {"chat", CLI_BOOL, &chat,
         "wrap the prompt in the model's chat template (HF directories)"},
        {"system", CLI_STR, &system, "system message for --chat"},
        {NULL, 0, NULL, NULL},
    };
    struct rlhi_model *m = NULL;
    struct rlhi_tokenizer *tok = NULL;
    struct rlhi_gen_opts o;
    struct rlhi_gen_result res = {0};
    int32_t *ids = NULL, eot = -1;
    size_t n = 0;

    rc = cli_parse(argc, argv, opts, usage, NULL, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if (!model_path) {
        fprintf(stderr, "rlhi: error: --model is required\n"
                        "hint: see 'rlhi generate --help'\n");
        return EXIT_USAGE;
    }
    if (seed < 0) {
        fprintf(stderr, "rlhi: error: --seed must be >= 0, got %lld\n",
                (long long)seed);
        return EXIT_USAGE;
    }
    if (steps < 0 && steps != INT_MIN) {
        fprintf(stderr, "rlhi: error: --steps must be >= 0, got %d\n", steps);
        return EXIT_USAGE;
    }
    l2c = !rlhi_path_is_dir(model_path);
    if (system && !chat) {
        fprintf(stderr, "rlhi: error: --system needs --chat\n");
        return EXIT_USAGE;
    }
    if (chat && l2c) {
        fprintf(stderr, "rlhi: error: --chat needs a Hugging Face model "
                        "directory with a chat template, not '%s'\n",
                model_path);
        return EXIT_USAGE;
    }

    /* Options: run.c's defaults for llama2.c files, modern ones else. */
    rlhi_gen_opts_default(&o);
    if (l2c)
        rlhi_sampler_params_llama2c(&o.sampler);
    o.llama2c = l2c;
    if (!isnan(temperature))
        o.sampler.temperature = temperature;
    if (!isnan(top_p))
        o.sampler.top_p = top_p;
    o.sampler.top_k = top_k;
    o.sampler.min_p = min_p;
    o.sampler.seed = (uint64_t)seed;
    o.max_tokens = steps != INT_MIN ? steps : 256;
    o.on_piece = put_piece;
    err = rlhi_sampler_params_check(&o.sampler);
    if (err)
        return cli_fail(err, "bad sampling option");
    if (l2c && (top_k || min_p > 0))
        rlhi_warn("--top_k and --min_p are ignored for llama2.c models "
                  "(run.c's sampler has neither)");

    err = rlhi_generate_load(model_path, tok_path, &m, &tok);
    if (err) {
        rc = cli_fail(err, NULL);
        goto done;
    }

    /* The prompt: run.c encodes with BOS and no EOS; HF models get BOS
     * when their tokenizer asks for it, or the chat template. */
    if (chat) {
        err = chat_prompt(model_path, tok, system, prompt ? prompt : "",
                          &ids, &n, &eot, &eot_text);
        if (eot >= 0) {
            o.stop_ids = &eot;
            o.n_stop_ids = 1;
        } else if (eot_text) {
            o.stop = &eot_text;
            o.n_stop = 1;
        }
    } else {
        int flags = l2c || rlhi_tokenizer_wants_bos(tok) ? RLHI_ENC_BOS : 0;

        err = rlhi_tokenizer_encode(tok, prompt ? prompt : "",
                                    prompt ? strlen(prompt) : 0, flags, &ids,
                                    &n);
    }
    if (err) {
        rc = cli_fail(err, "cannot build the prompt");
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, "rlhi: error: the prompt is empty and the tokenizer "
                        "has no BOS token to start from\n"
                        "hint: give --prompt TEXT\n");
        rc = EXIT_USAGE;
        goto done;
    }
    /* run.c prints a prompt longer than the steps as far as they go; a
     * modern generation needs room for at least one new token. */
    if (!l2c && n >= (size_t)m->cfg.max_seq_len) {
        fprintf(stderr, "rlhi: error: the prompt has %zu tokens and leaves "
                        "no room in the model's context of %d\n", n,
                        m->cfg.max_seq_len);
        rc = EXIT_USAGE;
        goto done;
    }

    err = rlhi_generate(m, tok, ids, (int)n, &o, &res);
    if (err) {
        fflush(stdout);
        rc = cli_fail(err, "generation failed");
        goto done;
    }
    fputc('\n', stdout);
    fflush(stdout);
    if (ferror(stdout)) {
        fprintf(stderr, "rlhi: error: cannot write to stdout\n");
        rc = EXIT_RUNTIME;
        goto done;
    }
    rlhi_info("prompt %d tokens in %.3f s; generated %d tokens in %.3f s "
              "(%.1f tok/s)", res.n_prompt, res.prefill_s, res.n_tokens,
              res.decode_s,
              res.decode_s > 0 ? res.n_tokens / res.decode_s : 0.0);
    rc = EXIT_OK;

done:
    rlhi_gen_result_release(&res);
    rlhi_free(ids);
    rlhi_tokenizer_free(tok);
    rlhi_model_free(m);
    return rc;
}
