/*
 * main.c — the sdbatch command dispatcher, and the helpers of cli.h the subcommands share (logger,
 * error and usage messages, option values, stop signals). Everything real lives in libsdb; each
 * subcommand's front end is in cmd_<name>.c.
 */
#include "cli.h"
#include "sdb/cpu.h"
#include "sdb/model_find.h"
#include "sdb/ops/winograd.h"
#include "sdb/pipeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <unistd.h>

typedef struct { const char *name; int (*fn)(int, char **); const char *summary; } command;

static const command commands[] = {
#define SDB_COMMAND(n, summary) {#n, cmd_##n, summary},
#include "commands.h"
#undef SDB_COMMAND
};

static void usage(FILE *f)
{
    fprintf(f, "usage: sdbatch COMMAND [OPTIONS]\n\n"
               "Stable Diffusion 1.x inpainting for headless CPU servers.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'sdbatch COMMAND --help' describes a command's options.\n"
               "sdbatch --version prints the version.\n");
}

sdb_log cli_logger(void)
{
    sdb_log log = {sdb_log_sink_stderr, NULL, SDB_LOG_INFO};
    const char *lv = getenv("SDB_LOG");
    if (lv) {
        if (!strcmp(lv, "debug")) log.level = SDB_LOG_DEBUG;
        else if (!strcmp(lv, "warn")) log.level = SDB_LOG_WARN;
        else if (!strcmp(lv, "error")) log.level = SDB_LOG_ERROR;
    }
    return log;
}

int cli_error(const char *cmd, const sdb_err *err)
{
    fprintf(stderr, "sdbatch %s: error: %s\n", cmd, err->msg[0] ? err->msg : sdb_err_name(err->code));
    return err->code == SDB_EINVAL ? EXIT_USAGE : EXIT_FAILURE_RUN;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sdbatch %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'sdbatch %s --help')\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cli_parse_keep_filters(const char *cmd, const char *s, size_t *bytes)
{
    long long mib;
    if (cli_parse_int(cmd, "--keep-filters", s, 0, 1LL << 30, &mib)) return -1;
    *bytes = (size_t)mib << 20;
    return 0;
}

int cli_parse_weights(const char *cmd, const char *s, int *weights_f16)
{
    int v = sdb_weights_mode_parse(s);
    if (v < 0) {
        cli_usage_error(cmd, "--weights takes f32 or f16, got '%s'", s);
        return -1;
    }
    *weights_f16 = v;
    return 0;
}

int cli_model_opts(const char *model, const char *vae, sdb_model_opts *mo, char **model_path, char **vae_path,
                   sdb_err *err)
{
    *model_path = *vae_path = NULL;
    mo->models_path = getenv("SDB_MODELS");
    mo->tokenizer_env = getenv("SDB_TOKENIZER");
    int rc = sdb_model_resolve(model, NULL, mo->models_path, "model", model_path, err);
    if (!rc && vae) rc = sdb_model_resolve(vae, NULL, mo->models_path, "vae", vae_path, err);
    mo->vae_path = *vae_path;
    return rc;
}

int cli_parse_conv(const char *cmd, const char *s, int *conv)
{
    int v = sdb_conv_algo_of(s);
    if (v < 0) {
        cli_usage_error(cmd, "--conv takes auto, direct or winograd, got '%s'", s);
        return -1;
    }
    *conv = v;
    return 0;
}

int cli_parse_int(const char *cmd, const char *opt, const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        cli_usage_error(cmd, "%s expects a whole number in [%lld, %lld], got '%s'", opt, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_double(const char *cmd, const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) {
        cli_usage_error(cmd, "%s expects a number, got '%s'", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static volatile sig_atomic_t stop_signal; /* the one stop flag of this process (CLI only) */

static void on_stop_signal(int sig)
{
    stop_signal = sig;
    signal(sig, SIG_DFL);   /* a second one ends the process at once (what it did is resumable) */
}

void cli_handle_signal(int sig, void (*handler)(int), int sa_flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = sa_flags;
    sa.sa_handler = handler;
    sigaction(sig, &sa, NULL);
}

volatile sig_atomic_t *cli_catch_stop_signals(const int *sigs, int sa_flags)
{
    for (int i = 0; sigs[i]; i++) cli_handle_signal(sigs[i], on_stop_signal, sa_flags);
    return &stop_signal;
}

/* The BLAS-core guard (sdb/cpu.h): before any BLAS call, when OpenBLAS picked a weaker core than
 * the best it ships for this CPU, re-execute this program once (same pid, argv and environment)
 * with OPENBLAS_CORETYPE set; the re-executed process logs the one line "had X, now Y".
 * SDB_BLAS_GUARD=0 turns it off; an explicit OPENBLAS_CORETYPE is obeyed. */
static void blas_guard(char **argv)
{
    sdb_log log = cli_logger();
    sdb_blas_guard_in in;
    sdb_blas_guard_inputs(&in);
    sdb_blas_guard_plan plan;
    sdb_blas_guard_decide(&in, &plan);
    if (plan.action == SDB_BLAS_GUARD_KEEP) {
        sdb_logf(&log, SDB_LOG_DEBUG, "BLAS core %s on a CPU with %s: %s", in.reported,
                 sdb_cpu_level_name(&in.cpu), plan.why);
        return;
    }
    if (plan.action == SDB_BLAS_GUARD_REEXECUTED) {
        const char *forced = in.env_coretype ? in.env_coretype : "?";
        if (!strcasecmp(forced, in.reported))
            sdb_logf(&log, SDB_LOG_INFO, "OpenBLAS had picked core %s for this %s CPU; now core %s "
                     "(re-executed with OPENBLAS_CORETYPE=%s; SDB_BLAS_GUARD=0 turns this off)",
                     in.env_reexec, sdb_cpu_level_name(&in.cpu), in.reported, forced);
        else
            sdb_logf(&log, SDB_LOG_WARN, "OpenBLAS had picked core %s for this %s CPU; re-executed with "
                     "OPENBLAS_CORETYPE=%s, it now runs core %s", in.env_reexec, sdb_cpu_level_name(&in.cpu),
                     forced, in.reported);
        unsetenv("SDB_BLAS_GUARD_REEXEC");   /* children of this process judge for themselves */
        return;
    }
    char *old = in.env_coretype ? strdup(in.env_coretype) : NULL;
    setenv("OPENBLAS_CORETYPE", plan.force, 1);
    setenv("SDB_BLAS_GUARD_REEXEC", in.reported, 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    sdb_logf(&log, SDB_LOG_WARN, "OpenBLAS picked core %s for this %s CPU; re-executing with OPENBLAS_CORETYPE=%s "
             "failed (%s): staying on %s", in.reported, sdb_cpu_level_name(&in.cpu), plan.force, strerror(errno),
             in.reported);
    if (old) setenv("OPENBLAS_CORETYPE", old, 1);
    else unsetenv("OPENBLAS_CORETYPE");
    unsetenv("SDB_BLAS_GUARD_REEXEC");
    free(old);
}

int main(int argc, char **argv)
{
    blas_guard(argv);
    if (argc < 2) { usage(stderr); return EXIT_USAGE; }
    const char *c = argv[1];
    if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) { usage(stdout); return 0; }
    if (!strcmp(c, "--version") || !strcmp(c, "-V")) c = "version";
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(c, commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sdbatch: unknown command '%s'\n\n", c);
    usage(stderr);
    return EXIT_USAGE;
}
