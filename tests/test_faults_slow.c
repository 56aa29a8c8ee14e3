/*
 * test_faults_slow.c — a batch meets a full disk and a damaged state database (issue 15), with
 * the real binary on the tiny model, real tmpfs mounts and real SQLite files:
 *   - the output folder on a small tmpfs: the job being written fails with "No space left on
 *     device", the run stops, no partial or temp file is left, the state database is sound, and
 *     after space is freed the same command finishes every job, each done once;
 *   - the state database on a full tmpfs: a clear error, the database sound, the same command
 *     finishes after space is freed; the folder remounted read-only: run refuses clearly, status
 *     still reads it;
 *   - a database locked past the busy timeout; a -wal from another SQLite version (a valid header
 *     with another format version) and a garbage -wal; a corrupt and a truncated state.db: clear
 *     errors naming the file and the way out, status still reads what it can;
 *   - `sdbatch repair`: done jobs are recovered from a readable database's hashes and from the
 *     outputs' PNG identity, the rest left pending; the next run computes only those.
 * The mounts are made in a private mount namespace (unshare), so they vanish with the test. It
 * needs root, as CI has; without it the test FAILS, saying so.
 */
#include "test_run_common.h"
#include "sdb/image.h"

#include <errno.h>
#include <sched.h>
#include <sys/mount.h>

/* ---- set-up --------------------------------------------------------------------------------- */

static int namespace_ok;

static void private_mounts(void)
{
    if (unshare(CLONE_NEWNS) != 0) {
        CHECKF(0, "this test mounts tmpfs file systems and needs root (CAP_SYS_ADMIN), as CI has: unshare(CLONE_NEWNS): %s",
               strerror(errno));
        return;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        CHECKF(0, "making / private in the test's mount namespace: %s", strerror(errno));
        return;
    }
    namespace_ok = 1;
}

static int mount_tmpfs(const char *dir, const char *size)
{
    char opt[64];
    snprintf(opt, sizeof opt, "size=%s,mode=0755", size);
    sdb_err err;
    CHECK_OK(sdb_mkdirs(dir, &err), &err);
    if (!namespace_ok || mount("tmpfs", dir, "tmpfs", 0, opt) != 0) {
        CHECKF(0, "mount -t tmpfs -o %s tmpfs %s: %s (needs root)", opt, dir, namespace_ok ? strerror(errno) : "no namespace");
        return -1;
    }
    return 0;
}

/* Writes zeros to path until `bytes` (0: until the disk is full). */
static void fill(const char *path, size_t bytes)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd < 0) return;
    static char zeros[4096];
    size_t done = 0;
    while (!bytes || done < bytes) {
        size_t n = bytes && bytes - done < sizeof zeros ? bytes - done : sizeof zeros;
        ssize_t w = write(fd, zeros, n);
        if (w <= 0) { CHECKF(!bytes && errno == ENOSPC, "filling %s: %s", path, strerror(errno)); break; }
        done += (size_t)w;
    }
    close(fd);
}

/* A manifest of n one-step jobs on the tiny model, outputs in <dir>/out. */
static void make_batch(rt_batch *b, int n, const char *dir, const char *state)
{
    memset(b, 0, sizeof *b);
    snprintf(b->dir, sizeof b->dir, "%s", dir);
    snprintf(b->manifest, sizeof b->manifest, "%s/m.yaml", dir);
    snprintf(b->out, sizeof b->out, "%s/out", dir);
    snprintf(b->db, sizeof b->db, "%s", state);
    b->n_jobs = n;
    char text[4096];
    int o = snprintf(text, sizeof text, "version: 1\nmodel: %s\noutput_dir: out\ndefaults:\n  steps: 1\n  image: %s\n"
                     "  mask: %s\njobs:\n", sdb_t_path("models/tiny-sd-inpaint"),
                     sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), sdb_t_path("refs/pipeline/inputs/mask_128x128.png"));
    for (int i = 0; i < n; i++) {
        snprintf(b->ids[i], sizeof b->ids[i], "job%02d", i);
        o += snprintf(text + o, sizeof text - (size_t)o, "  - id: %s\n    prompt: \"a garden, take %d\"\n    seed: %d\n",
                      b->ids[i], i, 7 + i);
    }
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(b->manifest, text, strlen(text), &err), &err);
}

/* `sdbatch <cmd> m.yaml --state DB [extra]`; returns the exit code; *out / *err_text: its stdout
 * and stderr (malloc'd). */
static int sdb(const rt_batch *b, const char *cmd, const char *extra, const char *env, char **out, char **err_text)
{
    const char *args[8];
    int n = 0;
    args[n++] = cmd;
    args[n++] = "m.yaml";
    args[n++] = "--state";
    args[n++] = b->db;
    if (extra) args[n++] = extra;
    args[n] = NULL;
    const char *envs[] = {env, NULL};
    int st = rt_run(b, env ? envs : NULL, args);
    *out = rt_slurp(b, "last.out");
    *err_text = rt_slurp(b, "last.err");
    return rt_exit_code(st);
}

/* PRAGMA integrity_check's first answer is "ok" (the database opened read-only). */
static int integrity_ok(const char *db_path)
{
    sqlite3 *db;
    int ok = 0;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) {
                const char *t = (const char *)sqlite3_column_text(st, 0);
                ok = t && !strcmp(t, "ok");
                if (!ok) fprintf(stderr, "    integrity_check: %s\n", t ? t : "?");
            }
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return ok;
}

static int count_pngs(const char *dir, int *temps)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strstr(e->d_name, ".tmp.")) { (*temps)++; fprintf(stderr, "    temp file left: %s\n", e->d_name); }
        else if (strlen(e->d_name) > 4 && !strcmp(e->d_name + strlen(e->d_name) - 4, ".png")) n++;
    }
    if (d) closedir(d);
    return n;
}

static long long sql_count(const char *db, const char *where)
{
    return rt_sql(db, "SELECT count(*) FROM jobs WHERE %s", where);
}

/* ---- full disks ------------------------------------------------------------------------------ */

static rt_batch full_batch;   /* after disk_full_outputs: 4 jobs done; reused by the state tests */

static void disk_full_outputs(void)
{
    const char *dir = sdb_t_tmpdir();
    char state[800], filler[800];
    snprintf(state, sizeof state, "%s/st/state.db", dir);
    rt_batch *b = &full_batch;
    make_batch(b, 4, dir, state);
    if (mount_tmpfs(b->out, "512k")) return;
    /* about 100 KiB left: two or three of the ~33 KB outputs fit, not four */
    snprintf(filler, sizeof filler, "%s/filler", b->out);
    fill(filler, 412 * 1024);
    char *o, *e;
    int code = sdb(b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 1, "exit %d\n%s%s", code, o, e);
    CHECKF(strstr(o, "No space left on device") && strstr(e, "No space left on device") &&
           strstr(e, "stopped: the disk holding the outputs is full"), "stdout:\n%s\nstderr:\n%s", o, e);
    free(o);
    free(e);
    long long done = sql_count(b->db, "state='done'"), failed = sql_count(b->db, "state='failed'");
    long long pending = sql_count(b->db, "state='pending'");
    CHECKF(done >= 1 && done <= 3 && failed == 1 && done + failed + pending == 4, "done %lld failed %lld pending %lld",
           done, failed, pending);
    CHECK(sql_count(b->db, "state='failed' AND error LIKE '%No space left on device%'") == 1);
    int temps = 0;
    CHECKF(count_pngs(b->out, &temps) == done && temps == 0, "outputs on disk: not the %lld done", done);
    CHECK(integrity_ok(b->db));
    /* space freed: the same command finishes every job */
    CHECK(unlink(filler) == 0);
    code = sdb(b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 0, "exit %d\n%s%s", code, o, e);
    free(o);
    free(e);
    temps = 0;
    CHECK(count_pngs(b->out, &temps) == 4 && temps == 0);
    CHECK(rt_each_done_once(b));
    CHECK(integrity_ok(b->db));
}

static void disk_full_state(void)
{
    const char *dir = sdb_t_tmpdir();
    char st_dir[800], state[900], filler[900];
    snprintf(st_dir, sizeof st_dir, "%s/st", dir);
    snprintf(state, sizeof state, "%s/state.db", st_dir);
    rt_batch b;
    make_batch(&b, 3, dir, state);
    if (mount_tmpfs(st_dir, "256k")) return;
    char *o, *e;
    const char *first[] = {"run", "m.yaml", "--state", state, "--only", "job00", NULL};
    int code = rt_exit_code(rt_run(&b, NULL, first));
    CHECKF(code == 0, "first job: exit %d", code);
    snprintf(filler, sizeof filler, "%s/filler", st_dir);
    fill(filler, 0);
    code = sdb(&b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 1 && strstr(e, "the disk holding the state database is full") &&
           strstr(e, state), "exit %d\n%s", code, e);
    free(o);
    free(e);
    CHECK(unlink(filler) == 0);
    CHECK(integrity_ok(state));
    CHECK(sql_count(state, "state='done'") == 1 && sql_count(state, "state='running'") == 0);
    code = sdb(&b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 0, "exit %d\n%s%s", code, o, e);
    free(o);
    free(e);
    CHECK(rt_each_done_once(&b));

    /* a read-only folder: run refuses, naming it; status still reads the database */
    CHECK(mount(NULL, st_dir, NULL, MS_REMOUNT | MS_RDONLY, NULL) == 0);
    code = sdb(&b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 1 && strstr(e, state) && strstr(e, "read-only"), "exit %d\n%s", code, e);
    free(o);
    free(e);
    code = sdb(&b, "status", NULL, NULL, &o, &e);
    CHECKF(strstr(o, "3 job(s), 100.0% done"), "status exit %d:\n%s%s", code, o, e);
    free(o);
    free(e);
}

/* ---- damaged state ------------------------------------------------------------------------- */

static void locked_and_wal(void)
{
    rt_batch *b = &full_batch;
    if (!b->n_jobs) { CHECKF(0, "needs disk_full_outputs first"); return; }
    char *o, *e;
    /* locked past the busy timeout (an exclusive transaction held here) */
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(b->db, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK);
    double t0 = sdb_now_mono();
    int code = sdb(b, "run", NULL, "SDB_BUSY_TIMEOUT_MS=1000", &o, &e);
    double secs = sdb_now_mono() - t0;
    CHECKF(code == 1 && strstr(e, b->db) && strstr(e, "database is locked") &&
           strstr(e, "kept it locked for longer than the busy timeout (1 s)"), "exit %d\n%s", code, e);
    CHECKF(secs >= 1.0 && secs < 30, "gave up after %.1f s", secs);
    free(o);
    free(e);
    code = sdb(b, "status", NULL, NULL, &o, &e);   /* readers are not blocked */
    CHECKF(code == 0 && strstr(o, "4 job(s), 100.0% done"), "status exit %d:\n%s%s", code, o, e);
    free(o);
    free(e);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);

    /* a -wal from another SQLite version: a well-formed header (checksums right) of format 3007001 */
    char wal[800];
    snprintf(wal, sizeof wal, "%s-wal", b->db);
    uint8_t h[32 + 4096];
    memset(h, 0, sizeof h);
    uint32_t w[8] = {0x377f0683u, 3007001u, 4096u, 0u, 0x1234u, 0x5678u, 0u, 0u};
    uint32_t s0 = 0, s1 = 0;   /* the WAL header checksum (sqlite.org/fileformat2.html#walcksm) */
    for (int i = 0; i < 6; i += 2) { s0 += w[i] + s1; s1 += w[i + 1] + s0; }
    w[6] = s0;
    w[7] = s1;
    for (int i = 0; i < 8; i++) { h[4 * i] = (uint8_t)(w[i] >> 24); h[4 * i + 1] = (uint8_t)(w[i] >> 16); h[4 * i + 2] = (uint8_t)(w[i] >> 8); h[4 * i + 3] = (uint8_t)w[i]; }
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(wal, h, sizeof h, &err), &err);
    code = sdb(b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 1 && strstr(e, b->db) && strstr(e, "a -wal file written by another SQLite version"), "exit %d\n%s", code, e);
    free(o);
    free(e);
    code = sdb(b, "status", NULL, NULL, &o, &e);   /* read without its -wal, said so */
    CHECKF(code == 1 && strstr(o, "4 job(s), 100.0% done") && strstr(e, "read without them"), "status exit %d:\n%s%s", code, o, e);
    free(o);
    free(e);
    /* a garbage -wal: SQLite finds no valid header and ignores it; the state is intact */
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof h; i++) { x = x * 1103515245u + 12345u; h[i] = (uint8_t)(x >> 16); }
    CHECK_OK(sdb_write_file_atomic(wal, h, sizeof h, &err), &err);
    code = sdb(b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 0 && strstr(o, "4/4 job(s) done (0 run now"), "exit %d\n%s%s", code, o, e);
    free(o);
    free(e);
    CHECK(integrity_ok(b->db));
}

/* Rewrites a PNG without its sdbatch-job text chunk (an output of an sdbatch that did not write
 * it); returns 1 when there was one. */
static int strip_job_chunk(const char *path)
{
    char *buf;
    size_t n;
    sdb_err err;
    if (sdb_read_file(path, &buf, &n, &err)) return 0;
    char *out = malloc(n);
    size_t o = 8, i = 8;
    int found = 0;
    memcpy(out, buf, 8);
    while (i + 12 <= n) {
        const uint8_t *c = (const uint8_t *)buf + i;
        size_t len = (size_t)c[0] << 24 | (size_t)c[1] << 16 | (size_t)c[2] << 8 | c[3];
        int skip = !memcmp(c + 4, "tEXt", 4) && len > 12 && !memcmp(c + 8, "sdbatch-job", 12);
        if (skip) found = 1;
        else { memcpy(out + o, c, 12 + len); o += 12 + len; }
        i += 12 + len;
    }
    CHECK_OK(sdb_write_file_atomic(path, out, o, &err), &err);
    free(out);
    free(buf);
    return found;
}

static void corrupt_and_repair(void)
{
    rt_batch *b = &full_batch;
    if (!b->n_jobs) { CHECKF(0, "needs disk_full_outputs first"); return; }
    char p[900], copy[900];
    char before[4][65];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s.png", b->out, b->ids[i]);
        sdb_err err;
        CHECK_OK(sdb_sha256_file(p, before[i], &err), &err);
    }
    /* a surviving database: a copy of the state beside it (as a shard file), which records job01
       (whose PNG loses its identity chunk, as an older sdbatch wrote it) and job00, not job02/03 */
    char *dir = sdb_path_dirname(b->db);
    snprintf(copy, sizeof copy, "%s/state.0-of-2.db", dir);
    free(dir);
    char cmd[2400], sh[256];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", b->db, copy);
    CHECK(sdb_t_shell(cmd, sh, sizeof sh) == 0);
    snprintf(p, sizeof p, "%s/job01.png", b->out);
    CHECK(strip_job_chunk(p));
    sdb_err err;
    CHECK_OK(sdb_sha256_file(p, before[1], &err), &err);
    sqlite3 *db;
    CHECK(sqlite3_open(copy, &db) == SQLITE_OK);
    char sql[300];
    snprintf(sql, sizeof sql, "UPDATE jobs SET output_sha256='%s' WHERE id='job01'; DELETE FROM jobs WHERE id IN ('job02','job03')",
             before[1]);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    snprintf(p, sizeof p, "%s/job00.png", b->out);
    CHECK(unlink(p) == 0);

    /* corrupt: pages 2.. overwritten */
    int fd = open(b->db, O_WRONLY);
    uint8_t junk[8192];
    memset(junk, 0xde, sizeof junk);
    CHECK(fd >= 0 && pwrite(fd, junk, sizeof junk, 4096) == (ssize_t)sizeof junk);
    close(fd);
    char *o, *e;
    int code = sdb(b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 1 && strstr(e, b->db) && strstr(e, "the state database is damaged: 'sdbatch repair MANIFEST' rebuilds it"),
           "exit %d\n%s", code, e);
    free(o);
    free(e);
    code = sdb(b, "status", NULL, NULL, &o, &e);   /* --state: that file alone, damaged */
    CHECKF(code == 1 && strstr(o, "4 job(s)") && strstr(o, "sdbatch repair m.yaml"), "status exit %d:\n%s%s", code, o, e);
    free(o);
    free(e);
    /* truncated to its first page as well: nothing of its rows is readable */
    CHECK(truncate(b->db, 4096) == 0);
    code = sdb(b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 1 && strstr(e, b->db) && strstr(e, "damaged"), "exit %d\n%s", code, e);
    free(o);
    free(e);

    code = sdb(b, "repair", NULL, NULL, &o, &e);
    CHECKF(code == 0, "repair exit %d\n%s%s", code, o, e);
    char want[1200];
    snprintf(want, sizeof want, "damaged: %s\n", b->db);
    CHECKF(strstr(o, want), "%s", o);
    snprintf(want, sizeof want, "moved aside to %s.damaged-", b->db);
    CHECKF(strstr(o, want), "%s", o);
    snprintf(want, sizeof want, "done     job01: its output has the SHA-256 recorded in %s", copy);
    CHECKF(strstr(o, want), "%s", o);
    CHECKF(strstr(o, "done     job02: its output PNG carries this job's identity") &&
           strstr(o, "done     job03: its output PNG carries this job's identity") &&
           strstr(o, "pending  job00: no output"), "%s", o);
    CHECKF(strstr(o, "state database rebuilt; 4 job(s): 3 done (1 recorded in a readable database, 2 known by their PNG's identity"),
           "%s", o);
    free(o);
    free(e);
    CHECK(integrity_ok(b->db));
    CHECK(sql_count(b->db, "state='done'") == 3 && sql_count(b->db, "state='pending' AND id='job00'") == 1);

    /* the next run computes job00 alone, and leaves the others' files as they were */
    code = sdb(b, "run", NULL, NULL, &o, &e);
    CHECKF(code == 0 && strstr(o, "4/4 job(s) done (1 run now"), "exit %d\n%s%s", code, o, e);
    free(o);
    free(e);
    for (int i = 1; i < 4; i++) {
        char h[65];
        snprintf(p, sizeof p, "%s/%s.png", b->out, b->ids[i]);
        CHECK_OK(sdb_sha256_file(p, h, &err), &err);
        CHECKF(!strcmp(h, before[i]), "%s changed", p);
    }
    char h0[65];
    snprintf(p, sizeof p, "%s/job00.png", b->out);
    CHECK_OK(sdb_sha256_file(p, h0, &err), &err);
    CHECKF(!strcmp(h0, before[0]), "job00 redone differently");   /* deterministic: the same bytes again */
    CHECK(rt_each_done_once(b));
}

int main(void)
{
    private_mounts();
    RUN(disk_full_outputs);
    RUN(disk_full_state);
    RUN(locked_and_wal);
    RUN(corrupt_and_repair);
    return sdb_t_done();
}
