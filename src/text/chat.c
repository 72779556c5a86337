/* Chat templates: the known Jinja layouts written out in C (see chat.h).
 *
 * Each renderer appends to the caller's buffer; on error the buffer is cut
 * back to its length on entry, so a failed render leaves nothing behind.
 * Spans are byte offsets into the buffer as a whole (not relative to where
 * this render started), because callers tokenize the whole buffer.
 */
#include "rlhi/chat.h"

#include <jansson.h>
#include <string.h>

/* Python's str.isspace() set, which Jinja's trim and str.strip() use:
 * ASCII \t\n\v\f\r, \x1c-\x1f and space, plus these code points. */
static bool is_py_space(unsigned cp)
{
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f))
        return true;
    switch (cp) {
    case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202f: case 0x205f: case 0x3000:
        return true;
    }
    return cp >= 0x2000 && cp <= 0x200a;
}

/* Decodes the UTF-8 character at s[0..n) into *cp; returns its length, or 0
 * for a malformed sequence (then it is not whitespace). */
static size_t utf8_dec(const unsigned char *s, size_t n, unsigned *cp)
{
    size_t len, i;
    unsigned c = s[0];

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xe0) == 0xc0)
        len = 2, c &= 0x1f;
    else if ((c & 0xf0) == 0xe0)
        len = 3, c &= 0x0f;
    else if ((c & 0xf8) == 0xf0)
        len = 4, c &= 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    *cp = c;
    return len;
}

/* Narrows [*b, *e) of s to Python's s.strip(). */
static void py_strip(const char *s, size_t *b, size_t *e)
{
    const unsigned char *u = (const unsigned char *)s;
    unsigned cp;
    size_t k;

    while (*b < *e && (k = utf8_dec(u + *b, *e - *b, &cp)) &&
           is_py_space(cp))
        *b += k;
    while (*b < *e) {
        /* Step back to the start of the last character. */
        size_t p = *e - 1;

        while (p > *b && (u[p] & 0xc0) == 0x80 && *e - p < 4)
            p--;
        k = utf8_dec(u + p, *e - p, &cp);
        if (!k || p + k != *e || !is_py_space(cp))
            break;
        *e = p;
    }
}

/* ---- names, markers, detection --------------------------------------- */

static const struct {
    enum rlhi_chat_kind kind;
    const char *name;
    const char *eot;
} kinds[] = {
    {RLHI_CHAT_LLAMA3, "llama3", "<|eot_id|>"},
    {RLHI_CHAT_LLAMA31, "llama3.1", "<|eot_id|>"},
    {RLHI_CHAT_LLAMA32, "llama3.2", "<|eot_id|>"},
    {RLHI_CHAT_CHATML, "chatml", "<|im_end|>"},
    {RLHI_CHAT_QWEN25, "qwen2.5", "<|im_end|>"},
    {RLHI_CHAT_QWEN3, "qwen3", "<|im_end|>"},
    {RLHI_CHAT_RLHI, "rlhi", "<|end|>"},
};
#define NKINDS (sizeof kinds / sizeof kinds[0])

const char *rlhi_chat_kind_name(enum rlhi_chat_kind kind)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (kinds[i].kind == kind)
            return kinds[i].name;
    return "unknown";
}

int rlhi_chat_kind_from_name(const char *name, enum rlhi_chat_kind *out)
{
    for (size_t i = 0; name && i < NKINDS; i++)
        if (!strcmp(kinds[i].name, name)) {
            *out = kinds[i].kind;
            return 0;
        }
    return rlhi_err(RLHI_ENOTFOUND, "unknown chat template '%s' (known: "
                    "llama3, llama3.1, llama3.2, chatml, qwen2.5, qwen3, "
                    "rlhi)", name ? name : "(null)");
}

const char *rlhi_chat_eot(enum rlhi_chat_kind kind)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (kinds[i].kind == kind)
            return kinds[i].eot;
    return NULL;
}

/* The comment on the first line is what rlhi_chat_template_detect() looks
 * for; the rest renders exactly what render_rlhi() writes (checked with
 * Jinja2 3.1.6 and transformers' settings). */
static const char rlhi_jinja[] =
    "{#- rlhi chat template v1 -#}\n"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif %}"
    "{%- if message['role'] == 'system' and not loop.first %}"
    "{{- raise_exception('the system message must come first') }}"
    "{%- endif %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + "
    "'<|end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|assistant|>\\n' }}"
    "{%- endif %}";

const char *rlhi_chat_rlhi_jinja(void)
{
    return rlhi_jinja;
}

int rlhi_chat_template_detect(const char *src, enum rlhi_chat_kind *out)
{
    char head[61];
    size_t i;

    if (!src)
        return rlhi_err(RLHI_EINVAL, "no chat template given");
    if (strstr(src, "rlhi chat template")) {
        *out = RLHI_CHAT_RLHI;
        return 0;
    }
    if (strstr(src, "<|im_start|>")) {
        /* Qwen3 parses reasoning out of assistant turns; Qwen2.5 injects
         * its default system prompt; anything else is plain ChatML. */
        if (strstr(src, "</think>") || strstr(src, "reasoning_content"))
            *out = RLHI_CHAT_QWEN3;
        else if (strstr(src, "You are Qwen, created by Alibaba Cloud"))
            *out = RLHI_CHAT_QWEN25;
        else
            *out = RLHI_CHAT_CHATML;
        return 0;
    }
    if (strstr(src, "<|start_header_id|>")) {
        /* 3.1/3.2/3.3 write the knowledge-cutoff system header; 3.2 alone
         * asks for strftime_now to date it. */
        if (!strstr(src, "Cutting Knowledge Date"))
            *out = RLHI_CHAT_LLAMA3;
        else if (strstr(src, "strftime_now"))
            *out = RLHI_CHAT_LLAMA32;
        else
            *out = RLHI_CHAT_LLAMA31;
        return 0;
    }
    for (i = 0; i < sizeof head - 1 && src[i]; i++)
        head[i] = src[i] == '\n' || src[i] == '\r' ? ' ' : src[i];
    head[i] = 0;
    return rlhi_err(RLHI_ENOTFOUND,
                    "unknown chat template '%s%s'\nhint: known layouts are "
                    "Llama-3, Llama-3.1/3.2/3.3, ChatML, Qwen2.5, Qwen3 and "
                    "rlhi; choose one by name instead", head,
                    src[i] ? "..." : "");
}

/* Takes the template text out of tokenizer_config.json's chat_template
 * value: a string, or a list of {name, template} holding "default". */
static const char *config_template(json_t *v)
{
    size_t i;
    json_t *e;

    if (json_is_string(v))
        return json_string_value(v);
    if (!json_is_array(v))
        return NULL;
    json_array_foreach(v, i, e) {
        json_t *name = json_object_get(e, "name");
        json_t *tpl = json_object_get(e, "template");

        if (json_is_string(name) && json_is_string(tpl) &&
            !strcmp(json_string_value(name), "default"))
            return json_string_value(tpl);
    }
    return NULL;
}

int rlhi_chat_template_from_dir(const char *dir, enum rlhi_chat_kind *out)
{
    char *cfg = rlhi_path_join(dir, "tokenizer_config.json");
    char *alt = rlhi_path_join(dir, "chat_template.jinja");
    json_t *root = NULL;
    json_error_t jerr;
    const char *tpl = NULL;
    char *text = NULL;
    size_t len;
    int result;

    if (!cfg || !alt) {
        result = rlhi_err(RLHI_ENOMEM, "out of memory");
        goto out;
    }
    if (rlhi_path_exists(cfg)) {
        /* INT_AS_REAL: Llama-3's model_max_length is 1e30 written as an
         * integer, which overflows jansson's json_int_t otherwise. */
        root = json_load_file(cfg, JSON_DECODE_INT_AS_REAL, &jerr);
        if (!root) {
            result = rlhi_err(RLHI_EFORMAT, "cannot parse '%s': line %d: %s",
                              cfg, jerr.line, jerr.text);
            goto out;
        }
        tpl = config_template(json_object_get(root, "chat_template"));
    }
    if (!tpl && rlhi_path_exists(alt)) {
        result = rlhi_file_read(alt, &text, &len);
        if (result)
            goto out;
        tpl = text;
    }
    if (!tpl) {
        result = rlhi_err(RLHI_ENOTFOUND, "no chat_template in '%s' and no "
                          "'%s'", cfg, alt);
        goto out;
    }
    result = rlhi_chat_template_detect(tpl, out);
    if (result)
        rlhi_err_prefix(result, "'%s'", root ? cfg : alt);
out:
    json_decref(root);
    rlhi_free(text);
    rlhi_free(cfg);
    rlhi_free(alt);
    return result;
}

/* ---- rendering ------------------------------------------------------- */

/* One render in progress: the output, where it started, the spans. */
struct render {
    struct rlhi_buf *out;
    struct rlhi_chat_span *spans;
    size_t nspans;
    int err; /* first allocation failure, kept so steps can chain */
};

static void put(struct render *r, const char *s, size_t n)
{
    if (!r->err && rlhi_buf_add(r->out, s, n))
        r->err = RLHI_ENOMEM;
}

static void puts_(struct render *r, const char *s)
{
    put(r, s, strlen(s));
}

static void span_open(struct render *r, size_t msg)
{
    if (r->spans) {
        r->spans[r->nspans].msg = msg;
        r->spans[r->nspans].start = r->out->len;
    }
}

/* Closes the current span around the end-of-turn marker `eot`. */
static void span_close(struct render *r, const char *eot)
{
    if (r->spans)
        r->spans[r->nspans].end = r->out->len;
    puts_(r, eot);
    if (r->spans)
        r->spans[r->nspans].eot_end = r->out->len;
    r->nspans++;
}

static bool is_role(const char *role)
{
    return !strcmp(role, "system") || !strcmp(role, "user") ||
           !strcmp(role, "assistant");
}

static bool is_asst(const struct rlhi_chat_msg *m)
{
    return !strcmp(m->role, "assistant");
}

static const char *rlhi_markers[] = {"<|system|>", "<|user|>",
                                     "<|assistant|>", "<|end|>",
                                     "<|endoftext|>"};

/* Checks what every layout needs, and the rlhi layout's own rules. */
static int validate(enum rlhi_chat_kind kind, const struct rlhi_chat_msg *m,
                    size_t n)
{
    const char *name = rlhi_chat_kind_name(kind);

    for (size_t i = 0; i < n; i++) {
        if (!m[i].role)
            return rlhi_err(RLHI_EINVAL, "message %zu: no role", i);
        if (!m[i].content)
            return rlhi_err(RLHI_EINVAL, "message %zu ('%s'): no content", i,
                            m[i].role);
        if (!is_role(m[i].role))
            return rlhi_err(RLHI_EINVAL, "message %zu: unknown role '%s' "
                            "for chat template '%s' (expected system, user "
                            "or assistant)", i, m[i].role, name);
        if (kind != RLHI_CHAT_RLHI)
            continue;
        if (i > 0 && !strcmp(m[i].role, "system"))
            return rlhi_err(RLHI_EINVAL, "message %zu: the system message "
                            "must be the first for chat template 'rlhi'", i);
        for (size_t k = 0; k < sizeof rlhi_markers / sizeof *rlhi_markers;
             k++)
            if (strstr(m[i].content, rlhi_markers[k]))
                return rlhi_err(RLHI_EINVAL, "message %zu ('%s'): content "
                                "holds the marker '%s' of chat template "
                                "'rlhi'", i, m[i].role, rlhi_markers[k]);
    }
    return 0;
}

/* One Llama-3 turn: header, trimmed content, <|eot_id|>. */
static void llama_turn(struct render *r, const struct rlhi_chat_msg *m,
                       size_t idx)
{
    size_t b = 0, e = strlen(m->content);

    puts_(r, "<|start_header_id|>");
    puts_(r, m->role);
    puts_(r, "<|end_header_id|>\n\n");
    py_strip(m->content, &b, &e);
    if (is_asst(m)) {
        span_open(r, idx);
        put(r, m->content + b, e - b);
        span_close(r, "<|eot_id|>");
    } else {
        put(r, m->content + b, e - b);
        puts_(r, "<|eot_id|>");
    }
}

static void render_llama(struct render *r, enum rlhi_chat_kind kind,
                         const struct rlhi_chat_msg *m, size_t n,
                         const struct rlhi_chat_options *o)
{
    size_t i = 0;
    const char *bos = o->bos_token;

    if (!bos)
        bos = kind == RLHI_CHAT_LLAMA3 ? "" : "<|begin_of_text|>";
    puts_(r, bos);
    if (kind != RLHI_CHAT_LLAMA3) {
        size_t b = 0, e = 0;

        /* The system header is always written; a leading system message
         * fills it and leaves the loop. */
        puts_(r, "<|start_header_id|>system<|end_header_id|>\n\n"
                 "Cutting Knowledge Date: December 2023\nToday Date: ");
        puts_(r, o->date ? o->date : "26 Jul 2024");
        puts_(r, "\n\n");
        if (n && !strcmp(m[0].role, "system")) {
            e = strlen(m[0].content);
            py_strip(m[0].content, &b, &e);
            put(r, m[0].content + b, e - b);
            i = 1;
        }
        puts_(r, "<|eot_id|>");
    }
    for (; i < n; i++)
        llama_turn(r, m + i, i);
    if (o->add_generation_prompt)
        puts_(r, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* True when s begins with `p` / ends with `p`. */
static bool starts(const char *s, size_t n, const char *p)
{
    size_t k = strlen(p);

    return n >= k && !memcmp(s, p, k);
}

static bool ends(const char *s, size_t n, const char *p)
{
    size_t k = strlen(p);

    return n >= k && !memcmp(s + n - k, p, k);
}

/* Finds the first / last occurrence of `p` in s[0..n); NULL when absent. */
static const char *find_first(const char *s, size_t n, const char *p)
{
    return memmem(s, n, p, strlen(p));
}

static const char *find_last(const char *s, size_t n, const char *p)
{
    const char *hit = NULL, *q;
    size_t k = strlen(p);

    while ((q = memmem(s, n, p, k))) {
        hit = q;
        n -= (size_t)(q + 1 - s);
        s = q + 1;
    }
    return hit;
}

/* Python's lstrip('\n') / rstrip('\n') / strip('\n') on [*b, *e). */
static void lstrip_nl(const char *s, size_t *b, size_t e)
{
    while (*b < e && s[*b] == '\n')
        (*b)++;
}

static void rstrip_nl(const char *s, size_t b, size_t *e)
{
    while (*e > b && s[*e - 1] == '\n')
        (*e)--;
}

/* A Qwen3 assistant turn. The template splits content at "</think>":
 * content = text after the last "</think>", lstrip('\n'); reasoning = text
 * before the first "</think>", rstrip('\n'), after its last "<think>",
 * lstrip('\n'). Turns after the last user query that are the last message
 * or carry reasoning are written with a think block. */
static void qwen3_assistant(struct render *r, const struct rlhi_chat_msg *m,
                            size_t idx, bool last, bool after_query)
{
    const char *s = m->content;
    size_t n = strlen(s), cb = 0, ce = n, rb = 0, re = 0;
    const char *close = find_first(s, n, "</think>");

    if (close) {
        const char *lc = find_last(s, n, "</think>"), *open;

        cb = (size_t)(lc - s) + 8;
        lstrip_nl(s, &cb, ce);
        re = (size_t)(close - s);
        rstrip_nl(s, 0, &re);
        open = find_last(s, re, "<think>");
        rb = open ? (size_t)(open - s) + 7 : 0;
        lstrip_nl(s, &rb, re);
    }
    puts_(r, "<|im_start|>assistant\n");
    span_open(r, idx);
    if (after_query && (last || re > rb)) {
        lstrip_nl(s, &rb, re);
        rstrip_nl(s, rb, &re);
        puts_(r, "<think>\n");
        put(r, s + rb, re - rb);
        puts_(r, "\n</think>\n\n");
        lstrip_nl(s, &cb, ce);
    }
    put(r, s + cb, ce - cb);
    span_close(r, "<|im_end|>");
    puts_(r, "\n");
}

static void render_chatml(struct render *r, enum rlhi_chat_kind kind,
                          const struct rlhi_chat_msg *m, size_t n,
                          const struct rlhi_chat_options *o)
{
    size_t i, last_query = n ? n - 1 : 0;

    if (kind == RLHI_CHAT_QWEN25 && (n == 0 || strcmp(m[0].role, "system")))
        puts_(r, "<|im_start|>system\nYou are Qwen, created by Alibaba "
                 "Cloud. You are a helpful assistant.<|im_end|>\n");

    /* Qwen3: the last user message that is not a tool response. */
    for (i = n; kind == RLHI_CHAT_QWEN3 && i-- > 0;) {
        const char *c = m[i].content;
        size_t len = strlen(c);

        if (!strcmp(m[i].role, "user") &&
            !(starts(c, len, "<tool_response>") &&
              ends(c, len, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }

    for (i = 0; i < n; i++) {
        if (kind == RLHI_CHAT_QWEN3 && is_asst(m + i)) {
            qwen3_assistant(r, m + i, i, i + 1 == n, i > last_query);
            continue;
        }
        puts_(r, "<|im_start|>");
        puts_(r, m[i].role);
        puts_(r, "\n");
        if (is_asst(m + i)) {
            span_open(r, i);
            puts_(r, m[i].content);
            span_close(r, "<|im_end|>");
        } else {
            puts_(r, m[i].content);
            puts_(r, "<|im_end|>");
        }
        puts_(r, "\n");
    }
    if (o->add_generation_prompt) {
        puts_(r, "<|im_start|>assistant\n");
        if (kind == RLHI_CHAT_QWEN3 && o->no_thinking)
            puts_(r, "<think>\n\n</think>\n\n");
    }
}

static void render_rlhi(struct render *r, const struct rlhi_chat_msg *m,
                        size_t n, const struct rlhi_chat_options *o)
{
    for (size_t i = 0; i < n; i++) {
        puts_(r, "<|");
        puts_(r, m[i].role);
        puts_(r, "|>\n");
        if (is_asst(m + i)) {
            span_open(r, i);
            puts_(r, m[i].content);
            span_close(r, "<|end|>");
        } else {
            puts_(r, m[i].content);
            puts_(r, "<|end|>");
        }
        puts_(r, "\n");
    }
    if (o->add_generation_prompt)
        puts_(r, "<|assistant|>\n");
}

int rlhi_chat_render(enum rlhi_chat_kind kind, const struct rlhi_chat_msg *msgs,
                     size_t n, const struct rlhi_chat_options *opt,
                     struct rlhi_buf *out, struct rlhi_chat_span *spans,
                     size_t *nspans)
{
    static const struct rlhi_chat_options defaults;
    struct render r = {out, spans, 0, 0};
    size_t len0 = out->len;
    int result;

    if (!opt)
        opt = &defaults;
    if (!rlhi_chat_eot(kind))
        return rlhi_err(RLHI_EINVAL, "unknown chat template kind %d",
                        (int)kind);
    if (n && !msgs)
        return rlhi_err(RLHI_EINVAL, "no messages given");
    result = validate(kind, msgs, n);
    if (result)
        return result;

    switch (kind) {
    case RLHI_CHAT_LLAMA3:
    case RLHI_CHAT_LLAMA31:
    case RLHI_CHAT_LLAMA32:
        render_llama(&r, kind, msgs, n, opt);
        break;
    case RLHI_CHAT_CHATML:
    case RLHI_CHAT_QWEN25:
    case RLHI_CHAT_QWEN3:
        render_chatml(&r, kind, msgs, n, opt);
        break;
    case RLHI_CHAT_RLHI:
        render_rlhi(&r, msgs, n, opt);
        break;
    }
    if (r.err) {
        out->len = len0;
        if (out->buf)
            out->buf[len0] = 0;
        return rlhi_err(RLHI_ENOMEM, "cannot render chat: out of memory");
    }
    if (nspans)
        *nspans = r.nspans;
    return 0;
}

/* ---- parsing the rlhi layout ----------------------------------------- */

int rlhi_chat_parse(enum rlhi_chat_kind kind, const char *text, size_t len,
                    struct rlhi_chat_msg **msgs, size_t *n, bool *open_turn)
{
    static const char *roles[] = {"system", "user", "assistant"};
    size_t pos = 0, count = 0, k, bytes = 0, pass;
    struct rlhi_chat_msg *m = NULL;
    char *store = NULL;
    bool open = false;

    if (kind != RLHI_CHAT_RLHI)
        return rlhi_err(RLHI_ENOTIMPL, "not implemented: parsing chat "
                        "template '%s'", rlhi_chat_kind_name(kind));

    /* Two passes over the same code: the first counts messages and bytes,
     * the second fills one allocation holding the array and the strings. */
    for (pass = 0; pass < 2; pass++) {
        pos = 0;
        count = 0;
        open = false;
        while (pos < len) {
            const char *role = NULL, *end;
            size_t body, blen;
            char hdr[24];

            for (k = 0; k < 3 && !role; k++) {
                snprintf(hdr, sizeof hdr, "<|%s|>\n", roles[k]);
                if (starts(text + pos, len - pos, hdr))
                    role = roles[k];
            }
            if (!role) {
                rlhi_free(m);
                return rlhi_err(RLHI_EFORMAT, "cannot parse chat text: byte "
                                "%zu: expected '<|system|>', '<|user|>' or "
                                "'<|assistant|>' and a newline", pos);
            }
            body = pos + strlen(hdr);
            end = find_first(text + body, len - body, "<|end|>");
            if (!end && strcmp(role, "assistant")) {
                rlhi_free(m);
                return rlhi_err(RLHI_EFORMAT, "cannot parse chat text: byte "
                                "%zu: the %s turn has no '<|end|>'", pos,
                                role);
            }
            blen = end ? (size_t)(end - (text + body)) : len - body;
            if (pass == 1) {
                m[count].role = role;
                memcpy(store, text + body, blen);
                store[blen] = 0;
                m[count].content = store;
                store += blen + 1;
            }
            bytes += blen + 1;
            count++;
            if (!end) {
                open = true;
                break;
            }
            pos = body + blen + 7;
            if (pos < len && text[pos] == '\n')
                pos++;
            else if (pos < len) {
                rlhi_free(m);
                return rlhi_err(RLHI_EFORMAT, "cannot parse chat text: byte "
                                "%zu: expected a newline after '<|end|>'",
                                pos);
            }
        }
        if (pass == 0) {
            m = rlhi_malloc(count * sizeof *m + bytes);
            if (!m)
                return rlhi_err(RLHI_ENOMEM, "cannot parse chat text: out "
                                "of memory");
            store = (char *)(m + count);
        }
    }
    *msgs = m;
    *n = count;
    if (open_turn)
        *open_turn = open;
    return 0;
}
