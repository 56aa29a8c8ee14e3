/*
 * daemon.h — the job daemon: a spool folder of batch manifests worked through one at a time by a
 * long-running process (`sdbatch daemon`), with the model kept loaded between manifests.
 *
 * Spool layout (created on start):
 *   DIR/incoming/   new manifests (`sdbatch submit` writes ".<name>.tmp.<pid>" there, then renames)
 *   DIR/active/     the manifest being run (and, after a crash or SIGTERM, the one to resume)
 *   DIR/done/       manifests that ran to their end (their failed jobs are in their state db)
 *   DIR/failed/     invalid manifests (or a fatal error: model, state db), with <name>.errors.txt
 *   DIR/daemon.pid  the pid of the daemon holding the spool; flock'ed while it runs
 *   DIR/active/.<name>.starts  how many times the daemon started on that manifest without a job
 *                   finishing since (a crash counter; see max_crashes)
 * A manifest moves between the folders by rename(2) only, so it is always in exactly one of them.
 * Each manifest's jobs are recorded in the same SQLite state `sdbatch run` uses
 * (<output_dir>/.sdbatch/state.db), so `sdbatch status MANIFEST` works on it at any time and a
 * restart resumes where the last daemon stopped (jobs done stay done, a job it was running when
 * killed goes back to pending and is redone from scratch).
 *
 * Order: manifests already in active/ first (resumed), then incoming/ by `priority:` (a
 * top-level whole number, higher first, default 0), then oldest modification time, then name.
 * Files in incoming/ are taken once they are at least SDB_SPOOL_SETTLE_SECONDS old, and
 * dotfiles and names not ending in .yaml/.yml are ignored, so a manifest copied in by hand is
 * not read half-written either.
 */
#ifndef SDB_DAEMON_H
#define SDB_DAEMON_H

#include <signal.h>
#include <stdio.h>
#include "sdb/error.h"
#include "sdb/manifest.h"
#include "sdb/runner.h"

#define SDB_SPOOL_SETTLE_SECONDS 1.0

/* ---- the event log: one line per event, text or JSON lines, to stderr or a file --------------- */

typedef struct sdb_dlog {
    char *path;       /* NULL: stderr */
    FILE *f;
    int json;         /* 1: JSON lines */
    volatile sig_atomic_t *reopen;  /* nonzero: reopen the file before the next line (SIGHUP) */
} sdb_dlog;

/* Opens the log (path NULL = stderr). */
int sdb_dlog_open(sdb_dlog *l, const char *path, int json, sdb_err *err);
/* Reopens the file (after logrotate moved it); stderr stays stderr. */
int sdb_dlog_reopen(sdb_dlog *l, sdb_err *err);
void sdb_dlog_close(sdb_dlog *l);
/* Writes one event: `event` then key/value pairs, NULL-terminated. Each value is given as a type
 * letter and the value: 's' const char * (NULL = null), 'i' long long, 'f' double (NaN = null).
 *   sdb_dlog_event(l, "job_done", "manifest", 's', name, "seconds", 'f', 1.5, NULL);
 * Text: "2026-01-02T03:04:05.678Z job_done manifest=a.yaml seconds=1.5" (values with spaces or
 * quotes are double-quoted, C-style escapes); JSON: {"time":…, "event":…, "manifest":…, …}. */
void sdb_dlog_event(sdb_dlog *l, const char *event, ...);

/* ---- the spool ------------------------------------------------------------------------------- */

/* Creates DIR and its four folders if missing. */
int sdb_spool_init(const char *spool, sdb_err *err);

/* Takes the spool's pid file lock (DIR/daemon.pid, flock LOCK_EX|LOCK_NB) and writes this pid
 * into it. Fails with SDB_ESTATE and a message naming the other daemon's pid when another
 * process holds it. *fd stays open (and locked) until sdb_spool_unlock. */
int sdb_spool_lock(const char *spool, int *fd, sdb_err *err);
void sdb_spool_unlock(int fd);

/* Loads a spool manifest: like sdb_manifest_load, plus the daemon's own top-level key
 * `priority:` (a whole number; *priority = 0 without it), which is taken out of the text before
 * the manifest parser sees it (line and column numbers stay right). *priority may be NULL. */
int sdb_spool_load_manifest(sdb_manifest *m, const char *path, int *priority, sdb_err *err);

/* The manifest text with every relative path (model, model_config, tokenizer, output_dir; image,
 * mask, glob in defaults and jobs) rewritten as an absolute one against `dir` (the manifest's folder),
 * comments and layout kept. Values starting with {dir} are left alone. malloc'd in *out. */
int sdb_spool_rewrite_paths(const char *text, size_t len, const char *dir, char **out, size_t *out_len,
                            sdb_err *err);

/* `sdbatch submit`: copies a manifest into DIR/incoming/ atomically (temp name, fsync, rename)
 * with its relative paths made absolute. The name is the manifest's own, with "-2", "-3"… added
 * when incoming/ or active/ already hold one of that name. *dest (malloc'd, may be NULL) gets
 * the path it was written to. */
int sdb_spool_submit(const char *manifest_path, const char *spool, char **dest, sdb_err *err);

/* `sdbatch status --spool DIR`: every manifest in the spool (active, incoming in the order they
 * will run, then done and failed) with its progress from its state database(s). json: one
 * document {"spool":…, "daemon_pid":N|null, "manifests":[{"name","folder","path","priority",
 * "total","done","failed","pending","running","errors"}]} (counts null when the manifest does
 * not load; "errors" is the text of <name>.errors.txt for failed/ ones, else null). */
int sdb_spool_status(const char *spool, FILE *out, int json, sdb_err *err);

/* ---- the daemon ------------------------------------------------------------------------------ */

typedef struct sdb_daemon_opts {
    const char *spool;
    int max_models;            /* models kept loaded (LRU), default 1 */
    int threads;               /* 0 = the library's choice */
    int weights_f16;           /* load models with their matrices kept as IEEE half (--weights f16) */
    int max_attempts;          /* passed to the runner (default 2) */
    double rescan_seconds;     /* periodic rescan of incoming/ besides inotify (default 10) */
    int once;                  /* exit (0) when nothing is left to do instead of waiting */
    int max_crashes;           /* a manifest whose run ended this many times in a row without a
                                  job finishing (daemon crashed, killed, OOM) goes to failed/ at
                                  the next start (count in active/.<name>.starts); 0 = never */
    double min_free_mb;        /* before loading a model, drop cached ones (LRU first) while the
                                  system's MemAvailable is below this; 0 = off */
    volatile sig_atomic_t *stop;  /* SIGTERM/SIGINT: stop at the next step boundary */
    const char *const *allow_roots; /* --allow-root: the folders a manifest's output_dir must lie in
                                       (itself or below, symlinks resolved); at least one, each an
                                       existing folder, or the daemon does not start. A manifest with
                                       `allow_outputs_outside: true` is refused; its outputs and state
                                       are written from the root down with no symlink followed */
    int n_allow_roots;
    sdb_dlog *log;
    const sdb_executor *executor; /* NULL = sdb_executor_pipeline() */
} sdb_daemon_opts;

/* Runs until *stop (returns 0: everything resumable) or, with `once`, until idle. Takes the
 * spool lock itself; returns SDB_ESTATE when another daemon holds it. */
int sdb_daemon_run(const sdb_daemon_opts *o, sdb_err *err);

#endif
