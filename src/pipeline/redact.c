/* Redaction of personal data: URLs, e-mail addresses, API keys and other
 * secrets, phone numbers.
 *
 * Each kind is a PCRE2 pattern (byte mode, so any input is fine) plus a
 * check in C for what a regular expression says badly ("at least 8
 * digits", "has upper case, lower case and digits"). Kinds run one after
 * another over the text, URLs first because a URL may hold an address or a
 * token; a placeholder like "[URL]" never matches a later kind. The bias is
 * towards keeping text: a date, a version number, a file name, a short hex
 * colour or an @handle stays as it is (tests/test_persona.c lists them).
 */
#include "rlhi/pipeline.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <string.h>

enum kind { K_URL, K_EMAIL, K_SECRET_KV, K_SECRET, K_PHONE, K_N };

static const char *const placeholder[K_N] = {
    "[URL]", "[EMAIL]", "[SECRET]", "[SECRET]", "[PHONE]",
};

static const char *const pattern[K_N] = {
    /* scheme URLs, and www. hosts without a scheme */
    "\\b(?:https?|ftp)://[^\\s<>\"'`]+|\\bwww\\.[a-z0-9-]+(?:\\.[a-z0-9-]+)+"
    "(?:[/?#][^\\s<>\"'`]*)?",
    /* local@domain.tld; a dotted domain with a 2+ letter TLD is required,
     * so "user@localhost" and "@handle" stay */
    "[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}\\b",
    /* "password: x", "api_key = 'x'": only the value (group 2) goes */
    "(?i)\\b(?:pass(?:word|wd)?|pwd|secret(?:[_ -]?key)?|api[_ -]?key|"
    "access[_ -]?token|auth[_ -]?token|token)\\b[\"']?\\s*[:=]\\s*"
    "([\"']?)([^\\s\"',;]{3,})\\1",
    /* well-known key shapes, then long hex and base64-looking tokens */
    "\\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|\\b(?:AKIA|ASIA)[0-9A-Z]{16}\\b"
    "|\\bgh[pousr]_[A-Za-z0-9]{30,}\\b|\\bxox[abprs]-[A-Za-z0-9-]{10,}"
    "|\\bAIza[0-9A-Za-z_-]{35}|\\b[0-9a-fA-F]{32,}\\b"
    /* JSON Web Tokens: base64url header "eyJ..." and payload */
    "|\\beyJ[A-Za-z0-9_-]{8,}\\.[A-Za-z0-9_-]{8,}(?:\\.[A-Za-z0-9_-]+)?"
    "|(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_-])",
    /* +CC groups; (NNN) NNN-NNNN and NNN-NNN-NNNN; 0NN NNNN NNNN */
    "(?<![\\w+])\\+\\d{1,3}(?:[ .-]?\\(?\\d{1,4}\\)?){2,5}(?![\\w])"
    "|(?<![\\w(])(?:\\(\\d{3}\\)\\s?|\\d{3}[-. ])\\d{3}[-. ]\\d{4}(?![\\w])"
    "|(?<![\\w])0\\d{2,4}[ -]\\d{3,4}[ -]?\\d{3,4}(?![\\w])",
};

static pcre2_code *code[K_N];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int compile_rc;

static void compile(void)
{
    for (int k = 0; k < K_N; k++) {
        int err;
        PCRE2_SIZE off;

        code[k] = pcre2_compile((PCRE2_SPTR)pattern[k], PCRE2_ZERO_TERMINATED,
                                0, &err, &off, NULL);
        if (!code[k]) {
            compile_rc = RLHI_EINVAL; /* a bug in the patterns above */
            return;
        }
        pcre2_jit_compile(code[k], PCRE2_JIT_COMPLETE);
    }
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i])
            return false;
    return true;
}

static int count_digits(const char *s, size_t n)
{
    int d = 0;

    for (size_t i = 0; i < n; i++)
        d += s[i] >= '0' && s[i] <= '9';
    return d;
}

/* Decides whether match [*a, *b) of kind k is redacted, and may narrow it
 * (ovector holds the groups). */
static bool accept(enum kind k, const char *s, size_t *a, size_t *b,
                   const PCRE2_SIZE *ov)
{
    size_t i, n = *b - *a;
    const char *p = s + *a;

    switch (k) {
    case K_URL:
        /* "see https://x.org/a." — the full stop ends the sentence; a
         * closing bracket with no opening one in the URL is prose. */
        while (*b > *a && strchr(".,;:!?)]}", s[*b - 1])) {
            char c = s[*b - 1];

            if ((c == ')' && memchr(p, '(', *b - *a)) ||
                (c == ']' && memchr(p, '[', *b - *a)))
                break;
            (*b)--;
        }
        return true;
    case K_SECRET_KV:
        *a = ov[4];
        *b = ov[5];
        /* "password: [SECRET]" again, or a placeholder: leave it. */
        return s[*a] != '[';
    case K_SECRET: {
        int up = 0, lo = 0, dg = 0, slash = 0;

        if (n >= 3 && (!memcmp(p, "sk-", 3) || !memcmp(p, "eyJ", 3) ||
                       !memcmp(p, "AKIA", 4) ||
                       !memcmp(p, "ASIA", 4) || !memcmp(p, "AIza", 4) ||
                       !memcmp(p, "xox", 3) || (p[0] == 'g' && p[1] == 'h' &&
                                               p[3] == '_')))
            return true;
        for (i = 0; i < n; i++) {
            up += p[i] >= 'A' && p[i] <= 'Z';
            lo += p[i] >= 'a' && p[i] <= 'z';
            dg += p[i] >= '0' && p[i] <= '9';
            slash += p[i] == '/';
        }
        /* A run of 32+ hex digits (a key, a digest) needs some digits, so
         * that a long all-letter word never goes. Otherwise base64-looking:
         * random tokens mix all three classes; identifiers and paths
         * ("snake_case_name_that_is_long", "/usr/lib/...") do not, or have
         * several slashes. */
        if (up + lo + dg == (int)n && is_hex(p, n))
            return dg >= 4;
        return up >= 2 && lo >= 2 && dg >= 2 && slash < 3;
    }
    case K_PHONE: {
        int d = count_digits(p, n);

        /* ITU E.164 numbers have at most 15 digits; under 8 is a code. */
        return d >= 8 && d <= 15;
    }
    default:
        return true;
    }
}

/* One pass of kind k from `in` into `out`; returns replacements or < 0. */
static int pass(enum kind k, const char *in, size_t n, struct rlhi_buf *out,
                pcre2_match_data *md)
{
    size_t pos = 0, from = 0;
    int count = 0;

    rlhi_buf_clear(out);
    while (from <= n) {
        PCRE2_SIZE *ov;
        size_t a, b;
        int r = pcre2_match(code[k], (PCRE2_SPTR)in, n, from, 0, md, NULL);

        if (r < 0)
            break; /* no match (or a resource limit: keep the text) */
        ov = pcre2_get_ovector_pointer(md);
        a = ov[0];
        b = ov[1];
        from = b > a ? b : b + 1;
        if (!accept(k, in, &a, &b, ov) || b <= a)
            continue;
        if (rlhi_buf_add(out, in + pos, a - pos) ||
            rlhi_buf_adds(out, placeholder[k]))
            return RLHI_ENOMEM;
        pos = b;
        count++;
    }
    if (rlhi_buf_add(out, in + pos, n - pos) || rlhi_buf_grow(out, 0))
        return RLHI_ENOMEM;
    return count;
}

int rlhi_redact(const char *in, size_t n, struct rlhi_buf *out)
{
    struct rlhi_buf tmp[2] = {RLHI_BUF_INIT, RLHI_BUF_INIT};
    pcre2_match_data *md;
    const char *src = in;
    size_t len = n;
    int k, r, total = 0, cur = 0;

    pthread_once(&once, compile);
    if (compile_rc)
        return rlhi_err(compile_rc, "cannot compile the redaction patterns");
    if (!(md = pcre2_match_data_create(8, NULL)))
        return rlhi_err(RLHI_ENOMEM, "cannot redact");
    for (k = 0; k < K_N; k++) {
        if ((r = pass((enum kind)k, src, len, &tmp[cur], md)) < 0)
            break;
        total += r;
        src = tmp[cur].buf;
        len = tmp[cur].len;
        cur ^= 1;
    }
    pcre2_match_data_free(md);
    if (r >= 0) {
        rlhi_buf_clear(out);
        r = rlhi_buf_add(out, src, len) || rlhi_buf_grow(out, 0)
                ? RLHI_ENOMEM : 0;
    }
    rlhi_buf_release(&tmp[0]);
    rlhi_buf_release(&tmp[1]);
    if (r < 0)
        return rlhi_err(RLHI_ENOMEM, "cannot redact");
    return total;
}
