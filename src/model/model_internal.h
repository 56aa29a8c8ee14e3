/*
 * model_internal.h — small helpers shared by the model loaders (clip.c, vae.c); not public.
 */
#ifndef SDB_MODEL_INTERNAL_H
#define SDB_MODEL_INTERNAL_H

#include "sdb/config.h"
#include "sdb/error.h"

/* An integer config field (default `def` when absent) that must lie in [lo, hi]; errors name the
 * file and the field. */
static inline int sdb_model_cfg_int(const sdb_config *c, const char *key, long long def, long long lo,
                                    long long hi, int *out, sdb_err *err)
{
    long long v;
    int rc = sdb_config_int(c, key, def, &v, err);
    if (rc) return rc;
    if (v < lo || v > hi)
        return sdb_fail(err, SDB_EINVAL, "%s: field '%s': %lld is out of range [%lld, %lld]",
                        c->path, key, v, lo, hi);
    *out = (int)v;
    return 0;
}

#endif
