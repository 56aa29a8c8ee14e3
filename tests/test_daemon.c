/*
 * test_daemon.c — the daemon's spool pieces without compute (the processes and the pipeline are
 * in test_daemon_slow.c):
 *   - submit's path rewriting: a copy put anywhere resolves to exactly the same jobs (paths,
 *     outputs, parameter hashes) as the original; comments, quoting and {dir} templates survive;
 *   - submit: atomic copy into incoming/, no temp file left, a second copy of a name gets -2;
 *   - `priority:`: read by the daemon, invisible to the manifest parser, positions stay right,
 *     a bad value is a file:line:column error; run order priority > age > name;
 *   - the pid-file lock refuses a second holder with a message naming the pid;
 *   - `status --spool` (JSON) lists every manifest with its folder and counts.
 */
#include "test_run_common.h"
#include "sdb/daemon.h"
#include "sdb/fsutil.h"
#include "sdb/manifest.h"

#include <dirent.h>
#include <fcntl.h>
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

int main(void)
{
    (void)rt_make; (void)rt_run; (void)rt_status_json; (void)rt_hashes; (void)rt_temp_files; (void)rt_each_done_once;
    (void)rt_show; (void)rt_jint;
    if (!sdb_t_data()) return sdb_t_done();
    RUN(rewrite_resolves_the_same);
    RUN(submit_names);
    RUN(priority_key);
    RUN(run_order_and_status);
    RUN(pid_lock);
    return sdb_t_done();
}
