/*
 * cli.h — shared pieces of the sdbatch command-line front end (not part of libsdb).
 */
#ifndef SDB_CLI_H
#define SDB_CLI_H

#include "sdb/error.h"
#include "sdb/log.h"

#include <signal.h>

#define SDB_COMMAND(name, summary) int cmd_##name(int argc, char **argv);
#include "commands.h"
#undef SDB_COMMAND

/* Exit codes, documented in the README. */
enum { EXIT_OK = 0, EXIT_FAILURE_RUN = 1, EXIT_USAGE = 2, EXIT_JOBS_FAILED = 3,
       EXIT_SIGINT = 130, EXIT_SIGUSR1 = 138, EXIT_SIGTERM = 143 };

/* A logger writing to stderr at `level` (SDB_LOG_INFO unless SDB_LOG=debug/warn/error). */
sdb_log cli_logger(void);
/* Prints "sdbatch <cmd>: error: msg" to stderr and returns the exit code for it. */
int cli_error(const char *cmd, const sdb_err *err);
/* "sdbatch <cmd>: <msg>" usage error; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses a whole integer / float option value; on failure prints a usage error and returns -1. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long long min, long long max, long long *out);
/* --weights f32|f16 -> *weights_f16 (sdb_model_opts.weights_f16); -1 after a usage error. */
int cli_parse_weights(const char *cmd, const char *s, int *weights_f16);
/* The model options every model-loading command shares: resolves `model` and `vae` (NULL = none;
 * bare names in ./models and $SDB_MODELS, see model_find.h) into *model_path / *vae_path (malloc'd;
 * mo->vae_path points at the latter) and takes $SDB_MODELS and $SDB_TOKENIZER from the environment. */
struct sdb_model_opts;
int cli_model_opts(const char *model, const char *vae, struct sdb_model_opts *mo, char **model_path,
                   char **vae_path, sdb_err *err);
/* --conv auto|direct|winograd -> SDB_CONV_*; on a bad value prints the usage error, returns -1. */
int cli_parse_conv(const char *cmd, const char *s, int *conv);
/* --keep-filters MIB (0 .. 2^30) as bytes; -1 after a usage error. */
int cli_parse_keep_filters(const char *cmd, const char *s, size_t *bytes);
int cli_parse_double(const char *cmd, const char *opt, const char *s, double *out);
/* The `parameters` text chunk of a PNG (malloc'd), or NULL after printing why (cmd_info.c). */
char *cli_read_parameters(const char *cmd, const char *path);
/* sigaction(sig) with `handler`, an empty mask and sa_flags (e.g. SA_RESTART). */
void cli_handle_signal(int sig, void (*handler)(int), int sa_flags);
/* Catches each signal of `sigs` (0-terminated) with a handler that records its number in the
 * returned flag and restores the default action, so that a second one ends the process at once.
 * The flag stays 0 until a signal comes; it is what the library's `stop` options watch. */
volatile sig_atomic_t *cli_catch_stop_signals(const int *sigs, int sa_flags);

#endif
