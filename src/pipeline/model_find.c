/*
 * model_find.c — bare model names and single-file tokenizers found in models/ folders (see
 * model_find.h). Owns nothing beyond the returned strings; reads no environment.
 */
#include "sdb/model_find.h"
#include "sdb/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char *buf; size_t len, cap; } looked;

static void note(looked *l, const char *path)
{
    size_t n = strlen(path) + 3;
    if (l->len + n + 1 > l->cap) {
        size_t nc = (l->cap + n + 1) * 2;
        char *b = realloc(l->buf, nc);
        if (!b) return;
        l->buf = b;
        l->cap = nc;
    }
    l->len += (size_t)snprintf(l->buf + l->len, l->cap - l->len, "%s%s", l->len ? ", " : "", path);
}

static char *joined(const char *dir, const char *a, const char *b)
{
    size_t n = strlen(dir) + strlen(a) + strlen(b) + 3;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s%s", dir, a, b);
    return p;
}

/* Tries dir/a+b: a path that exists (is_tok: a folder with vocab.json) goes to *out. */
static int try_path(looked *l, const char *dir, const char *a, const char *b, int is_tok, char **out)
{
    char *p = joined(dir, a, b);
    if (!p) return 0;
    int ok;
    if (is_tok) {
        char *v = sdb_path_join(p, "vocab.json");
        ok = v && sdb_is_dir(p) && sdb_file_exists(v);
        free(v);
    } else {
        ok = sdb_file_exists(p) || sdb_is_dir(p);
    }
    if (ok) { *out = p; return 1; }
    note(l, p);
    free(p);
    return 0;
}

/* Each folder of the colon-separated list: dir/a+b. */
static int try_list(looked *l, const char *list, const char *a, const char *b, int is_tok, char **out)
{
    if (!list) return 0;
    const char *s = list;
    while (*s) {
        const char *e = strchr(s, ':');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n > 0 && n < 4096) {
            char dir[4096];
            memcpy(dir, s, n);
            dir[n] = 0;
            if (try_path(l, dir, a, b, is_tok, out)) return 1;
        }
        if (!e) break;
        s = e + 1;
    }
    return 0;
}

int sdb_model_resolve(const char *name, const char *base_dir, const char *models_path, const char *what,
                      char **out, sdb_err *err)
{
    *out = NULL;
    const char *base = base_dir && base_dir[0] ? base_dir : ".";
    char *lit = name[0] == '/' ? strdup(name) : sdb_path_join(base, name);
    if (!lit) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    if (name[0] == '/' || strchr(name, '/') || sdb_file_exists(lit) || sdb_is_dir(lit) || !name[0]) {
        if (!sdb_file_exists(lit) && !sdb_is_dir(lit)) {
            int rc = sdb_fail(err, SDB_ENOTFOUND, "%s '%s' does not exist", what, lit);
            free(lit);
            return rc;
        }
        *out = lit;
        return 0;
    }
    /* a bare name */
    looked l = {0};
    note(&l, lit);
    free(lit);
    char *models = sdb_path_join(base, "models");
    int found = models && (try_path(&l, models, name, "", 0, out) || try_path(&l, models, name, ".safetensors", 0, out));
    free(models);
    if (!found) found = try_list(&l, models_path, name, "", 0, out) || try_list(&l, models_path, name, ".safetensors", 0, out);
    int rc = 0;
    if (!found)
        rc = sdb_fail(err, SDB_ENOTFOUND, "%s '%s' not found: looked at %s%s (a bare name is looked up in models/ "
                      "beside the manifest, or the current folder, then in $SDB_MODELS)", what, name,
                      l.buf ? l.buf : "", models_path ? "" : " ($SDB_MODELS is not set)");
    free(l.buf);
    return rc;
}

int sdb_tokenizer_find(const char *model_file, const char *base_dir, const char *models_path,
                       const char *tokenizer_env, char **out, sdb_err *err)
{
    *out = NULL;
    looked l = {0};
    char *here = sdb_path_dirname(model_file);
    char *models = sdb_path_join(base_dir && base_dir[0] ? base_dir : ".", "models");
    int found = here && try_path(&l, here, "tokenizer", "", 1, out);
    if (!found) found = models && try_path(&l, models, "tokenizer", "", 1, out);
    if (!found) found = try_list(&l, models_path, "tokenizer", "", 1, out);
    if (!found && tokenizer_env && tokenizer_env[0]) found = try_list(&l, tokenizer_env, "", "", 1, out);
    free(here);
    free(models);
    int rc = 0;
    if (found) {
        /* "DIR/" from the $SDB_TOKENIZER entry: drop the trailing slash */
        size_t n = strlen(*out);
        if (n > 1 && (*out)[n - 1] == '/') (*out)[n - 1] = 0;
    } else {
        rc = sdb_fail(err, SDB_ENOTFOUND, "%s: no tokenizer for this single-file checkpoint (a folder with vocab.json "
                      "and merges.txt): looked in %s%s; tools/fetch-model.sh --tokenizer fetches one into "
                      "models/tokenizer/ (or give --tokenizer DIR, tokenizer: in a manifest)", model_file,
                      l.buf ? l.buf : "", tokenizer_env && tokenizer_env[0] ? "" : " and $SDB_TOKENIZER (not set)");
    }
    free(l.buf);
    return rc;
}
