/*
 * bench_job.c — `sdbatch bench --job`: one whole inpainting job as a user runs it, timed from the
 * process start to the PNG written, as images/hour (see bench_job.h).
 *
 * It writes a synthetic picture and a mask (the lower half) into a temporary folder, runs this same
 * binary (/proc/self/exe) as `sdbatch generate` on them in a child process — model loading, text
 * encoding, VAE encode, the U-Net steps, VAE decode and the PNG written, all included — and takes
 * the wall time from fork() to the child's exit (its PNG is written atomically before it exits),
 * with the child's peak RSS from wait4(). Owns the temporary folder, removed at the end.
 */
#include "bench_job.h"

#include "sdb/bench.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/ops/winograd.h"
#include "sdb/sched.h"
#include "sdb/threads.h"

#include <jansson.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* image.png (a smooth synthetic picture) and mask.png (the lower half white) of size x size in dir */
static int write_inputs(const char *dir, int size, char *ip, char *mp, size_t n, sdb_err *err)
{
    sdb_image im = {0}, mk = {0};
    int rc = sdb_image_alloc(&im, size, size, 3, err);
    if (!rc) rc = sdb_image_alloc(&mk, size, size, 1, err);
    if (!rc) {
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                for (int c = 0; c < 3; c++) im.px[((size_t)y * size + x) * 3 + c] = (uint8_t)((x * 3 + y * (c + 1)) & 255);
                mk.px[(size_t)y * size + x] = y >= size / 2 ? 255 : 0;
            }
        snprintf(ip, n, "%s/image.png", dir);
        snprintf(mp, n, "%s/mask.png", dir);
        rc = sdb_png_write(ip, &im, NULL, NULL, 0, err);
        if (!rc) rc = sdb_png_write(mp, &mk, NULL, NULL, 0, err);
    }
    sdb_image_free(&im);
    sdb_image_free(&mk);
    return rc;
}

/* One `sdbatch generate` child: its wall seconds (fork to exit) and peak RSS (MiB); 0 when it
 * exited 0 and left the PNG, else -1 (the child's own error is on stderr). */
static int run_child(const char *const *argv, const char *png, double *secs, double *rss_mib)
{
    unlink(png);
    double t0 = sdb_now_mono();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(2, 1); /* stdout is the bench's (its --json object) */
        if (!getenv("SDB_LOG")) setenv("SDB_LOG", "warn", 1);
        execv("/proc/self/exe", (char *const *)argv);
        _exit(127);
    }
    int status;
    struct rusage ru;
    pid_t w;
    do w = wait4(pid, &status, 0, &ru);
    while (w < 0 && errno == EINTR);
    *secs = sdb_now_mono() - t0;
    if (w < 0) return -1;
    *rss_mib = (double)ru.ru_maxrss / 1024.0;
    struct stat st;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && stat(png, &st) == 0 && st.st_size > 0 ? 0 : -1;
}

int bench_job(const bench_job_opts *o)
{
    sdb_err err = {0};
    sdb_sched_kind kind;
    if (sdb_sched_kind_from_name(o->scheduler, &kind, &err)) return cli_usage_error("bench", "%s", err.msg);
    const int threads = sdb_threads_get();
    char dir[4096];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/sdb-bench-job-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        sdb_fail(&err, SDB_EIO, "cannot make a temporary folder under %s", tmp && *tmp ? tmp : "/tmp");
        return cli_error("bench", &err);
    }
    char ip[4200], mp[4200], op[4200];
    snprintf(op, sizeof op, "%s/out.png", dir);
    ip[0] = mp[0] = 0;
    int rc = write_inputs(dir, o->size, ip, mp, sizeof ip, &err);

    char size_s[16], steps_s[16], threads_s[16];
    snprintf(size_s, sizeof size_s, "%d", o->size);
    snprintf(steps_s, sizeof steps_s, "%d", o->steps);
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    const char *argv[40];
    int k = 0;
    argv[k++] = "sdbatch"; argv[k++] = "generate"; argv[k++] = "--model"; argv[k++] = o->model;
    if (o->vae) { argv[k++] = "--vae"; argv[k++] = o->vae; }
    argv[k++] = "--image"; argv[k++] = ip; argv[k++] = "--mask"; argv[k++] = mp;
    argv[k++] = "--prompt"; argv[k++] = "a photograph of an astronaut riding a horse on the moon, detailed, 8k";
    argv[k++] = "--seed"; argv[k++] = "1";
    argv[k++] = "--width"; argv[k++] = size_s; argv[k++] = "--height"; argv[k++] = size_s;
    argv[k++] = "--steps"; argv[k++] = steps_s; argv[k++] = "--scheduler"; argv[k++] = o->scheduler;
    argv[k++] = "--threads"; argv[k++] = threads_s;
    argv[k++] = "--weights"; argv[k++] = o->weights_f16 ? "f16" : "f32";
    argv[k++] = "--conv"; argv[k++] = sdb_conv_algo_name(o->conv);
    char keep_s[24];
    snprintf(keep_s, sizeof keep_s, "%lld", o->keep_filters_mib);
    if (o->keep_filters_mib) { argv[k++] = "--keep-filters"; argv[k++] = keep_s; }
    argv[k++] = "--output"; argv[k++] = op; argv[k++] = "-q";
    argv[k] = NULL;

    double t[64], rss = 0;
    int done = 0;
    for (int rep = 0; rep < o->reps && !rc; rep++) {
        double r = 0;
        if (run_child(argv, op, &t[rep], &r)) {
            rc = sdb_fail(&err, SDB_EIO, "bench --job: `sdbatch generate` (run %d of %d) failed after %.1f s; "
                          "its error is above", rep + 1, o->reps, t[rep]);
            break;
        }
        if (r > rss) rss = r;
        done++;
    }
    unlink(ip); unlink(mp); unlink(op);
    rmdir(dir);
    if (rc) return cli_error("bench", &err);
    /* the sgemm rate of this machine at this thread count, after the jobs: measured before them,
     * this process's idle OpenMP threads would spin while the first child runs */
    const double sgemm = sdb_bench_sgemm_gflops(o->gemm_n, 3);

    double sorted[64];
    memcpy(sorted, t, sizeof(double) * done);
    const double med = sdb_bench_median(sorted, done); /* sorts: min and max are its ends */
    const double iph = med > 0 ? 3600.0 / med : 0;
    if (o->json) {
        json_t *j = json_object(), *all = json_array();
        for (int i = 0; i < done; i++) json_array_append_new(all, json_real(t[i]));
        json_object_set_new(j, "mode", json_string("job"));
        json_object_set_new(j, "size", json_integer(o->size));
        json_object_set_new(j, "steps", json_integer(o->steps));
        json_object_set_new(j, "scheduler", json_string(o->scheduler));
        json_object_set_new(j, "threads", json_integer(threads));
        json_object_set_new(j, "reps", json_integer(done));
        json_object_set_new(j, "weights", json_string(o->weights_f16 ? "f16" : "f32"));
        json_object_set_new(j, "conv", json_string(sdb_conv_algo_name(o->conv)));
        json_object_set_new(j, "sgemm_gflops", json_real(sgemm));
        json_object_set_new(j, "job_s", json_real(med));
        json_object_set_new(j, "job_min_s", json_real(sorted[0]));
        json_object_set_new(j, "job_max_s", json_real(sorted[done - 1]));
        json_object_set_new(j, "job_runs_s", all);
        json_object_set_new(j, "images_per_hour", json_real(iph));
        json_object_set_new(j, "peak_rss_mib", json_real(rss));
        int dump_rc = json_dumpf(j, stdout, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8)) == 0 ? 0 : 1;
        printf("\n");
        json_decref(j);
        return dump_rc;
    }
    printf("sdbatch bench --job: %dx%d inpainting, %d steps of %s, %d threads, %s weights, --conv %s, "
           "median of %d\n", o->size, o->size, o->steps, o->scheduler, threads, o->weights_f16 ? "f16" : "f32",
           sdb_conv_algo_name(o->conv), done);
    printf("  OpenBLAS sgemm %4d^2            %8.1f GFLOP/s (after the jobs)\n", o->gemm_n, sgemm);
    printf("  process start to PNG written    %8.2f s (min %.2f, max %.2f)\n", med, sorted[0], sorted[done - 1]);
    printf("  images/hour                     %8.1f (this machine, %d threads, one process)\n", iph, threads);
    printf("  peak RSS of `sdbatch generate`  %8.0f MiB\n", rss);
    return 0;
}
