/*
 * test_cgroup.c — the cgroup limits a job runs under (cgroup.h, memlimit.h), read from cgroup trees
 * built here: v2 and v1 files as the kernel writes them, limits at two levels (the tightest binds),
 * inactive page cache left out of "in use", no limit anywhere, a mount showing only part of its
 * hierarchy (a container's), an escaped mount point, a hybrid system (v1 beside an empty v2),
 * unreadable files; the CPU quota (v2 cpu.max, v1 cfs quota / period) the same way. The expected
 * values are worked out by hand in each case. Then the real kernel's: `sdbatch version` run inside
 * a CPU cgroup made here with a quota of one CPU defaults to one thread (skipped where no cgroup
 * can be made); test_memory_limit_slow.c refuses a job inside a real memory cgroup.
 */
#include "harness.h"
#include "cgroup_util.h"
#include "sdb/cgroup.h"
#include "sdb/memlimit.h"
#include "sdb/threads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char base[600];

static void put(const char *rel, const char *text)
{
    char p[900];
    mkdir(base, 0755);
    snprintf(p, sizeof p, "%s/%s", base, rel);
    for (char *s = p + strlen(base) + 1; (s = strchr(s, '/')); s++) { /* parent folders */
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    FILE *f = fopen(p, "w");
    CHECKF(f != NULL, "%s", p);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* Writes the two /proc files under base; their paths in c and m. */
static void proc_files(const char *cgroup, const char *mountinfo, char *c, char *m, size_t n)
{
    put("proc/cgroup", cgroup);
    put("proc/mountinfo", mountinfo);
    snprintf(c, n, "%s/proc/cgroup", base);
    snprintf(m, n, "%s/proc/mountinfo", base);
}

/* Writes the two /proc files and reads the room. */
static sdb_cgroup_room room_of(const char *cgroup, const char *mountinfo)
{
    char c[700], m[700];
    proc_files(cgroup, mountinfo, c, m, sizeof c);
    sdb_cgroup_room r;
    CHECK(sdb_cgroup_room_at(c, m, &r) == 0);
    return r;
}

static int near(double a, double b) { return fabs(a - b) < 1e-6; }

/* The room, limit and in-use MiB read (line: the caller's, for the message). */
static void expect(sdb_cgroup_room r, double room, double limit, double used, int line)
{
    CHECKF(near(r.room_mib, room) && near(r.limit_mib, limit) && near(r.used_mib, used),
           "line %d: room %.3f limit %.3f used %.3f, want %.0f %.0f %.0f", line, r.room_mib, r.limit_mib, r.used_mib,
           room, limit, used);
}

static void test_v2_levels(void)
{
    snprintf(base, sizeof base, "%s/v2", sdb_t_tmpdir());
    char mi[1200];
    snprintf(mi, sizeof mi,
             "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
             "30 22 0:26 / %s/sys/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
             base);
    /* the job's cgroup: no limit; its parent (the Slurm job): 1 GiB, 500 MiB in use of which
     * 100 MiB inactive page cache: room 1024 - 400 = 624 MiB */
    put("sys/cgroup/job/step/memory.max", "max\n");
    put("sys/cgroup/job/step/memory.current", "314572800\n");
    put("sys/cgroup/job/step/memory.stat", "anon 209715200\nfile 104857600\ninactive_file 0\n");
    put("sys/cgroup/job/memory.max", "1073741824\n");
    put("sys/cgroup/job/memory.current", "524288000\n");
    put("sys/cgroup/job/memory.stat", "anon 400000000\nactive_file 20000000\ninactive_file 104857600\n");
    sdb_cgroup_room r = room_of("0::/job/step\n", mi);
    expect(r, 624, 1024, 400, __LINE__);
    char want[800];
    snprintf(want, sizeof want, "%s/sys/cgroup/job", base);
    CHECKF(!strcmp(r.path, want), "path %s", r.path);
    /* a tighter limit on the step itself: 600 MiB with 300 in use -> room 300 there */
    put("sys/cgroup/job/step/memory.max", "629145600\n");
    r = room_of("0::/job/step\n", mi);
    expect(r, 300, 600, 300, __LINE__);
    snprintf(want, sizeof want, "%s/sys/cgroup/job/step", base);
    CHECKF(!strcmp(r.path, want), "path %s", r.path);
    /* over the limit (usage above it: reclaim pending) is no room, not a negative one */
    put("sys/cgroup/job/step/memory.current", "700000000\n");
    r = room_of("0::/job/step\n", mi);
    CHECKF(r.room_mib == 0, "room %.3f", r.room_mib);
    /* no limit anywhere */
    put("sys/cgroup/job/step/memory.max", "max\n");
    put("sys/cgroup/job/memory.max", "max\n");
    r = room_of("0::/job/step\n", mi);
    CHECKF(r.room_mib == -1 && r.path[0] == 0, "room %.3f at %s", r.room_mib, r.path);
    /* no cgroup2 mount listed, or no such /proc files: nothing can be said */
    r = room_of("0::/job/step\n", "22 1 0:21 / /proc rw - proc proc rw\n");
    CHECK(r.room_mib == -1);
    sdb_cgroup_room z;
    CHECK(sdb_cgroup_room_at("/nonexistent/cgroup", "/nonexistent/mountinfo", &z) == 0 && z.room_mib == -1);
}

static void test_v1_and_hybrid(void)
{
    snprintf(base, sizeof base, "%s/v1", sdb_t_tmpdir());
    char mi[2000];
    /* hybrid: an empty cgroup2 (no memory files) beside v1's memory hierarchy, whose mount point
     * has a space in it (mountinfo writes \040) */
    snprintf(mi, sizeof mi,
             "25 1 0:22 / %s/sys/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw\n"
             "26 1 0:23 / %s/sys/cpu rw shared:6 - cgroup cgroup rw,cpu,cpuacct\n"
             "27 1 0:24 / %s/sys/mem\\040ory rw shared:7 - cgroup cgroup rw,memory\n",
             base, base, base);
    /* v1: "no limit" is 9223372036854771712; the slurm job's level has 2 GiB, 1 GiB in use,
     * total_inactive_file (hierarchical) 512 MiB, inactive_file (own) 0: room 2048 - 512 = 1536 */
    put("sys/mem ory/slurm/uid_0/job_7/step_0/memory.limit_in_bytes", "9223372036854771712\n");
    put("sys/mem ory/slurm/uid_0/job_7/step_0/memory.usage_in_bytes", "536870912\n");
    put("sys/mem ory/slurm/uid_0/job_7/memory.limit_in_bytes", "2147483648\n");
    put("sys/mem ory/slurm/uid_0/job_7/memory.usage_in_bytes", "1073741824\n");
    put("sys/mem ory/slurm/uid_0/job_7/memory.stat", "cache 600000000\ninactive_file 0\ntotal_inactive_file 536870912\n");
    put("sys/mem ory/slurm/memory.limit_in_bytes", "9223372036854771712\n");
    sdb_cgroup_room r = room_of("12:pids:/slurm\n4:memory:/slurm/uid_0/job_7/step_0\n3:cpu,cpuacct:/\n0::/\n", mi);
    expect(r, 1536, 2048, 512, __LINE__);
    CHECKF(strstr(r.path, "/sys/mem ory/slurm/uid_0/job_7") && !strstr(r.path, "step_0"), "path %s", r.path);
    /* memory listed with other controllers in one hierarchy ("cpu,memory") counts too; v1 without
     * total_inactive_file falls back to inactive_file */
    put("sys/mem ory/slurm/uid_0/job_7/memory.stat", "cache 600000000\ninactive_file 268435456\n");
    r = room_of("4:cpuset,memory:/slurm/uid_0/job_7/step_0\n", mi);
    expect(r, 1280, 2048, 768, __LINE__);
    /* a container's mount shows only its own part of the hierarchy (root /slurm/uid_0): the path
     * in /proc/self/cgroup is cut to it */
    snprintf(mi, sizeof mi, "40 1 0:30 /slurm/uid_0 %s/ctr rw - cgroup cgroup rw,memory\n", base);
    put("ctr/job_7/memory.limit_in_bytes", "1073741824\n");
    put("ctr/job_7/memory.usage_in_bytes", "104857600\n");
    r = room_of("4:memory:/slurm/uid_0/job_7\n", mi);
    expect(r, 924, 1024, 100, __LINE__);
    CHECKF(strstr(r.path, "/ctr/job_7") != NULL, "path %s", r.path);
}

/* sdb_mem_limit_mib on this machine: never above MemAvailable + rss - margin, and the cgroup's
 * reading consistent with sdb_cgroup_room_now. */
static void test_limit_here(void)
{
    sdb_cgroup_room cg, now;
    int by = -1;
    const double avail = sdb_mem_available_mib(), lim = sdb_mem_limit_mib(100, 512, &cg, &by);
    sdb_cgroup_room_now(&now);
    CHECK(avail > 0);
    CHECKF(lim <= avail + 100 - 512 + 1, "limit %.1f, MemAvailable %.1f", lim, avail);
    CHECK(by == 0 || by == 1);
    CHECK((cg.room_mib < 0) == (now.room_mib < 0));
    if (by) CHECKF(near(lim, cg.room_mib + 100 - 512), "limit %.1f, cgroup room %.1f", lim, cg.room_mib);
    fprintf(stderr, "    here: MemAvailable %.0f MiB, cgroup room %.0f MiB%s%s\n", avail, cg.room_mib, cg.path[0] ? " at " : "",
            cg.path);
}

/* The quota from trees like the memory ones: v2 cpu.max at two levels, v1 cfs quota / period with
 * cpu among other controllers, no quota (v2 "max", v1 -1). */
static void test_cpu_quota(void)
{
    snprintf(base, sizeof base, "%s/cpu2", sdb_t_tmpdir());
    char mi[1200], c[700], m[700];
    snprintf(mi, sizeof mi, "30 22 0:26 / %s/sys/cgroup rw shared:4 - cgroup2 cgroup2 rw\n", base);
    proc_files("0::/svc/inner\n", mi, c, m, sizeof c);
    put("sys/cgroup/svc/inner/cpu.max", "max 100000\n");
    put("sys/cgroup/svc/cpu.max", "150000 100000\n");
    CHECKF(near(sdb_cgroup_cpus_at(c, m), 1.5), "%.3f", sdb_cgroup_cpus_at(c, m));
    put("sys/cgroup/svc/inner/cpu.max", "50000 50000\n"); /* 1 CPU, tighter */
    CHECKF(near(sdb_cgroup_cpus_at(c, m), 1.0), "%.3f", sdb_cgroup_cpus_at(c, m));
    put("sys/cgroup/svc/inner/cpu.max", "max 100000\n");
    put("sys/cgroup/svc/cpu.max", "max 100000\n");
    CHECK(sdb_cgroup_cpus_at(c, m) == -1);

    snprintf(base, sizeof base, "%s/cpu1", sdb_t_tmpdir());
    snprintf(mi, sizeof mi, "26 1 0:23 / %s/sys/cpu rw shared:6 - cgroup cgroup rw,cpu,cpuacct\n"
             "27 1 0:24 / %s/sys/cpuset rw shared:7 - cgroup cgroup rw,cpuset\n", base, base);
    proc_files("5:cpuset:/other\n3:cpu,cpuacct:/docker/abc\n", mi, c, m, sizeof c);
    put("sys/cpu/docker/abc/cpu.cfs_quota_us", "250000\n");
    put("sys/cpu/docker/abc/cpu.cfs_period_us", "100000\n");
    put("sys/cpu/docker/cpu.cfs_quota_us", "-1\n");
    put("sys/cpu/docker/cpu.cfs_period_us", "100000\n");
    put("sys/cpuset/other/cpu.cfs_quota_us", "100000\n"); /* not the cpu hierarchy: ignored */
    CHECKF(near(sdb_cgroup_cpus_at(c, m), 2.5), "%.3f", sdb_cgroup_cpus_at(c, m));
    put("sys/cpu/docker/abc/cpu.cfs_quota_us", "-1\n");
    CHECK(sdb_cgroup_cpus_at(c, m) == -1);
}

/* A child CPU cgroup of this process's own with a quota of one CPU (cgroup_util.h): v1 cfs period
 * and quota, or v2 cpu.max. Its folder in dir; 0, or -1 when the machine cannot. */
static int make_cpu_cgroup(char *dir, size_t n)
{
    static const char *const files[] = {"cpu.cfs_period_us", "cpu.cfs_quota_us"}, *const vals[] = {"100000\n", "100000\n"};
    const char *mount = cg_is_dir("/sys/fs/cgroup/cpu") ? "cpu" : "cpu,cpuacct";
    return cg_make_child("cpu", mount, files, vals, 2, "cpu.max", "100000 100000\n", dir, n);
}

/* `sdbatch version` inside a real cgroup with a quota of one CPU: one thread by default. */
static void test_cpu_quota_real(void)
{
    char cg[700];
    if (make_cpu_cgroup(cg, sizeof cg)) {
        fprintf(stderr, "    no CPU cgroup can be made here (not root, or no cpu controller): skipped\n");
        return;
    }
    char out[700];
    snprintf(out, sizeof out, "%s/version.out", sdb_t_tmpdir());
    char *const argv[] = {(char *)sdb_t_binary(), "version", NULL};
    pid_t pid = cg_spawn(cg, NULL, out, NULL, argv);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {}
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    char text[4096] = "";
    FILE *f = fopen(out, "r");
    if (f) { size_t k = fread(text, 1, sizeof text - 1, f); text[k] = 0; fclose(f); }
    const char *line = strstr(text, "threads by default: ");
    CHECKF(line && !strncmp(line, "threads by default: 1 (", 23) && strstr(line, "cgroup CPU quota: 1.00 CPUs"), "%s", text);
    if (line) fprintf(stderr, "    in %s: %.*s\n", cg, (int)strcspn(line, "\n"), line);
    CHECKF(rmdir(cg) == 0, "rmdir %s", cg);
}

int main(void)
{
    RUN(test_v2_levels);
    RUN(test_v1_and_hybrid);
    RUN(test_limit_here);
    RUN(test_cpu_quota);
    RUN(test_cpu_quota_real);
    return sdb_t_done();
}
