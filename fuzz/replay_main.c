/*
 * replay_main.c — the main() of the fuzz harnesses' replay executables (fuzz_<name>_replay).
 *
 * Each harness in fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput (and may define
 * LLVMFuzzerInitialize). Built with clang and -fsanitize=fuzzer it is a libFuzzer target (see
 * tools/fuzz.sh); linked with this file instead, by any compiler, it feeds every file named on the
 * command line (folders: every file inside, sorted) to the harness once, so the gcc sanitizer build
 * of CI replays the committed corpora (fuzz/corpus/<name>/) as ordinary ctest tests. A crash, a
 * sanitizer report or a harness abort fails the test; so does an empty corpus (nothing replayed).
 * The slowest input and its time are printed (fuzzing counts an input over 1 s as a hang).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static double slowest_s;
static char slowest[4096];

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "replay: cannot open %s\n", path); return -1; }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) { uint8_t *nb = realloc(buf, cap *= 2); if (!nb) { free(buf); buf = NULL; } else buf = nb; }
    }
    fclose(f);
    if (!buf) { fprintf(stderr, "replay: out of memory reading %s\n", path); return -1; }
    /* an exact-size copy, so a read past the input is caught by ASan as it is under libFuzzer */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) { free(buf); return -1; }
    memcpy(exact, buf, n);
    free(buf);
    double t0 = now();
    LLVMFuzzerTestOneInput(exact, n);
    double dt = now() - t0;
    if (dt > slowest_s) { slowest_s = dt; snprintf(slowest, sizeof slowest, "%s", path); }
    free(exact);
    return 0;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    long replayed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) { fprintf(stderr, "replay: %s does not exist\n", argv[i]); return 1; }
        if (!S_ISDIR(sb.st_mode)) {
            if (replay_file(argv[i])) return 1;
            replayed++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) { fprintf(stderr, "replay: cannot list %s\n", argv[i]); return 1; }
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            if (n == cap) { cap = cap ? 2 * cap : 64; names = realloc(names, cap * sizeof *names); if (!names) return 1; }
            names[n] = malloc(strlen(argv[i]) + strlen(e->d_name) + 2);
            if (!names[n]) return 1;
            sprintf(names[n], "%s/%s", argv[i], e->d_name);
            n++;
        }
        closedir(d);
        qsort(names, n, sizeof *names, cmp_name);
        for (size_t k = 0; k < n; k++) {
            if (replay_file(names[k])) return 1;
            replayed++;
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %ld inputs; slowest %.3f s: %s\n", replayed, slowest_s, slowest);
    if (replayed == 0) { fprintf(stderr, "replay: no inputs (is the corpus folder empty?)\n"); return 1; }
    return 0;
}
