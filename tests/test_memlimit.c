/*
 * test_memlimit.c — the memory cgroups' room (memlimit.h) read from cgroup trees built here: v2 and
 * v1 files as the kernel writes them, limits at two levels (the tightest binds), inactive page
 * cache left out of "in use", no limit anywhere, a mount showing only part of its hierarchy (a
 * container's), an escaped mount point, a hybrid system (v1 memory beside an empty v2), unreadable
 * files. The expected rooms are worked out by hand in each case. The real kernel's cgroups are
 * tested in test_memory_limit_slow.c (a job refused inside a cgroup with a limit).
 */
#include "harness.h"
#include "sdb/memlimit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

/* Writes the two /proc files and reads the room. */
static sdb_cgroup_room room_of(const char *cgroup, const char *mountinfo)
{
    put("proc/cgroup", cgroup);
    put("proc/mountinfo", mountinfo);
    char c[700], m[700];
    snprintf(c, sizeof c, "%s/proc/cgroup", base);
    snprintf(m, sizeof m, "%s/proc/mountinfo", base);
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

int main(void)
{
    RUN(test_v2_levels);
    RUN(test_v1_and_hybrid);
    RUN(test_limit_here);
    return sdb_t_done();
}
