/*
 * harness.h — the small test harness every tests/test_*.c uses.
 *
 * RUN(fn) runs one test function; CHECK/CHECKF record failures with file:line and keep going;
 * sdb_t_done() prints "N passed, M failed" and returns the exit code. Test data (the team's tiny
 * models and reference tensors) come from $SDB_TEST_DATA or ../shared beside the source tree; when
 * it is missing the test FAILS (it never skips). Plus the helpers several tests share (temp folders,
 * running the built binary, comparing floats, an F16 copy of a weights file).
 */
#ifndef SDB_TEST_HARNESS_H
#define SDB_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int sdb_t_checks_failed; /* failures inside the current test */

#define CHECK(cond) do { if (!(cond)) { sdb_t_checks_failed++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECKF(cond, ...) do { if (!(cond)) { sdb_t_checks_failed++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
/* Checks an sdb_err-returning call succeeded; prints the message when not. */
#define CHECK_OK(call, errp) do { int rc_ = (call); if (rc_ != 0) { sdb_t_checks_failed++; \
    fprintf(stderr, "%s:%d: %s failed (%d): %s\n", __FILE__, __LINE__, #call, rc_, (errp)->msg); } } while (0)

#define RUN(fn) sdb_t_run(#fn, fn)
void sdb_t_run(const char *name, void (*fn)(void));
int sdb_t_done(void);

/* Root of the test data (shared/), or NULL after recording a failure when it is missing. */
const char *sdb_t_data(void);
/* Path under the test data root; the returned string stays valid (ring of buffers). */
const char *sdb_t_path(const char *rel);
/* A fresh empty folder under $TMPDIR (removed by the OS, not by the test). */
const char *sdb_t_tmpdir(void);
/* Path of the sdbatch binary built with the tests. */
const char *sdb_t_binary(void);

/* Runs the built sdbatch with `args` (shell words) on one thread, stderr merged into stdout;
 * the output (truncated to n-1 bytes) goes to out. Returns the exit code, or -1. */
int sdb_t_sdbatch(const char *args, char *out, size_t n);
/* Runs the shell command cmd; its stdout (truncated to n-1 bytes) goes to out. Returns the exit
 * code, or -1. */
int sdb_t_shell(const char *cmd, char *out, size_t n);

/* Writes to dst a copy of the safetensors file src (F32 tensors) with every value rounded to F16:
 * stored as F16 when as_f16, else as F32 holding the rounded values; names and shapes are kept.
 * Returns 0, or records the failure and returns -1. */
int sdb_t_write_f16_copy(const char *src, const char *dst, int as_f16);

/* n floats uniform in [-scale, scale) from the xorshift64 state *rng (advanced), malloc'd (at
 * least one float even for n = 0); NULL only when out of memory. */
float *sdb_t_rand_floats(uint64_t *rng, size_t n, float scale);

/* A full disk, simulated: limits this process's file sizes to `bytes` (RLIMIT_FSIZE; SIGXFSZ
 * ignored, so writes past it fail with EFBIG); bytes 0 restores the limit and the signal as they
 * were. Returns 0, or -1 when the limit cannot be set. */
int sdb_t_limit_file_size(unsigned long bytes);

/* Compares n floats with the reference: passes when max|a-ref| <= atol + rtol * max|ref|.
 * Prints max abs/rel error either way (with `what`); returns 1 on pass. */
int sdb_t_close(const float *a, const float *ref, size_t n, double atol, double rtol, const char *what);

#endif
