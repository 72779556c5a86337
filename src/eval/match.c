/* Win rates with bootstrap intervals, and answer matching for GSM8K and
 * MATH-500 (see include/rlhi/eval.h for the rules). */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rlhi/eval.h"
#include "rlhi/jsonl.h"
#include "rlhi/sim.h"

/* ---- win rate --------------------------------------------------------- */

/* The rate and its interval come from the simulator's bootstrap (one
 * implementation for both layers); this adds the counts. */
int rlhi_eval_winrate(const int *outcome, int n, int nboot, uint64_t seed,
                      struct rlhi_eval_winrate *out)
{
    int i;

    memset(out, 0, sizeof *out);
    if (n <= 0)
        return rlhi_err(RLHI_EINVAL, "win rate of no outcomes");
    for (i = 0; i < n; i++) {
        out->wins += outcome[i] > 0;
        out->losses += outcome[i] < 0;
        out->ties += outcome[i] == 0;
    }
    out->n = n;
    return rlhi_sim_winrate(outcome, n, nboot > 0 ? nboot : 1000, seed,
                            &out->rate, &out->lo, &out->hi);
}

double rlhi_eval_precision(int tp, int fp)
{
    return tp + fp > 0 ? (double)tp / (tp + fp) : 0.0;
}

double rlhi_eval_recall(int tp, int fn)
{
    return tp + fn > 0 ? (double)tp / (tp + fn) : 0.0;
}

/* ---- numbers ---------------------------------------------------------- */

/* Copies the number starting at s (digits with "," separators, one ".",
 * an optional leading "-") into out without separators; returns the
 * length consumed, 0 when there is no digit. */
static size_t scan_number(const char *s, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    bool dot = false, digit = false;

    if (s[i] == '-' && (isdigit((unsigned char)s[i + 1]) ||
                        (s[i + 1] == '.' && isdigit((unsigned char)s[i + 2]))))
        out[o++] = s[i++];
    for (; s[i] && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];

        if (isdigit(c)) {
            out[o++] = (char)c;
            digit = true;
        } else if (c == ',' && digit && isdigit((unsigned char)s[i + 1])) {
            continue;
        } else if (c == '.' && !dot && isdigit((unsigned char)s[i + 1])) {
            out[o++] = '.';
            dot = true;
        } else {
            break;
        }
    }
    out[o] = 0;
    return digit ? i : 0;
}

/* Drops trailing zeros after a decimal point ("18.00" -> "18"). */
static void trim_decimal(char *s)
{
    char *dot = strchr(s, '.');
    size_t n;

    if (!dot)
        return;
    n = strlen(s);
    while (n > 0 && s[n - 1] == '0')
        s[--n] = 0;
    if (n > 0 && s[n - 1] == '.')
        s[--n] = 0;
}

/* The first number at or after s, skipping "$" and spaces; 0 or
 * RLHI_ENOTFOUND. */
static int number_after(const char *s, char *out, size_t cap)
{
    for (; *s; s++) {
        if (isdigit((unsigned char)*s) ||
            (*s == '-' && isdigit((unsigned char)s[1]))) {
            if (!scan_number(s, out, cap))
                break;
            trim_decimal(out);
            return 0;
        }
        if (*s == '\n')
            break;
    }
    return RLHI_ENOTFOUND;
}

int rlhi_eval_gsm8k_reference(const char *solution, char *out, size_t cap)
{
    const char *h = strstr(solution, "####");

    if (!h || number_after(h + 4, out, cap))
        return rlhi_err(RLHI_ENOTFOUND, "no '#### <number>' in the "
                        "reference solution");
    return 0;
}

int rlhi_eval_final_number(const char *text, char *out, size_t cap)
{
    const char *h = strstr(text, "####"), *p;
    char tmp[64];

    if (h && !number_after(h + 4, out, cap))
        return 0;
    if ((h = strstr(text, "answer is")) && !number_after(h + 9, out, cap))
        return 0;
    /* The last number of the text. */
    out[0] = 0;
    for (p = text; *p;) {
        size_t k;

        if ((isdigit((unsigned char)*p) || *p == '-') &&
            (p == text || !isdigit((unsigned char)p[-1])) &&
            (k = scan_number(p, tmp, sizeof tmp)) > 0) {
            snprintf(out, cap, "%s", tmp);
            p += k;
        } else {
            p++;
        }
    }
    if (!out[0])
        return RLHI_ENOTFOUND;
    trim_decimal(out);
    return 0;
}

bool rlhi_eval_number_equal(const char *a, const char *b)
{
    char *ea, *eb;
    double x, y;

    if (!a || !b || !*a || !*b)
        return false;
    x = strtod(a, &ea);
    y = strtod(b, &eb);
    if (*ea || *eb || !isfinite(x) || !isfinite(y))
        return false;
    return fabs(x - y) <= 1e-6 * fmax(1.0, fabs(y));
}

/* ---- MATH --------------------------------------------------------------- */

int rlhi_eval_math_boxed(const char *text, char *out, size_t cap)
{
    const char *last = NULL, *p = text, *q;
    size_t len = 0;
    int depth;

    while ((q = strstr(p, "\\boxed")) || (q = strstr(p, "\\fbox"))) {
        const char *f = strstr(p, "\\fbox");

        if (f && f < q)
            q = f;
        last = q;
        p = q + 1;
    }
    if (!last)
        return rlhi_err(RLHI_ENOTFOUND, "no \\boxed{} answer");
    p = last + (last[1] == 'b' ? 6 : 5);
    if (*p == ' ') {
        /* "\boxed 5": up to the next "$" or space. */
        p++;
        for (q = p; *q && *q != '$' && *q != ' '; q++)
            ;
        len = (size_t)(q - p);
    } else if (*p == '{') {
        p++;
        for (q = p, depth = 1; *q; q++) {
            if (*q == '{')
                depth++;
            else if (*q == '}' && --depth == 0)
                break;
        }
        if (!*q)
            return rlhi_err(RLHI_ENOTFOUND, "unclosed \\boxed{");
        len = (size_t)(q - p);
    } else {
        return rlhi_err(RLHI_ENOTFOUND, "\\boxed without an argument");
    }
    if (len + 1 > cap)
        return rlhi_err(RLHI_ERANGE, "\\boxed{} answer of %zu bytes", len);
    memcpy(out, p, len);
    out[len] = 0;
    return 0;
}

/* Replaces every occurrence of `from` by `to` in s (in place; `to` is
 * never longer than `from`). */
static void replace_all(char *s, const char *from, const char *to)
{
    size_t lf = strlen(from), lt = strlen(to);
    char *p = s;

    while ((p = strstr(p, from))) {
        memmove(p + lt, p + lf, strlen(p + lf) + 1);
        memcpy(p, to, lt);
        p += lt;
    }
}

/* Removes a trailing "\text{ unit}" (MATH's _remove_right_units). */
static void remove_units(char *s)
{
    char *t = strstr(s, "\\text{ ");

    if (t && t != s)
        *t = 0;
}

/* "\sqrt3" -> "\sqrt{3}" (MATH's _fix_sqrt). Output into o[cap]. */
static void fix_sqrt(const char *s, char *o, size_t cap)
{
    size_t n = 0;

    while (*s && n + 4 < cap) {
        if (!strncmp(s, "\\sqrt", 5) && s[5] && s[5] != '{') {
            memcpy(o + n, "\\sqrt{", 6);
            n += 6;
            s += 5;
            if (n + 3 < cap)
                o[n++] = *s++;
            o[n++] = '}';
            continue;
        }
        o[n++] = *s++;
    }
    o[n] = 0;
}

/* "\frac12" -> "\frac{1}{2}", "\frac1b" -> "\frac{1}{b}" (MATH's
 * _fix_fracs). */
static void fix_fracs(const char *s, char *o, size_t cap)
{
    size_t n = 0;

    while (*s && n + 8 < cap) {
        if (!strncmp(s, "\\frac", 5) && s[5] && s[5] != '{') {
            memcpy(o + n, "\\frac{", 6);
            n += 6;
            s += 5;
            o[n++] = *s++;
            o[n++] = '}';
            if (*s && *s != '{') {
                o[n++] = '{';
                o[n++] = *s++;
                o[n++] = '}';
            }
            continue;
        }
        o[n++] = *s++;
    }
    o[n] = 0;
}

/* "a/b" of two integers -> "\frac{a}{b}" (MATH's
 * _fix_a_slash_b). */
static void fix_slash(char *s, size_t cap)
{
    char *sl = strchr(s, '/'), *e1, *e2;
    long a, b;

    if (!sl || strchr(sl + 1, '/'))
        return;
    a = strtol(s, &e1, 10);
    b = strtol(sl + 1, &e2, 10);
    if (e1 != sl || *e2 || e1 == s || e2 == sl + 1)
        return;
    snprintf(s, cap, "\\frac{%ld}{%ld}", a, b);
}

void rlhi_eval_math_normalize(const char *in, char *out, size_t cap)
{
    char a[1024], b[1024];
    size_t n;
    char *eq;

    if (!cap)
        return;
    snprintf(a, sizeof a, "%s", in);
    replace_all(a, "\n", "");
    replace_all(a, "\\!", "");
    replace_all(a, "\\\\", "\\");
    replace_all(a, "tfrac", "frac");
    replace_all(a, "dfrac", "frac");
    replace_all(a, "\\left", "");
    replace_all(a, "\\right", "");
    replace_all(a, "^{\\circ}", "");
    replace_all(a, "^\\circ", "");
    replace_all(a, "\\$", "");
    replace_all(a, "$", "");
    remove_units(a);
    replace_all(a, "\\%", "");
    replace_all(a, "%", "");
    replace_all(a, "\\text{", "{");
    replace_all(a, "\\mbox{", "{");
    replace_all(a, "\\mathrm{", "{");
    replace_all(a, "\\textbf{", "{");
    /* " ." and "{." start a decimal: add the 0 (MATH's rule). */
    replace_all(a, " .", " 0.");
    replace_all(a, "{.", "{0.");
    if (a[0] == '.') {
        memmove(a + 1, a, strlen(a) + 1);
        a[0] = '0';
    }
    /* "x = 5" -> "5" when the left side is short. */
    eq = strchr(a, '=');
    if (eq && !strchr(eq + 1, '=') && eq - a <= 2)
        memmove(a, eq + 1, strlen(eq + 1) + 1);
    fix_sqrt(a, b, sizeof b);
    replace_all(b, " ", "");
    fix_fracs(b, a, sizeof a);
    if (!strcmp(a, "0.5"))
        snprintf(a, sizeof a, "\\frac{1}{2}");
    fix_slash(a, sizeof a);
    /* Thousands separators in a plain number: "1,000" -> "1000". */
    n = strlen(a);
    if (n && strspn(a, "0123456789,.-") == n && strchr(a, ','))
        replace_all(a, ",", "");
    /* Trailing "." and outer braces "{5}" carry nothing. */
    n = strlen(a);
    while (n && a[n - 1] == '.')
        a[--n] = 0;
    if (n >= 2 && a[0] == '{' && a[n - 1] == '}' && !strchr(a + 1, '{')) {
        memmove(a, a + 1, n - 2);
        a[n - 2] = 0;
    }
    snprintf(out, cap, "%s", a);
}

bool rlhi_eval_math_equal(const char *a, const char *b)
{
    char x[1024], y[1024];

    rlhi_eval_math_normalize(a, x, sizeof x);
    rlhi_eval_math_normalize(b, y, sizeof y);
    return !strcmp(x, y) || rlhi_eval_number_equal(x, y);
}

bool rlhi_eval_answer_correct(enum rlhi_eval_set_kind kind, const char *text,
                              const char *ref)
{
    char got[1024];

    if (kind == RLHI_EVAL_GSM8K)
        return !rlhi_eval_final_number(text, got, sizeof got) &&
               rlhi_eval_number_equal(got, ref);
    if (rlhi_eval_math_boxed(text, got, sizeof got))
        return false;
    return rlhi_eval_math_equal(got, ref);
}

/* ---- sets --------------------------------------------------------------- */

void rlhi_eval_set_release(struct rlhi_eval_set *set)
{
    int i;

    for (i = 0; set->items && i < set->n; i++) {
        rlhi_free(set->items[i].question);
        rlhi_free(set->items[i].solution);
        rlhi_free(set->items[i].answer);
    }
    rlhi_free(set->items);
    memset(set, 0, sizeof *set);
}

int rlhi_eval_set_load(const char *path, enum rlhi_eval_set_kind kind,
                       struct rlhi_eval_set *set)
{
    struct rlhi_jsonl *j;
    json_t *o = NULL;
    int r, cap = 0;

    memset(set, 0, sizeof *set);
    set->kind = kind;
    r = rlhi_jsonl_open(&j, path);
    if (r)
        return r;
    while ((r = rlhi_jsonl_next(j, &o)) > 0) {
        const char *q = json_string_value(json_object_get(
            o, kind == RLHI_EVAL_GSM8K ? "question" : "problem"));
        const char *sol = json_string_value(json_object_get(
            o, kind == RLHI_EVAL_GSM8K ? "answer" : "solution"));
        const char *ans = json_string_value(json_object_get(o, "answer"));
        long line = (long)rlhi_jsonl_line_no(j);
        struct rlhi_eval_item *it;
        char num[64];

        if (!q || !sol || !ans) {
            r = rlhi_err(RLHI_EFORMAT, "'%s': line %ld: missing \"%s\"",
                         path, line, !q ? (kind == RLHI_EVAL_GSM8K
                                               ? "question" : "problem")
                                        : !sol && kind == RLHI_EVAL_MATH
                                              ? "solution" : "answer");
            break;
        }
        if (kind == RLHI_EVAL_GSM8K &&
            rlhi_eval_gsm8k_reference(sol, num, sizeof num)) {
            r = rlhi_err(RLHI_EFORMAT, "'%s': line %ld: no '#### <number>' "
                         "in \"answer\"", path, line);
            break;
        }
        if (set->n == cap) {
            int nc = cap ? 2 * cap : 256;
            void *p = rlhi_realloc(set->items, (size_t)nc * sizeof *it);

            if (!p) {
                r = rlhi_err(RLHI_ENOMEM, "cannot grow the eval set");
                break;
            }
            set->items = p;
            cap = nc;
        }
        it = &set->items[set->n++];
        it->question = rlhi_strdup(q);
        it->solution = rlhi_strdup(sol);
        it->answer = rlhi_strdup(kind == RLHI_EVAL_GSM8K ? num : ans);
        if (!it->question || !it->solution || !it->answer) {
            r = rlhi_err(RLHI_ENOMEM, "cannot copy an eval item");
            break;
        }
        json_decref(o);
        o = NULL;
    }
    json_decref(o);
    rlhi_jsonl_close(j);
    if (r < 0) {
        rlhi_eval_set_release(set);
        return r;
    }
    if (!set->n)
        return rlhi_err(RLHI_EFORMAT, "'%s': no items", path);
    return 0;
}
