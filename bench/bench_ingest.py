#!/usr/bin/env python3
"""Ingest benchmark: rlhi ingest against the obvious Python script.

Generates a WildChat-shaped JSONL file (default 200 MB; seeded, so the same
file every time), then times
  1. `rlhi ingest FILE --db DB` (C: a reading thread parses while the
     calling thread stores with SQLite prepared statements; a transaction
     per 10000 records; rollback journal + synchronous=FULL while loading,
     16 KiB pages; see docs/STORE.md), and
  2. the obvious Python script: json.loads per line, sqlite3 executemany
     into the same tables in one transaction (also WAL + NORMAL),
and prints MB/s and conversations/s of each and the ratio.

usage: bench/bench_ingest.py --rlhi build/rlhi [--mb 200] [--dir /tmp/x]
"""
import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import time

WORDS = ("the of and to in is you that it for was on are as with his they "
         "at be this from have or by one had not but what all were when we "
         "there can an your which their said if do will each about how up "
         "out them then she many some so these would other into has more "
         "her two like him see time could no make than first been its who "
         "now people my made over did down only way find use may water long "
         "little very after words called just where most know get through "
         "back much before go good new write our used me man too any day "
         "same right look think also around another came come work three "
         "python function error database model train data value list table "
         "explain please code example because however therefore").split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def text(rng, mean_words):
    out, left = [], max(3, int(rng.expovariate(1 / mean_words)))
    while left > 0:
        k = min(left, rng.randint(6, 20))
        out.append(sentence(rng, k))
        left -= k
    return " ".join(out)


def generate(path, mb, seed=1):
    rng = random.Random(seed)
    target = mb * 1_000_000
    size, n = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            turns = rng.choice((1, 1, 1, 2, 2, 3, 4, 6))
            user = "%064x" % rng.getrandbits(256) if rng.random() < 0.3 \
                else "%064x" % (rng.randrange(5000) * 7919)
            conv, t0 = [], 1680000000 + n * 37
            for t in range(turns):
                for role, mean in (("user", 40), ("assistant", 250)):
                    conv.append({
                        "content": text(rng, mean), "role": role,
                        "hashed_ip": user if role == "user" else None,
                        "timestamp": t0 + 60 * t,
                        "turn_identifier": 1000000 + n * 10 + t,
                        "language": "English", "toxic": False,
                        "redacted": False, "country": "United States",
                        "state": "California",
                        "header": {"accept-language": "en-US,en;q=0.9",
                                   "user-agent": "Mozilla/5.0"}
                        if role == "user" else None})
            rec = {
                "conversation_hash": "%032x" % rng.getrandbits(128),
                "model": rng.choice(("gpt-3.5-turbo-0613", "gpt-4-0314")),
                "timestamp": "2023-%02d-%02dT%02d:%02d:%02dZ" % (
                    rng.randint(1, 12), rng.randint(1, 28),
                    rng.randint(0, 23), rng.randint(0, 59),
                    rng.randint(0, 59)),
                "conversation": conv, "turn": turns, "language": "English",
                "openai_moderation": [{"categories": {"harassment": False,
                                                      "violence": False},
                                       "flagged": False}] * len(conv),
                "detoxify_moderation": [{"toxicity": 0.0007}] * len(conv),
                "toxic": False, "redacted": False, "state": "California",
                "country": "United States", "hashed_ip": user,
                "header": {"accept-language": "en-US", "user-agent": "x"},
            }
            line = json.dumps(rec) + "\n"
            f.write(line)
            size += len(line.encode())
            n += 1
    return n, size


SCHEMA = """
PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
CREATE TABLE users(id INTEGER PRIMARY KEY, key TEXT UNIQUE);
CREATE TABLE conversations(id INTEGER PRIMARY KEY, hash TEXT UNIQUE,
  user TEXT, model TEXT, timestamp TEXT, language TEXT, toxic INTEGER,
  redacted INTEGER, turn_count INTEGER, n_messages INTEGER);
CREATE TABLE messages(conversation TEXT, idx INTEGER, role TEXT,
  content TEXT, timestamp TEXT, turn_identifier INTEGER,
  PRIMARY KEY(conversation, idx));
"""


def python_ingest(path, db):
    """The obvious script: parse every line, executemany, one commit."""
    con = sqlite3.connect(db)
    con.executescript(SCHEMA)
    users, convs, msgs = set(), [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            c = r["conversation"]
            users.add(r.get("hashed_ip") or "unknown")
            convs.append((r["conversation_hash"], r.get("hashed_ip"),
                          r.get("model"), str(r.get("timestamp")),
                          r.get("language"), int(bool(r.get("toxic"))),
                          int(bool(r.get("redacted"))), r.get("turn"),
                          len(c)))
            for i, m in enumerate(c):
                msgs.append((r["conversation_hash"], i, m["role"],
                             m["content"], str(m.get("timestamp")),
                             m.get("turn_identifier")))
    with con:
        con.executemany("INSERT OR IGNORE INTO users(key) VALUES (?)",
                        ((u,) for u in users))
        con.executemany("INSERT OR IGNORE INTO conversations(hash, user, "
                        "model, timestamp, language, toxic, redacted, "
                        "turn_count, n_messages) VALUES (?,?,?,?,?,?,?,?,?)",
                        convs)
        con.executemany("INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?)",
                        msgs)
    con.close()
    return len(convs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rlhi", default="build/rlhi")
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--dir", default="/tmp/rlhi-bench-ingest")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    log = os.path.join(a.dir, "wildchat_%dmb.jsonl" % a.mb)
    if not os.path.exists(log):
        t = time.time()
        n, size = generate(log, a.mb)
        print("generated %s: %d conversations, %.1f MB in %.1f s"
              % (log, n, size / 1e6, time.time() - t), file=sys.stderr)
    size = os.path.getsize(log)
    with open(log, "rb") as f:
        n = sum(1 for _ in f)

    db_c, db_py = os.path.join(a.dir, "c.db"), os.path.join(a.dir, "py.db")
    for p in (db_c, db_py):
        for ext in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(p + ext):
                os.remove(p + ext)
    subprocess.run(["sync"])
    # Wall time, and CPU time (user + system): on a shared machine the
    # CPU seconds are the steadier figure.
    c0, t = os.times(), time.time()
    r = subprocess.run([a.rlhi, "ingest", log, "--db", db_c],
                       stderr=subprocess.PIPE, text=True)
    tc, c1 = time.time() - t, os.times()
    cc = (c1.children_user - c0.children_user
          + c1.children_system - c0.children_system)
    if r.returncode != 0:
        sys.exit("rlhi ingest failed (%d):\n%s" % (r.returncode, r.stderr))
    c0, t = os.times(), time.time()
    python_ingest(log, db_py)
    tp, c1 = time.time() - t, os.times()
    cp = c1.user - c0.user + c1.system - c0.system

    mb = size / 1e6
    print("ingest of %.1f MB, %d conversations (WildChat-shaped)" % (mb, n))
    print("                       wall s    MB/s    conv/s   cpu s  MB/cpu-s")
    print("  rlhi ingest (C)      %7.2f  %6.1f  %8.0f  %6.2f  %7.1f"
          % (tc, mb / tc, n / tc, cc, mb / cc))
    print("  python json+sqlite3  %7.2f  %6.1f  %8.0f  %6.2f  %7.1f"
          % (tp, mb / tp, n / tp, cp, mb / cp))
    print("  ratio (python / rlhi): wall %.2fx, cpu %.2fx"
          % (tp / tc, cp / cc))
    if not a.keep:
        for p in (db_c, db_py):
            for ext in ("", "-wal", "-shm", "-journal"):
                if os.path.exists(p + ext):
                    os.remove(p + ext)


if __name__ == "__main__":
    main()
