/*
 * test_run_common.h — helpers shared by the tests/test_run_*.c tests: they drive the real
 * `sdbatch` binary as child processes on manifests of tiny-model jobs (128x128, 3 steps) and look
 * at the results the way a user would (files, the SQLite state database, `status --json`).
 * Header-only (static functions): each test is one executable.
 */
#ifndef SDB_TEST_RUN_COMMON_H
#define SDB_TEST_RUN_COMMON_H

#include "harness.h"
#include "sdb/fsutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define RT_MAX_JOBS 32

/* A test batch: a folder with a manifest and its output folder. */
typedef struct {
    char dir[512];
    char manifest[600];
    char out[600];
    char db[700];
    int n_jobs;
    char ids[RT_MAX_JOBS][32];
} rt_batch;

/* Writes a manifest of n jobs (ids job00..) on the tiny inpainting model; `extra` is appended to
 * each job's entry (e.g. "    steps: 4\n"), `prompt_of` may override job i's prompt. */
static void rt_make(rt_batch *b, int n, const char *dir)
{
    memset(b, 0, sizeof *b);
    snprintf(b->dir, sizeof b->dir, "%s", dir ? dir : sdb_t_tmpdir());
    snprintf(b->manifest, sizeof b->manifest, "%s/batch.yaml", b->dir);
    snprintf(b->out, sizeof b->out, "%s/out", b->dir);
    snprintf(b->db, sizeof b->db, "%s/out/.sdbatch/state.db", b->dir);
    b->n_jobs = n;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    fprintf(f, "version: 1\nmodel: %s\noutput_dir: out\ndefaults:\n  steps: 3\n  guidance_scale: 7.5\n"
               "  image: %s\n  mask: %s\n  negative_prompt: blurry\njobs:\n",
            sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
            sdb_t_path("refs/pipeline/inputs/mask_128x128.png"));
    static const char *const subjects[] = {"a lighthouse", "a small dog", "a castle", "an old man", "a red boat",
                                           "a forest path", "a city at night", "a bowl of fruit"};
    for (int i = 0; i < n; i++) {
        snprintf(b->ids[i], sizeof b->ids[i], "job%02d", i);
        fprintf(f, "  - id: %s\n    prompt: \"%s, variant %d\"\n    seed: %d\n", b->ids[i], subjects[i % 8], i, 100 + i);
        if (i % 3 == 1) fprintf(f, "    scheduler: ddim\n");
        else if (i % 4 == 3) fprintf(f, "    scheduler: euler_a\n");
    }
    fclose(f);
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(b->manifest, text, len, &err), &err);
    free(text);
}

/* Runs `sdbatch <args...>` (NULL-terminated) in the batch folder; env "K=V" strings (NULL-ended)
 * are added. stdout/stderr go to <dir>/last.out / last.err. Returns the wait status. */
static pid_t rt_spawn(const rt_batch *b, const char *const *env, const char *const *args, const char *tag)
{
    char o[700], e[700];
    snprintf(o, sizeof o, "%s/%s.out", b->dir, tag ? tag : "last");
    snprintf(e, sizeof e, "%s/%s.err", b->dir, tag ? tag : "last");
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(b->dir) != 0) _exit(120);
        int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fi = open("/dev/null", O_RDONLY);
        if (fo < 0 || fe < 0 || fi < 0) _exit(121);
        dup2(fi, 0); dup2(fo, 1); dup2(fe, 2);
        for (int i = 0; env && env[i]; i++) putenv((char *)env[i]);
        setenv("OMP_NUM_THREADS", "1", 0);
        const char *argv[32];
        int n = 0;
        argv[n++] = sdb_t_binary();
        for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(sdb_t_binary(), (char *const *)argv);
        _exit(122);
    }
    return pid;
}

static int rt_wait(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {}
    return st;
}

static int rt_run(const rt_batch *b, const char *const *env, const char *const *args)
{
    return rt_wait(rt_spawn(b, env, args, NULL));
}

static int rt_exit_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

static char *rt_slurp(const rt_batch *b, const char *name)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", b->dir, name);
    char *s = NULL;
    sdb_err err;
    if (sdb_read_file(p, &s, NULL, &err)) return strdup("");
    return s;
}

static void rt_show(const rt_batch *b, const char *tag)
{
    char n1[64], n2[64];
    snprintf(n1, sizeof n1, "%s.out", tag ? tag : "last");
    snprintf(n2, sizeof n2, "%s.err", tag ? tag : "last");
    char *o = rt_slurp(b, n1), *e = rt_slurp(b, n2);
    fprintf(stderr, "    --- stdout:\n%s    --- stderr:\n%s", o, e);
    free(o);
    free(e);
}

/* SHA-256 of each output (out/<id>.png); "" when missing. */
static void rt_hashes(const rt_batch *b, char (*h)[65])
{
    for (int i = 0; i < b->n_jobs; i++) {
        char p[800];
        snprintf(p, sizeof p, "%s/%s.png", b->out, b->ids[i]);
        sdb_err err;
        if (sdb_sha256_file(p, h[i], &err)) h[i][0] = '\0';
    }
}

/* Number of temp files (".*.tmp.*") left in the output folder. */
static inline int rt_temp_files(const rt_batch *b)
{
    DIR *d = opendir(b->out);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] == '.' && strstr(e->d_name, ".tmp.")) { n++; fprintf(stderr, "    temp file left: %s\n", e->d_name); }
    closedir(d);
    return n;
}

/* One integer from the state database (sqlite3 directly, read-only): printf-style SQL. */
static long long rt_sql(const char *db_path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long long rt_sql(const char *db_path, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    sqlite3 *db;
    long long v = -1;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        } else fprintf(stderr, "    sql error: %s (%s)\n", sqlite3_errmsg(db), sql);
    }
    sqlite3_close(db);
    return v;
}

/* Every job done, exactly one 'done' run each, no run left open. */
static int rt_each_done_once(const rt_batch *b)
{
    int ok = 1;
    for (int i = 0; i < b->n_jobs; i++) {
        long long done = rt_sql(b->db, "SELECT count(*) FROM runs WHERE job_id='%s' AND outcome='done'", b->ids[i]);
        long long st = rt_sql(b->db, "SELECT state='done' FROM jobs WHERE id='%s'", b->ids[i]);
        if (done != 1 || st != 1) {
            fprintf(stderr, "    %s: %lld done run(s), state done=%lld\n", b->ids[i], done, st);
            ok = 0;
        }
    }
    long long open_runs = rt_sql(b->db, "SELECT count(*) FROM runs WHERE outcome IS NULL");
    if (open_runs != 0) { fprintf(stderr, "    %lld run(s) still open\n", open_runs); ok = 0; }
    return ok;
}

/* The reference run a test compares with: a fresh batch of n jobs, run once without disturbance,
 * must exit 0 with an output for every job and every job done exactly once; h gets the outputs'
 * hashes (rt_hashes). (inline: tests that do not use it get no unused-function warning) */
static inline void rt_baseline(rt_batch *b, int n, char (*h)[65])
{
    rt_make(b, n, NULL);
    const char *args[] = {"run", b->manifest, NULL};
    int st = rt_run(b, NULL, args);
    CHECKF(rt_exit_code(st) == 0, "exit %d", rt_exit_code(st));
    if (rt_exit_code(st)) rt_show(b, NULL);
    rt_hashes(b, h);
    for (int i = 0; i < n; i++) CHECKF(h[i][0], "no output for %s", b->ids[i]);
    CHECK(rt_each_done_once(b));
}

/* ---- a small JSON Schema (2020-12 subset) validator: type, required, properties, items, enum,
 * const, minimum, maximum — enough for schemas/status.schema.json. */
static int rt_type_ok(const json_t *v, const char *t)
{
    if (!strcmp(t, "object")) return json_is_object(v);
    if (!strcmp(t, "array")) return json_is_array(v);
    if (!strcmp(t, "string")) return json_is_string(v);
    if (!strcmp(t, "integer")) return json_is_integer(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "null")) return json_is_null(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    return 0;
}

static int rt_validate(const json_t *v, const json_t *schema, const char *where)
{
    int ok = 1;
    const json_t *t = json_object_get(schema, "type");
    if (json_is_string(t) && !rt_type_ok(v, json_string_value(t))) {
        fprintf(stderr, "    %s: not of type %s\n", where, json_string_value(t));
        return 0;
    }
    if (json_is_array(t)) {
        size_t i;
        const json_t *x;
        int any = 0;
        json_array_foreach(t, i, x) if (rt_type_ok(v, json_string_value(x))) any = 1;
        if (!any) { fprintf(stderr, "    %s: type not in the allowed list\n", where); return 0; }
    }
    const json_t *en = json_object_get(schema, "enum");
    if (en) {
        size_t i;
        const json_t *x;
        int any = 0;
        json_array_foreach(en, i, x) if (json_equal((json_t *)x, (json_t *)v)) any = 1;
        if (!any) { fprintf(stderr, "    %s: not one of the enum values\n", where); ok = 0; }
    }
    const json_t *mn = json_object_get(schema, "minimum"), *mx = json_object_get(schema, "maximum");
    if (mn && json_is_number(v) && json_number_value(v) < json_number_value(mn)) { fprintf(stderr, "    %s: below minimum\n", where); ok = 0; }
    if (mx && json_is_number(v) && json_number_value(v) > json_number_value(mx)) { fprintf(stderr, "    %s: above maximum\n", where); ok = 0; }
    if (json_is_object(v)) {
        const json_t *req = json_object_get(schema, "required");
        size_t i;
        const json_t *x;
        json_array_foreach(req, i, x)
            if (!json_object_get(v, json_string_value(x))) { fprintf(stderr, "    %s: missing required key '%s'\n", where, json_string_value(x)); ok = 0; }
        const json_t *props = json_object_get(schema, "properties");
        const char *k;
        json_t *sub;
        json_object_foreach((json_t *)props, k, sub) {
            const json_t *pv = json_object_get(v, k);
            char w[256];
            snprintf(w, sizeof w, "%s.%s", where, k);
            if (pv && !rt_validate(pv, sub, w)) ok = 0;
        }
    }
    if (json_is_array(v) && json_object_get(schema, "items")) {
        size_t i;
        const json_t *x;
        json_array_foreach(v, i, x) {
            char w[256];
            snprintf(w, sizeof w, "%s[%zu]", where, i);
            if (!rt_validate(x, json_object_get(schema, "items"), w)) ok = 0;
        }
    }
    return ok;
}

/* Runs `status [option] --json` (option: e.g. "--shards", or NULL), validates the output against
 * schemas/status.schema.json; returns the parsed document (NULL on failure). */
static inline json_t *rt_status_json(const rt_batch *b, const char *option)
{
    const char *args[5] = {"status", b->manifest};
    int n = 2;
    if (option) args[n++] = option;
    args[n++] = "--json";
    args[n] = NULL;
    int st = rt_wait(rt_spawn(b, NULL, args, "status"));
    CHECKF(rt_exit_code(st) == 0, "status exit %d", rt_exit_code(st));
    char *text = rt_slurp(b, "status.out");
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    CHECKF(doc != NULL, "status --json is not JSON: %s", je.text);
    free(text);
    if (!doc) return NULL;
    json_t *schema = json_load_file(SDB_SOURCE_DIR "/schemas/status.schema.json", 0, &je);
    CHECKF(schema != NULL, "schema: %s", je.text);
    if (schema) {
        CHECK(rt_validate(doc, schema, "status"));
        json_decref(schema);
    }
    return doc;
}

static inline long long rt_jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

#endif
