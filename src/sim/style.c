/* The style reader: the four style values read back from any text.
 *
 * Each dimension is decided by counting markers, so that it works on a
 * model's output as well as on the writer's (answer.c):
 *   expertise   technical terms (the [marked] words of every fact, the
 *               expert framings, arithmetic jargon) against plain framings;
 *   tone        formal openers, connectives and closings against slang,
 *               contractions and exclamation marks;
 *   structure   any line that starts with a bullet or a number, or a
 *               markdown heading;
 *   informativeness  a weighted count of sentences and words (thresholds
 *               below, measured on the writer's answers).
 * A dimension with no evidence either way reads -1 (unknown).
 */
#include <ctype.h>
#include <string.h>

#include "sim_internal.h"

static const char *const plain_markers[] = {
    "basically", "in other words", "simply put", "think of it",
    "in simple terms", "put simply", "in plain words", "the simple version",
    "in plain english", "like this:",
};

static const char *const formal_markers[] = {
    "certainly", "thank you for your question", "i would be glad",
    "furthermore", "moreover", "in addition", "additionally",
    "i hope this information is helpful", "please let me know",
    "kind regards", "i trust this", "the principal points",
    "the key points are these", "require", "therefore", "consequently",
    "regarding", "nevertheless",
};

static const char *const casual_markers[] = {
    "hey", "sure thing", "fun one", "ooh", "hi there", "also,", "plus,",
    "oh, and", "btw", "hope that helps", "pretty cool", "cheers", "wanna",
    "gonna", "quick rundown", "the gist", "lol", "awesome", "super", "cool",
    "yeah", "yep", "kinda", "have fun", "stuff", "okay so",
};

/* Contractions: an apostrophe (ASCII or U+2019) after a letter and before
 * one of the endings n't 're 'll 've 'm 'd, or 's after a pronoun.
 * Possessives ('s after a name) are not counted. */
static bool pronoun_before(const char *t, const char *p)
{
    static const char *const pron[] = {
        "it", "that", "here", "there", "what", "let", "he", "she", "who",
    };
    size_t i;

    for (i = 0; i < sizeof pron / sizeof *pron; i++) {
        size_t k = strlen(pron[i]);
        const char *w = p - k;

        if ((size_t)(p - t) >= k && !strncasecmp(w, pron[i], k) &&
            (w == t || !isalpha((unsigned char)w[-1])))
            return true;
    }
    return false;
}

static int count_contractions(const char *t)
{
    const char *p;
    int n = 0;

    for (p = t; *p; p++) {
        const char *e;
        bool end2;

        if (*p == '\'')
            e = p + 1;
        else if (!strncmp(p, "\xe2\x80\x99", 3))
            e = p + 3;
        else
            continue;
        if (p == t || !isalpha((unsigned char)p[-1]))
            continue;
        end2 = !isalpha((unsigned char)e[0]) || !isalpha((unsigned char)e[1]);
        if (tolower((unsigned char)p[-1]) == 'n' &&
            tolower((unsigned char)e[0]) == 't')
            n++;
        else if (!strncasecmp(e, "re", 2) || !strncasecmp(e, "ll", 2) ||
                 !strncasecmp(e, "ve", 2))
            n++;
        else if ((e[0] == 'm' || e[0] == 'd') && end2)
            n++;
        else if ((e[0] == 's' || e[0] == 'S') && end2 && pronoun_before(t, p))
            n++;
    }
    return n;
}

static int count_list(const char *lower, const char *const *list, size_t n)
{
    size_t i;
    int c = 0;

    for (i = 0; i < n; i++)
        c += rlhi__count_lower(lower, list[i]);
    return c;
}

/* Does the line at p start a list item or a heading? */
static bool is_list_line(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    if ((*p == '-' || *p == '*' || *p == '+') && p[1] == ' ')
        return true;
    if (!strncmp(p, "\xe2\x80\xa2", 3)) /* U+2022 bullet */
        return true;
    if (*p == '#' && (p[1] == ' ' || p[1] == '#'))
        return true;
    /* A line that is all bold ("**Key points:**") is a heading. */
    if (p[0] == '*' && p[1] == '*') {
        const char *e = strchr(p + 2, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);

        while (n > 4 && isspace((unsigned char)p[n - 1]))
            n--;
        if (n > 4 && p[n - 1] == '*' && p[n - 2] == '*')
            return true;
        if (n > 5 && p[n - 1] == ':' && p[n - 2] == '*' && p[n - 3] == '*')
            return true;
    }
    if (isdigit((unsigned char)*p)) {
        while (isdigit((unsigned char)*p))
            p++;
        return (*p == '.' || *p == ')') && p[1] == ' ';
    }
    return false;
}

/* Reads structure, sentences and words in one pass over the lines. */
static void scan(const char *text, struct rlhi_sim_reading *rd)
{
    const char *p = text;
    bool in_word = false;

    while (*p) {
        const char *eol = strchr(p, '\n'), *q;
        bool item, ended = false;

        if (!eol)
            eol = p + strlen(p);
        item = is_list_line(p);
        rd->list_lines += item;
        for (q = p; q < eol; q++) {
            bool sp = isspace((unsigned char)*q);

            if (!sp && !in_word)
                rd->words++;
            in_word = !sp;
            /* A sentence ends at . ! ? followed by space or line end; a
             * point between digits is a decimal point. */
            if ((*q == '.' || *q == '!' || *q == '?') &&
                (q + 1 == eol || isspace((unsigned char)q[1])) &&
                !(q > p && isdigit((unsigned char)q[-1]) && item &&
                  q - p < 4)) {
                rd->sentences++;
                ended = true;
            } else if (!sp) {
                ended = false;
            }
        }
        /* A list item without final punctuation is still one unit. */
        if (item && !ended)
            rd->sentences++;
        in_word = false;
        p = *eol ? eol + 1 : eol;
    }
}

/* Informativeness: concise answers by the writer hold at most 4 sentences
 * and 43 words (score <= 6.9), detailed ones at least 6 sentences and 34
 * words (score >= 8.2), measured over 20000 answers in tests/test_sim.c.
 * The weighted sum puts the threshold between the two groups; a long
 * paragraph from a model with few full stops still reads as detailed
 * through its words. */
#define INFORM_THRESHOLD 7.4

void rlhi_sim_style_read(const char *text, struct rlhi_sim_reading *rd)
{
    const char *const *lex;
    char small[4096], *lower = small;
    size_t len;
    int nlex, i;
    double inform;

    memset(rd, 0, sizeof *rd);
    if (!text)
        text = "";
    /* Markers are matched on a lower-case copy: one pass of tolower
     * instead of a case-insensitive search per marker. A text too long
     * for the stack copy that cannot be copied (no memory) is read as is,
     * matching only lower-case markers. */
    len = strlen(text);
    if (len >= sizeof small && !(lower = rlhi_malloc(len + 1)))
        lower = (char *)text;
    if (lower != text) {
        for (i = 0; (size_t)i < len; i++)
            lower[i] = (char)tolower((unsigned char)text[i]);
        lower[len] = 0;
    }
    lex = rlhi__tech_lexicon(&nlex);
    for (i = 0; i < nlex; i++)
        rd->tech += rlhi__count_lower(lower, lex[i]);
    rd->plain = count_list(lower, plain_markers,
                           sizeof plain_markers / sizeof *plain_markers);
    rd->formal = count_list(lower, formal_markers,
                            sizeof formal_markers / sizeof *formal_markers);
    rd->casual = count_list(lower, casual_markers,
                            sizeof casual_markers / sizeof *casual_markers);
    if (lower != small && lower != text)
        rlhi_free(lower);
    rd->casual += count_contractions(text);
    for (i = 0; text[i]; i++)
        rd->casual += text[i] == '!';
    scan(text, rd);

    rd->style.v[RLHI_SIM_EXPERTISE] =
        rd->tech > rd->plain ? 1 : rd->tech < rd->plain ? 0 : -1;
    rd->style.v[RLHI_SIM_TONE] =
        rd->formal > rd->casual ? 1 : rd->formal < rd->casual ? 0 : -1;
    rd->style.v[RLHI_SIM_STRUCTURE] =
        rd->list_lines ? 1 : rd->sentences ? 0 : -1;
    inform = rd->sentences + rd->words / 15.0;
    rd->style.v[RLHI_SIM_INFORM] = inform >= INFORM_THRESHOLD;
}
