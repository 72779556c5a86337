/* Ingest: WildChat-style or plain chat JSONL into the store.
 *
 * One record (line) = one conversation. A record is checked completely
 * before anything is written, so a bad record leaves no trace but a warning.
 * Records are written in transactions (INGEST_BATCH_*); each commit also
 * writes the file's resume marker (byte offset of the next line, line
 * number, and the counts so far), so a killed run loses at most the batch in
 * flight, and a rerun seeks to the marker and ends with the same counts and
 * rows as an uninterrupted run. conversations.hash is UNIQUE and written
 * with INSERT OR IGNORE, so even a rerun with --force duplicates nothing.
 *
 * Where the time goes (bench/bench_ingest.py, 100 MB of WildChat-shaped
 * lines, 2 cores): jansson's own reader parses about 37 MB/s of CPU, a
 * third of CPython's json; the fast path below (grammar-checked, skips
 * plain ASCII 8 bytes at a time, builds only the keys we read, falls back
 * to jansson for anything doubtful) reads, parses and checks about
 * 350 MB/s on one core. A second thread does that (read_group) while the
 * calling thread stores the group before, so the wall time is SQLite's:
 * B-tree inserts, and every page written once (rlhi_store_bulk_begin: a
 * rollback journal instead of WAL + checkpoint, which wrote each page
 * twice). Together: 100 MB in 0.6-0.8 s, against 1.9-2.2 s for the Python
 * script on the same file.
 */
#include "rlhi/pipeline.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "rlhi/jsonl.h"

/* One message of a record, pointing into the parsed JSON (or `own`). */
struct msg {
    const char *role;
    const char *content;
    size_t content_len;
    char *own; /* joined text of a list-of-parts content; freed after */
    const char *ts;
    char ts_buf[40];
    bool has_tid;
    json_int_t tid;
    bool toxic;
};

struct conv {
    const char *hash;
    char hash_buf[65];
    const char *user;
    char user_buf[32];
    const char *model, *language, *ts;
    char ts_buf[40];
    bool toxic, redacted;
    long turns;
    size_t n;
    struct msg *m;
    size_t cap;
};

/* One line of a group: its text, what parsing and checking made of it. */
struct rec {
    struct conv c;
    bool ids_with_user; /* the store's meta('conversation_ids') */
    char err[512];    /* what is wrong, when status is RLHI_EFORMAT */
    int status;       /* 0, RLHI_EFORMAT, or another negative code */
    size_t off, len;  /* the line in the group's text */
    uint64_t line_no, end_off;
};

/* Lines read and parsed together while the group before is stored:
 * enough to keep the reading thread ahead, small enough (with GROUP_BYTES)
 * to keep two groups' trees in cache-sized arenas. */
#define GROUP_LINES 256
#define GROUP_BYTES (8u << 20)

/* A transaction (and resume marker) every 10000 lines or 64 MiB of them,
 * whichever comes first, unless opts->batch says otherwise: about a second
 * of work, so a kill loses little, and few enough commits (each waits for
 * the disk) to cost under 2% of the time. */
#define INGEST_BATCH_LINES 10000
#define INGEST_BATCH_BYTES (64u << 20)

/* Counts kept per file, in a resume marker, and summed into the stats. */
enum {
    C_LINES, C_INSERTED, C_DUP, C_BAD, C_LANG, C_TOXIC, C_REDACTED,
    C_TURNS, C_MESSAGES, C_BYTES, C_N
};

/* Messages inserted by one statement: fewer statement runs per
 * conversation (most have 2-12 messages). */
#define MSG_ROWS 8

struct chunk;
struct arena {
    struct chunk *head;
};

/* A group of lines, read and parsed by the reading thread. */
struct group {
    struct rlhi_buf text;  /* the lines, NUL-separated */
    struct rec *recs;      /* GROUP_LINES slots */
    int n;                 /* lines in the group */
    int end;               /* 0: more lines follow; 1: end of the file;
                              negative: reading failed after the n lines
                              (RLHI_EFORMAT: corrupt compressed data) */
    char err[512];         /* the message of a negative `end` */
    uint64_t raw_bytes;    /* bytes of the file read so far, for progress */
    struct arena arena;    /* the parsed trees */
    bool ready;            /* read and parsed, not yet stored */
    bool ids_with_user;    /* the store's meta('conversation_ids') */
};

struct ingest {
    struct rlhi_store *s;
    const struct rlhi_ingest_opts *o;
    sqlite3_stmt *user_get, *user_put, *conv_put;
    /* msg_put[k]: an INSERT of k + 1 messages (MSG_ROWS at most) */
    sqlite3_stmt *msg_put[MSG_ROWS];
    /* the file being read and the reading thread (see read_group) */
    struct rlhi_jsonl *r;
    struct group grp[2];
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool threaded, stop;
    /* user key -> id cache: open addressing on FNV-1a, power-of-two size */
    struct slot { uint64_t h; char *key; int64_t id; } *map;
    size_t map_cap, map_n;
};

/* ---- a bump allocator for jansson -------------------------------------
 * Parsing a record with jansson makes hundreds of small allocations (every
 * key, string and hash table) that all die together when the record is
 * done; malloc and free were a quarter of ingest's time. Each group of
 * lines has its own arena; while the reading thread parses a group it
 * points `cur_arena` at the group's arena, jansson allocates from it and
 * frees are no-ops. The arena is emptied when the group is reused, after
 * its records are stored. Everything else (other threads, other modules,
 * this thread outside a parse) goes to malloc and free as jansson's
 * defaults do, so installing the hooks changes nothing for them. */
struct chunk {
    struct chunk *next;
    size_t cap, used;
    max_align_t data[];
};

static _Thread_local struct arena *cur_arena;

/* 1 MiB holds a typical WildChat record's tree several times over. */
#define ARENA_CHUNK (1u << 20)

static void *arena_malloc(size_t n)
{
    struct arena *a = cur_arena;
    struct chunk *c;

    if (!a)
        return malloc(n);
    c = a->head;
    n = (n + 15) & ~(size_t)15;
    if (!c || c->used + n > c->cap) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;

        if (!(c = rlhi_malloc(sizeof *c + cap)))
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    c->used += n;
    return (char *)c->data + c->used - n;
}

static void arena_free(void *p)
{
    if (cur_arena)
        for (struct chunk *c = cur_arena->head; c; c = c->next)
            if ((char *)p >= (char *)c->data &&
                (char *)p < (char *)c->data + c->cap)
                return;
    free(p);
}

/* Empties an arena. When one chunk was not enough, the chunks are replaced
 * by one as large as all of them, so that the next group fits in one. */
static void arena_reset(struct arena *a)
{
    struct chunk *c = a->head;
    size_t total = 0;

    if (!c)
        return;
    if (!c->next) {
        c->used = 0;
        return;
    }
    while (c) {
        struct chunk *n = c->next;

        total += c->cap;
        rlhi_free(c);
        c = n;
    }
    a->head = NULL;
    if ((c = rlhi_malloc(sizeof *c + total))) {
        c->cap = total;
        c->used = 0;
        c->next = NULL;
        a->head = c;
    }
}

static void arena_release(struct arena *a)
{
    while (a->head) {
        struct chunk *n = a->head->next;

        rlhi_free(a->head);
        a->head = n;
    }
}

static pthread_once_t arena_once = PTHREAD_ONCE_INIT;

static void arena_install(void)
{
    json_set_alloc_funcs(arena_malloc, arena_free);
}

/* ---- user id cache ----------------------------------------------------- */

static int64_t map_get(struct ingest *g, const char *key, uint64_t h)
{
    size_t i;

    if (!g->map)
        return 0;
    for (i = h & (g->map_cap - 1); g->map[i].key; i = (i + 1) &
         (g->map_cap - 1))
        if (g->map[i].h == h && !strcmp(g->map[i].key, key))
            return g->map[i].id;
    return 0;
}

static int map_put(struct ingest *g, const char *key, uint64_t h, int64_t id)
{
    size_t i;

    if (2 * (g->map_n + 1) > g->map_cap) {
        size_t ncap = g->map_cap ? 2 * g->map_cap : 1024, j;
        struct slot *nm = rlhi_calloc(ncap, sizeof *nm);

        if (!nm)
            return rlhi_err(RLHI_ENOMEM, "cannot grow the user table");
        for (j = 0; j < g->map_cap; j++) {
            if (!g->map[j].key)
                continue;
            for (i = g->map[j].h & (ncap - 1); nm[i].key; i = (i + 1) &
                 (ncap - 1))
                ;
            nm[i] = g->map[j];
        }
        rlhi_free(g->map);
        g->map = nm;
        g->map_cap = ncap;
    }
    for (i = h & (g->map_cap - 1); g->map[i].key; i = (i + 1) &
         (g->map_cap - 1))
        ;
    if (!(g->map[i].key = rlhi_strdup(key)))
        return rlhi_err(RLHI_ENOMEM, "cannot grow the user table");
    g->map[i].h = h;
    g->map[i].id = id;
    g->map_n++;
    return 0;
}

static void map_clear(struct ingest *g)
{
    for (size_t i = 0; i < g->map_cap; i++)
        rlhi_free(g->map[i].key);
    rlhi_free(g->map);
    g->map = NULL;
    g->map_cap = g->map_n = 0;
}

/* ---- checking a record -------------------------------------------------- */

/* Sets g->err and returns RLHI_EFORMAT. */
static int bad(struct rec *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int bad(struct rec *g, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    return RLHI_EFORMAT;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* An optional string field: absent or null gives NULL. */
static int opt_str(struct rec *g, json_t *o, const char *key,
                   const char *where, const char **out)
{
    json_t *v = json_object_get(o, key);

    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return bad(g, "%s'%s' is %s, expected a string", where, key,
                   type_name(v));
    *out = json_string_value(v);
    return 0;
}

static int opt_bool(struct rec *g, json_t *o, const char *key,
                    const char *where, bool *out)
{
    json_t *v = json_object_get(o, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return bad(g, "%s'%s' is %s, expected a boolean", where, key,
                   type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* Timestamps come as ISO strings or as Unix time in seconds or, from
 * pandas exports, milliseconds; numbers become ISO 8601 UTC text. */
static int opt_time(struct rec *g, json_t *o, const char *where,
                    const char **out, char buf[40])
{
    json_t *v = json_object_get(o, "timestamp");
    double t;
    time_t tt;
    struct tm tm;

    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        *out = json_string_value(v);
        return 0;
    }
    if (!json_is_number(v))
        return bad(g, "%s'timestamp' is %s, expected a string or number",
                   where, type_name(v));
    t = json_number_value(v);
    /* 1e11 s is the year 5138; such values are milliseconds. */
    if (t > 1e11 || t < -1e11)
        t /= 1000;
    tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) ||
        !strftime(buf, 40, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return bad(g, "%s'timestamp' %g is out of range", where, t);
    *out = buf;
    return 0;
}

static int is_role(const char *r)
{
    return !strcmp(r, "user") || !strcmp(r, "assistant") ||
           !strcmp(r, "system");
}

/* Content is a string, or OpenAI's list of parts whose "text" parts are
 * joined with newlines. */
static int get_content(struct rec *g, json_t *e, size_t i,
                       const char *list, struct msg *m)
{
    json_t *v = json_object_get(e, "content");
    struct rlhi_buf b = RLHI_BUF_INIT;
    size_t k;
    json_t *part;

    if (!v)
        return bad(g, "%s[%zu]: missing 'content'", list, i);
    if (json_is_string(v)) {
        m->content = json_string_value(v);
        m->content_len = json_string_length(v);
        return 0;
    }
    if (!json_is_array(v))
        return bad(g, "%s[%zu]: 'content' is %s, expected a string", list,
                   i, type_name(v));
    json_array_foreach(v, k, part) {
        json_t *t = json_is_object(part) ? json_object_get(part, "text")
                                         : NULL;

        if (!t || !json_is_string(t)) {
            rlhi_buf_release(&b);
            return bad(g, "%s[%zu]: 'content'[%zu] is not a text part",
                       list, i, k);
        }
        if ((b.len && rlhi_buf_addc(&b, '\n')) ||
            rlhi_buf_add(&b, json_string_value(t), json_string_length(t)))
            return rlhi_err(RLHI_ENOMEM, "cannot join content parts");
    }
    if (rlhi_buf_grow(&b, 0))
        return rlhi_err(RLHI_ENOMEM, "cannot join content parts");
    m->content_len = b.len;
    m->content = m->own = rlhi_buf_detach(&b, NULL);
    return m->own ? 0 : rlhi_err(RLHI_ENOMEM, "cannot join content parts");
}

/* A ShareGPT message {"from", "value"}: "human" (or "user") is the user;
 * "gpt", "chatgpt", "bard", "bing", "model" (or "assistant") the
 * assistant; "system" the system prompt. */
static int sharegpt_message(struct rec *g, json_t *e, json_t *from, size_t i,
                            const char *list, struct msg *m)
{
    static const char *const who[][2] = {
        {"human", "user"}, {"user", "user"}, {"gpt", "assistant"},
        {"chatgpt", "assistant"}, {"bard", "assistant"},
        {"bing", "assistant"}, {"model", "assistant"},
        {"assistant", "assistant"}, {"system", "system"},
    };
    json_t *v = json_object_get(e, "value");
    const char *f;

    if (!json_is_string(from))
        return bad(g, "%s[%zu]: 'from' is %s, expected a string", list, i,
                   type_name(from));
    f = json_string_value(from);
    for (size_t k = 0; k < sizeof who / sizeof who[0]; k++)
        if (!strcasecmp(f, who[k][0]))
            m->role = who[k][1];
    if (!m->role)
        return bad(g, "%s[%zu]: unknown 'from' '%.40s' (expected human, gpt "
                   "or system)", list, i, f);
    if (!v)
        return bad(g, "%s[%zu]: missing 'value'", list, i);
    if (!json_is_string(v))
        return bad(g, "%s[%zu]: 'value' is %s, expected a string", list, i,
                   type_name(v));
    m->content = json_string_value(v);
    m->content_len = json_string_length(v);
    return 0;
}

static void conv_reset(struct conv *c)
{
    for (size_t i = 0; i < c->n; i++)
        rlhi_free(c->m[i].own);
    c->n = 0;
}

/* JSON string escaping exactly as Python's json.dumps(ensure_ascii=False):
 * the two-letter escapes for " \ \n \r \t \b \f, \u00XX for other control
 * characters, everything else (UTF-8 included) as is. */
static int canon_str(struct rlhi_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;

    if (rlhi_buf_addc(b, '"'))
        return RLHI_ENOMEM;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char e[6] = {'\\', 0};
        size_t el = 2;

        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        if (rlhi_buf_add(b, s + run, i - run))
            return RLHI_ENOMEM;
        run = i + 1;
        switch (ch) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        default:
            memcpy(e, "\\u00", 4);
            e[4] = hex[ch >> 4];
            e[5] = hex[ch & 15];
            el = 6;
        }
        if (rlhi_buf_add(b, e, el))
            return RLHI_ENOMEM;
    }
    if (rlhi_buf_add(b, s + run, n - run) || rlhi_buf_addc(b, '"'))
        return RLHI_ENOMEM;
    return 0;
}

int rlhi_ingest_conversation_id(const char *user, const char *const *roles,
                                const char *const *contents, size_t n,
                                char hex[65])
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    int rc = 0;
    size_t i;

    if (user) {
        rc |= rlhi_buf_adds(&b, "{\"user\":");
        rc |= canon_str(&b, user, strlen(user));
        rc |= rlhi_buf_adds(&b, ",\"messages\":");
    }
    rc |= rlhi_buf_addc(&b, '[');
    for (i = 0; i < n && !rc; i++) {
        rc |= rlhi_buf_adds(&b, i ? ",{\"role\":" : "{\"role\":");
        rc |= canon_str(&b, roles[i], strlen(roles[i]));
        rc |= rlhi_buf_adds(&b, ",\"content\":");
        rc |= canon_str(&b, contents[i], strlen(contents[i]));
        rc |= rlhi_buf_addc(&b, '}');
    }
    rc |= rlhi_buf_addc(&b, ']');
    if (user)
        rc |= rlhi_buf_addc(&b, '}');
    if (rc) {
        rlhi_buf_release(&b);
        return rlhi_err(RLHI_ENOMEM, "cannot hash a conversation");
    }
    rlhi_sha256_hex(b.buf, b.len, hex);
    rlhi_buf_release(&b);
    return 0;
}

int rlhi_ingest_messages_hash(const char *const *roles,
                              const char *const *contents, size_t n,
                              char hex[65])
{
    return rlhi_ingest_conversation_id(NULL, roles, contents, n, hex);
}

/* The id of `c` when the record has none: rlhi_ingest_conversation_id,
 * with the user when the record names one. */
static int conv_hash(struct conv *c, bool named)
{
    const char **r = rlhi_malloc((2 * c->n + 1) * sizeof *r);
    int rc;

    if (!r)
        return rlhi_err(RLHI_ENOMEM, "cannot hash a conversation");
    for (size_t i = 0; i < c->n; i++) {
        r[i] = c->m[i].role;
        r[c->n + i] = c->m[i].content;
    }
    rc = rlhi_ingest_conversation_id(named ? c->user : NULL, r, r + c->n,
                                     c->n, c->hash_buf);
    rlhi_free(r);
    c->hash = c->hash_buf;
    return rc;
}

/* Fills g->c from a parsed record. RLHI_EFORMAT with g->err set when the
 * record is malformed, RLHI_ENOMEM, or 0. */
static int check_record(struct rec *g, json_t *rec)
{
    struct conv *c = &g->c;
    const char *list = "conversation";
    json_t *arr, *v, *e;
    size_t i;
    bool named;
    int rc;

    conv_reset(c);
    memset(c, 0, offsetof(struct conv, n));
    if (!json_is_object(rec))
        return bad(g, "expected a JSON object, got %s", type_name(rec));

    arr = json_object_get(rec, "conversation");
    if (!arr) {
        arr = json_object_get(rec, "messages");
        list = "messages";
    }
    if (!arr) {
        /* ShareGPT: {"conversations": [{"from": "human", "value": ..}]} */
        arr = json_object_get(rec, "conversations");
        list = "conversations";
    }
    if (!arr)
        return bad(g, "missing 'conversation' (or 'messages', or "
                   "'conversations')");
    if (!json_is_array(arr))
        return bad(g, "'%s' is %s, expected an array", list,
                   type_name(arr));
    if (!json_array_size(arr))
        return bad(g, "'%s' is empty", list);

    /* Identity and metadata. */
    v = json_object_get(rec, "conversation_hash");
    if (!v || json_is_null(v))
        v = json_object_get(rec, "conversation_id");
    if (!v || json_is_null(v))
        v = json_object_get(rec, "id");
    if (v && json_is_string(v) && json_string_length(v)) {
        c->hash = json_string_value(v);
    } else if (v && json_is_integer(v)) {
        snprintf(c->hash_buf, sizeof c->hash_buf, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        c->hash = c->hash_buf;
    } else if (v && !json_is_null(v) && !json_is_string(v)) {
        return bad(g, "'conversation_hash' is %s, expected a string",
                   type_name(v));
    }
    if ((rc = opt_str(g, rec, "model", "", &c->model)) ||
        (rc = opt_str(g, rec, "language", "", &c->language)) ||
        (rc = opt_time(g, rec, "", &c->ts, c->ts_buf)) ||
        (rc = opt_bool(g, rec, "toxic", "", &c->toxic)) ||
        (rc = opt_bool(g, rec, "redacted", "", &c->redacted)))
        return rc;
    v = json_object_get(rec, "hashed_ip");
    if (!v || json_is_null(v))
        v = json_object_get(rec, "user");
    if (v && json_is_string(v) && json_string_length(v)) {
        c->user = json_string_value(v);
    } else if (v && json_is_integer(v)) {
        snprintf(c->user_buf, sizeof c->user_buf, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        c->user = c->user_buf;
    } else if (v && !json_is_null(v) && !json_is_string(v)) {
        return bad(g, "'%s' is %s, expected a string",
                   json_object_get(rec, "hashed_ip") ? "hashed_ip" : "user",
                   type_name(v));
    }
    c->turns = -1;
    v = json_object_get(rec, "turn");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return bad(g, "'turn' is %s, expected a non-negative integer",
                       json_is_integer(v) ? "negative" : type_name(v));
        c->turns = (long)json_integer_value(v);
    }

    /* Messages. */
    if (json_array_size(arr) > c->cap) {
        size_t ncap = json_array_size(arr) * 2;
        struct msg *nm = rlhi_realloc(c->m, ncap * sizeof *nm);

        if (!nm)
            return rlhi_err(RLHI_ENOMEM, "cannot hold a conversation");
        c->m = nm;
        c->cap = ncap;
    }
    json_array_foreach(arr, i, e) {
        struct msg *m = &c->m[c->n];
        char where[64];
        json_t *r;

        memset(m, 0, sizeof *m);
        c->n++;
        if (!json_is_object(e))
            return bad(g, "%s[%zu] is %s, expected an object", list, i,
                       type_name(e));
        r = json_object_get(e, "role");
        if (!r && (r = json_object_get(e, "from"))) {
            if ((rc = sharegpt_message(g, e, r, i, list, m)))
                return rc;
        } else {
            if (!r)
                return bad(g, "%s[%zu]: missing 'role'", list, i);
            if (!json_is_string(r))
                return bad(g, "%s[%zu]: 'role' is %s, expected a string",
                           list, i, type_name(r));
            m->role = json_string_value(r);
            if (!is_role(m->role))
                return bad(g, "%s[%zu]: unknown role '%.40s' (expected "
                           "user, assistant or system)", list, i, m->role);
            if ((rc = get_content(g, e, i, list, m)))
                return rc;
        }
        snprintf(where, sizeof where, "%s[%zu]: ", list, i);
        if ((rc = opt_time(g, e, where, &m->ts, m->ts_buf)) ||
            (rc = opt_bool(g, e, "toxic", where, &m->toxic)))
            return rc;
        v = json_object_get(e, "turn_identifier");
        if (v && !json_is_null(v)) {
            if (!json_is_integer(v))
                return bad(g, "%s'turn_identifier' is %s, expected an "
                           "integer", where, type_name(v));
            m->has_tid = true;
            m->tid = json_integer_value(v);
        }
        c->toxic |= m->toxic;
        if (!c->user && !strcmp(m->role, "user")) {
            const char *ip;

            if ((rc = opt_str(g, e, "hashed_ip", where, &ip)))
                return rc;
            if (ip && *ip)
                c->user = ip;
        }
    }
    if (c->turns < 0) {
        c->turns = 0;
        for (i = 0; i < c->n; i++)
            c->turns += !strcmp(c->m[i].role, "user");
    }
    named = c->user != NULL && g->ids_with_user;
    if (!c->user)
        c->user = "unknown";
    if (!c->hash && (rc = conv_hash(c, named)))
        return rc;
    return 0;
}

/* ---- filters ----------------------------------------------------------- */

static bool language_ok(const char *want, const char *lang)
{
    size_t n = lang ? strlen(lang) : 0;

    if (!want)
        return true;
    if (!lang)
        return false;
    while (*want) {
        size_t k = strcspn(want, ",");

        if (k == n && !strncasecmp(want, lang, n))
            return true;
        want += k + (want[k] == ',');
    }
    return false;
}

/* 0 keep, else the count it goes to. */
/* For records that name no language (plain chat and ShareGPT logs): is
 * the users' text English? At least an eighth of its words are common
 * English function words, and under a tenth of its letters are outside
 * ASCII; text of under three words counts when it is plain ASCII. The
 * first 2000 bytes of user messages are read. Only the --language filter
 * uses the guess; conversations.language stays as given (NULL). */
static bool guess_english(const struct conv *c)
{
    /* English function words that are not also common words of the
     * other big Latin-script languages ("a", "in", "no", "me", "on", "so",
     * "an", "as", "do" are) */
    static const char *const fw[] = {
        "the", "and", "or", "but", "of", "to", "at", "for", "with", "is",
        "are", "was", "were", "be", "it", "this", "that", "i", "you", "he",
        "she", "we", "they", "my", "your", "what", "how", "why", "can",
        "could", "would", "should", "does", "please", "not", "yes",
        "about", "from", "if", "have", "has", "will", "there", "which",
        "who", "when", "write", "give", "make", "tell", "create", "explain",
        "help", "need", "want", "know", "like", "some", "any", "than",
    };
    size_t words = 0, hits = 0, letters = 0, foreign = 0, seen = 0;

    for (size_t i = 0; i < c->n && seen < 2000; i++) {
        const char *t = c->m[i].content;
        size_t n = c->m[i].content_len, k = 0;

        if (strcmp(c->m[i].role, "user"))
            continue;
        if (n > 2000 - seen)
            n = 2000 - seen;
        seen += n;
        while (k < n) {
            char w[16];
            size_t wl = 0;

            /* code between ``` fences says nothing of the language */
            if (n - k >= 3 && !memcmp(t + k, "```", 3)) {
                const char *e = memmem(t + k + 3, n - k - 3, "```", 3);

                k = e ? (size_t)(e - t) + 3 : n;
                continue;
            }

            while (k < n && !isalpha((unsigned char)t[k]) &&
                   !((unsigned char)t[k] & 0x80) && t[k] != '`')
                k++;
            if (k < n && t[k] == '`') {
                if (n - k >= 3 && !memcmp(t + k, "```", 3))
                    continue;
                k++;
                continue;
            }
            while (k < n && (isalpha((unsigned char)t[k]) ||
                             ((unsigned char)t[k] & 0x80))) {
                unsigned char ch = (unsigned char)t[k++];

                letters++;
                if (ch & 0x80) {
                    /* count characters, not UTF-8 continuation bytes */
                    foreign += (ch & 0xc0) != 0x80;
                    wl = sizeof w; /* not an ASCII word */
                } else if (wl < sizeof w - 1) {
                    w[wl++] = (char)tolower(ch);
                }
            }
            if (!wl)
                continue;
            words++;
            if (wl < sizeof w) {
                w[wl] = 0;
                for (size_t f = 0; f < sizeof fw / sizeof fw[0]; f++)
                    if (!strcmp(w, fw[f])) {
                        hits++;
                        break;
                    }
            }
        }
    }
    if (foreign * 10 >= letters && letters)
        return false;
    return words < 3 || hits * 8 >= words;
}

static int filtered(const struct rlhi_ingest_opts *o, const struct conv *c)
{
    if (o->language && !c->language) {
        if (!language_ok(o->language, "English") || !guess_english(c))
            return C_LANG;
    } else if (!language_ok(o->language, c->language)) {
        return C_LANG;
    }
    if (o->drop_toxic && c->toxic)
        return C_TOXIC;
    if (o->drop_redacted && c->redacted)
        return C_REDACTED;
    if (o->max_turns > 0 && c->turns > o->max_turns)
        return C_TURNS;
    return 0;
}

/* ---- writing ----------------------------------------------------------- */

static int user_id(struct ingest *g, const char *key, int64_t *id)
{
    uint64_t h = rlhi_fnv64(RLHI_FNV64_INIT, key, strlen(key));
    int rc;

    if ((*id = map_get(g, key, h)))
        return 0;
    sqlite3_reset(g->user_get);
    sqlite3_bind_text(g->user_get, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(g->user_get);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(g->user_get, 0);
    } else if (rc == SQLITE_DONE) {
        sqlite3_reset(g->user_put);
        sqlite3_bind_text(g->user_put, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(g->user_put) != SQLITE_DONE)
            return rlhi_store_err(g->s, "cannot store a user");
        *id = sqlite3_last_insert_rowid(rlhi_store_db(g->s));
    } else {
        return rlhi_store_err(g->s, "cannot look up a user");
    }
    sqlite3_reset(g->user_get);
    return map_put(g, key, h, *id);
}

static void bind_opt(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* The statement that inserts k messages, prepared on first use. */
static int msg_stmt(struct ingest *g, size_t k, sqlite3_stmt **st)
{
    struct rlhi_buf sql = RLHI_BUF_INIT;
    int rc = 0;

    if ((*st = g->msg_put[k - 1]))
        return 0;
    rc |= rlhi_buf_adds(&sql, "INSERT OR IGNORE INTO messages("
                        "conversation_id, idx, role, content, timestamp, "
                        "turn_identifier) VALUES ");
    for (size_t r = 0; r < k; r++)
        rc |= rlhi_buf_adds(&sql, r ? ", (?, ?, ?, ?, ?, ?)"
                                    : "(?, ?, ?, ?, ?, ?)");
    if (rc)
        rc = rlhi_err(RLHI_ENOMEM, "cannot store messages");
    else
        rc = rlhi_store_prepare(g->s, &g->msg_put[k - 1], sql.buf);
    rlhi_buf_release(&sql);
    *st = g->msg_put[k - 1];
    return rc;
}

/* Stores c. Returns C_INSERTED, C_DUP or a negative code. */
static int store_conv(struct ingest *g, struct conv *c, const char *source,
                      uint64_t line)
{
    sqlite3 *db = rlhi_store_db(g->s);
    sqlite3_stmt *st = g->conv_put;
    int64_t uid, cid;
    size_t i;
    int rc;

    if ((rc = user_id(g, c->user, &uid)))
        return rc;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, c->hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, uid);
    bind_opt(st, 3, c->model);
    bind_opt(st, 4, c->ts);
    bind_opt(st, 5, c->language);
    sqlite3_bind_int(st, 6, c->toxic);
    sqlite3_bind_int(st, 7, c->redacted);
    sqlite3_bind_int64(st, 8, c->turns);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)c->n);
    sqlite3_bind_text(st, 10, source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, (sqlite3_int64)line);
    if (sqlite3_step(st) != SQLITE_DONE)
        return rlhi_store_err(g->s, "cannot store a conversation");
    if (!sqlite3_changes(db))
        return C_DUP;
    cid = sqlite3_last_insert_rowid(db);

    for (i = 0; i < c->n;) {
        size_t k = c->n - i < MSG_ROWS ? c->n - i : MSG_ROWS;

        if ((rc = msg_stmt(g, k, &st)))
            return rc;
        sqlite3_reset(st);
        for (size_t r = 0; r < k; r++, i++) {
            struct msg *m = &c->m[i];
            int b = (int)(6 * r);

            sqlite3_bind_int64(st, b + 1, cid);
            sqlite3_bind_int64(st, b + 2, (sqlite3_int64)i);
            sqlite3_bind_text(st, b + 3, m->role, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, b + 4, m->content, (int)m->content_len,
                              SQLITE_STATIC);
            bind_opt(st, b + 5, m->ts);
            if (m->has_tid)
                sqlite3_bind_int64(st, b + 6, m->tid);
            else
                sqlite3_bind_null(st, b + 6);
        }
        if (sqlite3_step(st) != SQLITE_DONE)
            return rlhi_store_err(g->s, "cannot store a message");
    }
    return C_INSERTED;
}

/* ---- resume markers ---------------------------------------------------- */

/* A file is the same file when path, size and modification time match;
 * the filters are part of the key because they decide what was kept. */
static char *marker_key(const char *path, const struct stat *st,
                        const struct rlhi_ingest_opts *o)
{
    struct rlhi_buf b = RLHI_BUF_INIT;

    if (rlhi_buf_addf(&b, "%s|%lld|%lld.%09ld|lang=%s,toxic=%d,redacted=%d,"
                      "max_turns=%d", path, (long long)st->st_size,
                      (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
                      o->language ? o->language : "*", o->drop_toxic,
                      o->drop_redacted, o->max_turns)) {
        rlhi_buf_release(&b);
        return NULL;
    }
    return b.buf;
}

static int marker_put(struct ingest *g, const char *key, uint64_t off,
                      uint64_t line, const uint64_t *cnt, bool done)
{
    char v[512];
    int k = snprintf(v, sizeof v, "%s %llu %llu", done ? "done" : "at",
                     (unsigned long long)off, (unsigned long long)line);

    for (int i = 0; i < C_N; i++)
        k += snprintf(v + k, sizeof v - (size_t)k, " %llu",
                      (unsigned long long)cnt[i]);
    return rlhi_store_mark_set(g->s, "ingest", key, v);
}

/* Parses a marker value; returns 1 done, 0 in progress, -1 unreadable. */
static int marker_parse(const char *v, uint64_t *off, uint64_t *line,
                        uint64_t *cnt)
{
    char state[8];
    int pos, i;
    unsigned long long a, b;

    if (sscanf(v, "%7s %llu %llu%n", state, &a, &b, &pos) != 3)
        return -1;
    v += pos;
    for (i = 0; i < C_N; i++) {
        unsigned long long x;

        if (sscanf(v, " %llu%n", &x, &pos) != 1)
            return -1;
        cnt[i] = x;
        v += pos;
    }
    *off = a;
    *line = b;
    return !strcmp(state, "done");
}

/* ---- the loop ---------------------------------------------------------- */

static void add_counts(struct rlhi_ingest_stats *s, const uint64_t *c)
{
    s->lines += c[C_LINES];
    s->inserted += c[C_INSERTED];
    s->duplicates += c[C_DUP];
    s->malformed += c[C_BAD];
    s->filtered_language += c[C_LANG];
    s->filtered_toxic += c[C_TOXIC];
    s->filtered_redacted += c[C_REDACTED];
    s->filtered_turns += c[C_TURNS];
    s->filtered += c[C_LANG] + c[C_TOXIC] + c[C_REDACTED] + c[C_TURNS];
    s->messages += c[C_MESSAGES];
    s->bytes += c[C_BYTES];
}

/* ---- a fast path for the parse ----------------------------------------
 * jansson's reader goes byte by byte through a string buffer and builds
 * every object of a record, including the moderation scores and headers
 * that ingest never reads; on WildChat lines that is about 37 MB/s, a
 * third of CPython's json. This reader checks the whole line against the
 * JSON grammar (RFC 8259) with jansson's own limits, but builds jansson
 * values only for the keys check_record() reads; everything else is
 * validated and skipped. Whenever it meets anything it is not sure of
 * (any error, a huge integer, deep nesting), it gives up and the line goes
 * to json_loadb(), so jansson alone decides what is rejected and with what
 * message. RLHI_INGEST_JANSSON=1 turns the fast path off; the tests run
 * both paths on the same inputs and compare the stores. */

struct fp {
    const char *p, *end;
    int depth;
};

/* jansson's parser depth limit is 2048; stop well before it. */
#define FP_MAX_DEPTH 256

static const char *const top_keys[] = {
    "conversation", "messages", "conversations", "conversation_hash",
    "conversation_id",
    "id", "model", "language", "timestamp", "toxic", "redacted",
    "hashed_ip", "user", "turn", NULL,
};
static const char *const msg_keys[] = {
    "role", "content", "timestamp", "turn_identifier", "toxic",
    "hashed_ip", "from", "value", NULL,
};

static void fp_ws(struct fp *f)
{
    while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' ||
                             *f->p == '\n' || *f->p == '\r'))
        f->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool read_u4(const char *p, unsigned *v)
{
    int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]),
        d = hexval(p[3]);

    if ((a | b | c | d) < 0)
        return false;
    *v = (unsigned)(a << 12 | b << 8 | c << 4 | d);
    return true;
}

/* Length of a valid UTF-8 sequence at p (as jansson's utf8 checks: no
 * overlongs, no surrogates, nothing above U+10FFFF), or 0. */
static int utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], v;
    int n, i;

    if (c < 0xc2 || c > 0xf4)
        return 0;
    n = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (end - p < n)
        return 0;
    v = c & (0x7f >> n);
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3f);
    }
    if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) ||
        (v >= 0xd800 && v <= 0xdfff) || v > 0x10ffff)
        return 0;
    return n;
}

/* Parses a string at f->p (on the opening quote). With `out`, makes a
 * jansson string (or, with `key`, copies the text into key[0..cap)). */
/* Do the 8 bytes in x hold only plain ASCII string bytes (no '"', '\\',
 * control character or byte >= 0x80)? The classic bit tricks: a byte of
 * v is zero iff (v - 0x01) & ~v has its high bit set, a byte is below n
 * (n <= 0x80) iff (v - n) & ~v does; exact for "any byte" questions. */
static inline bool plain8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');

    return !((((q - ones) & ~q) | ((b - ones) & ~b) |
              ((x - ones * 0x20) & ~x) | x) & high);
}

static bool fp_string(struct fp *f, json_t **out, char *key, size_t cap)
{
    const char *s = ++f->p, *run;
    struct rlhi_buf dec = RLHI_BUF_INIT;
    bool esc = false, ok = false;

    for (run = s; f->p < f->end; ) {
        unsigned char c;
        uint64_t x;

        /* plain ASCII eight bytes at a time: most of any text */
        while (f->end - f->p >= 8) {
            memcpy(&x, f->p, 8);
            if (!plain8(x))
                break;
            f->p += 8;
        }
        if (f->p >= f->end)
            break;
        c = (unsigned char)*f->p;

        if (c == '"')
            break;
        if (c < 0x20)
            goto out;
        if (c < 0x80 && c != '\\') {
            f->p++;
            continue;
        }
        if (c >= 0x80) {
            int k = utf8_len((const unsigned char *)f->p,
                             (const unsigned char *)f->end);

            if (!k)
                goto out;
            f->p += k;
            continue;
        }
        /* an escape: from here on the text is decoded into `dec` (the
         * plain run before each escape, then the escaped character) */
        esc = true;
        if (f->end - f->p < 2)
            goto out;
        if ((out || key) && rlhi_buf_add(&dec, run, (size_t)(f->p - run)))
            goto out;
        switch (f->p[1]) {
        case '"': case '\\': case '/': c = (unsigned char)f->p[1]; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            unsigned u, lo;
            char utf[4];
            int k;

            if (f->end - f->p < 6 || !read_u4(f->p + 2, &u) || u == 0)
                goto out;
            f->p += 6;
            if (u >= 0xdc00 && u <= 0xdfff)
                goto out;
            if (u >= 0xd800 && u <= 0xdbff) {
                if (f->end - f->p < 6 || f->p[0] != '\\' || f->p[1] != 'u' ||
                    !read_u4(f->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    goto out;
                f->p += 6;
                u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (u < 0x80) {
                utf[0] = (char)u;
                k = 1;
            } else if (u < 0x800) {
                utf[0] = (char)(0xc0 | u >> 6);
                utf[1] = (char)(0x80 | (u & 0x3f));
                k = 2;
            } else if (u < 0x10000) {
                utf[0] = (char)(0xe0 | u >> 12);
                utf[1] = (char)(0x80 | ((u >> 6) & 0x3f));
                utf[2] = (char)(0x80 | (u & 0x3f));
                k = 3;
            } else {
                utf[0] = (char)(0xf0 | u >> 18);
                utf[1] = (char)(0x80 | ((u >> 12) & 0x3f));
                utf[2] = (char)(0x80 | ((u >> 6) & 0x3f));
                utf[3] = (char)(0x80 | (u & 0x3f));
                k = 4;
            }
            if ((out || key) && rlhi_buf_add(&dec, utf, (size_t)k))
                goto out;
            run = f->p;
            continue;
        }
        default:
            goto out;
        }
        if ((out || key) && rlhi_buf_addc(&dec, (char)c))
            goto out;
        f->p += 2;
        run = f->p;
    }
    if (f->p >= f->end)
        goto out;
    if (esc && (out || key) && rlhi_buf_add(&dec, run, (size_t)(f->p - run)))
        goto out;
    {
        const char *txt = esc ? (dec.buf ? dec.buf : "") : s;
        size_t len = esc ? dec.len : (size_t)(f->p - s);

        if (key) {
            if (len >= cap || memchr(txt, 0, len))
                goto out;
            memcpy(key, txt, len);
            key[len] = 0;
        } else if (out && !(*out = json_stringn_nocheck(txt, len))) {
            goto out;
        }
    }
    f->p++; /* closing quote */
    ok = true;
out:
    rlhi_buf_release(&dec);
    return ok;
}

static bool fp_value(struct fp *f, json_t **out, const char *const *keep);

/* An object; with `out`, built, keeping only `keep` keys (NULL: all). */
static bool fp_object(struct fp *f, json_t **out, const char *const *keep,
                      const char *const *child_keep)
{
    json_t *o = NULL;
    char key[64];

    if (++f->depth > FP_MAX_DEPTH)
        return false;
    if (out && !(o = json_object()))
        return false;
    f->p++;
    fp_ws(f);
    if (f->p < f->end && *f->p == '}') {
        f->p++;
        goto done;
    }
    for (;;) {
        json_t *v = NULL;
        bool want = false;

        fp_ws(f);
        if (f->p >= f->end || *f->p != '"')
            return false;
        if (out) {
            /* keys longer than any kept key are skipped unread */
            const char *save = f->p;

            if (!fp_string(f, NULL, key, sizeof key)) {
                /* too long for `key` (or invalid): fine only when the
                 * object keeps a few short keys and this is none */
                f->p = save;
                if (!keep || !fp_string(f, NULL, NULL, 0))
                    return false;
                key[0] = 0;
            }
            want = true;
            if (keep) {
                want = false;
                for (int i = 0; keep[i] && !want; i++)
                    want = key[0] == keep[i][0] && !strcmp(key, keep[i]);
            }
        } else if (!fp_string(f, NULL, NULL, 0)) {
            return false;
        }
        fp_ws(f);
        if (f->p >= f->end || *f->p != ':')
            return false;
        f->p++;
        fp_ws(f);
        /* the messages array's objects keep only the message keys */
        if (!fp_value(f, want ? &v : NULL,
                      want && keep == top_keys &&
                              (!strcmp(key, "conversation") ||
                               !strcmp(key, "messages") ||
                               !strcmp(key, "conversations")) ? child_keep
                                                         : NULL))
            return false;
        if (want && json_object_set_new_nocheck(o, key, v))
            return false;
        fp_ws(f);
        if (f->p < f->end && *f->p == ',') {
            f->p++;
            continue;
        }
        if (f->p < f->end && *f->p == '}') {
            f->p++;
            break;
        }
        return false;
    }
done:
    f->depth--;
    if (out)
        *out = o;
    return true;
}

/* A value; `keep` applies to the objects inside an array value. */
static bool fp_value(struct fp *f, json_t **out, const char *const *keep)
{
    const char *s = f->p;

    if (f->p >= f->end)
        return false;
    switch (*f->p) {
    case '"':
        return fp_string(f, out, NULL, 0);
    case '{':
        return fp_object(f, out, keep, NULL);
    case '[': {
        json_t *a = NULL;

        if (++f->depth > FP_MAX_DEPTH || (out && !(a = json_array())))
            return false;
        f->p++;
        fp_ws(f);
        if (f->p < f->end && *f->p == ']') {
            f->p++;
        } else {
            for (;;) {
                json_t *v = NULL;

                fp_ws(f);
                if (f->p < f->end && *f->p == '{' && keep) {
                    if (!fp_object(f, out ? &v : NULL, keep, NULL))
                        return false;
                } else if (!fp_value(f, out ? &v : NULL, NULL)) {
                    return false;
                }
                if (out && json_array_append_new(a, v))
                    return false;
                fp_ws(f);
                if (f->p < f->end && *f->p == ',') {
                    f->p++;
                    continue;
                }
                if (f->p < f->end && *f->p == ']') {
                    f->p++;
                    break;
                }
                return false;
            }
        }
        f->depth--;
        if (out)
            *out = a;
        return true;
    }
    case 't':
        if (f->end - f->p >= 4 && !memcmp(f->p, "true", 4)) {
            f->p += 4;
            return !out || (*out = json_true());
        }
        return false;
    case 'f':
        if (f->end - f->p >= 5 && !memcmp(f->p, "false", 5)) {
            f->p += 5;
            return !out || (*out = json_false());
        }
        return false;
    case 'n':
        if (f->end - f->p >= 4 && !memcmp(f->p, "null", 4)) {
            f->p += 4;
            return !out || (*out = json_null());
        }
        return false;
    default: {
        bool real = false;
        size_t digits = 0;
        char num[64];

        if (f->p < f->end && *f->p == '-')
            f->p++;
        if (f->p < f->end && *f->p == '0') {
            f->p++;
            digits = 1;
        } else {
            while (f->p < f->end && *f->p >= '0' && *f->p <= '9') {
                f->p++;
                digits++;
            }
        }
        if (!digits)
            return false;
        if (f->p < f->end && *f->p == '.') {
            size_t fd = 0;

            real = true;
            for (f->p++; f->p < f->end && *f->p >= '0' && *f->p <= '9';
                 f->p++)
                fd++;
            if (!fd)
                return false;
        }
        if (f->p < f->end && (*f->p == 'e' || *f->p == 'E')) {
            size_t ed = 0;

            real = true;
            f->p++;
            if (f->p < f->end && (*f->p == '+' || *f->p == '-'))
                f->p++;
            for (; f->p < f->end && *f->p >= '0' && *f->p <= '9'; f->p++)
                ed++;
            if (!ed)
                return false;
        }
        /* Huge integers and long numbers: let jansson decide. */
        if ((size_t)(f->p - s) >= sizeof num || (!real && digits > 18))
            return false;
        if (!out && !real)
            return true;
        memcpy(num, s, (size_t)(f->p - s));
        num[f->p - s] = 0;
        if (real) {
            /* jansson rejects a real that overflows, even in a value
             * nobody reads: so must we (only exponents can overflow in
             * under 64 characters, but strtod is the simple check) */
            double d = strtod(num, NULL);

            if (!isfinite(d))
                return false;
            return !out || (*out = json_real(d)) != NULL;
        }
        return (*out = json_integer(strtoll(num, NULL, 10))) != NULL;
    }
    }
}

/* The whole line as a filtered tree, or NULL to fall back to jansson. */
static json_t *fast_parse(const char *s, size_t n)
{
    struct fp f = {s, s + n, 0};
    json_t *v = NULL;

    fp_ws(&f);
    if (f.p >= f.end || *f.p != '{')
        return NULL;
    if (!fp_object(&f, &v, top_keys, msg_keys))
        return NULL;
    fp_ws(&f);
    return f.p == f.end ? v : NULL;
}

/* Parses and checks one line of the group (runs on any thread). */
static bool use_fast = true;

/* Parses and checks one line; the tree lives in the group's arena (no
 * json_decref), which is emptied when the group is read again. */
static void parse_rec(struct rec *x, const char *text)
{
    json_error_t jerr;
    json_t *v = use_fast ? fast_parse(text, x->len) : NULL;

    if (!v)
        v = json_loadb(text, x->len, 0, &jerr);
    if (!v) {
        snprintf(x->err, sizeof x->err, "%s", jerr.text);
        x->status = RLHI_EFORMAT;
        return;
    }
    x->status = check_record(x, v);
    if (x->status < 0 && x->status != RLHI_EFORMAT)
        snprintf(x->err, sizeof x->err, "%s", rlhi_errmsg());
}

/* ---- the reading thread -------------------------------------------------
 * Reading, decompressing and parsing a group of lines takes about a third
 * of the time it takes SQLite to store it, so a second thread does it while
 * the calling thread stores the group before: two groups take turns. The
 * store is only ever touched by the calling thread, in line order, so a
 * run's rows, markers and messages are exactly those of a one-thread run. */

/* Reads up to a group of lines and parses them. */
static void read_group(struct rlhi_jsonl *r, struct group *gr)
{
    int rrc = 1;

    rlhi_buf_clear(&gr->text);
    arena_reset(&gr->arena);
    gr->n = 0;
    gr->end = 0;
    while (gr->n < GROUP_LINES && gr->text.len < GROUP_BYTES) {
        struct rec *x = &gr->recs[gr->n];
        const char *line;
        size_t len;

        if ((rrc = rlhi_jsonl_next_line(r, &line, &len)) <= 0)
            break;
        x->off = gr->text.len;
        x->ids_with_user = gr->ids_with_user;
        x->len = len;
        x->line_no = rlhi_jsonl_line_no(r);
        x->end_off = rlhi_jsonl_end_offset(r);
        /* copied: the reader reuses its buffer */
        if (rlhi_buf_add(&gr->text, line, len) ||
            rlhi_buf_addc(&gr->text, 0)) {
            rrc = rlhi_err(RLHI_ENOMEM, "cannot read '%s'",
                           rlhi_jsonl_path(r));
            break;
        }
        gr->n++;
    }
    if (rrc <= 0) {
        gr->end = rrc == 0 ? 1 : rrc;
        snprintf(gr->err, sizeof gr->err, "%s", rrc ? rlhi_errmsg() : "");
    }
    gr->raw_bytes = rlhi_jsonl_raw_bytes(r);
    cur_arena = &gr->arena;
    for (int i = 0; i < gr->n; i++)
        parse_rec(&gr->recs[i], gr->text.buf + gr->recs[i].off);
    cur_arena = NULL;
}

static void *reader_main(void *arg)
{
    struct ingest *g = arg;

    for (int k = 0;; k ^= 1) {
        struct group *gr = &g->grp[k];
        bool stop;

        pthread_mutex_lock(&g->mu);
        while (gr->ready && !g->stop)
            pthread_cond_wait(&g->cv, &g->mu);
        stop = g->stop;
        pthread_mutex_unlock(&g->mu);
        if (stop)
            break;
        read_group(g->r, gr);
        pthread_mutex_lock(&g->mu);
        gr->ready = true;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        if (gr->end)
            break;
    }
    return NULL;
}

/* Starts reading g->r. Without a thread (none could be started), groups
 * are read on demand by take_group. */
static void start_reading(struct ingest *g)
{
    g->stop = false;
    g->grp[0].ready = g->grp[1].ready = false;
    g->threaded = pthread_create(&g->th, NULL, reader_main, g) == 0;
}

/* Waits for group k to be read and parsed. */
static struct group *take_group(struct ingest *g, int k)
{
    struct group *gr = &g->grp[k];

    if (!g->threaded) {
        read_group(g->r, gr);
        return gr;
    }
    pthread_mutex_lock(&g->mu);
    while (!gr->ready)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return gr;
}

/* Group k is stored: the reading thread may fill it again. */
static void give_group(struct ingest *g, int k)
{
    struct group *gr = &g->grp[k];

    for (int i = 0; i < gr->n; i++)
        conv_reset(&gr->recs[i].c);
    if (!g->threaded)
        return;
    pthread_mutex_lock(&g->mu);
    gr->ready = false;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Stops the reading thread (it finishes the group in hand) and waits. */
static void stop_reading(struct ingest *g)
{
    if (!g->threaded)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->th, NULL);
    g->threaded = false;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < g->grp[k].n; i++)
            conv_reset(&g->grp[k].recs[i].c);
}

static int ingest_file(struct ingest *g, const char *path, int *batches,
                       struct rlhi_ingest_stats *stats)
{
    const struct rlhi_ingest_opts *o = g->o;
    uint64_t batch = o->batch > 0 ? (uint64_t)o->batch : INGEST_BATCH_LINES;
    uint64_t batch_bytes = o->batch > 0 ? UINT64_MAX : INGEST_BATCH_BYTES;
    uint64_t since_lines = 0, since_bytes = 0;
    struct rlhi_progress prog;
    uint64_t cnt[C_N] = {0}, end_off = 0, end_line = 0, raw = 0;
    char *key = NULL, *mark = NULL;
    struct stat st;
    bool in_txn = false, reading = false;
    int rc, end = 0;

    if ((rc = rlhi_jsonl_open(&g->r, path)))
        return rc;

    /* Resume where an earlier run of the same file stopped. */
    if (strcmp(path, "-") && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        if (!(key = marker_key(path, &st, o))) {
            rc = rlhi_err(RLHI_ENOMEM, "cannot ingest '%s'", path);
            goto out;
        }
        if (o->force && (rc = rlhi_store_mark_del(g->s, "ingest", key)))
            goto out;
        if ((rc = rlhi_store_mark_get(g->s, "ingest", key, &mark)) < 0)
            goto out;
        if (rc == 1) {
            uint64_t off, lno;
            int state = marker_parse(mark, &off, &lno, cnt);

            if (state == 1) {
                rlhi_info("%s: already ingested (--force reads it again)",
                          path);
                stats->resumed_files++;
                rc = 0;
                goto out;
            }
            if (state == 0) {
                if ((rc = rlhi_jsonl_skip_to(g->r, off, lno)))
                    goto out;
                rlhi_info("%s: resuming at line %llu", path,
                          (unsigned long long)lno + 1);
                stats->resumed_files++;
                end_off = off;
                end_line = lno;
            } else {
                memset(cnt, 0, sizeof cnt);
            }
        }
    } else {
        st.st_size = 0;
    }

    /* progress in bytes of the file as stored (compressed or not) */
    rlhi_progress_start_bytes(&prog, path, (uint64_t)st.st_size);
    if ((rc = rlhi_store_begin(g->s)))
        goto out;
    in_txn = true;
    start_reading(g);
    reading = true;
    for (int k = 0; !end; k ^= 1) {
        struct group *gr = take_group(g, k);

        /* Store in line order; commit every `batch` lines together with
         * the marker for the line after. */
        for (int i = 0; i < gr->n; i++) {
            struct rec *x = &gr->recs[i];

            cnt[C_LINES]++;
            if (x->status == RLHI_EFORMAT) {
                rlhi_warn("%s:%llu: %s", path,
                          (unsigned long long)x->line_no, x->err);
                cnt[C_BAD]++;
            } else if (x->status < 0) {
                rc = rlhi_err(x->status, "%s:%llu: %s", path,
                              (unsigned long long)x->line_no,
                              x->err[0] ? x->err : "cannot read the line");
                goto out;
            } else if ((rc = filtered(o, &x->c))) {
                cnt[rc]++;
            } else {
                rc = store_conv(g, &x->c, path, x->line_no);
                if (rc < 0)
                    goto out;
                cnt[rc]++;
                if (rc == C_INSERTED)
                    cnt[C_MESSAGES] += x->c.n;
            }
            end_off = x->end_off;
            end_line = x->line_no;

            since_bytes += x->len + 1;
            if (++since_lines >= batch || since_bytes >= batch_bytes) {
                since_lines = since_bytes = 0;
                cnt[C_BYTES] = end_off;
                if ((key && (rc = marker_put(g, key, end_off, end_line, cnt,
                                             false))) ||
                    (rc = rlhi_store_commit(g->s)))
                    goto out;
                in_txn = false;
                rlhi_progress_update(&prog, raw);
                if (o->stop_after_batches &&
                    ++*batches >= o->stop_after_batches) {
                    rc = rlhi_err(RLHI_EIO, "stopped after %d batches "
                                  "(test hook)", *batches);
                    goto out;
                }
                if ((rc = rlhi_store_begin(g->s)))
                    goto out;
                in_txn = true;
            }
        }
        raw = gr->raw_bytes;
        end = gr->end;
        if (end == RLHI_EFORMAT) {
            /* Corrupt or truncated compressed data: what came before it
             * stays; the file counts as one malformed record. */
            rlhi_warn("%s", gr->err);
            cnt[C_BAD]++;
        } else if (end < 0) {
            rc = rlhi_err(end, "%s", gr->err);
            goto out;
        }
        give_group(g, k);
    }
    stop_reading(g);
    reading = false;
    cnt[C_BYTES] = end_off;
    if ((key && (rc = marker_put(g, key, end_off, end_line, cnt, true))) ||
        (rc = rlhi_store_commit(g->s)))
        goto out;
    in_txn = false;
    rlhi_progress_update(&prog, raw);
    rlhi_progress_finish(&prog);
    rc = 0;

out:
    if (reading)
        stop_reading(g);
    if (in_txn)
        rlhi_store_rollback(g->s);
    if (rc < 0)
        map_clear(g); /* ids of rolled-back users must not be reused */
    else
        add_counts(stats, cnt);
    rlhi_free(key);
    rlhi_free(mark);
    rlhi_jsonl_close(g->r);
    g->r = NULL;
    return rc < 0 ? rc : 0;
}

/* Brings users.n_conversations up to date and, with a minimum, deletes the
 * users below it with everything that hangs off them. */
static int finish_users(struct ingest *g, struct rlhi_ingest_stats *stats)
{
    struct rlhi_store *s = g->s;
    sqlite3_stmt *st = NULL;
    int rc, min = g->o->min_conversations_per_user;

    if ((rc = rlhi_store_begin(s)))
        return rc;
    rc = rlhi_store_exec(s, "UPDATE users SET n_conversations = (SELECT "
                         "count(*) FROM conversations c WHERE c.user_id = "
                         "users.id) WHERE n_conversations IS NOT (SELECT "
                         "count(*) FROM conversations c WHERE c.user_id = "
                         "users.id)");
    if (rc)
        goto out;
    if (min > 0) {
        char sql[1024];

        snprintf(sql, sizeof sql,
                 "CREATE TEMP TABLE IF NOT EXISTS prune(id INTEGER "
                 "PRIMARY KEY); DELETE FROM prune;"
                 "INSERT INTO prune SELECT id FROM users WHERE "
                 "n_conversations < %d;", min);
        if ((rc = rlhi_store_exec(s, sql)))
            goto out;
        if ((rc = rlhi_store_prepare(s, &st, "SELECT (SELECT count(*) FROM "
                                     "prune), (SELECT count(*) FROM "
                                     "conversations WHERE user_id IN prune)"
                                     )))
            goto out;
        if (sqlite3_step(st) == SQLITE_ROW) {
            stats->pruned_users = (uint64_t)sqlite3_column_int64(st, 0);
            stats->pruned_conversations =
                (uint64_t)sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
        rc = rlhi_store_exec(s,
            "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM "
            " conversations WHERE user_id IN prune);"
            "DELETE FROM feedback WHERE conversation_id IN (SELECT id FROM "
            " conversations WHERE user_id IN prune);"
            "DELETE FROM conversations WHERE user_id IN prune;"
            "DELETE FROM personas WHERE user_id IN prune;"
            "DELETE FROM users WHERE id IN prune;"
            "DROP TABLE prune;");
        if (rc)
            goto out;
    }
    rc = rlhi_store_commit(s);
out:
    if (rc)
        rlhi_store_rollback(s);
    return rc;
}

int rlhi_ingest(struct rlhi_store *s, const char *const *paths, int npaths,
                const struct rlhi_ingest_opts *opts,
                struct rlhi_ingest_stats *stats)
{
    static const struct rlhi_ingest_opts defaults;
    struct ingest g;
    double t0 = rlhi_time_now();
    int64_t run = 0;
    int i, rc, batches = 0;
    bool bulk = false, checks_off = false;
    char counts[512];

    memset(&g, 0, sizeof g);
    memset(stats, 0, sizeof *stats);
    pthread_once(&arena_once, arena_install);
    use_fast = !getenv("RLHI_INGEST_JANSSON");
    g.s = s;
    g.o = opts ? opts : &defaults;
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    if (!(g.grp[0].recs = rlhi_calloc(GROUP_LINES, sizeof *g.grp[0].recs)) ||
        !(g.grp[1].recs = rlhi_calloc(GROUP_LINES, sizeof *g.grp[1].recs))) {
        rc = rlhi_err(RLHI_ENOMEM, "cannot start ingest");
        goto out;
    }
    /* check_record has checked every role; SQLite's CHECK(role IN (...))
     * builds an ephemeral index on every message insert (a third of the
     * storing thread's time), so the statements are compiled without it. */
    if ((rc = rlhi_store_exec(s, "PRAGMA ignore_check_constraints=ON")))
        goto out;
    checks_off = true;
    if ((rc = rlhi_store_run_start(s, "ingest", g.o->args, &run)) ||
        (rc = rlhi_store_prepare(s, &g.user_get, "SELECT id FROM users "
                                 "WHERE key = ?")) ||
        (rc = rlhi_store_prepare(s, &g.user_put, "INSERT INTO users(key) "
                                 "VALUES (?)")) ||
        (rc = rlhi_store_prepare(s, &g.conv_put, "INSERT OR IGNORE INTO "
                                 "conversations(hash, user_id, model, "
                                 "timestamp, language, toxic, redacted, "
                                 "turn_count, n_messages, source, "
                                 "source_line) VALUES (?, ?, ?, ?, ?, ?, ?, "
                                 "?, ?, ?, ?)")) ||
        (rc = msg_stmt(&g, 1, &g.msg_put[0])))
        goto out;

    {
        char *v = NULL;

        if ((rc = rlhi_store_meta_get(s, "conversation_ids", &v)) < 0)
            goto out;
        g.grp[0].ids_with_user = g.grp[1].ids_with_user =
            !v || strcmp(v, "messages");
        rlhi_free(v);
    }
    if ((rc = rlhi_store_bulk_begin(s)))
        goto out;
    bulk = true;
    for (i = 0; i < npaths; i++) {
        if ((rc = ingest_file(&g, paths[i], &batches, stats)))
            goto out;
        stats->files++;
    }
    rc = finish_users(&g, stats);

out:
    if (bulk) {
        char why[512];

        /* keep the first error's message */
        snprintf(why, sizeof why, "%s", rlhi_errmsg());
        if (rlhi_store_bulk_end(s) && rc == 0)
            rc = RLHI_EDB;
        else if (rc)
            rlhi_err(rc, "%s", why);
    }
    sqlite3_finalize(g.user_get);
    sqlite3_finalize(g.user_put);
    sqlite3_finalize(g.conv_put);
    for (i = 0; i < MSG_ROWS; i++)
        sqlite3_finalize(g.msg_put[i]);
    if (checks_off)
        sqlite3_exec(rlhi_store_db(s), "PRAGMA ignore_check_constraints=OFF",
                     NULL, NULL, NULL);
    for (int k = 0; k < 2; k++) {
        struct group *gr = &g.grp[k];

        for (i = 0; gr->recs && i < GROUP_LINES; i++) {
            conv_reset(&gr->recs[i].c);
            rlhi_free(gr->recs[i].c.m);
        }
        rlhi_free(gr->recs);
        rlhi_buf_release(&gr->text);
        arena_release(&gr->arena);
    }
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    map_clear(&g);
    stats->seconds = rlhi_time_now() - t0;
    if (rc == 0 && run) {
        snprintf(counts, sizeof counts,
                 "{\"files\": %llu, \"lines\": %llu, \"inserted\": %llu, "
                 "\"duplicates\": %llu, \"malformed\": %llu, \"filtered\": "
                 "%llu, \"pruned_conversations\": %llu, \"messages\": %llu}",
                 (unsigned long long)stats->files,
                 (unsigned long long)stats->lines,
                 (unsigned long long)stats->inserted,
                 (unsigned long long)stats->duplicates,
                 (unsigned long long)stats->malformed,
                 (unsigned long long)stats->filtered,
                 (unsigned long long)stats->pruned_conversations,
                 (unsigned long long)stats->messages);
        rc = rlhi_store_run_finish(s, run, counts);
    }
    return rc;
}
