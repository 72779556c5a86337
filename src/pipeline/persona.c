/* Personas: a user's stable preferences from their whole history.
 *
 * Four dimensions (the paper's: expertise, informativeness, tone,
 * structure), each "no signal" or one of two values. Evidence comes in
 * three strengths, scored per message and summed over the history:
 *
 *   explicit feedback  a phrase in a turn labelled reattempt_feedback, or
 *                      a phrase that can only be a preference ("shorter",
 *                      "explain like I'm new", "less formal")       6 points
 *   request wording    "in detail", "briefly", "as a list", "for a
 *                      beginner" inside an ordinary request           3 points
 *   own writing        technical vocabulary, slang, careful prose;
 *                      1 point a message, at most 4 per value         1 point
 *
 * A value is chosen when it has at least 3 points and leads the other
 * value by at least 2 (so one stray "briefly" against a history of "in
 * detail" stays undecided). The evidence kept is the strongest few items
 * (message id, phrase, signal) for the chosen value, or for both when
 * undecided. The text is built from the values, e.g. "Prefers
 * expert-level, concise answers in a formal tone, structured as lists."
 *
 * A persona is stored with the SHA-256 of the history it came from (user
 * messages, their feedback labels, the redaction setting and the rules'
 * version), and is recomputed only when that hash changes.
 */
#include "rlhi/pipeline.h"
#include "persona_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Bump when the rules change, so stored personas are recomputed. */
#define RULES_VERSION "persona-builtin-1"

static const char *const dim_names[RLHI_DIM_N] = {
    "expertise", "informativeness", "tone", "structure",
};
static const char *const dim_values[RLHI_DIM_N][2] = {
    {"expert", "novice"},
    {"detailed", "concise"},
    {"formal", "casual"},
    {"structured", "prose"},
};
#define NO_SIGNAL "no signal"

const char *rlhi_persona_dim_name(int dim)
{
    return dim >= 0 && dim < RLHI_DIM_N ? dim_names[dim] : "?";
}

enum strength { S_STYLE = 1, S_REQUEST = 3, S_EXPLICIT = 6 };

static const char *strength_name(int s)
{
    return s == S_EXPLICIT ? "explicit feedback"
           : s == S_REQUEST ? "request wording" : "own writing";
}

/* One cue: a pattern over lower-cased text that points a dimension one
 * way. `strength` is for an ordinary message; a cue marked `pref` is
 * explicit whatever the label, and any cue in a reattempt_feedback turn
 * counts as explicit. */
struct cue {
    int dim, value; /* value 0 or 1: index into dim_values */
    bool pref;
    const char *re;
};

static const struct cue cues[] = {
    /* expertise */
    {RLHI_DIM_EXPERTISE, 0, true,
     "\\bmore (?:technical|advanced|in-depth|rigorous)\\b|\\bless "
     "(?:simple|basic)\\b|\\btoo (?:simple|basic|simplistic)\\b|"
     "\\bskip the basics\\b|\\b(?:don't|do not) explain the basics\\b|"
     "\\bi(?:'m| am) an? (?:expert|professional|senior|experienced)\\b|"
     "\\bi(?:'m| am) an? (?:\\w+ )?(?:developer|engineer|programmer|"
     "researcher|scientist|physician|doctor|lawyer|professor|phd)\\b"},
    {RLHI_DIM_EXPERTISE, 0, false,
     "\\b(?:technical details?|formal proof|time complexity|big-o|"
     "asymptotic|implementation details|under the hood|internals|"
     "edge cases|trade-?offs|benchmark|rigorous|derivation)\\b"},
    {RLHI_DIM_EXPERTISE, 1, true,
     "\\b(?:like|as if) (?:i'?m|i am|to) (?:new|a beginner|five|5|a child|"
     "a kid|a \\d+|\\d+|a layman|a non-?expert|someone new)|\\beli5\\b|"
     "\\bless technical\\b|\\btoo (?:technical|complicated|complex|"
     "advanced)\\b|\\bsimpler\\b|\\bi (?:don't|do not|didn't) "
     "understand\\b|\\bi(?:'m| am) (?:new to|a beginner|not a "
     "(?:programmer|developer|expert|native)|not familiar)|"
     "\\bwithout (?:jargon|technical terms)\\b"},
    {RLHI_DIM_EXPERTISE, 1, false,
     "\\b(?:in (?:simple|plain|layman'?s?|easy) (?:terms|words|english|"
     "language)|for (?:a )?(?:beginners?|dummies|kids|children|"
     "non-?experts?)|beginner(?:-friendly)?|what does \\w+ mean|"
     "basics of|simple explanation)\\b"},
    /* informativeness */
    {RLHI_DIM_INFORMATIVENESS, 0, true,
     "\\b(?:more (?:detail(?:s|ed)?|in-depth|thorough|comprehensive|"
     "examples)|too (?:short|brief|vague|general|shallow)|longer|"
     "elaborate|expand on|go deeper|in more (?:detail|depth))\\b"},
    {RLHI_DIM_INFORMATIVENESS, 0, false,
     "\\b(?:in (?:great |full )?detail|detailed|comprehensive|thorough|"
     "in-depth|in depth|step[- ]by[- ]step|extensive|at least (?:[3-9]\\d\\d|"
     "\\d{4,}) words|(?:[5-9]\\d\\d|\\d{4,}) words|long (?:essay|answer|"
     "article|story)|explain everything|all the details)\\b"},
    {RLHI_DIM_INFORMATIVENESS, 1, true,
     "\\b(?:shorter|too (?:long|wordy|verbose|detailed|long-winded)|"
     "more (?:concise|brief)|less (?:wordy|verbose|detailed|text)|"
     "(?:just|only) (?:the (?:answer|code|result|key points|main points|"
     "number)|give me the answer)|no (?:explanations?|need to explain)|"
     "without (?:explanations?|the explanation)|get to the point|"
     "tl;?dr)\\b"},
    {RLHI_DIM_INFORMATIVENESS, 1, false,
     "\\b(?:briefly|brief|concise(?:ly)?|short (?:answer|summary|"
     "version|description|reply|response)|in (?:one|a single|two|2|1) "
     "(?:sentence|line|paragraph|word)s?|(?:under|less than|fewer than|"
     "no more than|at most|max(?:imum)?) (?:\\d{1,2}|1\\d\\d) words|"
     "summari[sz]e|in a nutshell|quick(?:ly)? (?:answer|summary|"
     "question))\\b"},
    /* tone */
    {RLHI_DIM_TONE, 0, true,
     "\\b(?:more (?:formal|professional|polite|serious|academic)|"
     "less (?:casual|informal|friendly|slang)|too (?:casual|informal|"
     "friendly|silly|playful)|(?:no|without|don't use) (?:emojis?|"
     "slang|jokes))\\b"},
    {RLHI_DIM_TONE, 0, false,
     "\\b(?:formal(?:ly)?|professional(?:ly)?|academic (?:tone|style|"
     "writing)|business (?:email|letter|tone)|official|polite(?:ly)?|"
     "respectful(?:ly)?)\\b"},
    {RLHI_DIM_TONE, 1, true,
     "\\b(?:more (?:casual|informal|friendly|fun|funny|relaxed|"
     "conversational|human|natural)|less (?:formal|professional|stiff|"
     "robotic|serious)|too (?:formal|stiff|robotic|serious|"
     "professional))\\b"},
    {RLHI_DIM_TONE, 1, false,
     "\\b(?:casual(?:ly)?|informal|friendly tone|fun(?:ny)? (?:tone|"
     "way|style)|humou?rous|conversational|playful|with emojis|"
     "like a friend)\\b"},
    /* structure */
    {RLHI_DIM_STRUCTURE, 0, true,
     "\\b(?:(?:in|as|into|use) (?:a )?(?:list|table|bullet(?:ed)? "
     "(?:points?|list)|bullets|numbered list|headings|sections)|"
     "(?:put|format|organi[sz]e|break) (?:it|this|that|them) "
     "(?:in|into|as)|more (?:structured|organi[sz]ed))\\b"},
    {RLHI_DIM_STRUCTURE, 0, false,
     "\\b(?:list (?:of|all|the|\\d+)|table|bullet points?|step[- ]by[- ]"
     "step|numbered|outline|checklist|in points|json|markdown|"
     "headings|\\d+ (?:steps|tips|ways|points|ideas|reasons))\\b"},
    {RLHI_DIM_STRUCTURE, 1, true,
     "\\b(?:(?:no|without|don't use|do not use|stop using|fewer) "
     "(?:lists?|bullet(?:s| points?)|tables|headings)|(?:in|as) "
     "(?:a )?(?:paragraph|prose|flowing text|essay form|full "
     "sentences)|less (?:structured|listy))\\b"},
    {RLHI_DIM_STRUCTURE, 1, false,
     "\\b(?:in paragraphs?|essay|narrative|story|prose|letter|"
     "paragraph form|one paragraph)\\b"},
};
#define NCUES (sizeof cues / sizeof cues[0])

/* Own-writing signals, matched per message (1 point each). */
static const char *const re_technical =
    "\\b(?:algorithm|api|async|backend|big-o|bytecode|cache|compiler|"
    "complexity|concurrency|container|cuda|database|derivative|docker|"
    "eigen\\w*|endpoint|gradient|hash(?:map|ing)?|heap|integral|kernel|"
    "kubernetes|latency|matrix|mutex|pointer|polynomial|recursion|"
    "regex|regression|runtime|schema|semaphore|stack trace|theorem|"
    "thread|tensor|throughput|vector|variance|webhook|jwt|oauth|tcp|"
    "sql|npm|pip|git|linux|react|pytorch|numpy|pandas|json|yaml)\\b|```";
static const char *const re_slang =
    "\\b(?:lol|lmao|rofl|haha+|hehe|omg|wtf|bro|dude|gonna|wanna|gotta|"
    "kinda|sorta|ya|yo|pls|plz|thx|u|ur|r u|idk|imo|tbh|btw|nah|yeah|"
    "yep|cool|awesome|lit)\\b|[:;]-?[)dp]\\b|!!+|\\xf0\\x9f";

struct compiled {
    pcre2_code *cue[NCUES];
    pcre2_code *technical, *slang;
    int rc;
};

static struct compiled C;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static pcre2_code *comp(const char *re)
{
    int err;
    PCRE2_SIZE off;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, 0,
                                  &err, &off, NULL);

    if (c)
        pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
    else
        C.rc = RLHI_EINVAL; /* a bug in the patterns above */
    return c;
}

static void compile_all(void)
{
    for (size_t i = 0; i < NCUES; i++)
        C.cue[i] = comp(cues[i].re);
    C.technical = comp(re_technical);
    C.slang = comp(re_slang);
}

/* ---- deriving ---------------------------------------------------------- */

struct ev {
    int points, value;
    size_t msg;
    char phrase[96];
};

/* Evidence items kept per dimension while scanning; the strongest win. */
#define MAX_EV 64
/* Items written out per dimension. */
#define OUT_EV 5

struct dimstate {
    int score[2];
    int style[2]; /* own-writing points, capped */
    struct ev ev[MAX_EV];
    int nev;
};

static void add_ev(struct dimstate *ds, int value, int points, size_t msg,
                   const char *s, size_t a, size_t b)
{
    struct ev *e;

    ds->score[value] += points;
    if (ds->nev < MAX_EV) {
        e = &ds->ev[ds->nev++];
    } else {
        /* replace the weakest item if this one is stronger */
        int w = 0;

        for (int i = 1; i < MAX_EV; i++)
            if (ds->ev[i].points < ds->ev[w].points)
                w = i;
        if (ds->ev[w].points >= points)
            return;
        e = &ds->ev[w];
    }
    e->points = points;
    e->value = value;
    e->msg = msg;
    if (b - a >= sizeof e->phrase)
        b = a + sizeof e->phrase - 1;
    /* never cut a UTF-8 character in two: back off continuation bytes */
    while (b > a && ((unsigned char)s[b] & 0xc0) == 0x80)
        b--;
    memcpy(e->phrase, s + a, b - a);
    e->phrase[b - a] = 0;
}

/* Lower-cases ASCII into `b`, capped at 8 KiB: preferences are stated in
 * the first lines of a message, and pasted documents would only add noise
 * and time. */
#define MSG_CAP 8192
static int lower(struct rlhi_buf *b, const char *s)
{
    size_t n = strlen(s);

    if (n > MSG_CAP)
        n = MSG_CAP;
    rlhi_buf_clear(b);
    if (rlhi_buf_add(b, s, n) || rlhi_buf_grow(b, 0))
        return RLHI_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (b->buf[i] >= 'A' && b->buf[i] <= 'Z')
            b->buf[i] = (char)(b->buf[i] + 32);
    return 0;
}

/* Careful writing: 12+ words, starts with a capital, ends with . ? or !,
 * no slang. A weak hint of a formal register. */
static bool careful(const char *orig, size_t words)
{
    size_t n = strlen(orig);

    while (n && (orig[n - 1] == ' ' || orig[n - 1] == '\n'))
        n--;
    return words >= 12 && orig[0] >= 'A' && orig[0] <= 'Z' && n &&
           strchr(".?!", orig[n - 1]);
}

static int evidence_json(struct rlhi_buf *out, const struct dimstate *ds,
                         int chosen, const struct rlhi_persona_msg *msgs,
                         bool redact, int dim)
{
    bool used[MAX_EV] = {false};
    struct rlhi_buf red = RLHI_BUF_INIT;
    int k, rc = 0;

    rc |= rlhi_buf_addc(out, '[');
    for (k = 0; k < OUT_EV && !rc; k++) {
        int best = -1;
        const char *phrase;

        for (int i = 0; i < ds->nev; i++)
            if (!used[i] && (chosen < 0 || ds->ev[i].value == chosen) &&
                (best < 0 || ds->ev[i].points > ds->ev[best].points))
                best = i;
        if (best < 0)
            break;
        used[best] = true;
        phrase = ds->ev[best].phrase;
        if (redact) {
            if (rlhi_redact(phrase, strlen(phrase), &red) < 0) {
                rc = RLHI_ENOMEM;
                break;
            }
            phrase = red.buf;
        }
        rc |= rlhi_buf_adds(out, k ? ", {\"message\": " : "{\"message\": ");
        rc |= rlhi_buf_add_json_str(out, msgs[ds->ev[best].msg].id,
                                    strlen(msgs[ds->ev[best].msg].id));
        rc |= rlhi_buf_adds(out, ", \"phrase\": ");
        rc |= rlhi_buf_add_json_str(out, phrase, strlen(phrase));
        rc |= rlhi_buf_addf(out, ", \"signal\": \"%s\", \"value\": \"%s\"}",
                            strength_name(ds->ev[best].points),
                            dim_values[dim][ds->ev[best].value]);
    }
    rc |= rlhi_buf_addc(out, ']');
    rlhi_buf_release(&red);
    return rc ? RLHI_ENOMEM : 0;
}

static int persona_text(struct rlhi_buf *b, const struct rlhi_persona *p)
{
    const char *adj[2];
    int na = 0, rc = 0;
    bool any = false;

    if (!strcmp(p->value[RLHI_DIM_EXPERTISE], "expert"))
        adj[na++] = "expert-level";
    else if (!strcmp(p->value[RLHI_DIM_EXPERTISE], "novice"))
        adj[na++] = "beginner-friendly";
    if (strcmp(p->value[RLHI_DIM_INFORMATIVENESS], NO_SIGNAL))
        adj[na++] = p->value[RLHI_DIM_INFORMATIVENESS];

    rc |= rlhi_buf_adds(b, "Prefers ");
    if (na) {
        rc |= rlhi_buf_adds(b, adj[0]);
        if (na == 2)
            rc |= rlhi_buf_addf(b, ", %s", adj[1]);
        rc |= rlhi_buf_adds(b, " answers");
        any = true;
    } else {
        rc |= rlhi_buf_adds(b, "answers");
    }
    if (strcmp(p->value[RLHI_DIM_TONE], NO_SIGNAL)) {
        rc |= rlhi_buf_addf(b, " in a %s tone", p->value[RLHI_DIM_TONE]);
        any = true;
    }
    if (!strcmp(p->value[RLHI_DIM_STRUCTURE], "structured")) {
        rc |= rlhi_buf_adds(b, ", structured as lists or tables");
        any = true;
    } else if (!strcmp(p->value[RLHI_DIM_STRUCTURE], "prose")) {
        rc |= rlhi_buf_adds(b, ", written as flowing prose");
        any = true;
    }
    rc |= rlhi_buf_addc(b, '.');
    if (!any) {
        rlhi_buf_clear(b);
        rc |= rlhi_buf_adds(b, "No clear preferences yet.");
    }
    return rc ? RLHI_ENOMEM : 0;
}

void rlhi_persona_release(struct rlhi_persona *p)
{
    for (int i = 0; i < RLHI_DIM_N; i++) {
        rlhi_free(p->evidence[i]);
        p->evidence[i] = NULL;
    }
    rlhi_free(p->text);
    p->text = NULL;
}

int rlhi_persona_derive(const struct rlhi_persona_msg *msgs, size_t n,
                        bool redact, struct rlhi_persona *out)
{
    struct dimstate *ds = rlhi_calloc(RLHI_DIM_N, sizeof *ds);
    struct rlhi_buf low = RLHI_BUF_INIT, tb = RLHI_BUF_INIT;
    pcre2_match_data *md = pcre2_match_data_create(2, NULL);
    int rc = 0, d;

    memset(out, 0, sizeof *out);
    pthread_once(&once, compile_all);
    if (C.rc) {
        rc = rlhi_err(C.rc, "cannot compile the persona patterns");
        goto out;
    }
    if (!ds || !md) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot derive a persona");
        goto out;
    }

    for (size_t m = 0; m < n; m++) {
        bool fb = msgs[m].label && !strcmp(msgs[m].label,
                                           "reattempt_feedback");
        size_t words = 1;
        const char *t;
        PCRE2_SIZE *ov;

        if ((rc = lower(&low, msgs[m].text)))
            goto nomem;
        t = low.buf;
        for (size_t i = 0; i < low.len; i++)
            words += t[i] == ' ';

        /* Cues: every match counts, each at its strength. */
        for (size_t c = 0; c < NCUES; c++) {
            size_t from = 0;
            int pts = fb || cues[c].pref ? S_EXPLICIT : S_REQUEST;

            while (from < low.len &&
                   pcre2_match(C.cue[c], (PCRE2_SPTR)t, low.len, from, 0,
                               md, NULL) >= 0) {
                ov = pcre2_get_ovector_pointer(md);
                add_ev(&ds[cues[c].dim], cues[c].value, pts, m, t, ov[0],
                       ov[1]);
                from = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
            }
        }

        /* Own writing: technical vocabulary, slang, careful prose. */
        if (pcre2_match(C.technical, (PCRE2_SPTR)t, low.len, 0, 0, md,
                        NULL) >= 0 && ds[RLHI_DIM_EXPERTISE].style[0] < 4) {
            ov = pcre2_get_ovector_pointer(md);
            ds[RLHI_DIM_EXPERTISE].style[0]++;
            add_ev(&ds[RLHI_DIM_EXPERTISE], 0, S_STYLE, m, t, ov[0], ov[1]);
        }
        if (pcre2_match(C.slang, (PCRE2_SPTR)t, low.len, 0, 0, md, NULL) >=
            0) {
            ov = pcre2_get_ovector_pointer(md);
            if (ds[RLHI_DIM_TONE].style[1] < 4) {
                ds[RLHI_DIM_TONE].style[1]++;
                add_ev(&ds[RLHI_DIM_TONE], 1, S_STYLE, m, t, ov[0], ov[1]);
            }
        } else if (careful(msgs[m].text, words) &&
                   ds[RLHI_DIM_TONE].style[0] < 4) {
            ds[RLHI_DIM_TONE].style[0]++;
            add_ev(&ds[RLHI_DIM_TONE], 0, S_STYLE, m, t, 0,
                   low.len < 40 ? low.len : 40);
        }
    }

    /* Decide each dimension and write its evidence. */
    for (d = 0; d < RLHI_DIM_N; d++) {
        int a = ds[d].score[0], b = ds[d].score[1], chosen = -1;
        struct rlhi_buf ev = RLHI_BUF_INIT;

        if (a >= 3 && a - b >= 2)
            chosen = 0;
        else if (b >= 3 && b - a >= 2)
            chosen = 1;
        out->value[d] = chosen < 0 ? NO_SIGNAL : dim_values[d][chosen];
        if (evidence_json(&ev, &ds[d], chosen, msgs, redact, d) ||
            !(out->evidence[d] = rlhi_buf_detach(&ev, NULL))) {
            rlhi_buf_release(&ev);
            goto nomem;
        }
    }
    if (persona_text(&tb, out) || !(out->text = rlhi_buf_detach(&tb, NULL)))
        goto nomem;
    goto out;

nomem:
    rc = rlhi_err(RLHI_ENOMEM, "cannot derive a persona");
    rlhi_persona_release(out);
out:
    rlhi_buf_release(&low);
    rlhi_buf_release(&tb);
    pcre2_match_data_free(md);
    rlhi_free(ds);
    return rc;
}

/* ---- over the store ---------------------------------------------------- */

struct history {
    struct rlhi_persona_msg *m;
    size_t n, cap;
    struct rlhi_buf text; /* all strings, NUL-separated */
    size_t *off;          /* per message: id, text, label offsets */
};

static int hist_add(struct history *h, const char *conv, int idx,
                    const char *text, const char *label)
{
    size_t base = h->text.len;

    if (h->n == h->cap) {
        size_t nc = h->cap ? 2 * h->cap : 64;
        void *a = rlhi_realloc(h->m, nc * sizeof *h->m);

        if (!a)
            return RLHI_ENOMEM;
        h->m = a;
        a = rlhi_realloc(h->off, 3 * nc * sizeof *h->off);
        if (!a)
            return RLHI_ENOMEM;
        h->off = a;
        h->cap = nc;
    }
    if (rlhi_buf_addf(&h->text, "%s#%d", conv, idx) ||
        rlhi_buf_addc(&h->text, 0) ||
        rlhi_buf_adds(&h->text, text) || rlhi_buf_addc(&h->text, 0) ||
        rlhi_buf_adds(&h->text, label ? label : "") ||
        rlhi_buf_addc(&h->text, 0))
        return RLHI_ENOMEM;
    h->off[3 * h->n] = base;
    h->off[3 * h->n + 1] = base + strlen(h->text.buf + base) + 1;
    h->off[3 * h->n + 2] = h->off[3 * h->n + 1] +
                           strlen(h->text.buf + h->off[3 * h->n + 1]) + 1;
    h->n++;
    return 0;
}

/* Pointers into `text` are taken only once it stops growing. */
static void hist_fix(struct history *h)
{
    for (size_t i = 0; i < h->n; i++) {
        const char *l = h->text.buf + h->off[3 * i + 2];

        h->m[i].id = h->text.buf + h->off[3 * i];
        h->m[i].text = h->text.buf + h->off[3 * i + 1];
        h->m[i].label = *l ? l : NULL;
    }
}

static bool is_builtin(const char *backend)
{
    return !backend || !strcmp(backend, "builtin");
}

/* ---- shared with the LLM summariser (persona_internal.h) ---------------- */

int rlhi__persona_stmts(struct rlhi_store *s, sqlite3_stmt **msgs,
                        sqlite3_stmt **old, sqlite3_stmt **put)
{
    int rc;

    if ((rc = rlhi_store_prepare(s, msgs, "SELECT c.hash, m.idx, "
                                 "m.content, f.label FROM conversations c "
                                 "JOIN messages m ON m.conversation_id = "
                                 "c.id AND m.role = 'user' LEFT JOIN "
                                 "feedback f ON f.conversation_id = c.id "
                                 "AND f.turn_index = m.idx AND f.backend = "
                                 "'builtin' WHERE c.user_id = ? ORDER BY "
                                 "c.hash, m.idx")) ||
        (rc = rlhi_store_prepare(s, old, "SELECT history_hash FROM "
                                 "personas WHERE user_id = ? AND backend = "
                                 "?")) ||
        (rc = rlhi_store_prepare(s, put, "INSERT OR REPLACE INTO personas("
                                 "user_id, backend, expertise, "
                                 "expertise_evidence, informativeness, "
                                 "informativeness_evidence, tone, "
                                 "tone_evidence, structure, "
                                 "structure_evidence, text, history_hash, "
                                 "redacted, updated) VALUES (?, ?, ?, ?, ?, "
                                 "?, ?, ?, ?, ?, ?, ?, ?, strftime("
                                 "'%Y-%m-%dT%H:%M:%SZ', 'now'))")))
        return rc;
    return 0;
}

bool rlhi__persona_is_same(sqlite3_stmt *old, int64_t user_id,
                           const char *backend, const char *hex)
{
    bool same = false;

    sqlite3_reset(old);
    sqlite3_bind_int64(old, 1, user_id);
    sqlite3_bind_text(old, 2, backend, -1, SQLITE_STATIC);
    if (sqlite3_step(old) == SQLITE_ROW)
        same = !strcmp((const char *)sqlite3_column_text(old, 0), hex);
    sqlite3_reset(old);
    return same;
}

int rlhi__persona_put(struct rlhi_store *s, sqlite3_stmt *put,
                      int64_t user_id, const char *backend,
                      const struct rlhi_persona *p, const char *hex,
                      bool redact)
{
    sqlite3_reset(put);
    sqlite3_bind_int64(put, 1, user_id);
    sqlite3_bind_text(put, 2, backend, -1, SQLITE_STATIC);
    for (int d = 0; d < RLHI_DIM_N; d++) {
        sqlite3_bind_text(put, 3 + 2 * d, p->value[d], -1, SQLITE_STATIC);
        sqlite3_bind_text(put, 4 + 2 * d, p->evidence[d], -1,
                          SQLITE_STATIC);
    }
    sqlite3_bind_text(put, 11, p->text, -1, SQLITE_STATIC);
    sqlite3_bind_text(put, 12, hex, -1, SQLITE_STATIC);
    sqlite3_bind_int(put, 13, redact);
    return sqlite3_step(put) == SQLITE_DONE
               ? 0 : rlhi_store_err(s, "cannot store a persona");
}

int rlhi_persona_run(struct rlhi_store *s,
                     const struct rlhi_persona_opts *opts,
                     struct rlhi_persona_stats *stats)
{
    static const struct rlhi_persona_opts defaults;
    const struct rlhi_persona_opts *o = opts ? opts : &defaults;
    const char *backend = o->backend ? o->backend : "builtin";
    sqlite3_stmt *users = NULL, *msgs = NULL, *old = NULL, *put = NULL;
    struct history h = {0};
    struct rlhi_progress prog;
    double t0 = rlhi_time_now();
    int64_t run = 0, total = 0;
    int rc, in_batch = 0, batches = 0;
    bool in_txn = false;
    char counts[256];

    memset(stats, 0, sizeof *stats);
    if (!is_builtin(backend))
        return rlhi_err(RLHI_ENOTIMPL, "not implemented: backend '%s'",
                        backend);
    if ((rc = rlhi_store_run_start(s, "persona", o->args, &run)))
        return rc;
    total = rlhi_store_count(s, "users");
    if ((rc = rlhi_store_prepare(s, &users, "SELECT id FROM users ORDER BY "
                                 "id")) ||
        (rc = rlhi__persona_stmts(s, &msgs, &old, &put)))
        goto out;
    rlhi_progress_start(&prog, "persona users", total > 0 ? (uint64_t)total
                                                          : 0);
    if ((rc = rlhi_store_begin(s)))
        goto out;
    in_txn = true;

    while ((rc = sqlite3_step(users)) == SQLITE_ROW) {
        int64_t uid = sqlite3_column_int64(users, 0);
        struct rlhi_sha256 sh;
        struct rlhi_persona p;
        uint8_t dig[32];
        char hex[65];
        bool same = false;

        /* The history and its hash. */
        h.n = 0;
        rlhi_buf_clear(&h.text);
        rlhi_sha256_init(&sh);
        rlhi_sha256_update(&sh, RULES_VERSION, sizeof RULES_VERSION);
        rlhi_sha256_update(&sh, o->redact ? "R" : "-", 1);
        sqlite3_reset(msgs);
        sqlite3_bind_int64(msgs, 1, uid);
        while ((rc = sqlite3_step(msgs)) == SQLITE_ROW) {
            const char *conv = (const char *)sqlite3_column_text(msgs, 0);
            int idx = sqlite3_column_int(msgs, 1);
            const char *text = (const char *)sqlite3_column_text(msgs, 2);
            const char *label = (const char *)sqlite3_column_text(msgs, 3);
            uint32_t i32 = (uint32_t)idx;

            rlhi_sha256_update(&sh, conv, strlen(conv) + 1);
            rlhi_sha256_update(&sh, &i32, sizeof i32);
            rlhi_sha256_update(&sh, text, strlen(text) + 1);
            rlhi_sha256_update(&sh, label ? label : "", label ?
                               strlen(label) + 1 : 1);
            if (hist_add(&h, conv, idx, text, label)) {
                rc = rlhi_err(RLHI_ENOMEM, "cannot hold a user's history");
                goto out;
            }
        }
        if (rc != SQLITE_DONE) {
            rc = rlhi_store_err(s, "cannot read a user's messages");
            goto out;
        }
        sqlite3_reset(msgs);
        rlhi_sha256_final(&sh, dig);
        for (int i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", dig[i]);
        stats->users++;

        if (!o->force)
            same = rlhi__persona_is_same(old, uid, backend, hex);
        if (same) {
            stats->unchanged++;
            continue;
        }

        hist_fix(&h);
        if ((rc = rlhi_persona_derive(h.m, h.n, o->redact, &p)))
            goto out;
        rc = rlhi__persona_put(s, put, uid, backend, &p, hex, o->redact);
        rlhi_persona_release(&p);
        if (rc)
            goto out;
        stats->made++;

        if (++in_batch >= RLHI_STORE_BATCH) {
            in_batch = 0;
            if ((rc = rlhi_store_commit(s)))
                goto out;
            in_txn = false;
            rlhi_progress_update(&prog, stats->users);
            if (o->stop_after_batches && ++batches >= o->stop_after_batches) {
                rc = rlhi_err(RLHI_EIO, "stopped after %d batches (test "
                              "hook)", batches);
                goto out;
            }
            if ((rc = rlhi_store_begin(s)))
                goto out;
            in_txn = true;
        }
    }
    if (rc != SQLITE_DONE) {
        rc = rlhi_store_err(s, "cannot read users");
        goto out;
    }
    sqlite3_reset(users);
    if ((rc = rlhi_store_commit(s)))
        goto out;
    in_txn = false;
    prog.done = stats->users;
    rlhi_progress_finish(&prog);

out:
    if (users)
        sqlite3_reset(users);
    if (in_txn)
        rlhi_store_rollback(s);
    sqlite3_finalize(users);
    sqlite3_finalize(msgs);
    sqlite3_finalize(old);
    sqlite3_finalize(put);
    rlhi_free(h.m);
    rlhi_free(h.off);
    rlhi_buf_release(&h.text);
    stats->seconds = rlhi_time_now() - t0;
    if (rc == 0) {
        snprintf(counts, sizeof counts, "{\"users\": %llu, \"made\": %llu, "
                 "\"unchanged\": %llu}", (unsigned long long)stats->users,
                 (unsigned long long)stats->made,
                 (unsigned long long)stats->unchanged);
        rc = rlhi_store_run_finish(s, run, counts);
    }
    return rc;
}

int rlhi_persona_export(struct rlhi_store *s, const char *backend,
                        FILE *out, uint64_t *n)
{
    struct rlhi_buf line = RLHI_BUF_INIT;
    sqlite3_stmt *st;
    uint64_t count = 0;
    int rc;

    if ((rc = rlhi_store_prepare(s, &st, "SELECT u.key, p.backend, "
                                 "p.expertise, p.expertise_evidence, "
                                 "p.informativeness, "
                                 "p.informativeness_evidence, p.tone, "
                                 "p.tone_evidence, p.structure, "
                                 "p.structure_evidence, p.text, "
                                 "p.history_hash FROM personas p JOIN users "
                                 "u ON u.id = p.user_id WHERE p.backend = ? "
                                 "ORDER BY u.key")))
        return rc;
    sqlite3_bind_text(st, 1, backend ? backend : "builtin", -1,
                      SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int e = 0;

#define COL(i) ((const char *)sqlite3_column_text(st, i))
        rlhi_buf_clear(&line);
        e |= rlhi_buf_adds(&line, "{\"user\": ");
        e |= rlhi_buf_add_json_str(&line, COL(0), strlen(COL(0)));
        e |= rlhi_buf_adds(&line, ", \"backend\": ");
        e |= rlhi_buf_add_json_str(&line, COL(1), strlen(COL(1)));
        for (int d = 0; d < RLHI_DIM_N; d++) {
            e |= rlhi_buf_addf(&line, ", \"%s\": {\"value\": \"%s\", "
                               "\"evidence\": %s}", dim_names[d],
                               COL(2 + 2 * d), COL(3 + 2 * d));
        }
        e |= rlhi_buf_adds(&line, ", \"text\": ");
        e |= rlhi_buf_add_json_str(&line, COL(10), strlen(COL(10)));
        e |= rlhi_buf_addf(&line, ", \"history_hash\": \"%s\"}\n", COL(11));
#undef COL
        if (e) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot export personas");
            goto out;
        }
        if (fwrite(line.buf, 1, line.len, out) != line.len) {
            rc = rlhi_err_errno(RLHI_EIO, "cannot write personas");
            goto out;
        }
        count++;
    }
    rc = rc == SQLITE_DONE ? 0 : rlhi_store_err(s, "cannot read personas");
out:
    sqlite3_finalize(st);
    rlhi_buf_release(&line);
    if (n)
        *n = count;
    return rc;
}
