/* The SQLite store: one file that every pipeline stage reads and writes.
 *
 * The schema (docs/STORE.md describes every column) holds users,
 * conversations, messages, feedback labels, personas, model outputs,
 * preference pairs, runs and resume markers. It is created on first open and
 * versioned in meta('schema_version'); a store written by a newer rlhi is
 * refused rather than misread.
 *
 * Durability. The store runs in WAL mode with synchronous=NORMAL: a commit
 * survives a killed process (the WAL is in the file system) and the file is
 * never corrupt after a power cut, though the last commits may be lost
 * then. Stages commit in batches (RLHI_STORE_BATCH records) and use unique
 * keys with INSERT OR IGNORE plus resume markers (table `progress`), so a
 * run killed at any moment loses at most the batch in flight and a rerun
 * finishes the job with nothing duplicated.
 *
 * A store handle is used by one thread at a time.
 */
#ifndef RLHI_STORE_H
#define RLHI_STORE_H

#include <sqlite3.h>
#include <stdint.h>

#include "rlhi/base.h"

/* 1000 records per transaction: measured on ingest, commits then cost under
 * 1% of the time, and a kill loses at most a second of work. */
#define RLHI_STORE_BATCH 1000

#define RLHI_STORE_SCHEMA_VERSION 1

struct rlhi_store;

/* Opens (creating if absent) the store at `path` and brings its schema up
 * to date. On success *out is a new handle the caller closes with
 * rlhi_store_close(). Errors: RLHI_EDB naming the file (not a database,
 * locked, newer schema), RLHI_ENOMEM. */
int rlhi_store_open(struct rlhi_store **out, const char *path);

/* Closes the handle, rolling back a transaction left open. NULL is fine. */
void rlhi_store_close(struct rlhi_store *s);

/* The underlying connection, for stages that run their own statements.
 * Owned by the store. */
sqlite3 *rlhi_store_db(struct rlhi_store *s);

/* The path given to rlhi_store_open. */
const char *rlhi_store_path(const struct rlhi_store *s);

/* Runs one or more SQL statements without results. 0 or RLHI_EDB with
 * SQLite's message. */
int rlhi_store_exec(struct rlhi_store *s, const char *sql);

/* Bulk loading (ingest). bulk_begin switches the store to a rollback
 * journal with synchronous=FULL: every page is then written once, straight
 * into the database, instead of once to the WAL and again at the
 * checkpoint (measured: ingest 30-40% faster). A commit is still atomic and
 * survives a killed process: a killed run leaves a journal that SQLite
 * rolls back on the next open. When other connections have the store open
 * the switch is refused and the load stays in WAL mode, with checkpoints
 * postponed to bulk_end. bulk_end returns to WAL + NORMAL (and
 * checkpoints); rlhi_store_open does the same for a store left in rollback
 * mode by a killed load. Both outside a transaction; 0 or RLHI_EDB. */
int rlhi_store_bulk_begin(struct rlhi_store *s);
int rlhi_store_bulk_end(struct rlhi_store *s);

/* Transactions. begin uses BEGIN IMMEDIATE so that a second writer waits
 * (busy timeout) instead of failing half-way. 0 or RLHI_EDB. */
int rlhi_store_begin(struct rlhi_store *s);
int rlhi_store_commit(struct rlhi_store *s);
void rlhi_store_rollback(struct rlhi_store *s);

/* Prepares `sql` on the store's connection; *st is the caller's to
 * sqlite3_finalize(). 0 or RLHI_EDB naming the statement's error. */
int rlhi_store_prepare(struct rlhi_store *s, sqlite3_stmt **st,
                       const char *sql);

/* Sets an RLHI_EDB message "<what> in '<path>': <sqlite message>" and
 * returns RLHI_EDB. For stage code that got an error from sqlite3_*. */
int rlhi_store_err(struct rlhi_store *s, const char *what);

/* Records the start of a stage run in `runs` and returns its id in *run_id.
 * `args` is free text (usually the command line). Commits at once. */
int rlhi_store_run_start(struct rlhi_store *s, const char *stage,
                         const char *args, int64_t *run_id);

/* Records the end of a run with `counts`, a JSON object text (may be NULL).
 * Commits at once. */
int rlhi_store_run_finish(struct rlhi_store *s, int64_t run_id,
                          const char *counts);

/* Resume markers: a text value per (stage, key). get returns 1 and a new
 * string in *value (caller frees with rlhi_free) when present, 0 when not.
 * set writes inside the caller's transaction, so the marker and the batch
 * it describes commit together. del removes a marker. */
int rlhi_store_mark_get(struct rlhi_store *s, const char *stage,
                        const char *key, char **value);
int rlhi_store_mark_set(struct rlhi_store *s, const char *stage,
                        const char *key, const char *value);
int rlhi_store_mark_del(struct rlhi_store *s, const char *stage,
                        const char *key);

/* meta(key) as for rlhi_store_mark_get: 1 and a new string, or 0. */
int rlhi_store_meta_get(struct rlhi_store *s, const char *key, char **value);

/* Number of rows in `table` (one of the store's tables), or a negative
 * code. */
int64_t rlhi_store_count(struct rlhi_store *s, const char *table);

/* SHA-256 hex of the store's content tables (users, conversations,
 * messages, feedback, personas) in key order, excluding row ids and run
 * bookkeeping, so that two stores built from the same input compare equal
 * however their runs were interrupted. 0 or RLHI_EDB. */
int rlhi_store_content_hash(struct rlhi_store *s, char hex[65]);

#endif
