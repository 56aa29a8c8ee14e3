/*
 * fuzz_util.h — small helpers the fuzz harnesses share: FUZZ_CHECK, a private temporary folder (made once per
 * process, in memory where /dev/shm exists, removed at exit) for the harnesses whose code under
 * test reads files (the manifest's globs, the state database), and writing an input there.
 */
#ifndef SDB_FUZZ_UTIL_H
#define SDB_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* An invariant of the code under test: checked in every build (NDEBUG or not), abort() on failure
 * so that libFuzzer and the replay tests report it as a crash with the input. */
#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); abort(); } \
    } while (0)

static char fuzz_tmp_dir[512];

__attribute__((unused)) static void fuzz_tmp_cleanup(void)
{
    if (!fuzz_tmp_dir[0]) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fuzz_tmp_dir);
}

/* The process's temporary folder (created on the first call): in $SDB_FUZZ_TMPDIR, else in
 * /dev/shm (memory: a harness writes a file per input, which must cost no disk I/O), else in
 * $TMPDIR or /tmp. Aborts when it cannot be made: a harness without its folder would test nothing. */
__attribute__((unused)) static const char *fuzz_tmp(void)
{
    if (fuzz_tmp_dir[0]) return fuzz_tmp_dir;
    const char *t = getenv("SDB_FUZZ_TMPDIR");
    if (!t || !t[0]) t = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(fuzz_tmp_dir, sizeof fuzz_tmp_dir, "%s/sdb-fuzz-XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(fuzz_tmp_dir)) { perror("fuzz: mkdtemp"); abort(); }
    atexit(fuzz_tmp_cleanup);
    return fuzz_tmp_dir;
}

/* Writes buf to <tmp>/name; returns the path (static buffer) or aborts. */
__attribute__((unused)) static const char *fuzz_write_tmp(const char *name, const void *buf, size_t n)
{
    static char path[700];
    snprintf(path, sizeof path, "%s/%s", fuzz_tmp(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(buf, 1, n, f) != n) || fclose(f) != 0) { perror(path); abort(); }
    return path;
}

/* A copy of a PNG with every chunk's CRC recomputed (the input itself when it is not a PNG), so
 * mutations inside chunks reach the decoder instead of stopping at libpng's CRC check; the
 * library is unchanged and CI replays the same bytes the fuzzer saw. Free the result with free()
 * when it differs from data. */
__attribute__((unused)) static uint8_t *fuzz_png_fix_crcs(const uint8_t *data, size_t size)
{
    static const uint8_t magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size < 8 || memcmp(data, magic, 8) != 0) return (uint8_t *)data;
    uint8_t *c = malloc(size);
    if (!c) return (uint8_t *)data;
    memcpy(c, data, size);
    size_t off = 8;
    while (off + 12 <= size) {
        uint32_t len = (uint32_t)c[off] << 24 | (uint32_t)c[off + 1] << 16 | (uint32_t)c[off + 2] << 8 | c[off + 3];
        if (len > size - off - 12) break;
        uint32_t crc = (uint32_t)crc32(0L, c + off + 4, len + 4);
        uint8_t *p = c + off + 8 + len;
        p[0] = (uint8_t)(crc >> 24); p[1] = (uint8_t)(crc >> 16); p[2] = (uint8_t)(crc >> 8); p[3] = (uint8_t)crc;
        off += 12 + (size_t)len;
    }
    return c;
}

/* Runs fn on the input with its PNG chunk CRCs recomputed (fuzz_png_fix_crcs). */
__attribute__((unused)) static int fuzz_png_run(const uint8_t *data, size_t size,
                                                int (*fn)(const uint8_t *, size_t))
{
    uint8_t *in = fuzz_png_fix_crcs(data, size);
    int rc = fn(in, size);
    if (in != data) free(in);
    return rc;
}

#endif
