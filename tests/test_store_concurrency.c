/*
 * test_store_concurrency.c — the state database under concurrent real processes (fork), on real
 * files: no process ever fails with "database is locked" (SQLITE_BUSY); each waits its turn.
 *   - many processes opening a database file that does not exist yet, all at the same instant,
 *     each then doing a whole run's work (meta, recover, sync, claim, complete);
 *   - processes opening and claiming while another process holds the write lock for a while
 *     (they wait; a read-only reader is not blocked at all: WAL);
 *   - a writer killed (SIGKILL) inside a transaction, some of whose pages had already spilled
 *     into the WAL, then many processes opening at once (WAL recovery).
 * Every round also checks the outcome: each job done exactly once, the killed transaction gone,
 * PRAGMA integrity_check "ok".
 */
#include "harness.h"
#include "sdb/fsutil.h"
#include "sdb/store.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NJOBS 8

static char ids[NJOBS][16];

static void make_ids(void)
{
    for (int i = 0; i < NJOBS; i++) snprintf(ids[i], sizeof ids[i], "job%02d", i);
}

/* What one `sdbatch run` does to the database, start to end. Returns 0, or prints the error and
 * returns the step that failed. */
static int worker_lifecycle(const char *path)
{
    sdb_store *s;
    sdb_err e;
    sdb_worker me;
    sdb_worker_self(&me);
    int step = 1;
    if (sdb_store_open(&s, path, SDB_STORE_RW, &e)) goto fail;
    step++;
    if (sdb_store_set_meta(s, "manifest", "m.yaml", &e)) goto fail_s;
    step++;
    if (sdb_store_recover(s, &me, 0, NULL, &e)) goto fail_s;
    step++;
    /* outputs beside the database's folder: a done job whose output is missing would be redone */
    char *dir = sdb_path_dirname(path);
    char outs[NJOBS][800];
    sdb_store_job jobs[NJOBS];
    for (int i = 0; i < NJOBS; i++) {
        snprintf(outs[i], sizeof outs[i], "%s/../%s.png", dir ? dir : ".", ids[i]);
        sdb_store_job j = {ids[i], "I", "params", "model", outs[i]};
        jobs[i] = j;
    }
    free(dir);
    if (sdb_store_sync(s, jobs, NJOBS, &me, NULL, &e)) goto fail_s;
    step++;
    sdb_claim_opts co = {2, 0, 60};
    for (int i = 0; i < NJOBS; i++) {
        sdb_job_row r;
        int found;
        if (sdb_store_get(s, ids[i], &r, &found, &e)) goto fail_s;   /* the runner's cheap look */
        if (found) sdb_job_row_free(&r);
        int claimed;
        long long run;
        if (sdb_store_claim(s, ids[i], "I", &co, &me, &claimed, &run, &e)) goto fail_s;
        if (!claimed) continue;
        if (sdb_store_heartbeat(s, ids[i], run, 60, &e)) goto fail_s;
        char sha[65];
        sdb_sha256_hex(ids[i], strlen(ids[i]), sha);
        if (sdb_store_prepare(s, ids[i], run, outs[i], sha, &e)) goto fail_s;
        sdb_wfile w;
        if (sdb_wfile_open(&w, outs[i], &e)) goto fail_s;
        if (sdb_wfile_write(&w, ids[i], strlen(ids[i]), &e)) { sdb_wfile_abort(&w); goto fail_s; }
        if (sdb_wfile_commit(&w, &e)) goto fail_s;
        if (sdb_store_complete(s, ids[i], run, outs[i], sha, 0.001, &e)) goto fail_s;
    }
    sdb_store_close(s);
    return 0;
fail_s:
    sdb_store_close(s);
fail:
    fprintf(stderr, "    [pid %ld] step %d: %s\n", (long)getpid(), step, e.msg);
    return step;
}

/* Forks n children that block on a pipe, then releases them all at once; each runs fn(path). */
static void run_at_once(int n, const char *path, int (*fn)(const char *), int *statuses)
{
    for (int k = 0; k < n; k++) statuses[k] = -1;
    int p[2];
    if (pipe(p)) { CHECK(0); return; }
    pid_t kids[16];
    for (int k = 0; k < n; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            close(p[1]);
            char c;
            if (read(p[0], &c, 1) < 0) _exit(99);
            _exit(fn(path));
        }
    }
    close(p[0]);
    close(p[1]);   /* every read() returns 0 now */
    for (int k = 0; k < n; k++) {
        int st = 0;
        waitpid(kids[k], &st, 0);
        statuses[k] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
}

static long long sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return v;
}

static int integrity_ok(const char *path)
{
    sqlite3 *db;
    int ok = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
            ok = sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return ok;
}

/* Every job done, by exactly one run, none left open. */
static void check_all_done_once(const char *path)
{
    CHECK(sql_int(path, "SELECT count(*) FROM jobs") == NJOBS);
    CHECK(sql_int(path, "SELECT count(*) FROM jobs WHERE state='done'") == NJOBS);
    CHECK(sql_int(path, "SELECT count(*) FROM runs WHERE outcome='done'") == NJOBS);
    CHECK(sql_int(path, "SELECT count(DISTINCT job_id) FROM runs WHERE outcome='done'") == NJOBS);
    CHECK(sql_int(path, "SELECT count(*) FROM runs WHERE outcome IS NULL") == 0);
    CHECK(integrity_ok(path));
}

static void db_path(char *buf, size_t n, const char *tag)
{
    snprintf(buf, n, "%s/%s/.sdbatch/state.db", sdb_t_tmpdir(), tag);
}

/* A writer SIGKILLed inside transactions (WAL left behind, uncommitted frames in it), then many
 * processes opening at once. Runs first: the kill-point configuration is read once per process,
 * and this parent process never reaches a kill point. */
static int killed_in_claim(const char *path)
{
    setenv("SDB_TEST_KILL_AT", "claim_txn@3", 1);   /* two jobs done, killed inside the third claim */
    worker_lifecycle(path);
    return 1;   /* not reached */
}

static int killed_with_spilled_pages(const char *path)
{
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) return 2;
    sqlite3_busy_timeout(db, 60000);
    /* a tiny page cache: the transaction's pages spill into the WAL before any COMMIT */
    if (sqlite3_exec(db, "PRAGMA cache_size=2; BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return 3;
    if (sqlite3_exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<400) "
                     "INSERT INTO meta(key, value) SELECT 'junk' || i, printf('%.1000c', 'x') FROM n",
                     NULL, NULL, NULL) != SQLITE_OK) return 4;
    raise(SIGKILL);
    return 5;
}

static void test_killed_writer_then_many_openers(void)
{
    char path[700];
    db_path(path, sizeof path, "killed");
    int st[8];
    run_at_once(1, path, killed_in_claim, st);
    CHECKF(st[0] == 128 + SIGKILL, "status %d", st[0]);
    char wal[720];
    snprintf(wal, sizeof wal, "%s-wal", path);
    CHECK(sdb_file_exists(wal));   /* it died with its connection open: the WAL is still there */
    run_at_once(1, path, killed_with_spilled_pages, st);
    CHECKF(st[0] == 128 + SIGKILL, "status %d", st[0]);
    /* the WAL now holds frames of a transaction that never committed */
    run_at_once(6, path, worker_lifecycle, st);
    for (int k = 0; k < 6; k++) CHECKF(st[k] == 0, "process %d failed at step %d", k, st[k]);
    check_all_done_once(path);
    CHECK(sql_int(path, "SELECT count(*) FROM meta WHERE key LIKE 'junk%'") == 0);
    /* the killed claim rolled back: no run row of it; the two jobs it completed stay done by it */
    CHECK(sql_int(path, "SELECT count(*) FROM runs") == NJOBS);
}

/* Processes created at the same instant, on a file that does not exist yet: the first one
 * creates it and switches it to WAL, which the others race (the regression: "database is
 * locked" from PRAGMA journal_mode=WAL). Many rounds, since the race is a matter of timing. */
static void test_fresh_file_many_openers(void)
{
    enum { ROUNDS = 25, NPROC = 6 };
    int failed = 0;
    for (int r = 0; r < ROUNDS; r++) {
        char tag[32], path[700];
        snprintf(tag, sizeof tag, "fresh%02d", r);
        db_path(path, sizeof path, tag);
        int st[NPROC];
        run_at_once(NPROC, path, worker_lifecycle, st);
        for (int k = 0; k < NPROC; k++) if (st[k]) failed++;
        check_all_done_once(path);
    }
    CHECKF(failed == 0, "%d of %d processes failed", failed, ROUNDS * NPROC);
}

/* Another process holds the write lock for a while: openers and claimers wait for it (the busy
 * timeout), none fails; a read-only reader meanwhile is not blocked at all (WAL). */
static int hold_write_lock(const char *path)
{
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) return 2;
    sqlite3_busy_timeout(db, 60000);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT OR REPLACE INTO meta(key, value) VALUES('holder', 'x')",
                     NULL, NULL, NULL) != SQLITE_OK) return 3;
    usleep(1500 * 1000);
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) return 4;
    sqlite3_close(db);
    return 0;
}

static void test_openers_wait_for_a_held_write_lock(void)
{
    char path[700];
    db_path(path, sizeof path, "held");
    sdb_store *s;
    sdb_err err;
    CHECK_OK(sdb_store_open(&s, path, SDB_STORE_RW, &err), &err);
    sdb_store_close(s);
    /* the holder, then (once it holds the lock) four workers at once */
    int p[2];
    if (pipe(p)) { CHECK(0); return; }
    pid_t holder = fork();
    if (holder == 0) {
        close(p[0]);
        sqlite3 *db;
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) _exit(2);
        sqlite3_busy_timeout(db, 60000);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT OR REPLACE INTO meta(key, value) VALUES('holder', 'x')",
                         NULL, NULL, NULL) != SQLITE_OK) _exit(3);
        if (write(p[1], "x", 1) != 1) _exit(4);
        usleep(1500 * 1000);
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) _exit(5);
        sqlite3_close(db);
        _exit(0);
    }
    close(p[1]);
    char c;
    CHECK(read(p[0], &c, 1) == 1);
    close(p[0]);
    double t0 = sdb_now_mono();
    /* a reader is not blocked by the writer */
    CHECK_OK(sdb_store_open(&s, path, SDB_STORE_READONLY, &err), &err);
    if (s) {
        sdb_job_row *rows;
        int n;
        CHECK_OK(sdb_store_rows(s, &rows, &n, &err), &err);
        sdb_job_rows_free(rows, n);
        sdb_store_close(s);
    }
    double t_read = sdb_now_mono() - t0;
    CHECKF(t_read < 1.0, "the reader waited %.2f s", t_read);
    int st[4];
    run_at_once(4, path, worker_lifecycle, st);
    double t_all = sdb_now_mono() - t0;
    for (int k = 0; k < 4; k++) CHECKF(st[k] == 0, "process %d failed at step %d", k, st[k]);
    int hst;
    waitpid(holder, &hst, 0);
    CHECK(WIFEXITED(hst) && WEXITSTATUS(hst) == 0);
    CHECKF(t_all > 1.2, "the workers finished after %.2f s, before the holder let go", t_all);
    check_all_done_once(path);
    CHECK(sql_int(path, "SELECT count(*) FROM meta WHERE key='holder'") == 1);
    /* and the same with the lock held while the workers are already inside their runs */
    char path2[700];
    db_path(path2, sizeof path2, "held2");
    CHECK_OK(sdb_store_open(&s, path2, SDB_STORE_RW, &err), &err);
    sdb_store_close(s);
    pid_t h2 = fork();
    if (h2 == 0) _exit(hold_write_lock(path2));
    run_at_once(4, path2, worker_lifecycle, st);
    for (int k = 0; k < 4; k++) CHECKF(st[k] == 0, "process %d failed at step %d", k, st[k]);
    waitpid(h2, &hst, 0);
    CHECK(WIFEXITED(hst) && WEXITSTATUS(hst) == 0);
    check_all_done_once(path2);
}

int main(void)
{
    make_ids();
    RUN(test_killed_writer_then_many_openers);
    RUN(test_fresh_file_many_openers);
    RUN(test_openers_wait_for_a_held_write_lock);
    return sdb_t_done();
}
