/*
 * runner.c — runs a manifest's jobs against its state database, in this process or in --workers
 * processes forked after the model is loaded (see runner.h, and "worker processes" at the end; the
 * state machine and the crash-safety invariants are at the top of store.c).
 */
#include "sdb/runner.h"
#include "sdb/fsutil.h"
#include "sdb/memlimit.h"
#include "sdb/image.h"
#include "sdb/pipeline.h"
#include "sdb/store.h"
#include "sdb/threads.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the real executor: pipeline.h ----------------------------------------------------------- */


static int px_load(void *ud, const char *path, const char *config_dir, const char *tokenizer_dir, int threads,
                   int weights_f16, void **model, const char **model_id, const sdb_log *log, sdb_err *err)
{
    const sdb_pipeline_exec_opts *po = ud;
    sdb_model_opts mo;
    memset(&mo, 0, sizeof mo);
    if (po) mo.keep_filters = po->keep_filters;
    mo.threads = threads;
    mo.weights_f16 = weights_f16;
    mo.config_dir = config_dir;
    mo.tokenizer_dir = tokenizer_dir;
    sdb_model *mdl = NULL;
    int rc = sdb_model_load(&mdl, path, &mo, log, err);
    if (rc) return rc;
    *model = mdl;
    *model_id = sdb_model_id(mdl);
    return 0;
}

typedef struct { sdb_run_step_fn fn; void *ud; } step_tramp;
static int px_step(void *ud, int step, int total)
{
    step_tramp *t = ud;
    return t->fn ? t->fn(t->ud, step, total) : 0;
}

static int px_run(void *ud, void *model, const sdb_job_spec *j, sdb_run_step_fn on_step, void *step_ud,
                  uint8_t **png, size_t *png_len, const sdb_log *log, sdb_err *err)
{
    sdb_model *mdl = model;
    sdb_image img = {0}, mask = {0}, out = {0};
    int rc = 0;
    *png = NULL;
    *png_len = 0;
    /* the image keeps its alpha (issue 17: an RGBA input keeps it in the output; `mask: alpha`) */
    if (j->image && (rc = sdb_image_load_ex(j->image, &img, 0, 0, SDB_LOAD_EXACT16, err))) goto done;
    if (j->mask && (rc = sdb_image_load_ex(j->mask, &mask, 1, 0, SDB_LOAD_EXACT16, err))) goto done;
    sdb_gen_params p;
    sdb_gen_params_default(&p);
    p.prompt = j->prompt;
    p.negative_prompt = j->negative_prompt;
    p.seed = j->seed;
    p.steps = j->steps;
    p.guidance_scale = j->guidance_scale;
    p.strength = j->strength;
    p.scheduler = j->scheduler;
    p.eta = j->eta;
    p.width = j->width;
    p.height = j->height;
    p.padding_mask_crop = j->padding_mask_crop;
    p.vae_tiling = j->vae_tiling;
    p.image = j->image ? &img : NULL;
    p.mask = j->mask ? &mask : NULL;
    /* issue 17: restoration options */
    p.restore.keep_unmasked = j->keep_unmasked;
    p.restore.mask_blur = j->mask_blur;
    p.restore.mask_dilate = j->mask_dilate;
    p.restore.masked_content = (sdb_masked_content)j->masked_content;
    p.restore.color_match = j->color_match;
    p.restore.inpaint_area = (sdb_inpaint_area)j->inpaint_area;
    p.restore.only_masked_size = j->only_masked_size;
    p.restore.mask_from_alpha = j->mask_alpha;
    step_tramp t = {on_step, step_ud};
    if ((rc = sdb_model_set_vae(mdl, j->vae, log, err))) goto done; /* NULL: the model's own */
    if ((rc = sdb_generate(mdl, &p, px_step, &t, &out, log, err))) goto done;
    char *a1111 = sdb_gen_params_a1111(mdl, &p, out.w, out.h);
    if (out.c == 4 && sdb_image_format_of_path(j->output) == SDB_FMT_JPEG)
        sdb_logf(log, SDB_LOG_WARN, "%s: the input's alpha channel is dropped (JPEG has none; write a .png to keep it)", j->id);
    /* the format the output's extension names (PNG, or JPEG at jpeg_quality) */
    rc = sdb_image_encode_for_path(j->output, &out, a1111 ? a1111 : "", j->jpeg_quality, png, png_len, err);
    free(a1111);
done:
    sdb_image_free(&img);
    sdb_image_free(&mask);
    sdb_image_free(&out);
    return rc;
}

static void px_unload(void *ud, void *model) { sdb_model_free(model); }

static int px_mem_estimate(void *ud, void *model, const sdb_job_spec *j, double *weights_mib, double *scratch_mib,
                           int *w, int *h, sdb_err *err)
{
    sdb_image img = {0};
    if (j->image && !j->width) {   /* the working size follows the input's own */
        int rc = sdb_image_load(j->image, &img, 0, 0, err);
        if (rc) return rc;
    }
    sdb_gen_params p;
    sdb_gen_params_default(&p);
    p.width = j->width;
    p.height = j->height;
    p.padding_mask_crop = j->padding_mask_crop;
    sdb_gen_memory_estimate(model, &p, img.w, img.h, weights_mib, scratch_mib, w, h);
    sdb_image_free(&img);
    return 0;
}

const sdb_executor *sdb_executor_pipeline(void)
{
    static const sdb_executor ex = {NULL, px_load, px_run, px_unload, px_mem_estimate};
    return &ex;
}

/* ---- memory: a job that would not fit is refused before it starts ---------------------------- */

/* A "Key:  N kB" line of a /proc file in MiB (-1 when absent). */
static double proc_kb_mib(const char *file, const char *key)
{
    double v = sdb_proc_value(file, key);
    return v < 0 ? -1 : v / 1024.0;
}

/* 0 when job j fits (or nothing can be said); else SDB_ENOMEM and why in err. */
static int memory_check(const sdb_executor *ex, void *model, const sdb_job_spec *j, double max_mib, sdb_err *err)
{
    if (!ex->mem_estimate || max_mib < 0) return 0;
    double wm, sm;
    int w, h;
    sdb_err e;
    if (ex->mem_estimate(ex->ud, model, j, &wm, &sm, &w, &h, &e)) return 0;   /* the run says why */
    double need = wm + sm;
    if (max_mib > 0) {
        if (need <= max_mib) return 0;
        return sdb_fail(err, SDB_ENOMEM, "needs about %.0f MiB (weights %.0f + scratch %.0f for %dx%d), more than "
                        "--max-memory %.0f MiB: not started", need, wm, sm, w, h, max_mib);
    }
    const double rss = proc_kb_mib("/proc/self/status", "VmRSS:");
    if (rss < 0) return 0;
    sdb_cgroup_room cg;
    int by_cgroup;
    const double limit = sdb_mem_limit_mib(rss, SDB_MEM_MARGIN_MIB, &cg, &by_cgroup);
    if (limit < 0 || need <= limit) return 0;
    if (by_cgroup)
        return sdb_fail(err, SDB_ENOMEM, "needs about %.0f MiB (weights %.0f + scratch %.0f for %dx%d), more than its memory "
                        "cgroup lets it have now: %.0f MiB (limit %.0f of %s - %.0f in use there + this process's %.0f - "
                        "margin %.0f); not started (set --max-memory to decide yourself)", need, wm, sm, w, h, limit,
                        cg.limit_mib, cg.path, cg.used_mib, rss, SDB_MEM_MARGIN_MIB);
    return sdb_fail(err, SDB_ENOMEM, "needs about %.0f MiB (weights %.0f + scratch %.0f for %dx%d), more than this "
                    "machine can give it now: %.0f MiB (available %.0f + this process's %.0f - margin %.0f); not started "
                    "(set --max-memory to decide yourself)", need, wm, sm, w, h, limit, limit - rss + SDB_MEM_MARGIN_MIB,
                    rss, SDB_MEM_MARGIN_MIB);
}

/* ---- temp files ------------------------------------------------------------------------------ */

/* ".<name>.tmp.<pid>.<n>" -> pid, or -1. */
static long temp_pid(const char *fn)
{
    if (fn[0] != '.') return -1;
    const char *t = strstr(fn, ".tmp.");
    if (!t) return -1;
    const char *last = NULL;
    for (const char *s = t; (s = strstr(s, ".tmp.")); s++) last = s;
    const char *p = last + 5;
    char *end;
    long pid = strtol(p, &end, 10);
    if (end == p || *end != '.') return -1;
    const char *q = end + 1;
    if (!*q) return -1;
    for (; *q; q++) if (*q < '0' || *q > '9') return -1;
    return pid;
}

/* Removes dead processes' temp files from the open folder dfd (closed here). */
static int clean_temp_dirfd(int dfd, double min_age_seconds)
{
    double now = sdb_now_wall();
    DIR *d = fdopendir(dfd);
    if (!d) { close(dfd); return 0; }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid = temp_pid(e->d_name);
        if (pid <= 0) continue;
        if (!strstr(e->d_name, ".png.tmp.") && !strstr(e->d_name, ".jpg.tmp.") && !strstr(e->d_name, ".jpeg.tmp.") &&
            !strstr(e->d_name, ".PNG.tmp.") && !strstr(e->d_name, ".JPG.tmp.") && !strstr(e->d_name, ".JPEG.tmp."))
            continue;  /* only ours: outputs are PNGs or JPEGs */
        if (pid != (long)getpid() && !(kill((pid_t)pid, 0) != 0 && errno == ESRCH)) continue;
        if (pid == (long)getpid()) continue;
        struct stat sb;
        if (min_age_seconds > 0 && (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
                                    now - (double)sb.st_mtime < min_age_seconds))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) n++;
    }
    closedir(d);
    return n;
}

int sdb_clean_temp_files(const char *dir, double min_age_seconds)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return dfd < 0 ? 0 : clean_temp_dirfd(dfd, min_age_seconds);
}

/* Where outputs are written from: the folder below which no symlink is followed, and output_dir
 * relative to it ("" when it is output_dir itself). */
typedef struct { const char *confine_root; char *outdir_rel; } out_base;

static int out_base_init(out_base *ob, const sdb_manifest *m, const char *confine_root, sdb_err *err)
{
    ob->confine_root = confine_root;
    ob->outdir_rel = NULL;
    if (!confine_root) return 0;
    char *real = sdb_path_resolve(m->output_dir);
    if (!real) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    if (!strcmp(real, confine_root)) ob->outdir_rel = strdup("");
    else if (sdb_path_below(real, confine_root)) ob->outdir_rel = strdup(real + strlen(confine_root) + (strcmp(confine_root, "/") != 0));
    else {
        int rc = sdb_fail(err, SDB_EINVAL, "output_dir %s (%s) is not below %s", m->output_dir, real, confine_root);
        free(real);
        return rc;
    }
    free(real);
    return ob->outdir_rel ? 0 : sdb_fail(err, SDB_ENOMEM, "out of memory");
}

/* Job j's output as (root, path below it), both malloc'd; 0 or SDB_ENOMEM. */
static int output_target(const out_base *ob, const sdb_manifest *m, const sdb_job_spec *j, char **root, char **rel)
{
    char *r;
    const char *jrel;
    sdb_job_output_split(m, j, &r, &jrel);
    *rel = NULL;
    if (r && ob->confine_root && !strcmp(r, m->output_dir)) {   /* (the daemon has no outputs outside) */
        free(r);
        r = strdup(ob->confine_root);
        *rel = ob->outdir_rel[0] ? sdb_path_join(ob->outdir_rel, jrel) : strdup(jrel);
    } else *rel = strdup(jrel);
    *root = r;
    if (!r || !*rel) { free(r); free(*rel); *root = *rel = NULL; return SDB_ENOMEM; }
    return 0;
}

/* The folder of job j's output, opened as the output will be written; -1 when it is missing
 * or refused. */
static int open_output_dir(const out_base *ob, const sdb_manifest *m, const sdb_job_spec *j)
{
    char *root, *rel;
    if (output_target(ob, m, j, &root, &rel)) return -1;
    char *slash = strrchr(rel, '/');
    if (slash) *slash = '\0'; else rel[0] = '\0';
    int fd = -1;
    sdb_err e;
    if (sdb_dir_open_beneath(root, rel, 0, &fd, &e)) fd = -1;
    free(root);
    free(rel);
    return fd;
}

/* The state database of output_dir (<output_dir>/.sdbatch/...) must not be reached through a
 * symlink either: its folder is opened as outputs' are, and the database file and SQLite's
 * companions (-wal, -shm, -journal) must not be symlinks. */
static int check_state_path(const out_base *ob, const sdb_manifest *m, const char *state_path, sdb_err *err)
{
    int fd, rc;
    if (ob->confine_root) {
        char *rel = sdb_path_join(ob->outdir_rel, ".sdbatch");
        rc = rel ? sdb_dir_open_beneath(ob->confine_root, rel, 1, &fd, err) : sdb_fail(err, SDB_ENOMEM, "out of memory");
        free(rel);
    } else rc = sdb_dir_open_beneath(m->output_dir, ".sdbatch", 1, &fd, err);
    if (rc) return sdb_err_prefix(err, "state database");
    const char *base = strrchr(state_path, '/');
    base = base ? base + 1 : state_path;
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4 && !rc; i++) {
        char name[512];
        snprintf(name, sizeof name, "%s%s", base, sfx[i]);
        struct stat sb;
        if (fstatat(fd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode))
            rc = sdb_fail(err, SDB_EINVAL, "%s/.sdbatch/%s is a symlink: the state database is never written through one",
                          m->output_dir, name);
    }
    close(fd);
    return rc;
}

/* ---- progress -------------------------------------------------------------------------------- */

typedef struct {
    const sdb_run_opts *o;
    const sdb_log *log;
    sdb_store *store;
    int total, done_count, failed_count;
    double t_start, first_job_start;
    int jobs_this_run;
    double job_seconds_sum;
    const char *cur_id;
    long long cur_run;
    int step, steps;
    double last_beat, lease;
    double last_draw;
    volatile sig_atomic_t *shared_stop; /* see run_ctx */
} prog;

/* The signal that asked this process to stop (its own flag, or its parent's for a worker), or 0. */
static int stop_of(const sdb_run_opts *o, volatile sig_atomic_t *shared)
{
    if (o->stop && *o->stop) return (int)*o->stop;
    if (shared && *shared) return (int)*shared;
    return 0;
}

static void fmt_dur(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0) { snprintf(buf, n, "?"); return; }
    long v = (long)(s + 0.5);
    if (v >= 3600) snprintf(buf, n, "%ldh%02ldm", v / 3600, (v % 3600) / 60);
    else if (v >= 60) snprintf(buf, n, "%ldm%02lds", v / 60, v % 60);
    else snprintf(buf, n, "%lds", v);
}

static void draw(prog *p, int force)
{
    if (!p->o->progress) return;
    double now = sdb_now_mono();
    if (!force && now - p->last_draw < 0.1) return;
    p->last_draw = now;
    FILE *f = p->o->progress_fp ? p->o->progress_fp : stderr;
    int width = 24;
    int filled = p->total ? (int)((double)p->done_count / p->total * width) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    double rate = p->jobs_this_run > 0 ? p->jobs_this_run / ((now - p->first_job_start) / 60.0) : 0;
    char eta[32] = "?";
    int left = p->total - p->done_count - p->failed_count;
    if (rate > 0) fmt_dur((left > 0 ? left : 0) / rate * 60.0, eta, sizeof eta);
    fprintf(f, "\r\033[K[%s] %d/%d jobs", bar, p->done_count, p->total);
    if (p->cur_id) fprintf(f, " | %s step %d/%d", p->cur_id, p->step, p->steps);
    if (rate > 0) fprintf(f, " | %.2f img/min | ETA %s", rate, eta);
    fflush(f);
}

static void line(prog *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(prog *p, const char *fmt, ...)
{
    FILE *f = p->o->lines_fp;
    if (p->o->progress) {
        FILE *pf = p->o->progress_fp ? p->o->progress_fp : stderr;
        fprintf(pf, "\r\033[K");
        va_list ap;
        va_start(ap, fmt);
        vfprintf(pf, fmt, ap);
        va_end(ap);
        fputc('\n', pf);
        draw(p, 1);
        return;
    }
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fflush(f);
}

/* Tells the caller's on_job (if any) what became of a job. */
static void job_event(prog *p, const char *id, sdb_job_state state, const char *output, double seconds,
                      const char *error, long long run_id)
{
    if (!p->o->on_job) return;
    sdb_job_event ev;
    memset(&ev, 0, sizeof ev);
    ev.id = id;
    ev.state = state;
    ev.output = output;
    ev.seconds = seconds;
    ev.error = error;
    if (state == SDB_JOB_PENDING) { ev.step = p->step; ev.steps = p->steps; }
    ev.run_id = run_id;
    p->o->on_job(p->o->on_job_ud, &ev);
}

static int on_step(void *ud, int step, int total)
{
    prog *p = ud;
    p->step = step;
    p->steps = total;
    sdb_kill_point("step");
    double now = sdb_now_mono();
    if (now - p->last_beat > p->lease / 10) {
        sdb_err e;
        if (sdb_store_heartbeat(p->store, p->cur_id, p->cur_run, p->lease, &e) == 0) p->last_beat = now;
        else sdb_logf(p->log, SDB_LOG_WARN, "%s", e.msg);
    }
    draw(p, 0);
    return stop_of(p->o, p->shared_stop) ? 1 : 0;
}

/* This run lost a job (its lease expired while it was stopped or hung, and another process
 * took it over): its result is dropped, the run goes on. Returns 1 when that is the case. */
static int lost(prog *p, const char *id, sdb_err *err)
{
    if (!strstr(err->msg, "no longer owns")) return 0;
    sdb_logf(p->log, SDB_LOG_WARN, "%s (its lease expired); dropping this result", err->msg);
    sdb_err_clear(err);
    return 1;
}

/* ---- the run ---------------------------------------------------------------------------------- */

static int selected_id(const sdb_run_opts *o, const char *id)
{
    if (!o->only || o->n_only <= 0) return 1;
    for (int i = 0; i < o->n_only; i++) if (!strcmp(o->only[i], id)) return 1;
    return 0;
}

/* Job i is this run's: in --only (if given) and in the shard's mask (if given). */
static int sel(const sdb_manifest *m, const sdb_run_opts *o, int i)
{
    if (o->job_mask && !o->job_mask[i]) return 0;
    return selected_id(o, m->jobs[i].id);
}

/* Other state files of the folder (read-only): a job done in any of them is done. */
typedef struct { sdb_store **s; int n; } peers;

static void peers_open(peers *pp, const char *own_path)
{
    memset(pp, 0, sizeof *pp);
    char *dir = sdb_path_dirname(own_path);
    char **paths;
    int n;
    sdb_err e;
    if (dir && sdb_store_list(dir, &paths, &n, &e) == 0) {
        pp->s = calloc(n ? n : 1, sizeof *pp->s);
        for (int i = 0; i < n && pp->s; i++) {
            char *a = realpath(paths[i], NULL), *b = realpath(own_path, NULL);
            int same = a && b && !strcmp(a, b);
            free(a); free(b);
            if (same) continue;
            sdb_store *s;
            if (sdb_store_open(&s, paths[i], SDB_STORE_READONLY, &e) == 0) pp->s[pp->n++] = s;
        }
        sdb_store_list_free(paths, n);
    }
    free(dir);
}

static void peers_close(peers *pp)
{
    for (int i = 0; i < pp->n; i++) sdb_store_close(pp->s[i]);
    free(pp->s);
}

static int done_in_peer(peers *pp, const char *id, const char *identity)
{
    for (int i = 0; i < pp->n; i++) {
        sdb_job_row r;
        int found;
        sdb_err e;
        if (sdb_store_get(pp->s[i], id, &r, &found, &e) || !found) continue;
        int ok = r.state == SDB_JOB_DONE && !strcmp(r.identity, identity) && r.output && sdb_file_exists(r.output);
        sdb_job_row_free(&r);
        if (ok) return 1;
    }
    return 0;
}

static int dry_run(const sdb_manifest *m, const sdb_run_opts *o, sdb_run_result *res, const char *state_path)
{
    /* without the model the identity is unknown: compare the parameters' hash */
    char *dir = sdb_path_dirname(state_path);
    char **paths = NULL;
    int np = 0;
    sdb_err e;
    sdb_store_list(dir, &paths, &np, &e);
    free(dir);
    sdb_store **ss = calloc(np ? np : 1, sizeof *ss);
    int ns = 0;
    for (int i = 0; i < np; i++) if (sdb_store_open(&ss[ns], paths[i], SDB_STORE_READONLY, &e) == 0) ns++;
    FILE *f = o->lines_fp ? o->lines_fp : stdout;
    for (int i = 0; i < m->n_jobs; i++) {
        const sdb_job_spec *j = &m->jobs[i];
        if (!sel(m, o, i)) continue;
        res->total++;
        int done = 0, failed_final = 0;
        for (int k = 0; k < ns && !done; k++) {
            sdb_job_row r;
            int found;
            if (sdb_store_get(ss[k], j->id, &r, &found, &e) || !found) continue;
            if (!strcmp(r.params_hash, j->params_hash)) {
                if (r.state == SDB_JOB_DONE && r.output && sdb_file_exists(r.output)) done = 1;
                if (r.state == SDB_JOB_FAILED && !o->retry_failed && r.attempts >= (o->max_attempts > 0 ? o->max_attempts : 2))
                    failed_final = 1;
            }
            sdb_job_row_free(&r);
        }
        if (done) { res->skipped++; res->done++; fprintf(f, "skip  %s (done)\n", j->id); }
        else if (failed_final) { res->failed++; fprintf(f, "skip  %s (failed, no attempts left; --retry-failed)\n", j->id); }
        else if (j->bad_input) { res->pending++; fprintf(f, "fail  %s (%s)\n", j->id, j->bad_input); }
        else { res->pending++; fprintf(f, "run   %s -> %s\n", j->id, j->output); }
    }
    for (int k = 0; k < ns; k++) sdb_store_close(ss[k]);
    free(ss);
    sdb_store_list_free(paths, np);
    return 0;
}

/* Removes dead processes' temp files from every output folder of the manifest (see
 * sdb_clean_temp_files for min_age), each opened as its outputs are written. */
static void clean_temp_dirs(const out_base *ob, const sdb_manifest *m, double min_age, const sdb_log *log)
{
    char **dirs = calloc(m->n_jobs + 1, sizeof *dirs);
    int nd = 0, cleaned = 0;
    for (int i = 0; i < m->n_jobs && dirs; i++) {
        if (m->jobs[i].bad_output) continue;
        char *d = sdb_path_dirname(m->jobs[i].output);
        int seen = 0;
        for (int k = nd; k-- > 0 && !seen; ) if (!strcmp(dirs[k], d)) seen = 1;
        if (seen) { free(d); continue; }
        dirs[nd++] = d;
        int fd = open_output_dir(ob, m, &m->jobs[i]);
        if (fd >= 0) cleaned += clean_temp_dirfd(fd, min_age);
    }
    for (int k = 0; k < nd; k++) free(dirs[k]);
    free(dirs);
    if (cleaned) sdb_logf(log, SDB_LOG_INFO, "removed %d temp file(s) left by dead processes", cleaned);
}

/* What one process's job loop works with. */
typedef struct {
    const sdb_manifest *m;
    const sdb_executor *ex;
    const sdb_run_opts *o;
    void *model;
    char (*ident)[65];       /* each job's identity (m->n_jobs of them) */
    int nsj;                 /* selected jobs */
    double lease;
    sdb_store *store;
    const sdb_worker *me;
    volatile sig_atomic_t *shared_stop; /* a worker process: its parent's stop (shared memory) */
    const sdb_log *log;
    const char *state_path;
    const out_base *ob;      /* where outputs are written from (no symlink followed below it) */
    const char *model_id;
} run_ctx;

static int job_loop(const run_ctx *c, sdb_run_result *res, sdb_err *err);
static int run_workers(const run_ctx *base, int k, sdb_run_result *res, int *dead, sdb_err *err);

int sdb_run_manifest(const sdb_manifest *m, const sdb_executor *ex, const sdb_run_opts *o,
                     sdb_run_result *res, const sdb_log *log, sdb_err *err)
{
    memset(res, 0, sizeof *res);
    char *state_path = o->state_path ? strdup(o->state_path)
                                     : sdb_store_default_path(m->output_dir, o->shard, o->n_shards);
    if (!state_path) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    if (o->dry_run) {
        int rc = dry_run(m, o, res, state_path);
        free(state_path);
        return rc;
    }
    double lease = o->lease_seconds > 0 ? o->lease_seconds : 600;
    const char *le = getenv("SDB_LEASE_SECONDS");
    if (le && atof(le) > 0) lease = atof(le);

    sdb_worker me;
    sdb_worker_self(&me);
    sdb_store *store = NULL;
    void *model = NULL;
    peers pp = {0};
    sdb_store_job *sj = NULL;
    char (*ident)[65] = NULL;
    out_base ob;
    int rc = out_base_init(&ob, m, o->confine_root, err);
    if (rc) { free(state_path); return rc; }
    rc = o->state_path ? 0 : check_state_path(&ob, m, state_path, err);
    if (!rc) rc = sdb_store_open(&store, state_path, o->n_shards > 0 ? SDB_STORE_RW_SHARD : SDB_STORE_RW, err);
    if (rc) goto out;
    sdb_store_set_meta(store, "manifest", m->path, NULL);
    if (o->n_shards > 0) {
        char buf[64];
        snprintf(buf, sizeof buf, "%d/%d", o->shard, o->n_shards);
        sdb_store_set_meta(store, "shard", buf, NULL);
    }

    /* 1. garbage from dead processes: temp files, orphaned rows */
    clean_temp_dirs(&ob, m, o->n_shards > 0 ? 2 * lease : 0, log);
    if ((rc = sdb_store_recover(store, &me, o->n_shards > 0, &res->recovered, err))) goto out;
    if (res->recovered) sdb_logf(log, SDB_LOG_INFO, "recovered %d job(s) left running by dead processes", res->recovered);
    sdb_kill_point("startup");
    if (o->stop && *o->stop) { res->interrupted = (int)*o->stop; rc = SDB_EINTERRUPTED; goto out; }

    /* 2. the model, once */
    const char *model_id = NULL;
    sdb_kill_point("load_start");
    double t_load = sdb_now_mono();
    if ((rc = ex->load(ex->ud, m->model, m->model_config, m->tokenizer, o->threads, o->weights_f16, &model, &model_id, log, err))) {
        sdb_err_prefix(err, "model %s", m->model);
        goto out;
    }
    sdb_logf(log, SDB_LOG_INFO, "model loaded in %.1f s (id %.12s)", sdb_now_mono() - t_load, model_id ? model_id : "?");
    sdb_kill_point("loaded");
    if (o->stop && *o->stop) { res->interrupted = (int)*o->stop; rc = SDB_EINTERRUPTED; goto out; }

    /* 3. identities -> the database */
    sj = calloc(m->n_jobs ? m->n_jobs : 1, sizeof *sj);
    ident = calloc(m->n_jobs ? m->n_jobs : 1, sizeof *ident);
    if (!sj || !ident) { rc = sdb_fail(err, SDB_ENOMEM, "out of memory"); goto out; }
    int nsj = 0;
    for (int i = 0; i < m->n_jobs; i++) {
        const sdb_job_spec *j = &m->jobs[i];
        sdb_job_identity(j, model_id, ident[i]);
        if (!sel(m, o, i)) continue;
        sj[nsj].id = j->id;
        sj[nsj].identity = ident[i];
        sj[nsj].params_hash = j->params_hash;
        sj[nsj].model_hash = model_id;
        sj[nsj].output = j->output;
        nsj++;
    }
    int n_reset = 0;
    if ((rc = sdb_store_sync(store, sj, nsj, &me, &n_reset, err))) goto out;
    if (n_reset) sdb_logf(log, SDB_LOG_INFO, "%d job(s) changed since they ran (or lost their output): redoing them", n_reset);
    sdb_kill_point("synced");

    /* 4. the jobs: here, or in o->workers forked processes */
    res->total = nsj;
    int workers = o->workers < nsj ? o->workers : nsj, dead = 0;
    if (workers > 1) {
        sdb_store_close(store);
        store = NULL;
        run_ctx c = {m, ex, o, model, ident, nsj, lease, NULL, &me, NULL, log, state_path, &ob, model_id};
        rc = run_workers(&c, workers, res, &dead, err);
        sdb_err e2;
        int rc2 = sdb_store_open(&store, state_path, o->n_shards > 0 ? SDB_STORE_RW_SHARD : SDB_STORE_RW, &e2);
        if (rc2) { if (!rc || rc == SDB_EINTERRUPTED) { rc = rc2; *err = e2; } goto out; }
        /* a worker that died (SIGKILL, OOM) left its job running: put it back now (or to done,
           when its output was complete), and remove its temp file */
        int back = 0;
        if (dead && sdb_store_recover(store, &me, 0, &back, &e2) == 0 && back)
            sdb_logf(log, SDB_LOG_WARN, "%d job(s) left running by dead workers put back", back);
        if (dead) clean_temp_dirs(&ob, m, 0, log);
    } else {
        run_ctx c = {m, ex, o, model, ident, nsj, lease, store, &me, NULL, log, state_path, &ob, model_id};
        rc = job_loop(&c, res, err);
    }
    peers_open(&pp, state_path);

    /* 5. where the selection stands */
    {
        sdb_err e2;
        for (int i = 0; i < m->n_jobs; i++) {
            if (!sel(m, o, i)) continue;
            sdb_job_row r;
            int found;
            if (sdb_store_get(store, m->jobs[i].id, &r, &found, &e2) || !found) { res->pending++; continue; }
            if (r.state == SDB_JOB_DONE) res->done++;
            else if (done_in_peer(&pp, m->jobs[i].id, ident[i])) { res->done++; res->skipped++; }
            else if (r.state == SDB_JOB_FAILED) res->failed++;
            else if (r.state == SDB_JOB_RUNNING && r.run_id) {
                if (sdb_store_owner_alive(&r, &me, sdb_now_wall())) res->running++; else res->pending++;
            } else res->pending++;
            sdb_job_row_free(&r);
        }
        res->skipped += 0;
    }
    if (!rc && dead && res->pending > 0)
        rc = sdb_fail(err, SDB_ESTATE, "%d worker process(es) died (see above); %d job(s) are pending again: "
                      "run again to finish them", dead, res->pending);
out:
    peers_close(&pp);
    if (model) ex->unload(ex->ud, model);
    free(sj);
    free(ident);
    sdb_store_close(store);
    free(state_path);
    free(ob.outdir_rel);
    return rc;
}


/* The job loop of one process: claims and runs the selected jobs until a pass makes no progress
 * (every job done, failed for good, or running under another live owner), or until stopped. */
static int job_loop(const run_ctx *c, sdb_run_result *res, sdb_err *err)
{
    const sdb_manifest *m = c->m;
    const sdb_run_opts *o = c->o;
    const sdb_log *log = c->log;
    char (*ident)[65] = c->ident;
    peers pp;
    peers_open(&pp, c->state_path);
    int rc = 0, sig;
    prog p;
    memset(&p, 0, sizeof p);
    p.o = o;
    p.log = log;
    p.store = c->store;
    p.lease = c->lease;
    p.shared_stop = c->shared_stop;
    p.t_start = sdb_now_mono();
    p.total = c->nsj;
    char *tried = calloc(m->n_jobs ? m->n_jobs : 1, 1);
    if (!tried) { peers_close(&pp); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    /* count what is already done, for the bar */
    for (int i = 0; i < m->n_jobs; i++) {
        if (!sel(m, o, i)) continue;
        sdb_job_row r;
        int found;
        if (sdb_store_get(c->store, m->jobs[i].id, &r, &found, err) == 0 && found && r.state == SDB_JOB_DONE) p.done_count++;
        else if (done_in_peer(&pp, m->jobs[i].id, ident[i])) p.done_count++;
        if (found) sdb_job_row_free(&r);
    }
    draw(&p, 1);
    sdb_claim_opts co = {o->max_attempts > 0 ? o->max_attempts : 2, o->retry_failed, c->lease};
    int progress_made = 1;
    while (progress_made && !rc) {
        progress_made = 0;
        for (int i = 0; i < m->n_jobs && !rc; i++) {
            const sdb_job_spec *j = &m->jobs[i];
            if (tried[i] || !sel(m, o, i)) continue;
            if ((sig = stop_of(o, c->shared_stop))) { res->interrupted = sig; rc = SDB_EINTERRUPTED; break; }
            /* cheap look first: no write lock for jobs that are obviously not ours */
            sdb_job_row r;
            int found;
            if ((rc = sdb_store_get(c->store, j->id, &r, &found, err))) break;
            int maybe = found && strcmp(r.identity, ident[i]) == 0 &&
                        (r.state == SDB_JOB_PENDING || r.state == SDB_JOB_RUNNING ||
                         (r.state == SDB_JOB_FAILED && (o->retry_failed || r.attempts < co.max_attempts)));
            if (found) sdb_job_row_free(&r);
            if (!maybe) { tried[i] = 1; continue; }
            if (done_in_peer(&pp, j->id, ident[i])) { tried[i] = 1; continue; }
            int claimed;
            long long run_id;
            if ((rc = sdb_store_claim(c->store, j->id, ident[i], &co, c->me, &claimed, &run_id, err))) break;
            if (!claimed) continue;   /* running elsewhere: look again next pass */
            tried[i] = 1;
            progress_made = 1;
            sdb_kill_point("claimed");
            double t0 = sdb_now_mono();
            if (!p.jobs_this_run && !p.first_job_start) p.first_job_start = t0;
            p.cur_id = j->id;
            p.cur_run = run_id;
            p.step = 0;
            p.steps = j->steps;
            p.last_beat = t0;
            draw(&p, 1);
            res->ran++;
            sdb_err jerr;
            sdb_err_clear(&jerr);
            uint8_t *png = NULL;
            size_t png_len = 0;
            int jrc;
            if (j->bad_output) jrc = sdb_fail(&jerr, SDB_EINVAL, "%s", j->bad_output);
            else if (j->bad_input) jrc = sdb_fail(&jerr, SDB_ENOTFOUND, "%s", j->bad_input);
            else if ((jrc = memory_check(c->ex, c->model, j, o->max_memory_mib, &jerr))) {}
            else jrc = c->ex->run(c->ex->ud, c->model, j, on_step, &p, &png, &png_len, log, &jerr);
            p.cur_id = NULL;
            double secs = sdb_now_mono() - t0;
            if (jrc == SDB_EINTERRUPTED) {
                free(png);
                res->ran--;
                if ((rc = sdb_store_release(c->store, j->id, run_id, "interrupted by signal", err))) break;
                line(&p, "interrupted %s at step %d/%d (back to pending)", j->id, p.step, p.steps);
                job_event(&p, j->id, SDB_JOB_PENDING, NULL, secs, NULL, run_id);
                res->interrupted = (sig = stop_of(o, c->shared_stop)) ? sig : SIGINT;
                rc = SDB_EINTERRUPTED;
                break;
            }
            if (jrc) {
                free(png);
                res->ran_failed++;
                if ((rc = sdb_store_fail(c->store, j->id, run_id, jerr.msg, secs, err))) {
                    if (rc == SDB_ESTATE && lost(&p, j->id, err)) { rc = 0; continue; }
                    break;
                }
                p.failed_count++;
                line(&p, "failed %s (%.1f s): %s", j->id, secs, jerr.msg);
                job_event(&p, j->id, SDB_JOB_FAILED, NULL, secs, jerr.msg, run_id);
                continue;
            }
            sdb_kill_point("generated");
            /* the job's identity in the PNG: `sdbatch repair` knows its outputs by it (only a PNG
               gets it; an executor may hand back other bytes) */
            if (png_len > 8 && !memcmp(png, "\x89PNG\r\n\x1a\n", 8)) {
                char tag[320], oid[65];
                sdb_job_output_identity(j, c->model_id, oid);
                snprintf(tag, sizeof tag, "id=%s identity=%s", j->id, oid);
                if (sdb_png_add_text(&png, &png_len, SDB_PNG_JOB_KEY, tag, err)) { free(png); rc = err->code; break; }
            }
            /* output: hash recorded, then temp + fsync, rename, then done */
            char sha[65];
            sdb_sha256_hex(png, png_len, sha);
            if ((rc = sdb_store_prepare(c->store, j->id, run_id, j->output, sha, err))) {
                free(png);
                if (rc == SDB_ESTATE && lost(&p, j->id, err)) { rc = 0; continue; }
                break;
            }
            sdb_kill_point("prepared");
            /* in the output's own folder, reached from its root without following a symlink */
            sdb_wfile w;
            char *oroot, *orel;
            int werrno = 0;   /* why writing failed */
            jrc = output_target(c->ob, m, j, &oroot, &orel) ? sdb_fail(&jerr, SDB_ENOMEM, "out of memory")
                                                             : sdb_wfile_open_beneath(&w, oroot, orel, &jerr);
            if (jrc) werrno = errno;
            free(oroot);
            free(orel);
            if (!jrc) {
                jrc = sdb_wfile_write(&w, png, png_len, &jerr);
                if (jrc) { sdb_wfile_abort(&w); werrno = errno; }
            }
            free(png);
            if (!jrc) {
                if (fflush(w.f) == 0) sdb_kill_point("png_written");
                jrc = sdb_wfile_commit(&w, &jerr);
                if (jrc) werrno = errno;
            }
            if (jrc) {
                res->ran_failed++;
                if ((rc = sdb_store_fail(c->store, j->id, run_id, jerr.msg, secs, err))) break;
                p.failed_count++;
                line(&p, "failed %s: %s", j->id, jerr.msg);
                job_event(&p, j->id, SDB_JOB_FAILED, NULL, secs, jerr.msg, run_id);
                if (werrno == ENOSPC || werrno == EDQUOT) {
                    /* every next job would compute for nothing: stop (the temp file is gone, the
                       job is recorded as failed with its first attempt, so the next run redoes it) */
                    rc = sdb_fail(err, SDB_EIO, "%s; stopped: the disk holding the outputs is full (free space, then "
                                  "run again: the jobs not done are run then)", jerr.msg);
                    break;
                }
                continue;
            }
            sdb_kill_point("renamed");
            secs = sdb_now_mono() - t0;
            if ((rc = sdb_store_complete(c->store, j->id, run_id, j->output, sha, secs, err))) {
                if (rc == SDB_ESTATE && lost(&p, j->id, err)) { rc = 0; continue; }
                break;
            }
            sdb_kill_point("done");
            res->ran_ok++;
            p.done_count++;
            p.jobs_this_run++;
            p.job_seconds_sum += secs;
            line(&p, "done %s (%.1f s) -> %s", j->id, secs, j->output);
            job_event(&p, j->id, SDB_JOB_DONE, j->output, secs, NULL, run_id);
            if ((sig = stop_of(o, c->shared_stop))) { res->interrupted = sig; rc = SDB_EINTERRUPTED; break; }
        }
        /* jobs running under live owners elsewhere are theirs; jobs released by dead ones were
           recovered by a claim above: a further pass picks those up */
    }
    free(tried);
    if (o->progress) { FILE *f = o->progress_fp ? o->progress_fp : stderr; fprintf(f, "\r\033[K"); fflush(f); }
    peers_close(&pp);
    return rc;
}

/* ---- worker processes (--workers K) ------------------------------------------------------------
 *
 * K processes forked after the model is loaded, each running the job loop above with threads/K
 * threads and its own connection to the state database. They share the model's weights: the
 * mapped files' pages, and any matrices converted at load (copy-on-write pages nobody writes).
 * The claim inside BEGIN IMMEDIATE keeps two of them off one job, as it does for separate
 * `sdbatch run` processes (store.c, invariant 2). Processes rather than threads: the model's
 * scratch arena and OpenBLAS's OpenMP build (one buffer set for threaded calls) are per process,
 * and a worker killed (OOM) costs its one job, not the batch.
 *
 * The fork must come before this process runs any OpenMP parallel region: GNU OpenMP's thread pool
 * does not survive fork (a child's first parallel region hangs). Loading the model runs none, and
 * run_workers refuses to fork a process that already has more than one thread.
 * Stopping: the parent's stop flag reaches the workers through a shared page (they stop at their
 * next step, as on a signal of their own: a terminal's SIGINT or Slurm's SIGTERM reach them
 * directly too); a worker whose parent dies gets SIGTERM (PR_SET_PDEATHSIG) and stops the same way.
 */

typedef struct { sdb_run_result res; int rc; char msg[512]; } worker_report;


/* The body of worker process `base` (never returns): the job loop, then its report on fd. */
static void worker_main(const run_ctx *base, int threads, int fd, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) raise(SIGTERM);   /* the parent died before prctl */
    sdb_threads_set(threads);
    sdb_run_opts wo = *base->o;
    wo.progress = 0;                            /* K bars on one terminal: one line per job instead */
    wo.workers = 1;
    sdb_worker me;
    sdb_worker_self(&me);
    worker_report rep;
    memset(&rep, 0, sizeof rep);
    sdb_err err;
    sdb_err_clear(&err);
    sdb_store *store = NULL;
    rep.rc = sdb_store_open(&store, base->state_path, wo.n_shards > 0 ? SDB_STORE_RW_SHARD : SDB_STORE_RW, &err);
    if (!rep.rc) {
        run_ctx c = *base;
        c.o = &wo;
        c.store = store;
        c.me = &me;
        rep.rc = job_loop(&c, &rep.res, &err);
    }
    if (rep.rc) snprintf(rep.msg, sizeof rep.msg, "%s", err.msg);
    sdb_store_close(store);
    fflush(NULL);
    ssize_t w = write(fd, &rep, sizeof rep);
    _exit(w == (ssize_t)sizeof rep ? 0 : 1);
}

/* Runs the job loop in o->workers processes and waits for them; *dead counts workers that ended
 * without a report (killed by a signal). Returns 0, SDB_EINTERRUPTED when stopped, or the first
 * worker's error. */
static int run_workers(const run_ctx *base, int k, sdb_run_result *res, int *dead, sdb_err *err)
{
    const sdb_run_opts *o = base->o;
    const sdb_log *log = base->log;
    *dead = 0;
    const int threads = o->threads > 0 ? o->threads : sdb_threads_get();
    const int nt = (int)sdb_proc_value("/proc/self/status", "Threads:");
    if (nt != 1)
        return sdb_fail(err, SDB_EUNSUPPORTED, "--workers %d: this process already runs %d threads, and worker "
                        "processes can only be forked before any parallel computation (OpenMP's pool does not "
                        "survive fork)", k, nt);
    if (k > threads)
        sdb_logf(log, SDB_LOG_WARN, "%d workers for %d thread(s): each runs 1 thread, more than the CPUs allow", k, threads);
    sdb_logf(log, SDB_LOG_INFO, "%d worker processes, %d thread(s) in all (%d%s each)", k, threads > k ? threads : k,
             threads / k > 0 ? threads / k : 1, threads % k && threads > k ? " or one more" : "");
    volatile sig_atomic_t *shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) return sdb_fail_errno(err, SDB_EIO, "--workers: cannot map a shared page");
    *shared = 0;
    pid_t *pids = calloc((size_t)k, sizeof *pids);
    int *fds = calloc((size_t)k, sizeof *fds);
    if (!pids || !fds) {
        free(pids);
        free(fds);
        munmap((void *)shared, sizeof *shared);
        return sdb_fail(err, SDB_ENOMEM, "out of memory");
    }
    run_ctx wc = *base;
    wc.shared_stop = shared;
    const pid_t parent = getpid();
    int rc = 0, started = 0;
    fflush(NULL);                               /* nothing buffered may be written twice */
    for (int i = 0; i < k; i++) {
        int pf[2];
        if (pipe(pf) != 0) { rc = sdb_fail_errno(err, SDB_EIO, "--workers: pipe"); break; }
        pid_t pid = fork();
        if (pid < 0) {
            rc = sdb_fail_errno(err, SDB_EIO, "--workers: cannot fork worker %d", i);
            close(pf[0]);
            close(pf[1]);
            break;
        }
        if (pid == 0) {
            close(pf[0]);
            for (int j = 0; j < started; j++) close(fds[j]);
            int share = threads / k + (i < threads % k);
            worker_main(&wc, share > 0 ? share : 1, pf[1], parent);
        }
        close(pf[1]);
        pids[started] = pid;
        fds[started] = pf[0];
        started++;
    }
    if (rc) *shared = SIGTERM;                  /* the ones started stop at their next step */
    int live = started;
    while (live > 0) {
        int sig = stop_of(o, NULL);
        if (sig && !*shared) *shared = sig;
        for (int i = 0; i < started; i++) {
            if (pids[i] <= 0) continue;
            int st;
            pid_t w = waitpid(pids[i], &st, WNOHANG);
            if (w == 0 || (w < 0 && errno == EINTR)) continue;
            live--;
            worker_report rep;
            ssize_t n = read(fds[i], &rep, sizeof rep);
            close(fds[i]);
            if (n != (ssize_t)sizeof rep) {
                (*dead)++;
                if (w > 0 && WIFSIGNALED(st))
                    sdb_logf(log, SDB_LOG_WARN, "worker %d (pid %ld) was killed by signal %d", i, (long)pids[i], WTERMSIG(st));
                else
                    sdb_logf(log, SDB_LOG_WARN, "worker %d (pid %ld) ended without a report", i, (long)pids[i]);
            } else {
                res->ran += rep.res.ran;
                res->ran_ok += rep.res.ran_ok;
                res->ran_failed += rep.res.ran_failed;
                if (rep.res.interrupted && !res->interrupted) res->interrupted = rep.res.interrupted;
                if (rep.rc && rep.rc != SDB_EINTERRUPTED && !rc) rc = sdb_fail(err, rep.rc, "worker %d: %s", i, rep.msg);
            }
            pids[i] = 0;
        }
        if (live > 0) usleep(20 * 1000);
    }
    int sig = stop_of(o, shared);
    if (sig) res->interrupted = sig;
    if (!rc && res->interrupted) rc = SDB_EINTERRUPTED;
    free(pids);
    free(fds);
    munmap((void *)shared, sizeof *shared);
    return rc;
}
