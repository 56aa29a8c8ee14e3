/*
 * weights.c — name lookup and float32 access to a component's weights (see weights.h).
 * Owns: the widened copies of non-F32 tensors, and the file when opened here.
 */
#include "sdb/weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sdb_weights_open(sdb_weights *w, const char *path, const char *component, sdb_err *err)
{
    memset(w, 0, sizeof *w);
    int rc = sdb_st_open(&w->st, path, err);
    if (rc) return rc;
    w->owns_st = 1;
    w->component = component;
    return 0;
}

void sdb_weights_wrap(sdb_weights *w, sdb_st *st, const char *component, const char *prefix,
                      sdb_name_map_fn map)
{
    memset(w, 0, sizeof *w);
    w->st = st;
    w->component = component;
    w->map = map;
    snprintf(w->prefix, sizeof w->prefix, "%s", prefix ? prefix : "");
}

void sdb_weights_set_map_ctx(sdb_weights *w, sdb_name_map_ctx_fn fn, void *ctx, int owns)
{
    if (w->owns_map_ctx) free(w->map_ctx);
    w->map_ctx_fn = fn;
    w->map_ctx = ctx;
    w->owns_map_ctx = owns;
}

void sdb_weights_init_recorder(sdb_weights *w, const char *component)
{
    memset(w, 0, sizeof *w);
    w->recording = 1;
    w->component = component;
}

static int record(sdb_weights *w, const char *name, int ndim, const int64_t *shape,
                  const float **out, sdb_err *err)
{
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return sdb_fail(err, SDB_EINVAL, "%s: recording '%s': shape has a wildcard", w->component, name);
        numel *= shape[d];
    }
    if (w->n_rec == w->cap_rec) {
        int nc = w->cap_rec ? 2 * w->cap_rec : 256;
        char **nn = realloc(w->rec_names, (size_t)nc * sizeof *nn);
        if (nn) w->rec_names = nn;
        int *nd = realloc(w->rec_ndim, (size_t)nc * sizeof *nd);
        if (nd) w->rec_ndim = nd;
        int64_t (*ns)[SDB_MAX_DIMS] = realloc(w->rec_shapes, (size_t)nc * sizeof *ns);
        if (ns) w->rec_shapes = ns;
        if (!nn || !nd || !ns) return sdb_fail(err, SDB_ENOMEM, "out of memory");
        w->cap_rec = nc;
    }
    if (w->n_owned == w->cap_owned) {
        int nc = w->cap_owned ? 2 * w->cap_owned : 256;
        void **p = realloc(w->owned, (size_t)nc * sizeof *p);
        if (!p) return sdb_fail(err, SDB_ENOMEM, "out of memory");
        w->owned = p;
        w->cap_owned = nc;
    }
    float *buf = calloc((size_t)numel + 1, sizeof(float));
    char *nm = strdup(name);
    if (!buf || !nm) { free(buf); free(nm); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    w->owned[w->n_owned++] = buf;
    w->rec_names[w->n_rec] = nm;
    w->rec_ndim[w->n_rec] = ndim;
    for (int d = 0; d < ndim; d++) w->rec_shapes[w->n_rec][d] = shape[d];
    w->n_rec++;
    w->bytes += (size_t)numel * sizeof(float);
    *out = buf;
    return 0;
}

void sdb_weights_free(sdb_weights *w)
{
    for (int i = 0; i < w->n_rec; i++) free(w->rec_names[i]);
    free(w->rec_names);
    free(w->rec_ndim);
    free(w->rec_shapes);
    for (int i = 0; i < w->n_owned; i++) free(w->owned[i]);
    free(w->owned);
    if (w->owns_st) sdb_st_close(w->st);
    if (w->owns_map_ctx) free(w->map_ctx);
    memset(w, 0, sizeof *w);
}

static int file_name(const sdb_weights *w, const char *name, char *out, size_t n)
{
    size_t pl = strlen(w->prefix);
    if (pl >= n) return -1;
    memcpy(out, w->prefix, pl);
    if (w->map_ctx_fn) return w->map_ctx_fn(w->map_ctx, name, out + pl, n - pl);
    if (w->map) return w->map(name, out + pl, n - pl);
    if (strlen(name) + pl >= n) return -1;
    strcpy(out + pl, name);
    return 0;
}

const sdb_st_tensor *sdb_weights_find(const sdb_weights *w, const char *name)
{
    char fname[512];
    if (w->recording || !w->st) return NULL;
    if (file_name(w, name, fname, sizeof fname) != 0) return NULL;
    return sdb_st_find(w->st, fname);
}

int sdb_weights_get(sdb_weights *w, const char *name, int ndim, const int64_t *shape,
                    const float **out, sdb_err *err)
{
    *out = NULL;
    if (w->recording) return record(w, name, ndim, shape, out, err);
    char fname[512];
    const char *comp = w->component ? w->component : "model";
    if (file_name(w, name, fname, sizeof fname) != 0)
        return sdb_fail(err, SDB_ENOTFOUND, "%s: %s: tensor '%s' has no name in this checkpoint layout", w->st->path, comp, name);
    const sdb_st_tensor *t = sdb_st_find(w->st, fname);
    if (!t) {
        if (strcmp(fname, name) == 0)
            return sdb_fail(err, SDB_ENOTFOUND, "%s: %s: missing tensor '%s'", w->st->path, comp, name);
        return sdb_fail(err, SDB_ENOTFOUND, "%s: %s: missing tensor '%s' (looked for '%s')", w->st->path, comp, name, fname);
    }
    int ok = (t->ndim == ndim);
    for (int d = 0; ok && d < ndim; d++) ok = (shape[d] < 0 || shape[d] == t->shape[d]);
    if (!ok) {
        char want[128], got[128];
        sdb_shape_str(shape, ndim, want, sizeof want);
        sdb_shape_str(t->shape, t->ndim, got, sizeof got);
        return sdb_fail(err, SDB_EFORMAT, "%s: %s: tensor '%s' has shape %s, expected %s", w->st->path, comp, fname, got, want);
    }
    if (t->dtype == SDB_DT_F32 && ((uintptr_t)t->data & 3u) == 0) {
        *out = (const float *)(const void *)t->data;
        w->bytes += t->nbytes;
        return 0;
    }
    if (w->n_owned == w->cap_owned) {
        int nc = w->cap_owned ? 2 * w->cap_owned : 64;
        void **p = realloc(w->owned, (size_t)nc * sizeof *p);
        if (!p) return sdb_fail(err, SDB_ENOMEM, "out of memory");
        w->owned = p;
        w->cap_owned = nc;
    }
    float *buf = malloc((size_t)t->numel * sizeof(float) + 1);
    if (!buf) return sdb_fail(err, SDB_ENOMEM, "%s: out of memory widening '%s'", comp, fname);
    int rc = sdb_st_to_f32(t, buf, err);
    if (rc) { free(buf); return rc; }
    w->owned[w->n_owned++] = buf;
    w->bytes += (size_t)t->numel * sizeof(float);
    *out = buf;
    return 0;
}

int sdb_weights_getf(sdb_weights *w, const float **out, sdb_err *err, int ndim,
                     const int64_t *shape, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return sdb_weights_get(w, name, ndim, shape, out, err);
}
