/*
 * test_store.c — the job-state database on real SQLite files: every transition of the state
 * machine, identity changes, orphan recovery (a dead pid, an expired lease, a recorded output),
 * migrations, and processes (fork) claiming concurrently never getting the same job.
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

static sdb_store *open_new(const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/.sdbatch/%s", sdb_t_tmpdir(), name);
    sdb_store *s = NULL;
    sdb_err err;
    CHECK_OK(sdb_store_open(&s, path, SDB_STORE_RW, &err), &err);
    return s;
}

static sdb_store_job J(const char *id, const char *ident)
{
    sdb_store_job j = {id, ident, "params", "model", NULL};
    return j;
}

static sdb_job_state state_of(sdb_store *s, const char *id, int *attempts)
{
    sdb_job_row r;
    int found;
    sdb_err err;
    CHECK_OK(sdb_store_get(s, id, &r, &found, &err), &err);
    CHECK(found);
    sdb_job_state st = r.state;
    if (attempts) *attempts = r.attempts;
    sdb_job_row_free(&r);
    return st;
}

static int runs(sdb_store *s, const char *id, const char *outcome)
{
    int n = -1;
    sdb_err err;
    CHECK_OK(sdb_store_count_runs(s, id, outcome, &n, &err), &err);
    return n;
}

/* must run first: the kill-point configuration is read once per process */
static void test_kill_point(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("SDB_TEST_KILL_AT", "here@2", 1);
        sdb_kill_point("elsewhere");
        sdb_kill_point("here");      /* first: survives */
        sdb_kill_point("elsewhere");
        sdb_kill_point("here");      /* second: SIGKILL */
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "status %d", st);
    pid = fork();
    if (pid == 0) {
        unsetenv("SDB_TEST_KILL_AT");
        for (int i = 0; i < 10; i++) sdb_kill_point("here");   /* inert without the variable */
        _exit(7);
    }
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7);
}

/* Does the sqlite3 library, opening the file directly, find it in this journal mode? */
static int is_journal_mode(const char *path, const char *mode)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
             sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), mode);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ok;
}

static void test_open_schema(void)
{
    sdb_store *s = open_new("state.db");
    if (!s) return;
    CHECK(sdb_store_user_version(s) == SDB_STORE_SCHEMA_VERSION);
    sdb_err err;
    CHECK_OK(sdb_store_set_meta(s, "manifest", "m.yaml", &err), &err);
    char *v = sdb_store_get_meta(s, "manifest");
    CHECK(v && !strcmp(v, "m.yaml"));
    free(v);
    /* WAL, readable by the sqlite3 library directly */
    CHECK(is_journal_mode(sdb_store_path(s), "wal"));
    /* reopen: no migration again, same version */
    char *path = strdup(sdb_store_path(s));
    sdb_store_close(s);
    CHECK_OK(sdb_store_open(&s, path, SDB_STORE_RW, &err), &err);
    CHECK(sdb_store_user_version(s) == SDB_STORE_SCHEMA_VERSION);
    sdb_store_close(s);
    /* read-only of a missing file */
    char miss[700];
    snprintf(miss, sizeof miss, "%s.nothere", path);
    CHECK(sdb_store_open(&s, miss, SDB_STORE_READONLY, &err) == SDB_ENOTFOUND);
    CHECK(!sdb_file_exists(miss));
    free(path);
}

static void test_migration_from_v1(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/state.db", sdb_t_tmpdir());
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    /* a version-1 file as the first release wrote it, with a row */
    CHECK(sqlite3_exec(db,
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE jobs(id TEXT PRIMARY KEY, identity TEXT NOT NULL, params_hash TEXT NOT NULL, model_hash TEXT,"
        " state TEXT NOT NULL DEFAULT 'pending' CHECK(state IN ('pending','running','done','failed')),"
        " attempts INTEGER NOT NULL DEFAULT 0, host TEXT, pid INTEGER, proc_start INTEGER, started_at REAL,"
        " lease_until REAL, finished_at REAL, seconds REAL, output TEXT, output_sha256 TEXT, error TEXT,"
        " run_id INTEGER, updated_at REAL);"
        "CREATE TABLE runs(run INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, identity TEXT NOT NULL,"
        " host TEXT, pid INTEGER, started_at REAL, finished_at REAL, outcome TEXT, error TEXT);"
        "INSERT INTO jobs(id, identity, params_hash, state, attempts) VALUES('old', 'I', 'P', 'failed', 1);"
        "PRAGMA user_version = 1;", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    sdb_store *s;
    sdb_err err;
    CHECK_OK(sdb_store_open(&s, path, SDB_STORE_RW, &err), &err);
    if (!s) return;
    CHECK(sdb_store_user_version(s) == 2);
    int att;
    CHECK(state_of(s, "old", &att) == SDB_JOB_FAILED && att == 1);   /* data kept */
    sdb_store_close(s);
    /* a newer file than we know is refused, not rewritten */
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK(sdb_store_open(&s, path, SDB_STORE_RW, &err) == SDB_ESTATE);
    CHECK(strstr(err.msg, "newer"));
}

static void test_transitions(void)
{
    sdb_store *s = open_new("state.db");
    if (!s) return;
    sdb_err err;
    sdb_worker me;
    sdb_worker_self(&me);
    sdb_store_job jobs[3] = {J("a", "IA"), J("b", "IB"), J("c", "IC")};
    int n_reset;
    CHECK_OK(sdb_store_sync(s, jobs, 3, &me, &n_reset, &err), &err);
    CHECK(n_reset == 0);
    CHECK(state_of(s, "a", NULL) == SDB_JOB_PENDING);
    sdb_claim_opts co = {2, 0, 60};
    int claimed;
    long long run;
    /* pending -> running; a second claim (even by the same live owner) gets nothing */
    CHECK_OK(sdb_store_claim(s, "a", "IA", &co, &me, &claimed, &run, &err), &err);
    CHECK(claimed && run > 0);
    int att;
    CHECK(state_of(s, "a", &att) == SDB_JOB_RUNNING && att == 1);
    int c2;
    long long run2;
    CHECK_OK(sdb_store_claim(s, "a", "IA", &co, &me, &c2, &run2, &err), &err);
    CHECK(!c2);
    /* a wrong identity never claims */
    CHECK_OK(sdb_store_claim(s, "b", "other", &co, &me, &c2, &run2, &err), &err);
    CHECK(!c2);
    /* running -> done, by the owner only */
    CHECK(sdb_store_complete(s, "a", run + 1000, "/x.png", "00", 1.0, &err) == SDB_ESTATE);
    CHECK_OK(sdb_store_heartbeat(s, "a", run, 60, &err), &err);
    CHECK_OK(sdb_store_complete(s, "a", run, "/x.png", "00", 1.5, &err), &err);
    CHECK(state_of(s, "a", NULL) == SDB_JOB_DONE);
    CHECK(runs(s, "a", "done") == 1);
    CHECK_OK(sdb_store_claim(s, "a", "IA", &co, &me, &c2, &run2, &err), &err);
    CHECK(!c2);                                              /* done stays done */
    CHECK(sdb_store_heartbeat(s, "a", run, 60, &err) == SDB_ESTATE);  /* no lease on a done job */

    /* running -> failed -> (retry) running -> failed; then no more attempts */
    CHECK_OK(sdb_store_claim(s, "b", "IB", &co, &me, &claimed, &run, &err), &err);
    CHECK_OK(sdb_store_fail(s, "b", run, "image unreadable", 0.1, &err), &err);
    CHECK(state_of(s, "b", &att) == SDB_JOB_FAILED && att == 1);
    CHECK_OK(sdb_store_claim(s, "b", "IB", &co, &me, &claimed, &run, &err), &err);
    CHECK(claimed);
    CHECK(state_of(s, "b", &att) == SDB_JOB_RUNNING && att == 2);
    CHECK_OK(sdb_store_fail(s, "b", run, "again", 0.1, &err), &err);
    CHECK_OK(sdb_store_claim(s, "b", "IB", &co, &me, &claimed, &run, &err), &err);
    CHECK(!claimed);                                         /* attempts 2 = max */
    sdb_job_row r;
    int found;
    CHECK_OK(sdb_store_get(s, "b", &r, &found, &err), &err);
    CHECK(r.error && !strcmp(r.error, "again"));
    sdb_job_row_free(&r);
    sdb_claim_opts retry = {2, 1, 60};
    CHECK_OK(sdb_store_claim(s, "b", "IB", &retry, &me, &claimed, &run, &err), &err);
    CHECK(claimed);                                          /* --retry-failed */
    CHECK(runs(s, "b", "failed") == 2);

    /* running -> pending (interrupted): the attempt does not count */
    CHECK_OK(sdb_store_claim(s, "c", "IC", &co, &me, &claimed, &run, &err), &err);
    CHECK_OK(sdb_store_release(s, "c", run, "SIGINT", &err), &err);
    CHECK(state_of(s, "c", &att) == SDB_JOB_PENDING && att == 0);
    CHECK(runs(s, "c", "interrupted") == 1);
    /* after release the old run cannot complete */
    CHECK(sdb_store_complete(s, "c", run, "/c.png", "00", 1, &err) == SDB_ESTATE);
    sdb_store_close(s);
}

static void test_identity_change(void)
{
    sdb_store *s = open_new("state.db");
    if (!s) return;
    const char *dir = sdb_t_tmpdir();
    char out[600];
    snprintf(out, sizeof out, "%s/a.png", dir);
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(out, "png", 3, &err), &err);
    sdb_worker me;
    sdb_worker_self(&me);
    sdb_store_job jobs[2] = {{"a", "I1", "P1", "M", out}, {"b", "J1", "Q1", "M", NULL}};
    int n_reset, claimed;
    long long run;
    sdb_claim_opts co = {2, 0, 60};
    CHECK_OK(sdb_store_sync(s, jobs, 2, &me, &n_reset, &err), &err);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(sdb_store_claim(s, jobs[i].id, jobs[i].identity, &co, &me, &claimed, &run, &err), &err);
        CHECK_OK(sdb_store_complete(s, jobs[i].id, run, out, "h", 1, &err), &err);
    }
    /* unchanged: nothing reset */
    CHECK_OK(sdb_store_sync(s, jobs, 2, &me, &n_reset, &err), &err);
    CHECK(n_reset == 0);
    /* job a edited: only a goes back to pending, attempts 0 */
    jobs[0].identity = "I2";
    CHECK_OK(sdb_store_sync(s, jobs, 2, &me, &n_reset, &err), &err);
    CHECK(n_reset == 1);
    int att;
    CHECK(state_of(s, "a", &att) == SDB_JOB_PENDING && att == 0);
    CHECK(state_of(s, "b", NULL) == SDB_JOB_DONE);
    CHECK_OK(sdb_store_claim(s, "a", "I1", &co, &me, &claimed, &run, &err), &err);
    CHECK(!claimed);                                        /* the old identity is gone */
    CHECK_OK(sdb_store_claim(s, "a", "I2", &co, &me, &claimed, &run, &err), &err);
    CHECK(claimed);
    CHECK_OK(sdb_store_complete(s, "a", run, out, "h", 1, &err), &err);
    /* a done job whose output disappeared is redone */
    unlink(out);
    CHECK_OK(sdb_store_sync(s, jobs, 2, &me, &n_reset, &err), &err);
    CHECK(n_reset == 2);
    CHECK(state_of(s, "a", NULL) == SDB_JOB_PENDING);
    sdb_store_close(s);
}

/* A child claims a job and dies without finishing: the row names a dead pid. */
static long long claim_in_child_and_die(const char *path, const char *id, const char *ident,
                                        const char *prepare_out, const char *prepare_sha)
{
    pid_t pid = fork();
    if (pid == 0) {
        sdb_store *s;
        sdb_err err;
        if (sdb_store_open(&s, path, SDB_STORE_RW, &err)) _exit(2);
        sdb_worker me;
        sdb_worker_self(&me);
        sdb_claim_opts co = {2, 0, 60};
        int claimed;
        long long run;
        if (sdb_store_claim(s, id, ident, &co, &me, &claimed, &run, &err) || !claimed) _exit(3);
        if (prepare_out && sdb_store_prepare(s, id, run, prepare_out, prepare_sha, &err)) _exit(4);
        raise(SIGKILL);
        _exit(5);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status %d", st);
    return pid;
}

static void test_orphans(void)
{
    sdb_store *s = open_new("state.db");
    if (!s) return;
    const char *path = sdb_store_path(s);
    const char *dir = sdb_t_tmpdir();
    sdb_err err;
    sdb_worker me;
    sdb_worker_self(&me);
    char out_ok[600], out_old[600];
    snprintf(out_ok, sizeof out_ok, "%s/ok.png", dir);
    snprintf(out_old, sizeof out_old, "%s/old.png", dir);
    sdb_store_job jobs[4] = {{"dead", "I", "P", "M", NULL}, {"renamed", "I", "P", "M", out_ok},
                             {"old", "I", "P", "M", out_old}, {"claimme", "I", "P", "M", NULL}};
    int n_reset, n_rec, claimed;
    long long run;
    CHECK_OK(sdb_store_sync(s, jobs, 4, &me, &n_reset, &err), &err);
    /* 1. died mid-generation */
    claim_in_child_and_die(path, "dead", "I", NULL, NULL);
    /* 2. died after renaming its output (recorded hash matches) */
    char sha[65];
    sdb_sha256_hex("PNGDATA", 7, sha);
    claim_in_child_and_die(path, "renamed", "I", out_ok, sha);
    CHECK_OK(sdb_write_file_atomic(out_ok, "PNGDATA", 7, &err), &err);
    /* 3. died before its rename: an older, different file is in place */
    claim_in_child_and_die(path, "old", "I", out_old, sha);
    CHECK_OK(sdb_write_file_atomic(out_old, "OLDDATA", 7, &err), &err);
    CHECK(state_of(s, "dead", NULL) == SDB_JOB_RUNNING);
    sdb_job_row r;
    int found;
    CHECK_OK(sdb_store_get(s, "dead", &r, &found, &err), &err);
    CHECK(!sdb_store_owner_alive(&r, &me, sdb_now_wall()));
    sdb_job_row_free(&r);
    CHECK_OK(sdb_store_recover(s, &me, 0, &n_rec, &err), &err);
    CHECK(n_rec == 3);
    CHECK(state_of(s, "dead", NULL) == SDB_JOB_PENDING);
    CHECK(state_of(s, "renamed", NULL) == SDB_JOB_DONE);
    CHECK(runs(s, "renamed", "done") == 1);
    CHECK(state_of(s, "old", NULL) == SDB_JOB_PENDING);
    CHECK(runs(s, "dead", "orphaned") == 1);
    /* 4. recovery inside a claim: a dead owner's row is taken over directly */
    claim_in_child_and_die(path, "claimme", "I", NULL, NULL);
    sdb_claim_opts co = {2, 0, 60};
    CHECK_OK(sdb_store_claim(s, "claimme", "I", &co, &me, &claimed, &run, &err), &err);
    CHECK(claimed);
    int att;
    CHECK(state_of(s, "claimme", &att) == SDB_JOB_RUNNING && att == 2);
    /* a live owner on this host is never recovered */
    CHECK_OK(sdb_store_recover(s, &me, 0, &n_rec, &err), &err);
    CHECK(n_rec == 0);
    CHECK(state_of(s, "claimme", NULL) == SDB_JOB_RUNNING);
    /* ...unless the caller says every running row is orphaned (a requeued shard's own file) */
    CHECK_OK(sdb_store_recover(s, &me, 1, &n_rec, &err), &err);
    CHECK(n_rec == 1);
    CHECK(state_of(s, "claimme", NULL) == SDB_JOB_PENDING);
    sdb_store_close(s);
}

static void test_lease_other_host(void)
{
    sdb_store *s = open_new("state.db");
    if (!s) return;
    sdb_err err;
    sdb_worker me, other;
    sdb_worker_self(&me);
    other = me;
    snprintf(other.host, sizeof other.host, "some-other-node");
    other.pid = 1;
    sdb_store_job j = J("x", "I");
    int n_reset, claimed;
    long long run;
    CHECK_OK(sdb_store_sync(s, &j, 1, &me, &n_reset, &err), &err);
    sdb_claim_opts short_lease = {2, 0, 0.3};
    CHECK_OK(sdb_store_claim(s, "x", "I", &short_lease, &other, &claimed, &run, &err), &err);
    CHECK(claimed);
    /* another host's pid means nothing here: its lease decides */
    CHECK_OK(sdb_store_claim(s, "x", "I", &short_lease, &me, &claimed, &run, &err), &err);
    CHECK(!claimed);
    usleep(400 * 1000);
    CHECK_OK(sdb_store_claim(s, "x", "I", &short_lease, &me, &claimed, &run, &err), &err);
    CHECK(claimed);
    CHECK(runs(s, "x", "orphaned") == 1);
    /* on this host too, a live but silent owner loses the job when its lease expires, and its
       late complete() is refused */
    long long old_run = run;
    sdb_worker parent = me;
    parent.pid = (long)getppid();
    parent.proc_start = 0;
    CHECK_OK(sdb_store_claim(s, "x", "I", &short_lease, &parent, &claimed, &run, &err), &err);
    CHECK(!claimed);                                   /* my lease is still fresh */
    usleep(400 * 1000);
    CHECK_OK(sdb_store_claim(s, "x", "I", &short_lease, &parent, &claimed, &run, &err), &err);
    CHECK(claimed);
    CHECK(sdb_store_complete(s, "x", old_run, NULL, NULL, 1, &err) == SDB_ESTATE);
    CHECK(strstr(err.msg, "no longer owns"));
    CHECK_OK(sdb_store_complete(s, "x", run, NULL, NULL, 1, &err), &err);
    CHECK(runs(s, "x", "done") == 1);
    sdb_store_close(s);
}

/* Several processes claim from one database at once: no job is claimed twice. */
static void test_concurrent_claims(void)
{
    enum { NJOBS = 60, NPROC = 4 };
    sdb_store *s = open_new("state.db");
    if (!s) return;
    char *path = strdup(sdb_store_path(s));
    sdb_err err;
    sdb_worker me;
    sdb_worker_self(&me);
    static char ids[NJOBS][16];
    sdb_store_job jobs[NJOBS];
    for (int i = 0; i < NJOBS; i++) {
        snprintf(ids[i], sizeof ids[i], "job%03d", i);
        jobs[i] = J(ids[i], "I");
    }
    int n_reset;
    CHECK_OK(sdb_store_sync(s, jobs, NJOBS, &me, &n_reset, &err), &err);
    sdb_store_close(s);
    pid_t kids[NPROC];
    for (int k = 0; k < NPROC; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            sdb_store *cs;
            sdb_err e;
            if (sdb_store_open(&cs, path, SDB_STORE_RW, &e)) _exit(2);
            sdb_worker w;
            sdb_worker_self(&w);
            sdb_claim_opts co = {2, 0, 60};
            int got = 0;
            for (int i = 0; i < NJOBS; i++) {
                int claimed;
                long long run;
                if (sdb_store_claim(cs, ids[i], "I", &co, &w, &claimed, &run, &e)) _exit(3);
                if (!claimed) continue;
                usleep(1000);   /* "work" */
                if (sdb_store_complete(cs, ids[i], run, NULL, NULL, 0.001, &e)) _exit(4);
                got++;
            }
            sdb_store_close(cs);
            _exit(got > 0 ? 0 : 10);
        }
    }
    int all_worked = 1;
    for (int k = 0; k < NPROC; k++) {
        int st;
        waitpid(kids[k], &st, 0);
        CHECKF(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 10), "child %d status %d", k, st);
        if (!WIFEXITED(st) || WEXITSTATUS(st)) all_worked = 0;
    }
    CHECK_OK(sdb_store_open(&s, path, SDB_STORE_READONLY, &err), &err);
    if (!s) { free(path); return; }
    for (int i = 0; i < NJOBS; i++) {
        CHECK(state_of(s, ids[i], NULL) == SDB_JOB_DONE);
        CHECKF(runs(s, ids[i], "done") == 1, "%s ran %d times", ids[i], runs(s, ids[i], "done"));
        CHECK(runs(s, ids[i], NULL) == 0);
    }
    if (!all_worked) fprintf(stderr, "(note: not every process got a job)\n");
    sdb_store_close(s);
    free(path);
}

static void test_list(void)
{
    const char *dir = sdb_t_tmpdir();
    char *p0 = sdb_store_default_path(dir, 0, 0), *p1 = sdb_store_default_path(dir, 1, 4), *p2 = sdb_store_default_path(dir, 0, 4);
    CHECK(strstr(p0, "/.sdbatch/state.db"));
    CHECK(strstr(p1, "/.sdbatch/state.1-of-4.db"));
    sdb_err err;
    sdb_store *s;
    CHECK_OK(sdb_store_open(&s, p0, SDB_STORE_RW, &err), &err); sdb_store_close(s);
    CHECK_OK(sdb_store_open(&s, p1, SDB_STORE_RW_SHARD, &err), &err); sdb_store_close(s);
    CHECK_OK(sdb_store_open(&s, p2, SDB_STORE_RW_SHARD, &err), &err); sdb_store_close(s);
    /* a shard's file, read by other hosts: a rollback journal, not WAL */
    CHECK(is_journal_mode(p1, "delete") && is_journal_mode(p2, "delete"));
    CHECK(is_journal_mode(p0, "wal"));
    char *folder = sdb_path_dirname(p0);
    char **paths;
    int n;
    CHECK_OK(sdb_store_list(folder, &paths, &n, &err), &err);
    CHECK(n == 3);   /* -wal/-shm files are not listed */
    if (n == 3) {
        CHECK(!strcmp(paths[0], p2) && !strcmp(paths[1], p1) && !strcmp(paths[2], p0));
    }
    sdb_store_list_free(paths, n);
    free(folder); free(p0); free(p1); free(p2);
}

int main(void)
{
    RUN(test_kill_point);
    RUN(test_open_schema);
    RUN(test_migration_from_v1);
    RUN(test_transitions);
    RUN(test_identity_change);
    RUN(test_orphans);
    RUN(test_lease_other_host);
    RUN(test_concurrent_claims);
    RUN(test_list);
    return sdb_t_done();
}
