/*
 * store.c — the job-state database (see store.h).
 *
 * THE JOB STATE MACHINE (one row of `jobs`; [function] makes the transition)
 *
 *                        [sdb_store_sync: id not in the table]
 *                                       |
 *                                       v
 *   [sdb_store_sync:              +-----------+      [sdb_store_claim]       +-----------+
 *    identity changed, or ------->|  PENDING  |----------------------------->|  RUNNING  |
 *    a done job's output          +-----------+                              +-----------+
 *    file is gone]                  ^   ^   ^   [sdb_store_release]            |   |   |
 *               ^                   |   |   +---- SIGINT/SIGTERM, the ---------+   |   |
 *               |                   |   |         attempt is not counted           |   |
 *               |                   |   |                                          |   |
 *               |                   |   +-------- [sdb_store_recover, or inside ---+   |
 *               |                   |             sdb_store_claim]: owner dead         |
 *               |                   |             (pid gone / lease expired), no       |
 *               |                   |             complete output recorded             |
 *               |                   |                                                  |
 *               |      [sdb_store_sync:                [sdb_store_fail]                |
 *               |       identity changed]          +-----------------------------------+
 *               |                   |              |                                   |
 *               |              +-----------+       |     [sdb_store_complete]          |
 *               |              |  FAILED   |<------+     after the rename              |
 *               |              +-----------+             -- or --                      |
 *               |                 |                      [sdb_store_recover]: owner    |
 *               |                 | [sdb_store_claim:    dead, the output it recorded  |
 *               |                 |  attempts <          (prepare) exists with the     |
 *               |                 |  max_attempts, or    recorded SHA-256              |
 *               |                 |  --retry-failed]                                   v
 *               |                 +----> RUNNING                                 +-----------+
 *               +----------------------------------------------------------------|   DONE    |
 *                                                                                +-----------+
 *
 * Every arrow is one SQLite transaction. Each claim also appends a row to `runs` (outcome
 * NULL); the transitions out of RUNNING close it: done / failed / interrupted / orphaned.
 *
 * CRASH POINTS of one job (the runner, src/jobs/runner.c) and what a restart does:
 *   a. before/inside the claim transaction     -> the transaction rolls back: row unchanged.
 *   b. after claim, during generation          -> row RUNNING, owner dead: recover -> PENDING.
 *   c. after sdb_store_prepare, before rename  -> temp file `.<name>.tmp.<pid>.<n>` left; the
 *      output is absent or an older file whose hash differs: recover -> PENDING; the runner
 *      deletes temp files of dead pids.
 *   d. after the rename, before complete       -> output exists with the recorded hash:
 *      recover -> DONE (the run is recorded as done; nothing is recomputed).
 *   e. inside the complete transaction         -> rolled back: as d.
 *   f. after complete                          -> DONE.
 *
 * INVARIANTS crash safety rests on
 *   1. Every state change is one SQLite transaction (WAL, or a rollback journal for shard files;
 *      synchronous=FULL): it happens entirely
 *      or not at all, whatever kills the process.
 *   2. A claim reads and updates the row inside BEGIN IMMEDIATE, i.e. holding the database's
 *      write lock: two claimers serialise and the second sees RUNNING. So a job has at most one
 *      live owner.
 *   3. Only the run that owns a row (its run_id) moves it out of RUNNING (complete, fail, release
 *      check run_id inside their transaction); anyone else moves it only when the owner is dead
 *      (its lease expired — heartbeats renew it at every step —, or on the same host: its pid is
 *      gone or recycled, by /proc start time).
 *   4. An output file appears only by rename() of a complete, fsynced temp file, followed by an
 *      fsync of its folder: the output path holds either nothing/an old file or the whole PNG.
 *   5. The SHA-256 of the bytes is recorded (prepare) BEFORE the rename, and DONE is committed
 *      only AFTER it: DONE implies the output exists with output_sha256, and an output found with
 *      the recorded hash under a dead owner is exactly this run's complete result.
 *   6. A job's bytes are a pure function of its identity (parameters, inputs, model): running it
 *      again after a crash writes identical bytes, so redoing is always safe, only wasteful.
 *   7. Temp files carry their writer's pid; one whose pid is not alive on this host is garbage.
 *   8. A database file is only ever written by processes of ONE host (shards have their own
 *      file), so SQLite's locks, which do not work across NFS/Lustre clients, are only relied on
 *      between processes of that host.
 *   9. No transaction turns from a reader into a writer. SQLite calls the busy handler (our
 *      60 s busy timeout) only for a lock taken when a transaction STARTS; a transaction that
 *      has read and then wants to write gets SQLITE_BUSY ("database is locked") at once — in WAL
 *      its snapshot may be stale, so waiting could not help. Hence: every transaction that may
 *      write starts with BEGIN IMMEDIATE (begin(), migrate()), so its reads happen under the
 *      write lock; a write outside one (set_meta, heartbeat) is a single autocommit statement,
 *      which takes the write lock as it starts; every statement is finalized before its
 *      function returns (no read left open holding a snapshot); a failed COMMIT is rolled back.
 *      SQLite itself reads-then-writes in one place: switching a file's journal mode (PRAGMA
 *      journal_mode=WAL reads the header, then writes its version bytes). Several `sdbatch run`
 *      started at once on a new state.db got "database is locked" from it (tests/
 *      test_store_concurrency.c reproduces it); set_journal_mode() retries it for the busy
 *      timeout. Not a cause: WAL recovery after a SIGKILLed writer (SQLITE_BUSY_RECOVERY goes
 *      through the busy handler), checkpoints (automatic ones are passive and never fail a
 *      commit; the last connection's close skips its checkpoint when busy).
 * Together: after any crash, re-running converges — every job ends DONE exactly once in `runs`
 * (outcome 'done'), its output equal to an uninterrupted run's, and no temp file remains.
 */
#include "sdb/store.h"
#include "sdb/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How long any statement waits for another process's lock before failing with SQLITE_BUSY
 * (env SDB_BUSY_TIMEOUT_MS overrides it, e.g. for tests of a database locked too long). */
#define BUSY_TIMEOUT_MS 60000

struct sdb_store {
    sqlite3 *db;
    char *path;
    int readonly;
    int busy_ms;
    int degraded;   /* read-only, opened as immutable: its -wal could not be used */
};

const char *sdb_job_state_name(sdb_job_state s)
{
    switch (s) {
    case SDB_JOB_PENDING: return "pending";
    case SDB_JOB_RUNNING: return "running";
    case SDB_JOB_DONE: return "done";
    case SDB_JOB_FAILED: return "failed";
    }
    return "?";
}

static sdb_job_state state_parse(const char *s)
{
    if (!s) return SDB_JOB_PENDING;
    if (!strcmp(s, "running")) return SDB_JOB_RUNNING;
    if (!strcmp(s, "done")) return SDB_JOB_DONE;
    if (!strcmp(s, "failed")) return SDB_JOB_FAILED;
    return SDB_JOB_PENDING;
}

/* ---- test kill points ------------------------------------------------------------------------ */

void sdb_kill_point(const char *name)
{
    static int inited;
    static char want[128];
    static long nth = 1, seen;
    if (!inited) {
        const char *e = getenv("SDB_TEST_KILL_AT");
        if (e && e[0]) {
            snprintf(want, sizeof want, "%s", e);
            char *at = strchr(want, '@');
            if (at) { *at = '\0'; nth = atol(at + 1); if (nth < 1) nth = 1; }
        }
        inited = 1;
    }
    if (!want[0] || strcmp(want, name)) return;
    if (++seen == nth) raise(SIGKILL);
}

/* ---- workers ------------------------------------------------------------------------------- */

static long long proc_start_of(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');   /* comm may hold spaces */
    if (!p) return -1;
    p++;
    /* fields after comm: state(3) ... starttime is field 22 */
    int field = 2;
    long long v = -1;
    for (char *tok = strtok(p, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 22) { v = atoll(tok); break; }
    }
    return v;
}

void sdb_worker_self(sdb_worker *w)
{
    memset(w, 0, sizeof *w);
    if (gethostname(w->host, sizeof w->host - 1) != 0) strcpy(w->host, "localhost");
    w->pid = (long)getpid();
    w->proc_start = proc_start_of(w->pid);
}

int sdb_store_owner_alive(const sdb_job_row *r, const sdb_worker *me, double now)
{
    /* an expired lease frees the row whoever holds it (a hung or stopped process: if it wakes
       up, its complete() finds the row is no longer its own and drops its result) */
    if (r->lease_until > 0 && r->lease_until < now) return 0;
    if (r->host && !strcmp(r->host, me->host)) {
        if (r->pid <= 0) return 0;
        if (r->pid == me->pid && r->proc_start == me->proc_start) return 1;
        if (kill((pid_t)r->pid, 0) != 0 && errno == ESRCH) return 0;
        long long st = proc_start_of(r->pid);
        if (st >= 0 && r->proc_start > 0 && st != r->proc_start) return 0; /* pid recycled */
        return 1;
    }
    return r->lease_until > now;
}

/* ---- open / migrate ------------------------------------------------------------------------- */

/* What a user can do about an SQLite failure: every fault names the file and the way out. */
typedef struct { char text[160]; } hint_buf;
static const char *db_hint(int code, int busy_ms, hint_buf *hb)
{
    char *busy = hb->text;
    if (code == -ENOSPC || code == -EDQUOT) code = SQLITE_FULL;   /* the system's own word (sys_code) */
    else if (code == -EROFS) code = SQLITE_READONLY;
    switch (code & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return "; the state database is damaged: 'sdbatch repair MANIFEST' rebuilds it from the outputs on disk";
    case SQLITE_FULL: return "; the disk holding the state database is full: free space, then run again";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        snprintf(busy, sizeof hb->text, "; another process has kept it locked for longer than the busy timeout (%g s)",
                 busy_ms / 1000.0);
        return busy;
    case SQLITE_READONLY: return "; the database, its -wal/-shm files or its folder are read-only";
    case SQLITE_CANTOPEN:
        return "; it, its folder or its -wal/-shm files cannot be opened (missing, read-only, or a -wal file "
               "written by another SQLite version)";
    case SQLITE_IOERR: return "; an I/O error (is the disk full or failing?)";
    }
    return "";
}

/* SQLite's error code, or minus the system's errno when that says more (ENOSPC behind a "disk
 * I/O error" from growing the -shm file, EROFS). */
static int sys_code(sdb_store *s, int code)
{
    int e = sqlite3_system_errno(s->db);
    if ((code & 0xff) != SQLITE_OK && (e == ENOSPC || e == EDQUOT || e == EROFS)) return -e;
    return code;
}

static int dberr(sdb_store *s, sdb_err *err, const char *what)
{
    hint_buf hb;
    return sdb_fail(err, SDB_ESTATE, "%s: %s: %s%s", s->path, what, sqlite3_errmsg(s->db),
                    db_hint(sys_code(s, sqlite3_extended_errcode(s->db)), s->busy_ms, &hb));
}

static int exec(sdb_store *s, const char *sql, sdb_err *err)
{
    char *msg = NULL;
    int code = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (code != SQLITE_OK) {
        hint_buf hb;
        int rc = sdb_fail(err, SDB_ESTATE, "%s: %s (in: %.60s)%s", s->path, msg ? msg : sqlite3_errstr(code), sql,
                          db_hint(sys_code(s, code), s->busy_ms, &hb));
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

/* PRAGMA journal_mode=<mode>, retried while SQLite answers SQLITE_BUSY, for as long as the busy
 * timeout (invariant 9). Switching a file to WAL (or back) is the one write SQLite starts inside
 * a read transaction (it reads the header, then writes its version bytes): when several
 * processes open a new state.db at the same instant, all but one get SQLITE_BUSY from it at once,
 * without the busy handler being called. Once the first has switched the file, a retry finds the
 * header already in WAL and writes nothing. */
static int set_journal_mode(sdb_store *s, const char *mode, sdb_err *err)
{
    char sql[48];
    snprintf(sql, sizeof sql, "PRAGMA journal_mode=%s", mode);
    double t0 = sdb_now_mono();
    int delay_ms = 1;
    for (;;) {
        char *msg = NULL;
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
        if (rc == SQLITE_OK) return 0;
        if ((rc & 0xff) != SQLITE_BUSY || (sdb_now_mono() - t0) * 1000 > s->busy_ms) {
            hint_buf hb;
            rc = sdb_fail(err, SDB_ESTATE, "%s: %s (in: %s)%s", s->path, msg ? msg : sqlite3_errstr(rc), sql,
                          db_hint(sys_code(s, rc), s->busy_ms, &hb));
            sqlite3_free(msg);
            return rc;
        }
        sqlite3_free(msg);
        sqlite3_sleep(delay_ms);
        if (delay_ms < 64) delay_ms *= 2;
    }
}

/* Migrations: migrations[v] takes a database from user_version v to v+1. Never edit one that
 * has shipped; append. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS jobs("
    " id TEXT PRIMARY KEY,"
    " identity TEXT NOT NULL,"
    " params_hash TEXT NOT NULL,"
    " model_hash TEXT,"
    " state TEXT NOT NULL DEFAULT 'pending' CHECK(state IN ('pending','running','done','failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " host TEXT, pid INTEGER, proc_start INTEGER,"
    " started_at REAL, lease_until REAL, finished_at REAL, seconds REAL,"
    " output TEXT, output_sha256 TEXT, error TEXT,"
    " run_id INTEGER,"
    " updated_at REAL);"
    "CREATE TABLE IF NOT EXISTS runs("
    " run INTEGER PRIMARY KEY AUTOINCREMENT,"
    " job_id TEXT NOT NULL, identity TEXT NOT NULL,"
    " host TEXT, pid INTEGER, started_at REAL, finished_at REAL,"
    " outcome TEXT, error TEXT);",
    /* 1 -> 2 */
    "CREATE INDEX IF NOT EXISTS runs_job ON runs(job_id);"
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int sdb_store_user_version(sdb_store *s)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    return v;
}

static int migrate(sdb_store *s, sdb_err *err)
{
    int rc = exec(s, "BEGIN IMMEDIATE", err);
    if (rc) return rc;
    int v = sdb_store_user_version(s);
    if (v > N_MIGRATIONS) {
        exec(s, "ROLLBACK", NULL);
        return sdb_fail(err, SDB_ESTATE, "%s: schema version %d is newer than this sdbatch knows (%d): upgrade sdbatch",
                        s->path, v, N_MIGRATIONS);
    }
    for (; v < N_MIGRATIONS; v++) {
        if ((rc = exec(s, migrations[v], err))) { exec(s, "ROLLBACK", NULL); return rc; }
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
        if ((rc = exec(s, sql, err))) { exec(s, "ROLLBACK", NULL); return rc; }
    }
    return exec(s, "COMMIT", err);
}

/* PRAGMA quick_check before a writer uses the file: damage is found at the start of a run (with
 * the way out), not in the middle of a batch. Linear in the file's size (milliseconds for a
 * hundred thousand jobs). */
int sdb_store_check(sdb_store *s, sdb_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check(1)", -1, &st, NULL) != SQLITE_OK) return dberr(s, err, "check");
    int rc = sqlite3_step(st);
    char what[256] = "";
    if (rc == SQLITE_ROW) snprintf(what, sizeof what, "%s", sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "?");
    for (char *c = what; *c; c++) if (*c == '\n') *c = ' ';   /* one line */
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return dberr(s, err, "check");
    if (strcmp(what, "ok")) {
        hint_buf hb;
        return sdb_fail(err, SDB_ESTATE, "%s: integrity check failed: %s%s", s->path, what, db_hint(SQLITE_CORRUPT, s->busy_ms, &hb));
    }
    return 0;
}

/* The file opened read-only as immutable (no locks, no -wal/-shm), or NULL. */
static sqlite3 *open_immutable(const char *path)
{
    size_t n = strlen(path);
    char *uri = malloc(3 * n + 32);
    if (!uri) return NULL;
    char *o = uri + sprintf(uri, "file:");
    for (const char *c = path; *c; c++) {
        if (*c == '%' || *c == '?' || *c == '#') o += sprintf(o, "%%%02X", (unsigned char)*c);
        else *o++ = *c;
    }
    strcpy(o, "?immutable=1");
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        sqlite3_close_v2(db);
        db = NULL;
    }
    free(uri);
    return db;
}

int sdb_store_degraded(const sdb_store *s) { return s->degraded; }

int sdb_store_open(sdb_store **out, const char *path, int mode, sdb_err *err)
{
    *out = NULL;
    sdb_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) { free(s); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    s->readonly = mode == SDB_STORE_READONLY;
    const char *bt = getenv("SDB_BUSY_TIMEOUT_MS");
    s->busy_ms = bt && atoi(bt) > 0 ? atoi(bt) : BUSY_TIMEOUT_MS;
    int rc;
    if (s->readonly) {
        if (!sdb_file_exists(path)) {
            rc = sdb_fail(err, SDB_ENOTFOUND, "%s: no state database", path);
            goto fail;
        }
    } else {
        char *dir = sdb_path_dirname(path);
        rc = dir ? sdb_mkdirs(dir, err) : sdb_fail(err, SDB_ENOMEM, "out of memory");
        free(dir);
        if (rc) goto fail;
    }
    int flags = s->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &s->db, flags | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        hint_buf hb;
        rc = sdb_fail(err, SDB_ESTATE, "%s: cannot open state database: %s%s", path,
                      s->db ? sqlite3_errmsg(s->db) : "out of memory",
                      s->db ? db_hint(sqlite3_extended_errcode(s->db), s->busy_ms, &hb) : "");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, s->busy_ms);
    if (!s->readonly && sqlite3_db_readonly(s->db, "main") == 1) {
        /* SQLite fell back to reading: say it now, not at the first job's claim */
        hint_buf hb;
        rc = sdb_fail(err, SDB_ESTATE, "%s: cannot be opened for writing%s", path, db_hint(SQLITE_READONLY, s->busy_ms, &hb));
        goto fail;
    }
    if (!s->readonly) {
        /* A shard's file is written by one task but read by the other shards' hosts and by `status`
         * elsewhere, possibly over NFS/Lustre: WAL's shared-memory index only works among processes
         * of one host, so shard files use a rollback journal. A plain state.db is shared only by
         * processes of one host: WAL, so readers never block the writer. */
        if ((rc = set_journal_mode(s, mode == SDB_STORE_RW_SHARD ? "DELETE" : "WAL", err))) goto fail;
        if ((rc = exec(s, "PRAGMA synchronous=FULL", err))) goto fail;
        if ((rc = migrate(s, err))) goto fail;
        if ((rc = sdb_store_check(s, err))) goto fail;
    } else {
        int v = sdb_store_user_version(s);
        if (v < 0 && (sqlite3_extended_errcode(s->db) & 0xff) == SQLITE_CANTOPEN) {
            /* SQLite cannot open its -wal/-shm (a read-only folder, a -wal of another SQLite
               version): read the main file alone rather than nothing (changes still in the -wal
               are not seen; sdb_store_degraded says so) */
            rc = dberr(s, err, "cannot be read");
            sqlite3 *im = open_immutable(path);
            if (im) {
                sqlite3_close_v2(s->db);
                s->db = im;
                s->degraded = 1;
                v = sdb_store_user_version(s);
                if (v < 0) rc = dberr(s, err, "not a state database");
            }
            if (v < 0) goto fail;
        }
        if (v < 0) { rc = dberr(s, err, "not a state database"); goto fail; }
        if (v > N_MIGRATIONS) {
            rc = sdb_fail(err, SDB_ESTATE, "%s: schema version %d is newer than this sdbatch knows (%d)", path, v, N_MIGRATIONS);
            goto fail;
        }
        if (v < 1) { rc = sdb_fail(err, SDB_ESTATE, "%s: empty or not a state database", path); goto fail; }
    }
    *out = s;
    return 0;
fail:
    sdb_store_close(s);
    return rc;
}

void sdb_store_close(sdb_store *s)
{
    if (!s) return;
    if (s->db) sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

const char *sdb_store_path(const sdb_store *s) { return s->path; }

char *sdb_store_default_path(const char *output_dir, int shard, int n_shards)
{
    char name[96];
    if (n_shards > 0) snprintf(name, sizeof name, ".sdbatch/state.%d-of-%d.db", shard, n_shards);
    else snprintf(name, sizeof name, ".sdbatch/state.db");
    return sdb_path_join(output_dir, name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int sdb_store_list(const char *folder, char ***paths, int *n, sdb_err *err)
{
    *paths = NULL;
    *n = 0;
    DIR *d = opendir(folder);
    if (!d) return errno == ENOENT ? 0 : sdb_fail_errno(err, SDB_EIO, "%s: cannot list", folder);
    struct dirent *e;
    int cap = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "state", 5) || l < 8 || strcmp(e->d_name + l - 3, ".db")) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            char **np = realloc(*paths, cap * sizeof *np);
            if (!np) break;
            *paths = np;
        }
        (*paths)[(*n)++] = sdb_path_join(folder, e->d_name);
    }
    closedir(d);
    if (*n) qsort(*paths, *n, sizeof **paths, cmp_str);
    return 0;
}

void sdb_store_list_free(char **paths, int n)
{
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

int sdb_store_set_meta(sdb_store *s, const char *key, const char *value, sdb_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", -1, &st, NULL) != SQLITE_OK)
        return dberr(s, err, "set meta");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : dberr(s, err, "set meta");
    sqlite3_finalize(st);
    return rc;
}

char *sdb_store_get_meta(sdb_store *s, const char *key)
{
    sqlite3_stmt *st;
    char *v = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) != SQLITE_OK) return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

/* ---- rows ------------------------------------------------------------------------------------ */

#define ROW_COLS "id, identity, params_hash, model_hash, state, attempts, host, pid, proc_start, " \
                 "started_at, lease_until, finished_at, seconds, updated_at, output, output_sha256, error, run_id"

static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static void read_row(sqlite3_stmt *st, sdb_job_row *r)
{
    memset(r, 0, sizeof *r);
    r->id = col_str(st, 0);
    r->identity = col_str(st, 1);
    r->params_hash = col_str(st, 2);
    r->model_hash = col_str(st, 3);
    r->state = state_parse((const char *)sqlite3_column_text(st, 4));
    r->attempts = sqlite3_column_int(st, 5);
    r->host = col_str(st, 6);
    r->pid = (long)sqlite3_column_int64(st, 7);
    r->proc_start = sqlite3_column_int64(st, 8);
    r->started_at = sqlite3_column_double(st, 9);
    r->lease_until = sqlite3_column_double(st, 10);
    r->finished_at = sqlite3_column_double(st, 11);
    r->seconds = sqlite3_column_double(st, 12);
    r->updated_at = sqlite3_column_double(st, 13);
    r->output = col_str(st, 14);
    r->output_sha256 = col_str(st, 15);
    r->error = col_str(st, 16);
    r->run_id = sqlite3_column_int64(st, 17);
}

void sdb_job_row_free(sdb_job_row *r)
{
    if (!r) return;
    free(r->id); free(r->identity); free(r->params_hash); free(r->model_hash); free(r->host);
    free(r->output); free(r->output_sha256); free(r->error);
    memset(r, 0, sizeof *r);
}

void sdb_job_rows_free(sdb_job_row *rows, int n)
{
    for (int i = 0; i < n; i++) sdb_job_row_free(&rows[i]);
    free(rows);
}

int sdb_store_get(sdb_store *s, const char *id, sdb_job_row *row, int *found, sdb_err *err)
{
    sqlite3_stmt *st;
    *found = 0;
    memset(row, 0, sizeof *row);
    if (sqlite3_prepare_v2(s->db, "SELECT " ROW_COLS " FROM jobs WHERE id = ?", -1, &st, NULL) != SQLITE_OK)
        return dberr(s, err, "read job");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) { read_row(st, row); *found = 1; rc = 0; }
    else if (rc == SQLITE_DONE) rc = 0;
    else rc = dberr(s, err, "read job");
    sqlite3_finalize(st);
    return rc;
}

int sdb_store_rows(sdb_store *s, sdb_job_row **rows, int *n, sdb_err *err)
{
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT " ROW_COLS " FROM jobs ORDER BY id", -1, &st, NULL) != SQLITE_OK)
        return dberr(s, err, "read jobs");
    int cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            sdb_job_row *nr = realloc(*rows, cap * sizeof *nr);
            if (!nr) { sqlite3_finalize(st); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
            *rows = nr;
        }
        read_row(st, &(*rows)[(*n)++]);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return 0;
    /* a read that fails part way (a corrupt page) returns nothing: the rows read so far were
     * leaked by every caller (found by fuzz_store) */
    sdb_job_rows_free(*rows, *n);
    *rows = NULL;
    *n = 0;
    return dberr(s, err, "read jobs");
}

int sdb_store_count_runs(sdb_store *s, const char *id, const char *outcome, int *count, sdb_err *err)
{
    sqlite3_stmt *st;
    const char *sql = outcome ? "SELECT count(*) FROM runs WHERE job_id = ? AND outcome = ?"
                              : "SELECT count(*) FROM runs WHERE job_id = ? AND outcome IS NULL";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return dberr(s, err, "count runs");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (outcome) sqlite3_bind_text(st, 2, outcome, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : dberr(s, err, "count runs");
    *count = rc ? 0 : sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc;
}

/* ---- statements ------------------------------------------------------------------------------ */

/* Runs one statement with text/double/int64 bindings given as a format: 't' text, 'd' double,
 * 'i' int64, 'n' null. Returns 0 or an error; *changes gets sqlite3_changes. */
static int run(sdb_store *s, sdb_err *err, int *changes, const char *sql, const char *fmt, ...)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return dberr(s, err, "prepare");
    va_list ap;
    va_start(ap, fmt);
    for (int i = 0; fmt[i]; i++) {
        switch (fmt[i]) {
        case 't': { const char *v = va_arg(ap, const char *);
                    if (v) sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT); else sqlite3_bind_null(st, i + 1); break; }
        case 'd': sqlite3_bind_double(st, i + 1, va_arg(ap, double)); break;
        case 'i': sqlite3_bind_int64(st, i + 1, va_arg(ap, long long)); break;
        default: sqlite3_bind_null(st, i + 1); break;
        }
    }
    va_end(ap);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return dberr(s, err, "update");
    if (changes) *changes = sqlite3_changes(s->db);
    return 0;
}

static int begin(sdb_store *s, sdb_err *err)
{
    if (s->readonly) return sdb_fail(err, SDB_ESTATE, "%s: opened read-only", s->path);
    return exec(s, "BEGIN IMMEDIATE", err);
}
static void rollback(sdb_store *s) { exec(s, "ROLLBACK", NULL); }
/* A COMMIT that fails (e.g. SQLITE_BUSY after the timeout, on a rollback-journal shard file a
 * reader keeps locked) leaves the transaction open; it is rolled back, so the connection is never
 * left inside a transaction whose snapshot would go stale (invariant 9). */
static int commit(sdb_store *s, sdb_err *err)
{
    int rc = exec(s, "COMMIT", err);
    if (rc && !sqlite3_get_autocommit(s->db)) rollback(s);
    return rc;
}

/* Does the recorded output exist with the recorded hash? */
static int output_matches(const sdb_job_row *r)
{
    if (!r->output || !r->output_sha256 || !sdb_file_exists(r->output)) return 0;
    char hex[65];
    sdb_err e;
    if (sdb_sha256_file(r->output, hex, &e)) return 0;
    return !strcmp(hex, r->output_sha256);
}

/* Inside a transaction: moves one orphaned RUNNING row to DONE or PENDING. */
static int recover_row(sdb_store *s, const sdb_job_row *r, sdb_err *err)
{
    double now = sdb_now_wall();
    if (output_matches(r)) {
        int rc = run(s, err, NULL, "UPDATE jobs SET state='done', finished_at=?, seconds=?-started_at, lease_until=NULL, "
                     "error=NULL, updated_at=? WHERE id=? AND run_id=?", "dddti", now, now, now, r->id, r->run_id);
        if (!rc) rc = run(s, err, NULL, "UPDATE runs SET outcome='done', finished_at=?, error='recovered: output was complete' "
                          "WHERE run=?", "di", now, r->run_id);
        return rc;
    }
    int rc = run(s, err, NULL, "UPDATE jobs SET state='pending', lease_until=NULL, output_sha256=NULL, updated_at=?, "
                 "error=NULL WHERE id=? AND run_id=?", "dti", now, r->id, r->run_id);
    if (!rc) rc = run(s, err, NULL, "UPDATE runs SET outcome='orphaned', finished_at=? WHERE run=? AND outcome IS NULL",
                      "di", now, r->run_id);
    return rc;
}

int sdb_store_sync(sdb_store *s, const sdb_store_job *jobs, int n, const sdb_worker *me, int *n_reset, sdb_err *err)
{
    if (n_reset) *n_reset = 0;
    int rc = begin(s, err);
    if (rc) return rc;
    double now = sdb_now_wall();
    for (int i = 0; i < n && !rc; i++) {
        const sdb_store_job *j = &jobs[i];
        sdb_job_row r;
        int found;
        if ((rc = sdb_store_get(s, j->id, &r, &found, err))) break;
        if (!found) {
            rc = run(s, err, NULL, "INSERT INTO jobs(id, identity, params_hash, model_hash, state, attempts, output, updated_at) "
                     "VALUES(?, ?, ?, ?, 'pending', 0, ?, ?)", "tttttd", j->id, j->identity, j->params_hash,
                     j->model_hash, j->output, now);
            continue;
        }
        int reset = 0;
        if (strcmp(r.identity, j->identity)) {
            if (r.state != SDB_JOB_RUNNING || !sdb_store_owner_alive(&r, me, now)) reset = 1;
        } else if (r.state == SDB_JOB_DONE && (!r.output || !sdb_file_exists(r.output))) {
            reset = 1;
        }
        if (reset) {
            if (r.state == SDB_JOB_RUNNING)
                rc = run(s, err, NULL, "UPDATE runs SET outcome='orphaned', finished_at=? WHERE run=? AND outcome IS NULL",
                         "di", now, r.run_id);
            if (!rc)
                rc = run(s, err, NULL, "UPDATE jobs SET identity=?, params_hash=?, model_hash=?, state='pending', attempts=0, "
                         "host=NULL, pid=NULL, proc_start=NULL, started_at=NULL, lease_until=NULL, finished_at=NULL, "
                         "seconds=NULL, output=?, output_sha256=NULL, error=NULL, run_id=NULL, updated_at=? WHERE id=?",
                         "ttttdt", j->identity, j->params_hash, j->model_hash, j->output, now, j->id);
            if (n_reset) (*n_reset)++;
        }
        sdb_job_row_free(&r);
    }
    if (rc) { rollback(s); return rc; }
    return commit(s, err);
}

int sdb_store_recover(sdb_store *s, const sdb_worker *me, int all_running, int *n_recovered, sdb_err *err)
{
    if (n_recovered) *n_recovered = 0;
    int rc = begin(s, err);
    if (rc) return rc;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT " ROW_COLS " FROM jobs WHERE state='running'", -1, &st, NULL) != SQLITE_OK) {
        rc = dberr(s, err, "read running jobs");
        rollback(s);
        return rc;
    }
    sdb_job_row *rows = NULL;
    int nr = 0, cap = 0;
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        if (nr == cap) {
            cap = cap ? cap * 2 : 16;
            sdb_job_row *np = realloc(rows, cap * sizeof *np);
            if (!np) { rc = sdb_fail(err, SDB_ENOMEM, "out of memory"); break; }
            rows = np;
        }
        read_row(st, &rows[nr++]);
    }
    if (!rc && src != SQLITE_DONE) rc = dberr(s, err, "read running jobs");
    sqlite3_finalize(st);
    if (rc) { sdb_job_rows_free(rows, nr); rollback(s); return rc; }
    double now = sdb_now_wall();
    sdb_kill_point("recover_txn");
    for (int i = 0; i < nr && !rc; i++) {
        if (!all_running && sdb_store_owner_alive(&rows[i], me, now)) continue;
        rc = recover_row(s, &rows[i], err);
        if (!rc && n_recovered) (*n_recovered)++;
    }
    sdb_job_rows_free(rows, nr);
    if (rc) { rollback(s); return rc; }
    return commit(s, err);
}

int sdb_store_claim(sdb_store *s, const char *id, const char *identity, const sdb_claim_opts *o,
                    const sdb_worker *me, int *claimed, long long *run_id, sdb_err *err)
{
    *claimed = 0;
    *run_id = 0;
    int max_attempts = o && o->max_attempts > 0 ? o->max_attempts : 2;
    double lease = o && o->lease_seconds > 0 ? o->lease_seconds : 600;
    int rc = begin(s, err);
    if (rc) return rc;
    sdb_job_row r;
    int found;
    if ((rc = sdb_store_get(s, id, &r, &found, err))) { rollback(s); return rc; }
    if (!found || strcmp(r.identity, identity)) { sdb_job_row_free(&r); rollback(s); return 0; }
    double now = sdb_now_wall();
    int ok = 0;
    switch (r.state) {
    case SDB_JOB_PENDING: ok = 1; break;
    case SDB_JOB_FAILED: ok = (o && o->retry_failed) || r.attempts < max_attempts; break;
    case SDB_JOB_RUNNING:
        if (!sdb_store_owner_alive(&r, me, now)) {
            /* orphaned: recover it first (it may turn out to be done) */
            if ((rc = recover_row(s, &r, err))) break;
            sdb_job_row r2;
            if ((rc = sdb_store_get(s, id, &r2, &found, err))) break;
            ok = found && r2.state == SDB_JOB_PENDING;
            sdb_job_row_free(&r2);
        }
        break;
    case SDB_JOB_DONE: break;
    }
    sdb_job_row_free(&r);
    if (rc) { rollback(s); return rc; }
    if (!ok) return commit(s, err);   /* keeps a recovery, if any */
    rc = run(s, err, NULL, "INSERT INTO runs(job_id, identity, host, pid, started_at) VALUES(?, ?, ?, ?, ?)",
             "tttid", id, identity, me->host, (long long)me->pid, now);
    if (!rc) {
        long long rid = sqlite3_last_insert_rowid(s->db);
        rc = run(s, err, NULL, "UPDATE jobs SET state='running', attempts=attempts+1, host=?, pid=?, proc_start=?, "
                 "started_at=?, lease_until=?, finished_at=NULL, seconds=NULL, output_sha256=NULL, error=NULL, "
                 "run_id=?, updated_at=? WHERE id=?",
                 "tiiddidt", me->host, (long long)me->pid, me->proc_start, now, now + lease, rid, now, id);
        *run_id = rid;
    }
    if (rc) { rollback(s); *run_id = 0; return rc; }
    sdb_kill_point("claim_txn");
    if ((rc = commit(s, err))) { *run_id = 0; return rc; }
    *claimed = 1;
    return 0;
}

/* Inside a transaction: does run_id still own job id (RUNNING)? */
static int owns(sdb_store *s, const char *id, long long run_id, sdb_err *err)
{
    sdb_job_row r;
    int found;
    int rc = sdb_store_get(s, id, &r, &found, err);
    if (rc) return rc;
    int ok = found && r.state == SDB_JOB_RUNNING && r.run_id == run_id;
    sdb_job_row_free(&r);
    if (!ok) return sdb_fail(err, SDB_ESTATE, "job '%s': this run (%lld) no longer owns it (another process recovered it)", id, run_id);
    return 0;
}

int sdb_store_heartbeat(sdb_store *s, const char *id, long long run_id, double lease_seconds, sdb_err *err)
{
    double now = sdb_now_wall();
    int changes = 0;
    int rc = run(s, err, &changes, "UPDATE jobs SET lease_until=?, updated_at=? WHERE id=? AND run_id=? AND state='running'",
                 "ddti", now + (lease_seconds > 0 ? lease_seconds : 600), now, id, run_id);
    if (!rc && !changes) rc = sdb_fail(err, SDB_ESTATE, "job '%s': lease lost", id);
    return rc;
}

int sdb_store_prepare(sdb_store *s, const char *id, long long run_id, const char *output, const char *sha256, sdb_err *err)
{
    int rc = begin(s, err);
    if (rc) return rc;
    if (!(rc = owns(s, id, run_id, err)))
        rc = run(s, err, NULL, "UPDATE jobs SET output=?, output_sha256=?, updated_at=? WHERE id=? AND run_id=?",
                 "ttdti", output, sha256, sdb_now_wall(), id, run_id);
    if (rc) { rollback(s); return rc; }
    return commit(s, err);
}

int sdb_store_complete(sdb_store *s, const char *id, long long run_id, const char *output, const char *sha256,
                       double seconds, sdb_err *err)
{
    int rc = begin(s, err);
    if (rc) return rc;
    double now = sdb_now_wall();
    if (!(rc = owns(s, id, run_id, err)))
        rc = run(s, err, NULL, "UPDATE jobs SET state='done', output=?, output_sha256=?, finished_at=?, seconds=?, "
                 "lease_until=NULL, error=NULL, updated_at=? WHERE id=? AND run_id=?",
                 "ttdddti", output, sha256, now, seconds, now, id, run_id);
    if (!rc) rc = run(s, err, NULL, "UPDATE runs SET outcome='done', finished_at=? WHERE run=?", "di", now, run_id);
    if (rc) { rollback(s); return rc; }
    sdb_kill_point("complete_txn");
    return commit(s, err);
}

int sdb_store_fail(sdb_store *s, const char *id, long long run_id, const char *error, double seconds, sdb_err *err)
{
    int rc = begin(s, err);
    if (rc) return rc;
    double now = sdb_now_wall();
    if (!(rc = owns(s, id, run_id, err)))
        rc = run(s, err, NULL, "UPDATE jobs SET state='failed', error=?, finished_at=?, seconds=?, lease_until=NULL, "
                 "output_sha256=NULL, updated_at=? WHERE id=? AND run_id=?", "tdddti", error, now, seconds, now, id, run_id);
    if (!rc) rc = run(s, err, NULL, "UPDATE runs SET outcome='failed', finished_at=?, error=? WHERE run=?", "dti", now, error, run_id);
    if (rc) { rollback(s); return rc; }
    return commit(s, err);
}

int sdb_store_release(sdb_store *s, const char *id, long long run_id, const char *why, sdb_err *err)
{
    int rc = begin(s, err);
    if (rc) return rc;
    double now = sdb_now_wall();
    if (!(rc = owns(s, id, run_id, err)))
        rc = run(s, err, NULL, "UPDATE jobs SET state='pending', attempts=max(attempts-1, 0), lease_until=NULL, "
                 "output_sha256=NULL, updated_at=? WHERE id=? AND run_id=?", "dti", now, id, run_id);
    if (!rc) rc = run(s, err, NULL, "UPDATE runs SET outcome='interrupted', finished_at=?, error=? WHERE run=?", "dti", now, why, run_id);
    if (rc) { rollback(s); return rc; }
    return commit(s, err);
}

int sdb_store_mark_repaired(sdb_store *s, const char *id, const char *identity, const char *output,
                            const char *sha256, const char *why, sdb_err *err)
{
    int rc = begin(s, err);
    if (rc) return rc;
    double now = sdb_now_wall();
    sdb_worker me;
    sdb_worker_self(&me);
    char note[600];
    snprintf(note, sizeof note, "repaired: %s", why);
    int changes = 0;
    rc = run(s, err, &changes, "UPDATE jobs SET state='done', identity=?, output=?, output_sha256=?, started_at=?, "
             "finished_at=?, seconds=NULL, lease_until=NULL, error=NULL, updated_at=? WHERE id=? AND state!='running'",
             "tttdddt", identity, output, sha256, now, now, now, id);
    if (!rc && changes != 1) rc = sdb_fail(err, SDB_ESTATE, "job '%s': no such row, or it is running", id);
    if (!rc) rc = run(s, err, NULL, "INSERT INTO runs(job_id, identity, host, pid, started_at, finished_at, outcome, error) "
                      "VALUES(?, ?, ?, ?, ?, ?, 'done', ?)", "tttiddt", id, identity, me.host, (long long)me.pid, now, now, note);
    if (rc) { rollback(s); return rc; }
    return commit(s, err);
}
