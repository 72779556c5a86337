/* Tests for ingest and the store: the case file tests/cases/ingest.test
 * (rows, warnings with line numbers, counts), gzip and zstd input,
 * re-ingesting, resuming after an injected stop and after kill -9, the
 * canonical id of conversations without one, and the command's exit
 * status. */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "check.h"
#include "rlhi/pipeline.h"
#include "rlhi/store.h"

static char dir[] = "/tmp/rlhi-ingest-XXXXXX";
static struct rlhi_buf warnings = RLHI_BUF_INIT;

static const char *tmp(const char *name)
{
    static char p[4][512];
    static int k;

    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void on_log(enum rlhi_log_level level, const char *msg, void *u)
{
    (void)u;
    if (level == RLHI_LOG_WARN) {
        rlhi_buf_adds(&warnings, msg);
        rlhi_buf_addc(&warnings, '\n');
    }
}

/* Replaces every `from` in b with `to`. */
static void replace_all(struct rlhi_buf *b, const char *from, const char *to)
{
    struct rlhi_buf o = RLHI_BUF_INIT;
    const char *p = b->buf ? b->buf : "", *q;

    while ((q = strstr(p, from))) {
        rlhi_buf_add(&o, p, (size_t)(q - p));
        rlhi_buf_adds(&o, to);
        p = q + strlen(from);
    }
    rlhi_buf_adds(&o, p);
    rlhi_buf_release(b);
    *b = o;
}

/* Dumps the store in the case file's row format. */
static void dump(struct rlhi_store *s, struct rlhi_buf *out)
{
    sqlite3_stmt *st;

    rlhi_buf_clear(out);
    rlhi_store_prepare(s, &st, "SELECT 'conv', c.hash, u.key, c.model, "
                       "c.timestamp, c.language, c.toxic, c.redacted, "
                       "c.turn_count, c.n_messages FROM conversations c JOIN "
                       "users u ON u.id = c.user_id ORDER BY c.hash");
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < 10; i++) {
            const char *v = (const char *)sqlite3_column_text(st, i);

            rlhi_buf_addf(out, "%s%s", i ? "|" : "", v ? v : "");
        }
        rlhi_buf_addc(out, '\n');
    }
    sqlite3_finalize(st);
    rlhi_store_prepare(s, &st, "SELECT 'msg', c.hash, m.idx, m.role, "
                       "replace(m.content, char(10), '\\n'), m.timestamp, "
                       "m.turn_identifier FROM messages m JOIN conversations "
                       "c ON c.id = m.conversation_id ORDER BY c.hash, "
                       "m.idx");
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < 7; i++) {
            const char *v = (const char *)sqlite3_column_text(st, i);

            rlhi_buf_addf(out, "%s%s", i ? "|" : "", v ? v : "");
        }
        rlhi_buf_addc(out, '\n');
    }
    sqlite3_finalize(st);
    if (!out->buf)
        rlhi_buf_adds(out, "");
}

/* Appends an input line, turning \xHH into the raw byte. */
static void add_input(struct rlhi_buf *b, const char *line)
{
    for (const char *p = line; *p; p++) {
        unsigned v;

        if (p[0] == '\\' && p[1] == 'x' && sscanf(p + 2, "%2x", &v) == 1) {
            rlhi_buf_addc(b, (char)v);
            p += 3;
        } else {
            rlhi_buf_addc(b, *p);
        }
    }
    rlhi_buf_addc(b, '\n');
}

struct icase {
    char name[256];
    int line;
    struct rlhi_buf opts, input, rows, warns, counts;
};

static void run_case(struct icase *c, const char *cases)
{
    struct rlhi_ingest_opts o = {0};
    struct rlhi_ingest_stats st;
    struct rlhi_store *s = NULL;
    struct rlhi_buf got = RLHI_BUF_INIT;
    char counts[256], db[64], in[64], *tok, *save = NULL;
    const char *paths[1];
    static int n;

    snprintf(db, sizeof db, "case%d.db", n);
    snprintf(in, sizeof in, "case%d.jsonl", n++);
    {
        FILE *f = fopen(tmp(in), "wb");

        fwrite(c->input.buf ? c->input.buf : "", 1, c->input.len, f);
        fclose(f);
    }
    for (tok = c->opts.buf ? strtok_r(c->opts.buf, " ", &save) : NULL; tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (!strcmp(tok, "--drop_toxic"))
            o.drop_toxic = true;
        else if (!strcmp(tok, "--drop_redacted"))
            o.drop_redacted = true;
        else if (!strcmp(tok, "--language"))
            o.language = strtok_r(NULL, " ", &save);
        else if (!strcmp(tok, "--max_turns"))
            o.max_turns = atoi(strtok_r(NULL, " ", &save));
        else if (!strcmp(tok, "--min_conversations_per_user"))
            o.min_conversations_per_user = atoi(strtok_r(NULL, " ", &save));
        else
            CHECK_MSG(0, "%s:%d: unknown option '%s'", cases, c->line, tok);
    }

    rlhi_buf_clear(&warnings);
    CHECK_OK(rlhi_store_open(&s, tmp(db)));
    if (!s)
        return;
    paths[0] = tmp(in);
    CHECK_OK(rlhi_ingest(s, paths, 1, &o, &st));
    dump(s, &got);
    CHECK_MSG(!strcmp(got.buf, c->rows.buf ? c->rows.buf : ""),
              "%s:%d: %s: rows\n--- got:\n%s--- expected:\n%s", cases,
              c->line, c->name, got.buf, c->rows.buf ? c->rows.buf : "");
    replace_all(&warnings, tmp(in), "FILE");
    CHECK_MSG(!strcmp(warnings.buf ? warnings.buf : "",
                      c->warns.buf ? c->warns.buf : ""),
              "%s:%d: %s: warnings\n--- got:\n%s--- expected:\n%s", cases,
              c->line, c->name, warnings.buf ? warnings.buf : "",
              c->warns.buf ? c->warns.buf : "");
    snprintf(counts, sizeof counts, "inserted=%llu duplicates=%llu "
             "malformed=%llu filtered=%llu\n",
             (unsigned long long)st.inserted,
             (unsigned long long)st.duplicates,
             (unsigned long long)st.malformed,
             (unsigned long long)st.filtered);
    if (c->counts.buf)
        CHECK_MSG(!strcmp(counts, c->counts.buf), "%s:%d: %s: counts %s"
                  "expected %s", cases, c->line, c->name, counts,
                  c->counts.buf);

    /* Re-ingesting (even with --force) changes nothing. */
    {
        char h1[65], h2[65];

        CHECK_OK(rlhi_store_content_hash(s, h1));
        o.force = true;
        CHECK_OK(rlhi_ingest(s, paths, 1, &o, &st));
        /* (a pruned light user's conversations come back and go again) */
        if (!o.min_conversations_per_user)
            CHECK_INT_EQ(st.inserted, 0);
        CHECK_OK(rlhi_store_content_hash(s, h2));
        CHECK_STR_EQ(h1, h2);
    }
    rlhi_store_close(s);
    rlhi_buf_release(&got);
}

static void release_case(struct icase *c)
{
    rlhi_buf_release(&c->opts);
    rlhi_buf_release(&c->input);
    rlhi_buf_release(&c->rows);
    rlhi_buf_release(&c->warns);
    rlhi_buf_release(&c->counts);
    memset(c, 0, sizeof *c);
}

/* Runs every case of the file; returns how many. */
static int run_cases(const char *path)
{
    FILE *f = fopen(path, "r");
    static char line[65536];
    struct icase c;
    struct rlhi_buf *sec = NULL;
    int n = 0, lno = 0;
    bool have = false;

    memset(&c, 0, sizeof c);
    if (!f)
        return -1;
    for (;;) {
        char *got = fgets(line, sizeof line, f);
        size_t len = got ? strlen(line) : 0;

        lno++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!got || !strncmp(line, "### ", 4)) {
            if (have) {
                run_case(&c, path);
                n++;
            }
            release_case(&c);
            have = got != NULL;
            sec = NULL;
            if (!got)
                break;
            snprintf(c.name, sizeof c.name, "%.200s", line + 4);
            c.line = lno;
            continue;
        }
        if (!have || (line[0] == '#' && !sec) || (!len && !sec))
            continue;
        if (!strncmp(line, "options: ", 9)) {
            rlhi_buf_adds(&c.opts, line + 9);
        } else if (!strcmp(line, "<<< input")) {
            sec = &c.input;
        } else if (!strcmp(line, ">>> rows")) {
            sec = &c.rows;
        } else if (!strcmp(line, ">>> warnings")) {
            sec = &c.warns;
        } else if (!strcmp(line, ">>> counts")) {
            sec = &c.counts;
        } else if (sec == &c.input) {
            add_input(sec, line);
        } else if (sec && len) {
            rlhi_buf_adds(sec, line);
            rlhi_buf_addc(sec, '\n');
        }
    }
    fclose(f);
    return n;
}

/* A WildChat-shaped log of n conversations from n/3 users. */
static void write_log(const char *path, int n)
{
    FILE *f = fopen(path, "w");

    for (int i = 0; i < n; i++) {
        fprintf(f, "{\"conversation_hash\": \"%08x%d\", \"model\": "
                   "\"gpt-4\", \"timestamp\": \"2023-05-01T10:00:00Z\", "
                   "\"turn\": 2, \"language\": \"English\", \"toxic\": "
                   "false, \"redacted\": false, \"hashed_ip\": \"ip%d\", "
                   "\"conversation\": [{\"role\": \"user\", \"content\": "
                   "\"question %d about topic %d\"}, {\"role\": "
                   "\"assistant\", \"content\": \"answer %d\"}, {\"role\": "
                   "\"user\", \"content\": \"make it shorter\"}, {\"role\": "
                   "\"assistant\", \"content\": \"ok %d\"}]}\n",
                (unsigned)i * 2654435761u, i, i / 3, i, i % 17, i, i);
        if (i % 997 == 5)
            fputs("{\"broken\": \n", f); /* a malformed line now and then */
    }
    fclose(f);
}

/* Compresses file `from` into `to` with gzip or zstd. */
static void compress_file(const char *from, const char *to, bool zstd)
{
    char *data;
    size_t len, cap, n;
    unsigned char *z;
    FILE *f;

    if (rlhi_file_read(from, &data, &len))
        return;
    cap = len + len / 10 + 1024;
    z = malloc(cap);
    if (zstd) {
        n = ZSTD_compress(z, cap, data, len, 3);
    } else {
        z_stream s;

        memset(&s, 0, sizeof s);
        deflateInit2(&s, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
        s.next_in = (Bytef *)data;
        s.avail_in = (uInt)len;
        s.next_out = z;
        s.avail_out = (uInt)cap;
        deflate(&s, Z_FINISH);
        n = s.total_out;
        deflateEnd(&s);
    }
    f = fopen(to, "wb");
    fwrite(z, 1, n, f);
    fclose(f);
    free(z);
    rlhi_free(data);
}

/* Ingests `path` into a new store `db`; returns the content hash in hex
 * and the stats. */
static int ingest_fresh(const char *db, const char *path,
                        const struct rlhi_ingest_opts *o,
                        struct rlhi_ingest_stats *st, char hex[65])
{
    struct rlhi_store *s = NULL;
    int rc;

    unlink(db);
    if ((rc = rlhi_store_open(&s, db)))
        return rc;
    rc = rlhi_ingest(s, &path, 1, o, st);
    if (rc == 0)
        rc = rlhi_store_content_hash(s, hex);
    rlhi_store_close(s);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cases = getenv("RLHI_CASES") ? getenv("RLHI_CASES")
                                             : "tests/cases";
    char path[4096], ref[65], hex[65], logbuf[512];
    struct rlhi_ingest_stats st, ref_st;
    const char *log;
    int n;

    /* The child of the kill test: ingest slowly until killed. */
    if (argc == 4 && !strcmp(argv[1], "--child-ingest")) {
        struct rlhi_ingest_opts o = {0};
        struct rlhi_store *cs = NULL;
        const char *p = argv[3];

        o.batch = 50; /* many commits for the kill to land between */
        if (rlhi_store_open(&cs, argv[2]) == 0)
            rlhi_ingest(cs, &p, 1, &o, &st);
        return 0;
    }
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    rlhi_log_set_hook(on_log, NULL);

    TEST("ingest.test cases") {
        snprintf(path, sizeof path, "%s/ingest.test", cases);
        n = run_cases(path);
        CHECK_MSG(n >= 10, "%s: %d cases", path, n);
    }

    TEST("canonical id equals Python's json.dumps + sha256") {
        /* python3 -c 'import json,hashlib; m=[{"role":"user","content":
         * "tab\there \"q\" \\ \b\f\x01 é ✓ /"}]; print(hashlib.sha256(
         * json.dumps(m,ensure_ascii=False,separators=(",",":")).encode()
         * ).hexdigest())' */
        const char *roles[] = {"user"};
        const char *contents[] = {"tab\there \"q\" \\ \b\f\x01 \xc3\xa9 "
                                  "\xe2\x9c\x93 /"};

        CHECK_OK(rlhi_ingest_messages_hash(roles, contents, 1, hex));
        CHECK_STR_EQ(hex, "46ca832dcc5058d11279ea3de4c3170b"
                          "f462e48fa9bbffac4a9291e8664212d7");
    }

    TEST("canonical id with a user equals Python's") {
        /* python3 -c 'import json,hashlib; m=[{"role":"user","content":
         * "hi"},{"role":"assistant","content":"Hello! How can I help?"}];
         * print(hashlib.sha256(json.dumps({"user":"u\u00e9 \"1\"",
         * "messages":m},ensure_ascii=False,separators=(",",":")).encode()
         * ).hexdigest())' */
        const char *roles[] = {"user", "assistant"};
        const char *contents[] = {"hi", "Hello! How can I help?"};

        CHECK_OK(rlhi_ingest_conversation_id("u\xc3\xa9 \"1\"", roles,
                                             contents, 2, hex));
        CHECK_STR_EQ(hex, "cd2c6e0fc69360a760028b8bef453d3c"
                          "af65eaafdd2bdb8ce4ae9d14d9aca9c8");
    }

    /* The reference: 5000 conversations (and 6 malformed lines) in one
     * uninterrupted run. */
    snprintf(logbuf, sizeof logbuf, "%s", tmp("big.jsonl"));
    log = logbuf;
    write_log(log, 5000);
    rlhi_buf_clear(&warnings);
    CHECK_OK(ingest_fresh(tmp("ref.db"), log, NULL, &ref_st, ref));
    CHECK_INT_EQ(ref_st.inserted, 5000);
    CHECK_INT_EQ(ref_st.malformed, 6);
    CHECK_INT_EQ(ref_st.messages, 20000);

    TEST("gzip and zstd input give the same store") {
        struct rlhi_ingest_opts o = {0};

        compress_file(log, tmp("big.jsonl.gz"), false);
        compress_file(log, tmp("big.jsonl.zst"), true);
        CHECK_OK(ingest_fresh(tmp("gz.db"), tmp("big.jsonl.gz"), &o, &st,
                              hex));
        CHECK_STR_EQ(hex, ref);
        CHECK_INT_EQ(st.malformed, 6);
        CHECK_OK(ingest_fresh(tmp("zst.db"), tmp("big.jsonl.zst"), &o, &st,
                              hex));
        CHECK_STR_EQ(hex, ref);
        CHECK_INT_EQ(st.bytes, ref_st.bytes);
    }

    TEST("stopped after 2 batches, rerun: same rows, same counts") {
        static const char *const files[] = {"big.jsonl", "big.jsonl.gz",
                                            "big.jsonl.zst"};

        for (int k = 0; k < 3; k++) {
            struct rlhi_ingest_opts o = {0};
            struct rlhi_store *s = NULL;
            const char *p = tmp(files[k]);
            int rc;

            unlink(tmp("stop.db"));
            CHECK_OK(rlhi_store_open(&s, tmp("stop.db")));
            if (!s)
                break;
            o.stop_after_batches = 2;
            o.batch = 1000;
            rc = rlhi_ingest(s, &p, 1, &o, &st);
            CHECK_INT_EQ(rc, RLHI_EIO);
            /* 2 batches of 1000 lines, 2 of them malformed */
            CHECK_INT_EQ(rlhi_store_count(s, "conversations"), 1998);
            o.stop_after_batches = 0;
            CHECK_OK(rlhi_ingest(s, &p, 1, &o, &st));
            CHECK_INT_EQ(st.resumed_files, 1);
            CHECK_INT_EQ(st.inserted, ref_st.inserted);
            CHECK_INT_EQ(st.malformed, ref_st.malformed);
            CHECK_INT_EQ(st.lines, ref_st.lines);
            CHECK_OK(rlhi_store_content_hash(s, hex));
            CHECK_STR_EQ(hex, ref);
            rlhi_store_close(s);
        }
    }

    TEST("killed with SIGKILL mid-way, rerun: same rows") {
        struct rlhi_ingest_opts o = {0};
        struct rlhi_store *s = NULL;
        sqlite3 *ro = NULL;
        int64_t seen = 0;
        pid_t pid;
        int status;

        unlink(tmp("kill.db"));
        /* The child is this program again (exec: OpenMP's threads do not
         * survive a bare fork), ingesting in batches of 50 lines. */
        pid = fork();
        if (pid == 0) {
            execl(argv[0], argv[0], "--child-ingest", tmp("kill.db"), log,
                  (char *)NULL);
            _exit(127);
        }
        /* Wait until some batches are committed, then kill. */
        for (int i = 0; i < 5000 && seen < 200; i++) {
            sqlite3_stmt *q;

            usleep(1000);
            if (!ro && rlhi_path_exists(tmp("kill.db")) &&
                sqlite3_open_v2(tmp("kill.db"), &ro, SQLITE_OPEN_READONLY,
                                NULL) != SQLITE_OK) {
                sqlite3_close(ro);
                ro = NULL;
            }
            if (ro && sqlite3_prepare_v2(ro, "SELECT count(*) FROM "
                                         "conversations", -1, &q,
                                         NULL) == SQLITE_OK) {
                if (sqlite3_step(q) == SQLITE_ROW)
                    seen = sqlite3_column_int64(q, 0);
                sqlite3_finalize(q);
            }
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        sqlite3_close(ro);
        printf("killed after %lld of 5000 conversations were committed\n",
               (long long)seen);
        CHECK(WIFSIGNALED(status) && seen > 0 && seen < 5000);
        CHECK_OK(rlhi_store_open(&s, tmp("kill.db")));
        if (!s)
            break;
        CHECK_OK(rlhi_ingest(s, &log, 1, &o, &st));
        CHECK_INT_EQ(st.resumed_files, 1);
        CHECK_OK(rlhi_store_content_hash(s, hex));
        CHECK_STR_EQ(hex, ref);
        CHECK_INT_EQ(rlhi_store_count(s, "conversations"), 5000);
        CHECK_INT_EQ(rlhi_store_count(s, "messages"), 20000);
        rlhi_store_close(s);
    }

    TEST("killed with SIGKILL during a rollback-journal load, rerun") {
        struct rlhi_ingest_opts o = {0};
        struct rlhi_store *s = NULL;
        char db[512], journal[600];
        bool hot = false;
        struct stat fs;
        pid_t pid;
        int status;

        /* No connection of ours is open, so the child's load switches to
         * a rollback journal; the size of the file shows its progress. */
        snprintf(db, sizeof db, "%s", tmp("kill2.db"));
        snprintf(journal, sizeof journal, "%s-journal", db);
        unlink(db);
        pid = fork();
        if (pid == 0) {
            execl(argv[0], argv[0], "--child-ingest", db, log, (char *)NULL);
            _exit(127);
        }
        /* Kill inside a transaction (its journal exists) once some
         * batches are in the file. */
        for (int i = 0; i < 200000; i++) {
            bool in_txn = stat(journal, &fs) == 0;

            hot |= in_txn;
            if (in_txn && stat(db, &fs) == 0 && fs.st_size > (128 << 10))
                break;
            usleep(20);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        printf("killed with %s journal, database %lld bytes\n",
               stat(journal, &fs) == 0 ? "a hot" : "no",
               stat(db, &fs) == 0 ? (long long)fs.st_size : -1LL);
        CHECK(WIFSIGNALED(status));
        CHECK(hot); /* the load did run with a rollback journal */
        CHECK_OK(rlhi_store_open(&s, db));
        if (!s)
            break;
        CHECK(rlhi_store_count(s, "conversations") < 5000);
        CHECK_OK(rlhi_ingest(s, &log, 1, &o, &st));
        CHECK_OK(rlhi_store_content_hash(s, hex));
        CHECK_STR_EQ(hex, ref);
        CHECK_INT_EQ(rlhi_store_count(s, "messages"), 20000);
        rlhi_store_close(s);
        /* and the store is back in WAL mode */
        {
            sqlite3 *d = NULL;
            sqlite3_stmt *q = NULL;

            CHECK(sqlite3_open(db, &d) == SQLITE_OK);
            CHECK(sqlite3_prepare_v2(d, "PRAGMA journal_mode", -1, &q,
                                     NULL) == SQLITE_OK);
            CHECK(sqlite3_step(q) == SQLITE_ROW);
            CHECK_STR_EQ((const char *)sqlite3_column_text(q, 0), "wal");
            sqlite3_finalize(q);
            sqlite3_close(d);
        }
    }

    TEST("a load while another connection is open stays in WAL mode") {
        struct rlhi_ingest_opts o = {0};
        struct rlhi_store *s = NULL, *other = NULL;
        char mode[16] = "";
        sqlite3_stmt *q = NULL;

        unlink(tmp("two.db"));
        CHECK_OK(rlhi_store_open(&s, tmp("two.db")));
        CHECK_OK(rlhi_store_open(&other, tmp("two.db")));
        if (!s || !other) {
            rlhi_store_close(s);
            rlhi_store_close(other);
            break;
        }
        o.batch = 700;
        CHECK_OK(rlhi_ingest(s, &log, 1, &o, &st));
        CHECK_INT_EQ(st.inserted, 5000);
        /* the other connection reads everything, and the WAL is folded */
        CHECK_INT_EQ(rlhi_store_count(other, "messages"), 20000);
        if (sqlite3_prepare_v2(rlhi_store_db(s), "PRAGMA journal_mode", -1,
                               &q, NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            snprintf(mode, sizeof mode, "%s", sqlite3_column_text(q, 0));
        sqlite3_finalize(q);
        CHECK_STR_EQ(mode, "wal");
        CHECK_OK(rlhi_store_content_hash(s, hex));
        CHECK_STR_EQ(hex, ref);
        rlhi_store_close(other);
        rlhi_store_close(s);
    }

    TEST("a store from before user-scoped ids keeps its ids") {
        static const char two[] =
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
            "\"user\": \"bob\"}\n"
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
            "\"user\": \"carol\"}\n";
        const char *roles[] = {"user"}, *contents[] = {"hi"};
        struct rlhi_store *s = NULL;
        const char *p = tmp("two.jsonl");
        char old[65], *v = NULL;

        CHECK_OK(rlhi_file_write_atomic(p, two, strlen(two)));
        unlink(tmp("old.db"));
        CHECK_OK(rlhi_store_open(&s, tmp("old.db")));
        if (!s)
            break;
        CHECK_INT_EQ(rlhi_store_meta_get(s, "conversation_ids", &v), 1);
        CHECK_STR_EQ(v, "user+messages");
        rlhi_free(v);
        /* as an older rlhi left it: one conversation, no such key */
        CHECK_OK(rlhi_ingest_messages_hash(roles, contents, 1, old));
        CHECK_OK(rlhi_store_exec(s, "DELETE FROM meta WHERE key = "
                                 "'conversation_ids'; INSERT INTO users(key) "
                                 "VALUES ('bob')"));
        {
            char sql[300];

            snprintf(sql, sizeof sql, "INSERT INTO conversations(hash, "
                     "user_id, turn_count, n_messages) VALUES ('%s', 1, 1, "
                     "1); INSERT INTO messages VALUES (1, 0, 'user', 'hi', "
                     "NULL, NULL)", old);
            CHECK_OK(rlhi_store_exec(s, sql));
        }
        rlhi_store_close(s);
        s = NULL;
        CHECK_OK(rlhi_store_open(&s, tmp("old.db")));
        if (!s)
            break;
        CHECK_INT_EQ(rlhi_store_meta_get(s, "conversation_ids", &v), 1);
        CHECK_STR_EQ(v, "messages");
        rlhi_free(v);
        /* both lines are the stored conversation again */
        CHECK_OK(rlhi_ingest(s, &p, 1, NULL, &st));
        CHECK_INT_EQ(st.inserted, 0);
        CHECK_INT_EQ(st.duplicates, 2);
        rlhi_store_close(s);
    }

    TEST("a new store has 16 KiB pages; bulk mode ends in WAL + NORMAL") {
        struct rlhi_store *s = NULL;
        sqlite3_stmt *q = NULL;

        CHECK_OK(rlhi_store_open(&s, tmp("ref.db")));
        if (!s)
            break;
        CHECK(sqlite3_prepare_v2(rlhi_store_db(s), "SELECT * FROM "
                                 "pragma_page_size, pragma_journal_mode, "
                                 "pragma_synchronous", -1, &q, NULL) ==
              SQLITE_OK);
        CHECK(sqlite3_step(q) == SQLITE_ROW);
        CHECK_INT_EQ(sqlite3_column_int(q, 0), 16384);
        CHECK_STR_EQ((const char *)sqlite3_column_text(q, 1), "wal");
        CHECK_INT_EQ(sqlite3_column_int(q, 2), 1); /* NORMAL */
        sqlite3_finalize(q);
        rlhi_store_close(s);
    }

    TEST("the fast parse path and jansson agree (tricky and mutated lines)") {
        static const char *const tricky[] = {
            "{\"conversation_hash\": \"e1\", \"conversation\": [{\"role\":"
            " \"user\", \"content\": \"esc \\\" \\\\ \\/ \\b\\f\\n\\r\\t "
            "\\u00e9 \\ud83d\\ude00 \\u2713 end\"}]}",
            "{\"conversation_hash\": \"e2\", \"conversation\": [{\"role\":"
            " \"user\", \"content\": \"lone \\ud83d surrogate\"}]}",
            "{\"conversation_hash\": \"e3\", \"conversation\": [{\"role\":"
            " \"user\", \"content\": \"low \\ude00 first\"}]}",
            "{\"conversation_hash\": \"e4\", \"turn\": 123456789012345678901,"
            " \"conversation\": [{\"role\": \"user\", \"content\": \"x\"}]}",
            "{\"conversation_hash\": \"e5\", \"timestamp\": 1.5e3, \"x\": "
            "[1e999], \"conversation\": [{\"role\": \"user\", \"content\":"
            " \"x\"}]}",
            "{\"conversation_hash\": \"e6\", \"timestamp\": -0, \"x\": "
            "[01], \"conversation\": [{\"role\": \"user\", \"content\": "
            "\"x\"}]}",
            "{\"conversation_hash\": \"e7\", \"a_very_long_key_name_that_"
            "goes_on_and_on_past_sixty_four_characters_for_sure\": {\"k\":"
            " [true, false, null, {}, []]}, \"conversation\": [{\"role\": "
            "\"user\", \"content\": [{\"type\": \"text\", \"text\": "
            "\"part\"}], \"a_very_long_key_name_that_goes_on_and_on_past_"
            "sixty_four_characters_for_sure\": 1}]}",
            "{\"conversation_hash\": \"e8\", \"model\": \"a\", \"model\": "
            "\"b\", \"conversation\": [{\"role\": \"user\", \"content\": "
            "\"dup keys: last wins\"}]}",
            "  {\"conversation_hash\": \"e9\",\"conversation\":[{\"role\":"
            "\"assistant\",\"content\":\"\\u0041\\u00DF\"}]}\t ",
            "{\"conversation_hash\": \"e10\", \"conversation\": [{\"role\": "
            "\"user\", \"content\": \"overlong \xc0\xaf\"}]}",
            "{\"conversation_hash\": \"e11\", \"conversation\": [{\"role\": "
            "\"user\", \"content\": \"ok\"}]} {}",
            "{\"conversation_hash\": \"e12\", \"conversation\": [{\"role\": "
            "\"user\", \"content\": \"\xf0\x9f\x98\x80 \xe2\x9c\x93 "
            "\xed\xa0\x80\"}]}",
            "{\"conversation_hash\": \"e13\", \"conversation\": [{\"role\": "
            "\"user\", \"content\": \"bad escape \\x41\"}]}",
            "{\"conversation_hash\": \"e14\", \"conversation\": [{\"role\": "
            "\"user\", \"content\": \"tab\tinside\"}]}",
            "{\"conversation_hash\": \"e15\", \"turn\": 3, \"conversation\":"
            " [{\"role\": \"user\", \"content\": \"x\", \"turn_identifier\":"
            " -12}], \"toxic\": true, \"redacted\": false}",
        };
        struct rlhi_buf in = RLHI_BUF_INIT, w1 = RLHI_BUF_INIT;
        struct rlhi_rng rng;
        char h1[65], h2[65];
        const char *p = tmp("tricky.jsonl");
        FILE *f = fopen(p, "wb");

        for (size_t i = 0; i < sizeof tricky / sizeof tricky[0]; i++)
            fprintf(f, "%s\n", tricky[i]);
        /* 3000 copies of a valid record with 1-3 random bytes changed */
        rlhi_rng_seed(&rng, getenv("RLHI_FUZZ_SEED") ?
                                 strtoull(getenv("RLHI_FUZZ_SEED"), NULL, 10)
                                 : 7);
        for (int i = 0; i < 3000; i++) {
            char line[512];
            int len = snprintf(line, sizeof line, "%s", tricky[i % 15 == 0 ?
                                                              0 : 14]);

            len = snprintf(line, sizeof line, "{\"conversation_hash\": "
                           "\"m%d\", \"turn\": 1, \"model\": \"gpt-4\", "
                           "\"x\": [1.5, -2e3, null, {\"y\": \"\\u00e9\"}],"
                           " \"conversation\": [{\"role\": \"user\", "
                           "\"content\": \"hi \\\"there\\\" \xc3\xa9\", "
                           "\"timestamp\": 1681000000}]}", i);
            for (int k = 1 + (int)rlhi_rng_below(&rng, 3); k > 0; k--) {
                static const char set[] = "{}[]\",:\\0123456789eE.-+tfnu "
                                          "\x80\xc3\xff\x01";
                line[rlhi_rng_below(&rng, (uint64_t)len)] =
                    set[rlhi_rng_below(&rng, sizeof set - 1)];
            }
            fwrite(line, 1, (size_t)len, f);
            fputc('\n', f);
        }
        /* every special byte at every offset of an 8-byte block, in a
         * long string (the reader skips plain ASCII 8 bytes at a time) */
        for (int k = 0; k < 24; k++) {
            static const char *const special[] = {
                "\\n", "\\\"", "\\u00e9", "\x01", "\x1f", "\x7f",
                "\xc3\xa9", "\xc0\xaf", "\xff", "\xe2\x9c", "\"", " ~",
            };

            for (size_t j = 0; j < sizeof special / sizeof *special; j++)
                fprintf(f, "{\"conversation_hash\": \"s%d-%zu\", "
                           "\"conversation\": [{\"role\": \"user\", "
                           "\"content\": \"%.*s%sbbbbbbbbbbbbbbbbb\"}]}\n",
                        k, j, k, "aaaaaaaaaaaaaaaaaaaaaaaaaaaa", special[j]);
        }
        fclose(f);

        rlhi_buf_clear(&warnings);
        setenv("RLHI_INGEST_JANSSON", "1", 1);
        CHECK_OK(ingest_fresh(tmp("j.db"), p, NULL, &st, h1));
        rlhi_buf_adds(&w1, warnings.buf ? warnings.buf : "");
        unsetenv("RLHI_INGEST_JANSSON");
        rlhi_buf_clear(&warnings);
        CHECK_OK(ingest_fresh(tmp("f.db"), p, NULL, &ref_st, h2));
        if (getenv("RLHI_DUMP_WARNINGS")) {
            FILE *a = fopen("/tmp/w_j.txt", "w"), *b = fopen("/tmp/w_f.txt",
                                                             "w");

            fputs(w1.buf ? w1.buf : "", a);
            fputs(warnings.buf ? warnings.buf : "", b);
            fclose(a);
            fclose(b);
        }
        CHECK_STR_EQ(h2, h1);
        CHECK_MSG(!strcmp(w1.buf ? w1.buf : "", warnings.buf ? warnings.buf
                                                             : ""),
                  "warnings differ:\n--- jansson:\n%.2000s\n--- fast:\n"
                  "%.2000s", w1.buf, warnings.buf);
        CHECK_INT_EQ(st.inserted, ref_st.inserted);
        CHECK_INT_EQ(st.malformed, ref_st.malformed);
        printf("fast path vs jansson: %llu lines, %llu stored, %llu "
               "malformed, same store and messages\n",
               (unsigned long long)st.lines,
               (unsigned long long)st.inserted,
               (unsigned long long)st.malformed);
        rlhi_buf_release(&in);
        rlhi_buf_release(&w1);
    }

    TEST("a store from a newer rlhi is refused; a non-store is an error") {
        struct rlhi_store *s = NULL;
        char msg[1024];

        CHECK_OK(rlhi_store_open(&s, tmp("v.db")));
        if (s) {
            CHECK_OK(rlhi_store_exec(s, "UPDATE meta SET value = '99' "
                                        "WHERE key = 'schema_version'"));
            rlhi_store_close(s);
        }
        CHECK_INT_EQ(rlhi_store_open(&s, tmp("v.db")), RLHI_EDB);
        snprintf(msg, sizeof msg, "store '%s' has schema version 99, newer "
                 "than this rlhi's 1\nhint: use a newer rlhi", tmp("v.db"));
        CHECK_STR_EQ(rlhi_errmsg(), msg);
        CHECK_INT_EQ(rlhi_store_open(&s, log), RLHI_EDB);
        CHECK(strstr(rlhi_errmsg(), "file is not a database") != NULL);
    }

    TEST("the command: exit status 3 and a summary when lines were skipped") {
        char bin[4096], cmd[8192], *out = NULL;
        size_t len;
        const char *slash = strrchr(argv[0], '/');

        snprintf(bin, sizeof bin, "%.*s/../rlhi",
                 slash ? (int)(slash - argv[0]) : 1, slash ? argv[0] : ".");
        if (!rlhi_path_exists(bin)) {
            SKIP("the rlhi command is not built beside the tests");
            break;
        }
        snprintf(cmd, sizeof cmd, "%s ingest '%s' --db '%s' 2>'%s'", bin,
                 log, tmp("cli.db"), tmp("cli.err"));
        CHECK_INT_EQ(WEXITSTATUS(system(cmd)), 3);
        if (rlhi_file_read(tmp("cli.err"), &out, &len) == 0) {
            char want[4200];

            snprintf(want, sizeof want, "rlhi: warning: %s:7: unexpected "
                     "token near end of file", log);
            CHECK_MSG(strstr(out, want) != NULL, "no '%s' in:\n%s", want,
                      out);
            CHECK(strstr(out, "rlhi: ingested 5000 conversations (20000 "
                              "messages) from 5006 lines") != NULL);
            CHECK(strstr(out, "6 malformed skipped") != NULL);
            rlhi_free(out);
        }
        snprintf(cmd, sizeof cmd, "%s ingest --db '%s' 2>/dev/null", bin,
                 tmp("cli.db"));
        CHECK_INT_EQ(WEXITSTATUS(system(cmd)), 2);

        /* status reads the store back; stages refuse a missing store
         * instead of making an empty one */
        snprintf(cmd, sizeof cmd, "%s status --db '%s' >'%s' 2>&1", bin,
                 tmp("cli.db"), tmp("cli.out"));
        CHECK_INT_EQ(WEXITSTATUS(system(cmd)), 0);
        if (rlhi_file_read(tmp("cli.out"), &out, &len) == 0) {
            CHECK_MSG(strstr(out, "conversations  5000 (20000 messages)") &&
                      strstr(out, "\"inserted\": 5000"), "%s", out);
            rlhi_free(out);
        }
        snprintf(cmd, sizeof cmd, "%s feedback --db '%s' >'%s' 2>&1", bin,
                 tmp("typo.db"), tmp("cli.out"));
        CHECK_INT_EQ(WEXITSTATUS(system(cmd)), 1);
        CHECK(!rlhi_path_exists(tmp("typo.db")));
        if (rlhi_file_read(tmp("cli.out"), &out, &len) == 0) {
            CHECK_MSG(strstr(out, "rlhi: error: no store") != NULL, "%s",
                      out);
            rlhi_free(out);
        }
    }

    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    if (system(path))
        fprintf(stderr, "could not remove %s\n", dir);
    rlhi_buf_release(&warnings);
    return check_summary();
}
