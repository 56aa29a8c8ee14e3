/*
 * safetensors.h — reading (mmap) and writing safetensors files.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
 * then the data section; offsets are relative to its first byte. sdb_st_open validates all of
 * it (header size limit, JSON, dtypes, shapes, offsets inside the data, no overlaps, byte size =
 * numel x dtype size, unique names) before anything is used, and reports the first problem with
 * the file name and tensor name.
 */
#ifndef SDB_SAFETENSORS_H
#define SDB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "sdb/error.h"

#define SDB_MAX_DIMS 8
#define SDB_ST_MAX_HEADER (100u * 1000u * 1000u) /* 100 MB, as the reference implementation */
#define SDB_ST_MAX_TENSORS 100000                 /* an SD 1.x checkpoint has about 1,200 */

typedef enum {
    SDB_DT_F32, SDB_DT_F16, SDB_DT_BF16, SDB_DT_F64, SDB_DT_I64, SDB_DT_I32,
    SDB_DT_I16, SDB_DT_I8, SDB_DT_U8, SDB_DT_BOOL, SDB_DT_COUNT
} sdb_dtype;

typedef struct sdb_st_tensor {
    char *name;
    sdb_dtype dtype;
    int ndim;
    int64_t shape[SDB_MAX_DIMS];
    int64_t numel;
    const unsigned char *data; /* inside the mapping */
    size_t nbytes;
} sdb_st_tensor;

typedef struct sdb_st {
    char *path;
    unsigned char *map;
    size_t map_size;
    size_t data_start;     /* 8 + header length */
    int n;                 /* number of tensors */
    sdb_st_tensor *tensors;/* sorted by name */
    int n_meta;
    char **meta_keys, **meta_vals;
} sdb_st;

const char *sdb_dtype_name(sdb_dtype dt);
size_t sdb_dtype_size(sdb_dtype dt);
/* Parses "F32", "F16", ...; returns -1 if unknown. */
int sdb_dtype_parse(const char *s);

int sdb_st_open(sdb_st **out, const char *path, sdb_err *err);
/* Same checks on an in-memory image (not copied; must outlive the handle). */
int sdb_st_open_memory(sdb_st **out, const void *buf, size_t size, const char *name, sdb_err *err);
void sdb_st_close(sdb_st *st);
const sdb_st_tensor *sdb_st_find(const sdb_st *st, const char *name);
/* Metadata value for key, or NULL. */
const char *sdb_st_meta(const sdb_st *st, const char *key);
/* Gives back the memory pages lying wholly inside t's data (a tensor of st whose values were
 * copied elsewhere), so they no longer count in the process's resident set; reading t again maps
 * them in again from the file. Pages shared with neighbouring data stay. Returns the bytes
 * released (0 for in-memory files or tensors smaller than a page). */
size_t sdb_st_release(const sdb_st *st, const sdb_st_tensor *t);
/* Checks that a floating tensor (F32/F16/BF16/F64) holds no NaN and no infinity; integer dtypes
 * pass. The error names the file, the tensor and the first bad element (SDB_ENUMERIC). It reads
 * every byte of the tensor (for a mapped file: brings its pages in). */
int sdb_st_check_finite(const sdb_st *st, const sdb_st_tensor *t, sdb_err *err);
/* 1 for F32, F16, BF16 and F64. */
int sdb_dtype_is_float(sdb_dtype dt);
/* Converts any floating dtype (F32/F16/BF16/F64) and the integer dtypes to float32 into dst
 * (t->numel floats). */
int sdb_st_to_f32(const sdb_st_tensor *t, float *dst, sdb_err *err);
/* Converts integer dtypes (and exact-integer floats) to int64 into dst (t->numel values). */
int sdb_st_to_i64(const sdb_st_tensor *t, int64_t *dst, sdb_err *err);
/* Convenience: finds `name`, checks it exists, mallocs and fills a float32 copy.
 * *numel receives the count (may be NULL). */
int sdb_st_load_f32(const sdb_st *st, const char *name, float **out, int64_t *numel, sdb_err *err);
/* Shape as text "[2, 4, 16, 16]" for messages. */
void sdb_shape_str(const int64_t *shape, int ndim, char *buf, size_t n);

/* Writing: tensors are given as (name, dtype, ndim, shape, data); written atomically
 * (temp file in the same folder, fsync, rename). meta may be NULL (n_meta = 0). */
typedef struct sdb_st_wtensor {
    const char *name;
    sdb_dtype dtype;
    int ndim;
    int64_t shape[SDB_MAX_DIMS];
    const void *data;
} sdb_st_wtensor;
int sdb_st_write(const char *path, const sdb_st_wtensor *t, int n,
                 const char *const *meta_keys, const char *const *meta_vals, int n_meta, sdb_err *err);

#endif
