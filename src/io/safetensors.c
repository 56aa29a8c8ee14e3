/*
 * safetensors.c — the safetensors reader and writer (see safetensors.h).
 *
 * Owns: the file mapping and the parsed tensor table of each sdb_st handle. The header is parsed
 * with jansson (duplicate keys rejected) and fully validated before the handle is returned; after
 * that, every tensor's data pointer is known to lie inside the mapping.
 */
#include "sdb/safetensors.h"
#include "sdb/fp16.h"
#include "sdb/fsutil.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const dt_names[SDB_DT_COUNT] = {
    "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
static const size_t dt_sizes[SDB_DT_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};

const char *sdb_dtype_name(sdb_dtype dt) { return (unsigned)dt < SDB_DT_COUNT ? dt_names[dt] : "?"; }
size_t sdb_dtype_size(sdb_dtype dt) { return (unsigned)dt < SDB_DT_COUNT ? dt_sizes[dt] : 0; }

int sdb_dtype_parse(const char *s)
{
    for (int i = 0; i < SDB_DT_COUNT; i++)
        if (strcmp(s, dt_names[i]) == 0) return i;
    return -1;
}

void sdb_shape_str(const int64_t *shape, int ndim, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const sdb_st_tensor *)a)->name, ((const sdb_st_tensor *)b)->name);
}

typedef struct { size_t begin, end; const char *name; } span;
static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

static void free_tables(sdb_st *st)
{
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) { free(st->meta_keys[i]); free(st->meta_vals[i]); }
    free(st->meta_keys);
    free(st->meta_vals);
    st->tensors = NULL; st->meta_keys = st->meta_vals = NULL; st->n = st->n_meta = 0;
}

/* Parses and validates the header of st->map[0..map_size). */
static int parse(sdb_st *st, sdb_err *err)
{
    const char *fn = st->path;
    if (st->map_size < 8)
        return sdb_fail(err, SDB_EFORMAT, "%s: file too short for a safetensors header (%zu bytes)", fn, st->map_size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->map[i];
    if (hlen == 0)
        return sdb_fail(err, SDB_EFORMAT, "%s: header length is 0", fn);
    if (hlen > SDB_ST_MAX_HEADER)
        return sdb_fail(err, SDB_EFORMAT, "%s: header length %" PRIu64 " exceeds the %u-byte limit", fn, hlen, SDB_ST_MAX_HEADER);
    if (hlen > st->map_size - 8)
        return sdb_fail(err, SDB_EFORMAT, "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes)", fn, hlen, st->map_size);
    st->data_start = 8 + (size_t)hlen;
    size_t data_size = st->map_size - st->data_start;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)st->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return sdb_fail(err, SDB_EFORMAT, "%s: header is not valid JSON (%s, at byte %d)", fn, jerr.text, jerr.position);
    int rc = 0;
    span *spans = NULL;
    if (!json_is_object(root)) {
        rc = sdb_fail(err, SDB_EFORMAT, "%s: header is not a JSON object", fn);
        goto done;
    }
    size_t count = json_object_size(root);
    size_t n_tensors = count - (json_object_get(root, "__metadata__") ? 1 : 0);
    if (n_tensors > (size_t)SDB_ST_MAX_TENSORS) {
        rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: %zu tensors, more than the limit of %d", fn, n_tensors, SDB_ST_MAX_TENSORS);
        goto done;
    }
    st->tensors = calloc(count ? count : 1, sizeof *st->tensors);
    spans = calloc(count ? count : 1, sizeof *spans);
    if (!st->tensors || !spans) { rc = sdb_fail(err, SDB_ENOMEM, "%s: out of memory", fn); goto done; }

    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) { rc = sdb_fail(err, SDB_EFORMAT, "%s: __metadata__ is not an object", fn); goto done; }
            size_t m = json_object_size(val);
            st->meta_keys = calloc(m ? m : 1, sizeof(char *));
            st->meta_vals = calloc(m ? m : 1, sizeof(char *));
            if (!st->meta_keys || !st->meta_vals) { rc = sdb_fail(err, SDB_ENOMEM, "%s: out of memory", fn); goto done; }
            const char *mk; json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) { rc = sdb_fail(err, SDB_EFORMAT, "%s: __metadata__ value of '%s' is not a string", fn, mk); goto done; }
                st->meta_keys[st->n_meta] = strdup(mk);
                st->meta_vals[st->n_meta] = strdup(json_string_value(mv));
                st->n_meta++;
            }
            continue;
        }
        sdb_st_tensor *t = &st->tensors[st->n];
        if (!json_is_object(val)) { rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': entry is not an object", fn, key); goto done; }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"), *jo = json_object_get(val, "data_offsets");
        if (!json_is_string(jd)) { rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': missing or non-string dtype", fn, key); goto done; }
        int dt = sdb_dtype_parse(json_string_value(jd));
        if (dt < 0) { rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': unknown dtype '%s' (known: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)", fn, key, json_string_value(jd)); goto done; }
        if (!json_is_array(js)) { rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': missing or non-array shape", fn, key); goto done; }
        if (json_array_size(js) > SDB_MAX_DIMS) { rc = sdb_fail(err, SDB_EUNSUPPORTED, "%s: tensor '%s': %zu dimensions (at most %d supported)", fn, key, json_array_size(js), SDB_MAX_DIMS); goto done; }
        t->ndim = (int)json_array_size(js);
        t->numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            json_t *e = json_array_get(js, (size_t)d);
            if (!json_is_integer(e) || json_integer_value(e) < 0) { rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", fn, key, d); goto done; }
            t->shape[d] = json_integer_value(e);
            if (t->shape[d] > 0 && t->numel > INT64_MAX / 16 / t->shape[d]) { rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': shape too large", fn, key); goto done; }
            t->numel *= t->shape[d];
        }
        if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) || !json_is_integer(json_array_get(jo, 1))) {
            rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': data_offsets must be [begin, end]", fn, key); goto done;
        }
        json_int_t b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
        if (b < 0 || e < b) { rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] are not ordered", fn, key, (long long)b, (long long)e); goto done; }
        if ((uint64_t)e > data_size) { rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': data_offsets end %lld is past the data section (%zu bytes; file truncated?)", fn, key, (long long)e, data_size); goto done; }
        t->dtype = (sdb_dtype)dt;
        t->nbytes = (size_t)(e - b);
        if ((uint64_t)t->numel * dt_sizes[dt] != t->nbytes) {
            char sh[128]; sdb_shape_str(t->shape, t->ndim, sh, sizeof sh);
            rc = sdb_fail(err, SDB_EFORMAT, "%s: tensor '%s': %zu data bytes but shape %s of %s needs %" PRId64, fn, key, t->nbytes, sh, dt_names[dt], t->numel * (int64_t)dt_sizes[dt]);
            goto done;
        }
        t->name = strdup(key);
        if (!t->name) { rc = sdb_fail(err, SDB_ENOMEM, "%s: out of memory", fn); goto done; }
        t->data = st->map + st->data_start + b;
        spans[st->n] = (span){(size_t)b, (size_t)e, t->name};
        st->n++;
    }
    /* no two tensors may share bytes */
    qsort(spans, (size_t)st->n, sizeof *spans, cmp_span);
    for (int i = 1; i < st->n; i++) {
        if (spans[i].begin < spans[i - 1].end && spans[i].end > spans[i].begin && spans[i - 1].end > spans[i - 1].begin) {
            rc = sdb_fail(err, SDB_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data section", fn, spans[i - 1].name, spans[i].name);
            goto done;
        }
    }
    qsort(st->tensors, (size_t)st->n, sizeof *st->tensors, cmp_tensor);
done:
    free(spans);
    json_decref(root);
    return rc;
}

int sdb_st_open(sdb_st **out, const char *path, sdb_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sdb_fail_errno(err, SDB_EIO, "%s: cannot open", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) { close(fd); return sdb_fail_errno(err, SDB_EIO, "%s: cannot stat", path); }
    if (!S_ISREG(sb.st_mode)) { close(fd); return sdb_fail(err, SDB_EIO, "%s: not a regular file", path); }
    sdb_st *st = calloc(1, sizeof *st);
    if (!st) { close(fd); return sdb_fail(err, SDB_ENOMEM, "%s: out of memory", path); }
    st->path = strdup(path);
    st->map_size = (size_t)sb.st_size;
    if (st->map_size > 0) {
        void *m = mmap(NULL, st->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot mmap", path);
            close(fd); free(st->path); free(st);
            return rc;
        }
        st->map = m;
    }
    close(fd);
    int rc = parse(st, err);
    if (rc) { sdb_st_close(st); return rc; }
    *out = st;
    return 0;
}

int sdb_st_open_memory(sdb_st **out, const void *buf, size_t size, const char *name, sdb_err *err)
{
    *out = NULL;
    sdb_st *st = calloc(1, sizeof *st);
    if (!st) return sdb_fail(err, SDB_ENOMEM, "%s: out of memory", name);
    st->path = strdup(name ? name : "<memory>");
    st->map = (unsigned char *)buf;
    st->map_size = size;
    int rc = parse(st, err);
    st->map_size = 0; /* not ours to unmap */
    if (rc) { st->map = NULL; sdb_st_close(st); return rc; }
    st->map_size = 0;
    *out = st;
    return 0;
}

void sdb_st_close(sdb_st *st)
{
    if (!st) return;
    free_tables(st);
    if (st->map && st->map_size) munmap(st->map, st->map_size);
    free(st->path);
    free(st);
}

const sdb_st_tensor *sdb_st_find(const sdb_st *st, const char *name)
{
    size_t lo = 0, hi = (size_t)st->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, st->tensors[mid].name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return NULL;
}

const char *sdb_st_meta(const sdb_st *st, const char *key)
{
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_vals[i];
    return NULL;
}

size_t sdb_st_release(const sdb_st *st, const sdb_st_tensor *t)
{
    if (!st->map || !st->map_size || !t->nbytes) return 0; /* not a mapping of ours */
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = ((uintptr_t)t->data + pg - 1) & ~(pg - 1);
    uintptr_t to = ((uintptr_t)t->data + t->nbytes) & ~(pg - 1);
    if (to <= from) return 0;
    /* a read-only private file mapping: dropped pages are read from the file again on access */
    if (madvise((void *)from, to - from, MADV_DONTNEED) != 0) return 0;
    return to - from;
}

int sdb_st_to_f32(const sdb_st_tensor *t, float *dst, sdb_err *err)
{
    size_t n = (size_t)t->numel;
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case SDB_DT_F32: memcpy(dst, p, n * 4); return 0;
    case SDB_DT_F16: {
        if (((uintptr_t)p & 1) == 0) { sdb_f16_to_f32_array((const uint16_t *)(const void *)p, dst, n); return 0; }
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); dst[i] = sdb_f16_to_f32(h); }
        return 0;
    }
    case SDB_DT_BF16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); dst[i] = sdb_bf16_to_f32(h); }
        return 0;
    case SDB_DT_F64:
        for (size_t i = 0; i < n; i++) { double d; memcpy(&d, p + 8 * i, 8); dst[i] = (float)d; }
        return 0;
    case SDB_DT_I64:
        for (size_t i = 0; i < n; i++) { int64_t v; memcpy(&v, p + 8 * i, 8); dst[i] = (float)v; }
        return 0;
    case SDB_DT_I32:
        for (size_t i = 0; i < n; i++) { int32_t v; memcpy(&v, p + 4 * i, 4); dst[i] = (float)v; }
        return 0;
    case SDB_DT_I16:
        for (size_t i = 0; i < n; i++) { int16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = (float)v; }
        return 0;
    case SDB_DT_I8: for (size_t i = 0; i < n; i++) dst[i] = (float)(int8_t)p[i]; return 0;
    case SDB_DT_U8: case SDB_DT_BOOL: for (size_t i = 0; i < n; i++) dst[i] = (float)p[i]; return 0;
    default: return sdb_fail(err, SDB_EUNSUPPORTED, "tensor '%s': cannot convert dtype %s to F32", t->name, sdb_dtype_name(t->dtype));
    }
}

int sdb_dtype_is_float(sdb_dtype dt)
{
    return dt == SDB_DT_F32 || dt == SDB_DT_F16 || dt == SDB_DT_BF16 || dt == SDB_DT_F64;
}

/* Index of the first element of p[0..n) (elements of `size` bytes, little-endian) whose exponent
 * bits (mask, within the element's top 16 or 32 bits) are all ones, or n. Blocks of 1024 elements
 * are first tested with an OR that the compiler vectorises; only a block with a hit is searched. */
#define NONFINITE_SCAN(T, MASK)                                                       \
    do {                                                                              \
        for (size_t b0 = 0; b0 < n; b0 += 1024) {                                     \
            size_t b1 = n - b0 < 1024 ? n : b0 + 1024;                                \
            int hit = 0;                                                              \
            for (size_t i = b0; i < b1; i++) {                                        \
                T v;                                                                  \
                memcpy(&v, p + sizeof(T) * i, sizeof(T));                             \
                hit |= (v & (MASK)) == (MASK);                                        \
            }                                                                         \
            if (!hit) continue;                                                       \
            for (size_t i = b0; i < b1; i++) {                                        \
                T v;                                                                  \
                memcpy(&v, p + sizeof(T) * i, sizeof(T));                             \
                if ((v & (MASK)) == (MASK)) { bad = i; is_nan = (v & ~(T)(MASK) & ~((T)1 << (8 * sizeof(T) - 1))) != 0; goto found; } \
            }                                                                         \
        }                                                                             \
    } while (0)

int sdb_st_check_finite(const sdb_st *st, const sdb_st_tensor *t, sdb_err *err)
{
    const size_t n = (size_t)t->numel;
    const unsigned char *p = t->data;
    size_t bad = 0;
    int is_nan = 0;
    switch (t->dtype) {
    case SDB_DT_F32: NONFINITE_SCAN(uint32_t, 0x7f800000u); return 0;
    case SDB_DT_F16: NONFINITE_SCAN(uint16_t, 0x7c00u); return 0;
    case SDB_DT_BF16: NONFINITE_SCAN(uint16_t, 0x7f80u); return 0;
    case SDB_DT_F64: NONFINITE_SCAN(uint64_t, 0x7ff0000000000000ull); return 0;
    default: return 0;
    }
found:;
    char idx[SDB_MAX_DIMS * 24 + 8];
    size_t off = 0, rest = bad;
    int64_t stride = t->numel;
    idx[off++] = '[';
    for (int d = 0; d < t->ndim; d++) {
        stride = t->shape[d] ? stride / t->shape[d] : 1;
        int64_t i = stride ? (int64_t)(rest / (size_t)stride) : 0;
        rest -= (size_t)(i * stride);
        off += (size_t)snprintf(idx + off, sizeof idx - off, "%s%" PRId64, d ? ", " : "", i);
    }
    snprintf(idx + off, sizeof idx - off, "]");
    return sdb_fail(err, SDB_ENUMERIC, "%s: tensor '%s': element %s is %s (the file's weights are broken)",
                    st->path, t->name, idx, is_nan ? "NaN" : "infinite");
}
#undef NONFINITE_SCAN

int sdb_st_to_i64(const sdb_st_tensor *t, int64_t *dst, sdb_err *err)
{
    size_t n = (size_t)t->numel;
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case SDB_DT_I64: memcpy(dst, p, n * 8); return 0;
    case SDB_DT_I32: for (size_t i = 0; i < n; i++) { int32_t v; memcpy(&v, p + 4 * i, 4); dst[i] = v; } return 0;
    case SDB_DT_I16: for (size_t i = 0; i < n; i++) { int16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = v; } return 0;
    case SDB_DT_I8: for (size_t i = 0; i < n; i++) dst[i] = (int8_t)p[i]; return 0;
    case SDB_DT_U8: case SDB_DT_BOOL: for (size_t i = 0; i < n; i++) dst[i] = p[i]; return 0;
    case SDB_DT_F32: case SDB_DT_F64: case SDB_DT_F16: case SDB_DT_BF16: {
        float *tmp = malloc(n * sizeof(float) + 1);
        if (!tmp) return sdb_fail(err, SDB_ENOMEM, "out of memory");
        sdb_st_to_f32(t, tmp, err);
        for (size_t i = 0; i < n; i++) {
            float v = tmp[i];
            if (!(v >= -9.2e18f && v <= 9.2e18f) || v != (float)(int64_t)v) {
                int rc = sdb_fail(err, SDB_EFORMAT, "tensor '%s': value %g at %zu is not an integer", t->name, (double)v, i);
                free(tmp);
                return rc;
            }
            dst[i] = (int64_t)v;
        }
        free(tmp);
        return 0;
    }
    default: return sdb_fail(err, SDB_EUNSUPPORTED, "tensor '%s': cannot convert dtype %s to I64", t->name, sdb_dtype_name(t->dtype));
    }
}

int sdb_st_load_f32(const sdb_st *st, const char *name, float **out, int64_t *numel, sdb_err *err)
{
    *out = NULL;
    const sdb_st_tensor *t = sdb_st_find(st, name);
    if (!t) return sdb_fail(err, SDB_ENOTFOUND, "%s: no tensor named '%s'", st->path, name);
    float *buf = malloc((size_t)t->numel * sizeof(float) + 1);
    if (!buf) return sdb_fail(err, SDB_ENOMEM, "%s: out of memory for '%s'", st->path, name);
    int rc = sdb_st_to_f32(t, buf, err);
    if (rc) { free(buf); return rc; }
    *out = buf;
    if (numel) *numel = t->numel;
    return 0;
}

int sdb_st_write(const char *path, const sdb_st_wtensor *t, int n,
                 const char *const *meta_keys, const char *const *meta_vals, int n_meta, sdb_err *err)
{
    json_t *root = json_object();
    if (!root) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    if (n_meta > 0) {
        json_t *m = json_object();
        for (int i = 0; i < n_meta; i++) json_object_set_new(m, meta_keys[i], json_string(meta_vals[i]));
        json_object_set_new(root, "__metadata__", m);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        json_t *shape = json_array();
        for (int d = 0; d < t[i].ndim; d++) { numel *= t[i].shape[d]; json_array_append_new(shape, json_integer(t[i].shape[d])); }
        size_t nb = (size_t)numel * sdb_dtype_size(t[i].dtype);
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(sdb_dtype_name(t[i].dtype)));
        json_object_set_new(e, "shape", shape);
        json_t *offs = json_array();
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + nb)));
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(root, t[i].name, e);
        off += nb;
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!hdr) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    sdb_wfile wf;
    int rc = sdb_wfile_open(&wf, path, err);
    if (rc) { free(hdr); return rc; }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    rc = sdb_wfile_write(&wf, len8, 8, err);
    if (!rc) rc = sdb_wfile_write(&wf, hdr, hl, err);
    for (size_t i = hl; !rc && i < padded; i++) rc = sdb_wfile_write(&wf, " ", 1, err);
    free(hdr);
    for (int i = 0; !rc && i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        rc = sdb_wfile_write(&wf, t[i].data, (size_t)numel * sdb_dtype_size(t[i].dtype), err);
    }
    if (rc) { sdb_wfile_abort(&wf); return rc; }
    return sdb_wfile_commit(&wf, err);
}
