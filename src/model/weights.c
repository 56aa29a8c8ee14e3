/*
 * weights.c — name lookup and float32 / half access to a component's weights (see weights.h).
 * Owns: the converted copies of tensors not usable in place, and the file when opened here.
 */
#include "sdb/weights.h"
#include "sdb/fp16.h"

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

/* The file tensor of `name`, checked against the expected shape. */
static int lookup(sdb_weights *w, const char *name, int ndim, const int64_t *shape,
                  const sdb_st_tensor **out, sdb_err *err)
{
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
    if (!sdb_dtype_is_float(t->dtype))
        return sdb_fail(err, SDB_EFORMAT, "%s: %s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64",
                        w->st->path, comp, fname, sdb_dtype_name(t->dtype));
    /* NaN/Inf weights: refused here, naming the tensor, instead of a NaN image many minutes later */
    int rc = sdb_st_check_finite(w->st, t, err);
    if (rc) return rc;
    *out = t;
    return 0;
}

/* A buffer of `bytes` the weights own (freed with them). */
static void *owned_buffer(sdb_weights *w, size_t bytes, const sdb_st_tensor *t, sdb_err *err)
{
    if (w->n_owned == w->cap_owned) {
        int nc = w->cap_owned ? 2 * w->cap_owned : 64;
        void **p = realloc(w->owned, (size_t)nc * sizeof *p);
        if (!p) { sdb_fail(err, SDB_ENOMEM, "out of memory"); return NULL; }
        w->owned = p;
        w->cap_owned = nc;
    }
    void *buf = malloc(bytes + 1);
    if (!buf) {
        sdb_fail(err, SDB_ENOMEM, "%s: out of memory converting '%s'", w->component ? w->component : "model", t->name);
        return NULL;
    }
    w->owned[w->n_owned++] = buf;
    return buf;
}

int sdb_weights_get(sdb_weights *w, const char *name, int ndim, const int64_t *shape,
                    const float **out, sdb_err *err)
{
    *out = NULL;
    if (w->recording) return record(w, name, ndim, shape, out, err);
    const sdb_st_tensor *t;
    int rc = lookup(w, name, ndim, shape, &t, err);
    if (rc) return rc;
    if (t->dtype == SDB_DT_F32 && ((uintptr_t)t->data & 3u) == 0) {
        *out = (const float *)(const void *)t->data;
        w->bytes += t->nbytes;
        return 0;
    }
    float *buf = owned_buffer(w, (size_t)t->numel * sizeof(float), t, err);
    if (!buf) return SDB_ENOMEM;
    if ((rc = sdb_st_to_f32(t, buf, err))) return rc;
    sdb_st_release(w->st, t);
    w->bytes += (size_t)t->numel * sizeof(float);
    *out = buf;
    return 0;
}

/* t's values as half, rounded to nearest even (exact for F16 data). */
static int to_f16(const sdb_st_tensor *t, uint16_t *dst, sdb_err *err)
{
    const size_t n = (size_t)t->numel;
    if (t->dtype == SDB_DT_F16) {
        memcpy(dst, t->data, n * 2);
        return 0;
    }
    if (t->dtype == SDB_DT_F64) {
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, t->data + 8 * i, 8);
            dst[i] = sdb_f64_to_f16(d);
        }
        return 0;
    }
    if (t->dtype == SDB_DT_F32 && ((uintptr_t)t->data & 3u) == 0) {
        sdb_f32_to_f16_array((const float *)(const void *)t->data, dst, n);
        return 0;
    }
    /* via float32, which holds every value of the other dtypes exactly (BF16, small integers) */
    float *tmp = malloc(n * sizeof(float) + 1);
    if (!tmp) return sdb_fail(err, SDB_ENOMEM, "out of memory converting '%s'", t->name);
    int rc = sdb_st_to_f32(t, tmp, err);
    if (!rc) sdb_f32_to_f16_array(tmp, dst, n);
    free(tmp);
    return rc;
}

int sdb_weights_get_mat(sdb_weights *w, const char *name, int ndim, const int64_t *shape,
                        sdb_wmat *out, sdb_err *err)
{
    out->f32 = NULL;
    out->f16 = NULL;
    if (!w->keep_f16 || w->recording) return sdb_weights_get(w, name, ndim, shape, &out->f32, err);
    const sdb_st_tensor *t;
    int rc = lookup(w, name, ndim, shape, &t, err);
    if (rc) return rc;
    if (t->dtype == SDB_DT_F16 && ((uintptr_t)t->data & 1u) == 0) {
        out->f16 = (const uint16_t *)(const void *)t->data;
    } else {
        uint16_t *buf = owned_buffer(w, (size_t)t->numel * 2, t, err);
        if (!buf) return SDB_ENOMEM;
        if ((rc = to_f16(t, buf, err))) return rc;
        sdb_st_release(w->st, t);
        if (t->dtype != SDB_DT_F16) w->rounded++;
        out->f16 = buf;
    }
    w->bytes += (size_t)t->numel * 2;
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

int sdb_weights_conv2d(sdb_weights *w, sdb_conv2d *c, int cin, int cout, int k, int stride, int pad,
                       const char *name, sdb_err *err)
{
    memset(c, 0, sizeof *c);
    c->cin = cin;
    c->cout = cout;
    c->k = k;
    c->stride = stride;
    c->pad_t = c->pad_l = c->pad_b = c->pad_r = pad;
    const int64_t ws[4] = {cout, cin, k, k}, bs[1] = {cout};
    char wname[512];
    snprintf(wname, sizeof wname, "%s.weight", name);
    int rc = sdb_weights_get_mat(w, wname, 4, ws, &c->w, err);
    if (!rc) rc = sdb_weights_getf(w, &c->b, err, 1, bs, "%s.bias", name);
    return rc;
}

int sdb_weights_linear(sdb_weights *w, sdb_wmat *W, const float **bias, int out, int in,
                       const char *name, sdb_err *err)
{
    const int64_t ws[2] = {out, in}, bs[1] = {out};
    char wname[512];
    snprintf(wname, sizeof wname, "%s.weight", name);
    int rc = sdb_weights_get_mat(w, wname, 2, ws, W, err);
    if (!rc && bias) rc = sdb_weights_getf(w, bias, err, 1, bs, "%s.bias", name);
    return rc;
}
