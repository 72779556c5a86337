/* Option parsing, logging to stderr and exit codes for the command line. */
#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "rlhi/store.h"
#include "rlhi/tokenizer.h"

static const struct cli_opt *find(const struct cli_opt *opts, const char *n,
                                  size_t len)
{
    for (; opts->name; opts++)
        if (strlen(opts->name) == len && !strncmp(opts->name, n, len))
            return opts;
    return NULL;
}

/* Stores text `v` into the option's destination; 0 or EXIT_USAGE. */
static int set(const struct cli_opt *o, const char *v, const char *from)
{
    char *end = NULL;

    errno = 0;
    switch (o->type) {
    case CLI_STR:
        *(const char **)o->dst = v;
        return 0;
    case CLI_INT: {
        long x = strtol(v, &end, 10);

        if (*v && !*end && !errno && x >= -2147483647L - 1 && x <= 2147483647L) {
            *(int *)o->dst = (int)x;
            return 0;
        }
        break;
    }
    case CLI_I64: {
        long long x = strtoll(v, &end, 10);

        if (*v && !*end && !errno) {
            *(int64_t *)o->dst = x;
            return 0;
        }
        break;
    }
    case CLI_FLOAT:
    case CLI_DOUBLE: {
        double x = strtod(v, &end);

        if (*v && !*end && !errno) {
            if (o->type == CLI_FLOAT)
                *(float *)o->dst = (float)x;
            else
                *(double *)o->dst = x;
            return 0;
        }
        break;
    }
    case CLI_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1")) {
            *(bool *)o->dst = true;
            return 0;
        }
        if (!strcmp(v, "false") || !strcmp(v, "0")) {
            *(bool *)o->dst = false;
            return 0;
        }
        break;
    }
    fprintf(stderr, "rlhi: error: invalid value '%s' for --%s%s\n", v,
            o->name, from);
    return EXIT_USAGE;
}

static void help(const struct cli_opt *opts, const char *usage)
{
    static const char *tn[] = {"TEXT", "N", "N", "X", "X", ""};

    printf("%s\n\noptions:\n", usage);
    for (; opts->name; opts++) {
        char lhs[64];

        snprintf(lhs, sizeof lhs, "--%s %s", opts->name, tn[opts->type]);
        printf("  %-30s %s\n", lhs, opts->help);
    }
    printf("  %-30s %s\n", "--config FILE",
           "read options from a JSON object with the same keys");
    printf("  %-30s %s\n", "--help", "show this help");
}

/* Applies the keys of a JSON config file; flags given later override. The
 * strings are kept alive for the life of the process on purpose. */
static int load_config(const struct cli_opt *opts, const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    const char *key;
    json_t *val;
    char from[4200];

    if (!root) {
        fprintf(stderr, "rlhi: error: cannot read config '%s': line %d: %s\n",
                path, jerr.line, jerr.text);
        return EXIT_USAGE;
    }
    if (!json_is_object(root)) {
        fprintf(stderr, "rlhi: error: config '%s' is not a JSON object\n",
                path);
        json_decref(root);
        return EXIT_USAGE;
    }
    snprintf(from, sizeof from, " in config '%s'", path);
    json_object_foreach(root, key, val) {
        const struct cli_opt *o = find(opts, key, strlen(key));
        char num[64];
        const char *v = num;

        if (!o) {
            fprintf(stderr, "rlhi: error: unknown key '%s' in config '%s'\n",
                    key, path);
            json_decref(root);
            return EXIT_USAGE;
        }
        if (json_is_string(val))
            v = strdup(json_string_value(val));
        else if (json_is_integer(val))
            snprintf(num, sizeof num, "%lld",
                     (long long)json_integer_value(val));
        else if (json_is_real(val))
            snprintf(num, sizeof num, "%.17g", json_real_value(val));
        else if (json_is_boolean(val))
            v = json_is_true(val) ? "true" : "false";
        else
            v = "";
        if (o->type == CLI_STR && v == num)
            v = strdup(num);
        if (set(o, v, from)) {
            json_decref(root);
            return EXIT_USAGE;
        }
    }
    json_decref(root);
    return 0;
}

int cli_parse(int argc, char **argv, const struct cli_opt *opts,
              const char *usage, int *npos, char ***pos)
{
    int i, n = 0;

    if (npos)
        *npos = 0;
    /* The config file goes first so that flags override it. */
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
            const char *path = argv[i][8] == '=' ? argv[i] + 9 : argv[i + 1];
            int r;

            if (!path) {
                fprintf(stderr, "rlhi: error: --config needs a file\n");
                return EXIT_USAGE;
            }
            r = load_config(opts, path);
            if (r)
                return r;
        }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help(opts, usage);
            return -1;
        }
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq;
        const struct cli_opt *o;

        if (!strcmp(a, "--")) {
            for (i++; i < argc; i++)
                argv[1 + n++] = argv[i];
            break;
        }
        if (strncmp(a, "--", 2) || !a[2]) {
            argv[1 + n++] = argv[i];
            continue;
        }
        a += 2;
        eq = strchr(a, '=');
        if (!strncmp(a, "config", 6) && (a[6] == 0 || a[6] == '=')) {
            i += eq ? 0 : 1;
            continue;
        }
        o = find(opts, a, eq ? (size_t)(eq - a) : strlen(a));
        if (!o) {
            fprintf(stderr, "rlhi: error: unknown option '%s'\n"
                            "hint: see 'rlhi %s --help'\n", argv[i], argv[0]);
            return EXIT_USAGE;
        }
        if (eq) {
            if (set(o, eq + 1, ""))
                return EXIT_USAGE;
        } else if (o->type == CLI_BOOL) {
            *(bool *)o->dst = true;
        } else if (i + 1 >= argc) {
            fprintf(stderr, "rlhi: error: option '--%s' needs a value\n",
                    o->name);
            return EXIT_USAGE;
        } else if (set(o, argv[++i], "")) {
            return EXIT_USAGE;
        }
    }
    if (n && !pos) {
        fprintf(stderr, "rlhi: error: unexpected argument '%s'\n"
                        "hint: see 'rlhi %s --help'\n", argv[1], argv[0]);
        return EXIT_USAGE;
    }
    if (npos)
        *npos = n;
    if (pos)
        *pos = argv + 1;
    return 0;
}

int cli_exit_code(int code)
{
    if (code >= 0)
        return EXIT_OK;
    if (code == RLHI_EFORMAT)
        return EXIT_DATA;
    if (code == RLHI_EINVAL)
        return EXIT_USAGE;
    return EXIT_RUNTIME;
}

int cli_fail(int code, const char *what)
{
    const char *m = rlhi_errmsg();

    if (what && *m)
        fprintf(stderr, "rlhi: error: %s: %s\n", what, m);
    else if (*m)
        fprintf(stderr, "rlhi: error: %s\n", m);
    else
        fprintf(stderr, "rlhi: error: %s: %s\n", what ? what : "failed",
                rlhi_strerror(code));
    return cli_exit_code(code);
}

int cli_load_tokenizer(const char *path, struct rlhi_tokenizer **tok,
                       char **dir)
{
    int r = rlhi_tokenizer_load(tok, path);

    if (r)
        return cli_fail(r, "cannot load the tokenizer");
    *dir = rlhi_strdup(path);
    if (*dir && !rlhi_path_is_dir(*dir))
        memmove(*dir, dirname(*dir), strlen(dirname(*dir)) + 1);
    return 0;
}

int cli_open_store(const char *db, const char *cmd, struct rlhi_store **s)
{
    int rc;

    *s = NULL;
    if (!db) {
        fprintf(stderr, "rlhi: error: --db is required\nhint: see 'rlhi %s "
                        "--help'\n", cmd);
        return EXIT_USAGE;
    }
    if (!rlhi_path_exists(db)) {
        fprintf(stderr, "rlhi: error: no store '%s'\nhint: 'rlhi ingest "
                        "LOGS --db %s' makes one\n", db, db);
        return EXIT_RUNTIME;
    }
    if ((rc = rlhi_store_open(s, db)))
        return cli_fail(rc, NULL);
    return EXIT_OK;
}

static void log_to_stderr(enum rlhi_log_level level, const char *msg,
                          void *user)
{
    static const char *names[] = {"error", "warning", "info", "debug"};

    (void)user;
    fprintf(stderr, "rlhi: %s: %s\n", names[level], msg);
}

/* A bar on a terminal, redrawn at most 10 times a second. */
static void progress_bar(const struct rlhi_progress *p, bool final, void *u)
{
    static double last;
    double now = rlhi_time_now();
    char bar[31], text[160];
    int i, fill = 0;

    (void)u;
    if (!final && now - last < 0.1)
        return;
    last = now;
    if (p->total)
        fill = (int)(30.0 * (double)p->done / (double)p->total);
    for (i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : (p->total ? '.' : ' ');
    bar[30] = 0;
    rlhi_progress_text(p, final, text, sizeof text);
    /* \033[K clears what a longer line before left */
    fprintf(stderr, "\r%s [%s] %s\033[K", p->label, bar, text);
    if (final)
        fputc('\n', stderr);
}

void cli_setup_logging(void)
{
    const char *v = getenv("RLHI_LOG");

    rlhi_log_set_hook(log_to_stderr, NULL);
    if (v && !strcmp(v, "debug"))
        rlhi_log_set_level(RLHI_LOG_DEBUG);
    else if (v && !strcmp(v, "warn"))
        rlhi_log_set_level(RLHI_LOG_WARN);
    if (isatty(2))
        rlhi_progress_set_hook(progress_bar, NULL);
}
