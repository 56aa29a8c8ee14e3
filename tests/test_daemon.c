/*
 * test_daemon.c — the daemon's spool pieces without compute (the processes and the pipeline are
 * in test_daemon_slow.c):
 *   - submit's path rewriting: a copy put anywhere resolves to exactly the same jobs (paths,
 *     outputs, parameter hashes) as the original; comments, quoting and {dir} templates survive;
 *   - submit: atomic copy into incoming/, no temp file left, a second copy of a name gets -2;
 *   - `priority:`: read by the daemon, invisible to the manifest parser, positions stay right,
 *     a bad value is a file:line:column error; run order priority > age > name;
 *   - the pid-file lock refuses a second holder with a message naming the pid;
 *   - `status --spool` (JSON) lists every manifest with its folder and counts;
 *   - the runner's per-job callback (sdb_run_opts.on_job), with a fake executor (no compute):
 *     each job this run attempts is reported exactly once, with the state, output, error and
 *     run id the state database holds (a bad input, an executor failure, an interruption);
 *   - the daemon's job events built from it (JSON log, checked against its schema): job_done
 *     with the output, job_failed with the error, job_interrupted with the step.
 */
#include "test_run_common.h"
#include "sdb/daemon.h"
#include "sdb/fsutil.h"
#include "sdb/manifest.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[512];

static void put(const char *rel, const char *text)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    char *d = sdb_path_dirname(p);
    sdb_err err;
    sdb_mkdirs(d, &err);
    free(d);
    CHECK_OK(sdb_write_file_atomic(p, text, strlen(text), &err), &err);
}

static void copy_file(const char *from, const char *rel)
{
    char *buf;
    size_t n;
    sdb_err err;
    if (sdb_read_file(from, &buf, &n, &err)) { CHECK(0); return; }
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    char *d = sdb_path_dirname(p);
    sdb_mkdirs(d, &err);
    free(d);
    CHECK_OK(sdb_write_file_atomic(p, buf, n, &err), &err);
    free(buf);
}

static void setup(void)
{
    if (dir[0]) return;
    snprintf(dir, sizeof dir, "%s", sdb_t_tmpdir());
    copy_file(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), "proj/data/frames/f1.png");
    copy_file(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), "proj/data/frames/f2.png");
    copy_file(sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), "proj/data/masks/f1.png");
    copy_file(sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), "proj/data/masks/f2.png");
    copy_file(sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), "proj/data/frames/f1-mask.png");
    copy_file(sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), "proj/data/frames/f2-mask.png");
    copy_file(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), "proj/jobs/local.png");
}

static const char *manifest_text(void)
{
    static char t[4096];
    snprintf(t, sizeof t,
             "# restore job  (a comment that must survive)\n"
             "version: 1\n"
             "model: %s\n"
             "output_dir: ../out/restore   # relative\n"
             "priority: 7\n"
             "defaults:\n"
             "  steps: 3\n"
             "  mask: '../data/masks/f1.png'\n"
             "jobs:\n"
             "  - id: one\n"
             "    image: ../data/frames/f1.png\n"
             "    prompt: \"a: quoted, prompt\"\n"
             "  - id: local\n"
             "    image: local.png\n"
             "    output: sub/local-out.png\n"
             "    prompt: p\n"
             "  - glob: ../data/frames/f?.png\n"
             "    id: \"g-{stem}\"\n"
             "    mask: \"{dir}/{stem}-mask.png\"\n"
             "    prompt: p\n"
             "  - glob: \"../data/frames/f[12].png\"\n"
             "    id: \"h-{stem}\"\n"
             "    mask: ../data/masks/{stem}.png\n"
             "    prompt: p\n",
             sdb_t_path("models/tiny-sd-inpaint"));
    return t;
}

static void rewrite_resolves_the_same(void)
{
    setup();
    put("proj/jobs/restore.yaml", manifest_text());
    char orig[1024], copy[1024];
    snprintf(orig, sizeof orig, "%s/proj/jobs/restore.yaml", dir);
    sdb_err err;
    char *dest = NULL;
    char spool[1024];
    snprintf(spool, sizeof spool, "%s/spool", dir);
    CHECK_OK(sdb_spool_submit(orig, spool, &dest, &err), &err);
    snprintf(copy, sizeof copy, "%s/incoming/restore.yaml", spool);
    CHECKF(dest && !strcmp(dest, copy), "dest %s", dest ? dest : "(null)");
    free(dest);
    char *text = NULL;
    if (sdb_read_file(copy, &text, NULL, &err)) { CHECK(0); return; }
    CHECK(strstr(text, "# restore job  (a comment that must survive)") != NULL);
    CHECK(strstr(text, "   # relative") != NULL);
    CHECK(strstr(text, "prompt: \"a: quoted, prompt\"") != NULL);
    CHECK(strstr(text, "mask: \"{dir}/{stem}-mask.png\"") != NULL);       /* {dir}: left alone */
    CHECK(strstr(text, "output: sub/local-out.png") != NULL);              /* relative to output_dir */
    CHECK(strstr(text, "/proj/data/frames/f[12].png\"") != NULL);
    CHECK(strstr(text, " ../") == NULL && strstr(text, "'../") == NULL && strstr(text, "\"../") == NULL);
    free(text);

    sdb_manifest a, b;
    int pa = -1, pb = -1;
    int ra = sdb_spool_load_manifest(&a, orig, &pa, &err);
    CHECKF(ra == 0, "original: %s", err.msg);
    int rb = sdb_spool_load_manifest(&b, copy, &pb, &err);
    CHECKF(rb == 0, "copy: %s", err.msg);
    if (ra || rb) { sdb_manifest_print_diags(&a, stderr); sdb_manifest_print_diags(&b, stderr); }
    CHECK(pa == 7 && pb == 7);
    CHECK(a.n_errors == 0 && b.n_errors == 0);
    CHECK(!strcmp(a.model, b.model) && !strcmp(a.output_dir, b.output_dir));
    CHECKF(a.n_jobs == 6 && b.n_jobs == 6, "%d / %d jobs", a.n_jobs, b.n_jobs);
    sdb_manifest_hash_inputs(&a, &err);
    sdb_manifest_hash_inputs(&b, &err);
    for (int i = 0; i < a.n_jobs && i < b.n_jobs; i++) {
        const sdb_job_spec *x = &a.jobs[i], *y = &b.jobs[i];
        CHECKF(!strcmp(x->id, y->id) && !strcmp(x->output, y->output), "job %d: %s %s", i, x->output, y->output);
        CHECKF(!strcmp(x->image, y->image) && !strcmp(x->mask ? x->mask : "", y->mask ? y->mask : ""), "job %s: %s vs %s",
               x->id, x->mask, y->mask);
        CHECKF(!strcmp(x->params_hash, y->params_hash), "job %s: parameters hash differs", x->id);
        CHECKF(sdb_file_exists(y->image) && (!y->mask || sdb_file_exists(y->mask)), "job %s: inputs do not resolve", y->id);
    }
    sdb_manifest_free(&a);
    sdb_manifest_free(&b);
}

/* issue 17: `mask: alpha` is a keyword, not a path: submit leaves it as it is */
static void rewrite_keeps_mask_alpha(void)
{
    setup();
    char text[2048];
    snprintf(text, sizeof text, "version: 1\nmodel: %s\noutput_dir: ../out/alpha\n"
             "defaults:\n  mask: alpha\njobs:\n  - id: one\n    image: ../data/frames/f1.png\n    prompt: p\n"
             "  - id: two\n    image: ../data/frames/f1.png\n    mask: 'alpha'\n    prompt: p\n",
             sdb_t_path("models/tiny-sd-inpaint"));
    put("proj/jobs/alpha.yaml", text);
    char orig[1024], spool[1024];
    snprintf(orig, sizeof orig, "%s/proj/jobs/alpha.yaml", dir);
    snprintf(spool, sizeof spool, "%s/spool-alpha", dir);
    sdb_err err;
    char *dest = NULL, *copy = NULL;
    CHECK_OK(sdb_spool_submit(orig, spool, &dest, &err), &err);
    if (!dest || sdb_read_file(dest, &copy, NULL, &err)) { CHECK(0); free(dest); return; }
    CHECKF(strstr(copy, "  mask: alpha\n") && strstr(copy, "    mask: 'alpha'\n") && strstr(copy, "/proj/data/frames/f1.png"), "%s", copy);
    sdb_manifest b;
    int pb = -1;
    CHECK(sdb_spool_load_manifest(&b, dest, &pb, &err) == 0);
    CHECK(b.n_jobs == 2 && b.jobs[0].mask_alpha && b.jobs[1].mask_alpha && !b.jobs[0].mask);
    sdb_manifest_free(&b);
    free(copy);
    free(dest);
}

static int count_files(const char *folder, int dotfiles)
{
    DIR *d = opendir(folder);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if ((e->d_name[0] == '.') == dotfiles) n++;
    }
    closedir(d);
    return n;
}

static void submit_names(void)
{
    setup();
    put("proj/jobs/nightly.yml", manifest_text());
    char orig[1024], spool[1024], inc[1100];
    snprintf(orig, sizeof orig, "%s/proj/jobs/nightly.yml", dir);
    snprintf(spool, sizeof spool, "%s/spool-names", dir);
    snprintf(inc, sizeof inc, "%s/incoming", spool);
    sdb_err err;
    char *d1 = NULL, *d2 = NULL, *d3 = NULL;
    CHECK_OK(sdb_spool_submit(orig, spool, &d1, &err), &err);
    CHECK_OK(sdb_spool_submit(orig, spool, &d2, &err), &err);
    CHECK_OK(sdb_spool_submit(orig, spool, &d3, &err), &err);
    CHECKF(d1 && strstr(d1, "/incoming/nightly.yml"), "%s", d1);
    CHECKF(d2 && strstr(d2, "/incoming/nightly-2.yml"), "%s", d2);
    CHECKF(d3 && strstr(d3, "/incoming/nightly-3.yml"), "%s", d3);
    CHECK(count_files(inc, 0) == 3);
    CHECK(count_files(inc, 1) == 0);   /* no temp file left */
    /* the four folders exist */
    static const char *const sub[] = {"incoming", "active", "done", "failed"};
    for (int i = 0; i < 4; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", spool, sub[i]);
        CHECK(sdb_is_dir(p));
    }
    free(d1);
    free(d2);
    free(d3);
}

static void priority_key(void)
{
    setup();
    /* a bad priority: an error at its position; the errors after it keep their lines */
    char t[2048];
    snprintf(t, sizeof t,
             "version: 1\nmodel: %s\noutput_dir: out\npriority: high\njobs:\n  - id: a\n    prompt: p\n    stepz: 3\n",
             sdb_t_path("models/tiny-sd-inpaint"));
    put("prio/bad.yaml", t);
    char p[1024];
    snprintf(p, sizeof p, "%s/prio/bad.yaml", dir);
    sdb_manifest m;
    sdb_err err;
    int prio = -1;
    CHECK(sdb_spool_load_manifest(&m, p, &prio, &err) == SDB_EFORMAT);
    CHECK(m.n_errors == 2);
    int seen_prio = 0, seen_key = 0;
    for (int i = 0; i < m.n_diags; i++) {
        if (strstr(m.diags[i].text, "bad.yaml:4:11: 'priority' must be a whole number")) seen_prio = 1;
        if (strstr(m.diags[i].text, "bad.yaml:8:5: unknown key 'stepz'")) seen_key = 1;
    }
    CHECK(seen_prio && seen_key);
    if (!seen_prio || !seen_key) sdb_manifest_print_diags(&m, stderr);
    sdb_manifest_free(&m);
    /* the manifest parser itself (run, validate, status) accepts the key and checks its type */
    CHECK(sdb_manifest_load(&m, p, &err) == SDB_EFORMAT);
    seen_prio = 0;
    for (int i = 0; i < m.n_diags; i++) if (strstr(m.diags[i].text, "bad.yaml:4:11: 'priority' must be a whole number")) seen_prio = 1;
    CHECK(seen_prio);
    sdb_manifest_free(&m);
    snprintf(t, sizeof t, "version: 1\nmodel: %s\noutput_dir: out\npriority: -3\njobs:\n  - id: a\n    prompt: p\n",
             sdb_t_path("models/tiny-sd-inpaint"));
    put("prio/good.yaml", t);
    snprintf(p, sizeof p, "%s/prio/good.yaml", dir);
    CHECKF(sdb_manifest_load(&m, p, &err) == 0, "%s", err.msg);
    sdb_manifest_free(&m);
    CHECK(sdb_spool_load_manifest(&m, p, &prio, &err) == 0 && prio == -3);
    sdb_manifest_free(&m);
}

static void run_order_and_status(void)
{
    setup();
    char spool[1024];
    snprintf(spool, sizeof spool, "%s/spool-order", dir);
    sdb_err err;
    CHECK_OK(sdb_spool_init(spool, &err), &err);
    char t[2048];
    const char *model = sdb_t_path("models/tiny-sd-inpaint");
    /* written oldest first: old (prio 0), mid (prio 5), new (prio 5), low (prio -1) */
    static const char *const names[] = {"old", "mid", "new", "low"};
    static const int prios[] = {0, 5, 5, -1};
    for (int i = 0; i < 4; i++) {
        int n = snprintf(t, sizeof t, "version: 1\nmodel: %s\noutput_dir: %s/out-%s\n", model, dir, names[i]);
        if (prios[i]) n += snprintf(t + n, sizeof t - n, "priority: %d\n", prios[i]);
        snprintf(t + n, sizeof t - n, "jobs:\n  - id: a\n    prompt: p\n");
        char rel[256];
        snprintf(rel, sizeof rel, "spool-order/incoming/%s.yaml", names[i]);
        put(rel, t);
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, rel);
        struct timespec ts[2] = {{1700000000 + i * 10, 0}, {1700000000 + i * 10, 0}};
        utimensat(AT_FDCWD, p, ts, 0);
    }
    put("spool-order/incoming/.half.yaml.tmp.1", "version: 1\n");   /* a temp file: ignored */
    put("spool-order/incoming/notes.txt", "not a manifest\n");      /* ignored */
    put("spool-order/failed/broken.yaml", "version: [\n");
    put("spool-order/failed/broken.yaml.errors.txt", "broken.yaml:2:1: YAML syntax error\n");

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK_OK(sdb_spool_status(spool, f, 1, &err), &err);
    fclose(f);
    json_error_t je;
    json_t *doc = json_loads(buf ? buf : "", 0, &je);
    CHECKF(doc != NULL, "status --spool --json: %s\n%s", je.text, buf);
    json_t *schema = json_load_file(SDB_SOURCE_DIR "/schemas/spool-status.schema.json", 0, &je);
    CHECKF(schema != NULL, "spool-status.schema.json: %s", je.text);
    if (doc && schema) CHECK(rt_validate(doc, schema, "status"));
    json_decref(schema);
    if (doc) {
        CHECK(json_is_null(json_object_get(doc, "daemon_pid")));
        json_t *arr = json_object_get(doc, "manifests");
        CHECKF(json_array_size(arr) == 5, "%zu manifests", json_array_size(arr));
        static const char *const want[] = {"mid.yaml", "new.yaml", "old.yaml", "low.yaml", "broken.yaml"};
        for (size_t i = 0; i < json_array_size(arr) && i < 5; i++) {
            json_t *o = json_array_get(arr, i);
            const char *nm = json_string_value(json_object_get(o, "name"));
            CHECKF(nm && !strcmp(nm, want[i]), "position %zu: %s, want %s", i, nm, want[i]);
            if (i < 4) {
                CHECK(!strcmp(json_string_value(json_object_get(o, "folder")), "incoming"));
                CHECK(json_integer_value(json_object_get(o, "total")) == 1);
                CHECK(json_integer_value(json_object_get(o, "pending")) == 1);
            } else {
                CHECK(!strcmp(json_string_value(json_object_get(o, "folder")), "failed"));
                CHECK(json_is_null(json_object_get(o, "total")));
                CHECK(json_is_string(json_object_get(o, "errors")));
            }
        }
        json_decref(doc);
    }
    free(buf);
}

static void pid_lock(void)
{
    setup();
    char spool[1024];
    snprintf(spool, sizeof spool, "%s/spool-lock", dir);
    sdb_err err;
    CHECK_OK(sdb_spool_init(spool, &err), &err);
    int fd1 = -1, fd2 = -1;
    CHECK_OK(sdb_spool_lock(spool, &fd1, &err), &err);
    int rc = sdb_spool_lock(spool, &fd2, &err);   /* a second open file description: refused */
    CHECK(rc == SDB_ESTATE && fd2 == -1);
    char pid[32];
    snprintf(pid, sizeof pid, "(pid %ld)", (long)getpid());
    CHECKF(strstr(err.msg, "already running") && strstr(err.msg, pid), "%s", err.msg);
    sdb_spool_unlock(fd1);
    CHECK_OK(sdb_spool_lock(spool, &fd2, &err), &err);   /* free again */
    sdb_spool_unlock(fd2);
}


/* ---- the runner's per-job events, with a fake executor ------------------------------------- */

/* Turns a job into a few bytes without any compute; fails the job whose prompt says "explode";
 * raises *stop at step 2 of the job whose id is stop_at. */
typedef struct {
    volatile sig_atomic_t *stop;
    const char *stop_at;
    int runs;
} fake_exec;

static int fx_load(void *ud, const char *path, const char *config_dir, const char *tokenizer_dir, int threads,
                   int weights_f16, void **model, const char **model_id, const sdb_log *log, sdb_err *err)
{
    (void)ud; (void)path; (void)config_dir; (void)tokenizer_dir; (void)threads; (void)weights_f16; (void)log;
    (void)err;
    static int token;
    *model = &token;
    *model_id = "00fa4e0000fa4e0000fa4e0000fa4e00";
    return 0;
}

static int fx_run(void *ud, void *model, const sdb_job_spec *j, sdb_run_step_fn on_step, void *step_ud,
                  uint8_t **png, size_t *png_len, const sdb_log *log, sdb_err *err)
{
    (void)model; (void)log;
    fake_exec *fx = ud;
    fx->runs++;
    for (int s = 1; s <= j->steps; s++) {
        if (fx->stop && fx->stop_at && !strcmp(j->id, fx->stop_at) && s == 2) *fx->stop = SIGTERM;
        if (on_step && on_step(step_ud, s, j->steps)) return sdb_fail(err, SDB_EINTERRUPTED, "interrupted");
    }
    if (j->prompt && strstr(j->prompt, "explode")) return sdb_fail(err, SDB_EINVAL, "the executor refused job %s", j->id);
    char bytes[128];
    int n = snprintf(bytes, sizeof bytes, "fake image of %s", j->id);
    *png = malloc((size_t)n);
    if (!*png) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    memcpy(*png, bytes, (size_t)n);
    *png_len = (size_t)n;
    return 0;
}

static void fx_unload(void *ud, void *model) { (void)ud; (void)model; }

/* A manifest with absolute paths: good1, bad (its image is missing), boom (the executor fails
 * it), good2; 4 steps each. Returns its path. */
static const char *events_manifest(const char *folder, const char *name)
{
    static char p[1200];
    char t[4096];
    snprintf(t, sizeof t,
             "version: 1\nmodel: %s\noutput_dir: %s/out\ndefaults:\n  steps: 4\n  image: %s\n  mask: %s\njobs:\n"
             "  - id: good1\n    prompt: a lighthouse\n"
             "  - id: bad\n    prompt: a dog\n    image: %s/no-such-image.png\n"
             "  - id: boom\n    prompt: explode\n"
             "  - id: good2\n    prompt: a castle\n",
             sdb_t_path("models/tiny-sd-inpaint"), folder, sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
             sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), folder);
    snprintf(p, sizeof p, "%s/%s", folder, name);
    sdb_err err;
    char *d = sdb_path_dirname(p);
    sdb_mkdirs(d, &err);
    free(d);
    CHECK_OK(sdb_write_file_atomic(p, t, strlen(t), &err), &err);
    return p;
}

typedef struct {
    int n;
    char id[16][32];
    sdb_job_state state[16];
    char output[16][700];
    char error[16][512];
    int has_output[16], has_error[16];
    double seconds[16];
    int step[16], steps[16];
    long long run_id[16];
} ev_log;

static void record(void *ud, const sdb_job_event *ev)
{
    ev_log *l = ud;
    if (l->n >= 16) { CHECK(0); return; }
    int i = l->n++;
    snprintf(l->id[i], sizeof l->id[i], "%s", ev->id);
    l->state[i] = ev->state;
    l->has_output[i] = ev->output != NULL;
    snprintf(l->output[i], sizeof l->output[i], "%s", ev->output ? ev->output : "");
    l->has_error[i] = ev->error != NULL;
    snprintf(l->error[i], sizeof l->error[i], "%s", ev->error ? ev->error : "");
    l->seconds[i] = ev->seconds;
    l->step[i] = ev->step;
    l->steps[i] = ev->steps;
    l->run_id[i] = ev->run_id;
}

static int ev_count(const ev_log *l, const char *id)
{
    int n = 0;
    for (int i = 0; i < l->n; i++) n += !strcmp(l->id[i], id);
    return n;
}

/* Each event agrees with the job's row in the state database (independent of the callback). */
static void events_match_db(const ev_log *l, const char *db)
{
    sdb_store *s;
    sdb_err err;
    CHECK_OK(sdb_store_open(&s, db, SDB_STORE_READONLY, &err), &err);
    if (!s) return;
    for (int i = 0; i < l->n; i++) {
        sdb_job_row r;
        int found = 0;
        CHECK_OK(sdb_store_get(s, l->id[i], &r, &found, &err), &err);
        CHECKF(found, "%s not in the database", l->id[i]);
        if (!found) continue;
        CHECKF(r.state == l->state[i], "%s: event %s, database %s", l->id[i], sdb_job_state_name(l->state[i]),
               sdb_job_state_name(r.state));
        CHECK(r.run_id == l->run_id[i]);
        CHECK(isfinite(l->seconds[i]) && l->seconds[i] >= 0);
        if (r.state == SDB_JOB_DONE) {
            CHECK(l->has_output[i] && r.output && !strcmp(l->output[i], r.output) && sdb_file_exists(l->output[i]));
            CHECK(!l->has_error[i]);
        } else if (r.state == SDB_JOB_FAILED) {
            CHECK(!l->has_output[i]);
            CHECK(l->has_error[i] && r.error && !strcmp(l->error[i], r.error));
        } else {
            CHECK(!l->has_output[i] && !l->has_error[i]);
        }
        sdb_job_row_free(&r);
    }
    sdb_store_close(s);
}

static void runner_job_events(void)
{
    setup();
    char folder[1024];
    snprintf(folder, sizeof folder, "%s/events", dir);
    const char *mp = events_manifest(folder, "batch.yaml");
    sdb_manifest m;
    sdb_err err;
    CHECK_OK(sdb_manifest_load(&m, mp, &err), &err);
    sdb_manifest_check(&m, &err);
    CHECKF(m.n_errors == m.n_input_errors && m.n_input_errors == 1, "%d errors, %d about inputs", m.n_errors,
           m.n_input_errors);
    const char *bad_input = NULL;
    for (int i = 0; i < m.n_jobs; i++) if (!strcmp(m.jobs[i].id, "bad")) bad_input = m.jobs[i].bad_input;
    CHECK(bad_input != NULL);
    fake_exec fx = {NULL, NULL, 0};
    sdb_executor ex = {&fx, fx_load, fx_run, fx_unload, NULL};
    char *lines = NULL;
    size_t lines_len = 0;
    FILE *lf = open_memstream(&lines, &lines_len);
    ev_log ev;
    memset(&ev, 0, sizeof ev);
    sdb_run_opts o;
    memset(&o, 0, sizeof o);
    o.max_attempts = 1;
    o.lines_fp = lf;
    o.on_job = record;
    o.on_job_ud = &ev;
    sdb_run_result res;
    CHECK_OK(sdb_run_manifest(&m, &ex, &o, &res, NULL, &err), &err);
    fclose(lf);
    CHECK(res.ran == 4 && res.ran_ok == 2 && res.ran_failed == 2);
    /* each job exactly once, in the manifest's order, with its outcome */
    CHECKF(ev.n == 4, "%d events", ev.n);
    static const char *const order[] = {"good1", "bad", "boom", "good2"};
    static const sdb_job_state want[] = {SDB_JOB_DONE, SDB_JOB_FAILED, SDB_JOB_FAILED, SDB_JOB_DONE};
    for (int i = 0; i < 4 && i < ev.n; i++) {
        CHECKF(!strcmp(ev.id[i], order[i]), "event %d is %s", i, ev.id[i]);
        CHECKF(ev.state[i] == want[i], "%s: %s", ev.id[i], sdb_job_state_name(ev.state[i]));
    }
    for (int i = 0; i < 4; i++) CHECKF(ev_count(&ev, order[i]) == 1, "%s reported %d times", order[i], ev_count(&ev, order[i]));
    for (int i = 0; i < ev.n; i++) {
        if (!strcmp(ev.id[i], "bad")) CHECKF(bad_input && !strcmp(ev.error[i], bad_input), "%s", ev.error[i]);
        if (!strcmp(ev.id[i], "boom")) CHECKF(!strcmp(ev.error[i], "the executor refused job boom"), "%s", ev.error[i]);
        if (!strcmp(ev.id[i], "good1")) {
            char want_out[1200];
            snprintf(want_out, sizeof want_out, "%s/out/good1.png", folder);
            CHECKF(!strcmp(ev.output[i], want_out), "%s", ev.output[i]);
        }
    }
    char db[1200];
    snprintf(db, sizeof db, "%s/out/.sdbatch/state.db", folder);
    events_match_db(&ev, db);
    /* the lines for people are still written, one per job */
    CHECKF(lines && strstr(lines, "done good1 (") && strstr(lines, "done good2 (") && strstr(lines, "failed bad (") &&
           strstr(lines, "failed boom (") && strstr(lines, "): the executor refused job boom\n"), "%s", lines ? lines : "");
    int nl = 0;
    for (const char *c = lines; c && *c; c++) nl += *c == '\n';
    CHECK(nl == 4);
    free(lines);
    /* again: nothing left to run (failed ones have no attempts left), so no event */
    memset(&ev, 0, sizeof ev);
    o.lines_fp = NULL;
    CHECK_OK(sdb_run_manifest(&m, &ex, &o, &res, NULL, &err), &err);
    CHECKF(ev.n == 0, "%d events", ev.n);
    /* --retry-failed: the two failed jobs again, once each */
    o.retry_failed = 1;
    CHECK_OK(sdb_run_manifest(&m, &ex, &o, &res, NULL, &err), &err);
    CHECKF(ev.n == 2 && ev_count(&ev, "bad") == 1 && ev_count(&ev, "boom") == 1, "%d events", ev.n);
    for (int i = 0; i < ev.n; i++) CHECK(ev.state[i] == SDB_JOB_FAILED);
    events_match_db(&ev, db);
    sdb_manifest_free(&m);

    /* a stop at step 2 of good1: one event, back to pending at that step; nothing after it */
    snprintf(folder, sizeof folder, "%s/events-stop", dir);
    mp = events_manifest(folder, "batch.yaml");
    CHECK_OK(sdb_manifest_load(&m, mp, &err), &err);
    sdb_manifest_check(&m, &err);
    volatile sig_atomic_t stop = 0;
    fx.stop = &stop;
    fx.stop_at = "good1";
    memset(&ev, 0, sizeof ev);
    memset(&o, 0, sizeof o);
    o.on_job = record;
    o.on_job_ud = &ev;
    o.stop = &stop;
    int rc = sdb_run_manifest(&m, &ex, &o, &res, NULL, &err);
    CHECK(rc == SDB_EINTERRUPTED && res.interrupted == SIGTERM);
    CHECKF(ev.n == 1, "%d events", ev.n);
    if (ev.n >= 1) {
        CHECK(!strcmp(ev.id[0], "good1") && ev.state[0] == SDB_JOB_PENDING);
        CHECKF(ev.step[0] == 2 && ev.steps[0] == 4, "step %d/%d", ev.step[0], ev.steps[0]);
    }
    snprintf(db, sizeof db, "%s/out/.sdbatch/state.db", folder);
    events_match_db(&ev, db);
    sdb_manifest_free(&m);
}

/* JSON log lines of one event kind (parsed; caller frees each). */
static int log_events(const char *log_path, const char *event, json_t **out, int max)
{
    char *text = NULL;
    sdb_err err;
    if (sdb_read_file(log_path, &text, NULL, &err)) return 0;
    json_error_t je;
    json_t *schema = json_load_file(SDB_SOURCE_DIR "/schemas/daemon-event.schema.json", 0, &je);
    CHECKF(schema != NULL, "daemon-event.schema.json: %s", je.text);
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *o = json_loads(line, 0, &je);
        CHECKF(o != NULL, "not JSON: %s", line);
        if (!o) continue;
        if (schema) CHECKF(rt_validate(o, schema, "event"), "%s", line);
        const char *ev = json_string_value(json_object_get(o, "event"));
        if (ev && !strcmp(ev, event) && n < max) out[n++] = o;
        else json_decref(o);
    }
    json_decref(schema);
    free(text);
    return n;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* Puts a manifest into the spool's incoming/ (old enough to be taken at once). */
static void spool_put(const char *spool, const char *folder, const char *name)
{
    const char *src = events_manifest(folder, name);
    char dst[1500];
    snprintf(dst, sizeof dst, "%s/incoming/%s", spool, name);
    CHECK(rename(src, dst) == 0);
    struct timespec ts[2] = {{time(NULL) - 60, 0}, {time(NULL) - 60, 0}};
    utimensat(AT_FDCWD, dst, ts, 0);
}

static void daemon_job_log(void)
{
    setup();
    char spool[1024], folder[1024], logp[1100];
    snprintf(spool, sizeof spool, "%s/spool-events", dir);
    snprintf(folder, sizeof folder, "%s/daemon-events", dir);
    snprintf(logp, sizeof logp, "%s/daemon.log", dir);
    sdb_err err;
    CHECK_OK(sdb_spool_init(spool, &err), &err);
    spool_put(spool, folder, "m.yaml");
    fake_exec fx = {NULL, NULL, 0};
    sdb_executor ex = {&fx, fx_load, fx_run, fx_unload, NULL};
    sdb_dlog l;
    CHECK_OK(sdb_dlog_open(&l, logp, 1, &err), &err);
    volatile sig_atomic_t stop = 0;
    sdb_daemon_opts o;
    memset(&o, 0, sizeof o);
    o.spool = spool;
    o.once = 1;
    o.max_attempts = 1;
    o.stop = &stop;
    o.log = &l;
    o.executor = &ex;
    const char *roots[] = {dir};
    o.allow_roots = roots;
    o.n_allow_roots = 1;
    CHECK_OK(sdb_daemon_run(&o, &err), &err);
    json_t *ev[16];
    int n = log_events(logp, "job_done", ev, 16);
    CHECKF(n == 2, "%d job_done", n);
    for (int i = 0; i < n; i++) {
        const char *job = jstr(ev[i], "job");
        char want[1200];
        snprintf(want, sizeof want, "%s/out/%s.png", folder, job ? job : "?");
        CHECK(!strcmp(jstr(ev[i], "manifest"), "m.yaml"));
        CHECK(job && (!strcmp(job, "good1") || !strcmp(job, "good2")));
        CHECKF(jstr(ev[i], "output") && !strcmp(jstr(ev[i], "output"), want), "%s", jstr(ev[i], "output"));
        json_t *sec = json_object_get(ev[i], "seconds");
        CHECK(json_is_number(sec) && json_number_value(sec) >= 0);
        /* to the tenth, as the runner's lines show them */
        if (json_is_number(sec)) CHECK(fabs(json_number_value(sec) * 10 - round(json_number_value(sec) * 10)) < 1e-6);
        /* the keys, in order */
        const char *keys[] = {"time", "event", "manifest", "job", "seconds", "output"};
        void *it = json_object_iter(ev[i]);
        for (int k = 0; k < 6; k++, it = json_object_iter_next(ev[i], it))
            CHECKF(it && !strcmp(json_object_iter_key(it), keys[k]), "key %d", k);
        CHECK(it == NULL);
        json_decref(ev[i]);
    }
    n = log_events(logp, "job_failed", ev, 16);
    CHECKF(n == 2, "%d job_failed", n);
    for (int i = 0; i < n; i++) {
        const char *job = jstr(ev[i], "job"), *e = jstr(ev[i], "error");
        CHECK(job && e);
        if (job && e && !strcmp(job, "boom")) CHECKF(!strcmp(e, "the executor refused job boom"), "%s", e);
        else if (job && e) CHECKF(!strcmp(job, "bad") && strstr(e, "no-such-image.png"), "%s: %s", job, e);
        CHECK(json_is_number(json_object_get(ev[i], "seconds")));
        json_decref(ev[i]);
    }
    n = log_events(logp, "job_start", ev, 16);   /* the bad input never reaches the executor */
    CHECKF(n == 3, "%d job_start", n);
    for (int i = 0; i < n; i++) json_decref(ev[i]);
    n = log_events(logp, "manifest_done", ev, 16);
    CHECKF(n == 1, "%d manifest_done", n);
    for (int i = 0; i < n; i++) {
        CHECK(json_integer_value(json_object_get(ev[i], "done")) == 2);
        CHECK(json_integer_value(json_object_get(ev[i], "failed")) == 2);
        json_decref(ev[i]);
    }
    CHECK(log_events(logp, "job_interrupted", ev, 16) == 0);
    /* no job outcome went out as a plain log message */
    n = log_events(logp, "log", ev, 16);
    for (int i = 0; i < n; i++) {
        const char *msg = jstr(ev[i], "message");
        CHECKF(msg && strncmp(msg, "done ", 5) && strncmp(msg, "failed ", 7) && strncmp(msg, "interrupted ", 12), "%s", msg);
        json_decref(ev[i]);
    }

    /* a stop at step 2 of good1: job_interrupted with the step; the manifest stays in active/ */
    char folder2[1100];
    snprintf(folder2, sizeof folder2, "%s/daemon-events-stop", dir);
    spool_put(spool, folder2, "s.yaml");
    fx.stop = &stop;
    fx.stop_at = "good1";
    CHECK_OK(sdb_daemon_run(&o, &err), &err);
    n = log_events(logp, "job_interrupted", ev, 16);
    CHECKF(n == 1, "%d job_interrupted", n);
    for (int i = 0; i < n; i++) {
        CHECK(!strcmp(jstr(ev[i], "manifest"), "s.yaml") && !strcmp(jstr(ev[i], "job"), "good1"));
        CHECKF(jstr(ev[i], "detail") && !strcmp(jstr(ev[i], "detail"), "at step 2/4 (back to pending)"), "%s",
               jstr(ev[i], "detail"));
        json_decref(ev[i]);
    }
    n = log_events(logp, "job_done", ev, 16);
    CHECKF(n == 2, "%d job_done", n);   /* only the first manifest's */
    for (int i = 0; i < n; i++) json_decref(ev[i]);
    char act[1200];
    snprintf(act, sizeof act, "%s/active/s.yaml", spool);
    CHECK(sdb_file_exists(act));
    sdb_dlog_close(&l);
}

int main(void)
{
    (void)rt_make; (void)rt_run; (void)rt_status_json; (void)rt_hashes; (void)rt_temp_files; (void)rt_each_done_once;
    (void)rt_show; (void)rt_jint;
    if (!sdb_t_data()) return sdb_t_done();
    RUN(rewrite_resolves_the_same);
    RUN(submit_names);
    RUN(rewrite_keeps_mask_alpha);
    RUN(priority_key);
    RUN(run_order_and_status);
    RUN(pid_lock);
    RUN(runner_job_events);
    RUN(daemon_job_log);
    return sdb_t_done();
}
