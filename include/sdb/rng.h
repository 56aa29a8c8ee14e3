/*
 * rng.h — a CPU random generator that reproduces torch's (1.13) bit for bit.
 *
 * sdb_rng is the state of one `torch.Generator('cpu')`: an MT19937 engine seeded with the low 32
 * bits of the seed, plus torch's cached normal sample (used by the scalar path of randn). It is
 * an explicit object: there is no global state, and one generator passed through a whole pipeline
 * run consumes numbers exactly as diffusers' `generator=` argument does.
 *
 *   sdb_rng_randn(g, out, n) == torch.randn(n, generator=g, dtype=torch.float32)   (any shape of numel n)
 *   sdb_rng_rand(g, out, n)  == torch.rand(n, generator=g, dtype=torch.float32)
 *
 * randn with n >= 16 uses torch's AVX2 normal_fill kernel (blocks of 16, Box-Muller with the
 * avx_mathfun Cephes log/sincos polynomials, fused multiply-adds as GCC compiled them, and the
 * re-drawn last block when n % 16 != 0); n < 16 uses the per-element double path with the cached
 * second sample. The arithmetic uses explicit fmaf(), so results do not depend on compiler flags.
 */
#ifndef SDB_RNG_H
#define SDB_RNG_H

#include <stddef.h>
#include <stdint.h>

#define SDB_MT_N 624

typedef struct sdb_rng {
    uint32_t mt[SDB_MT_N];
    int mti;                 /* next index into mt; SDB_MT_N = twist before the next output */
    int has_next_normal;     /* torch's next_double_normal_sample cache */
    double next_normal;
    uint64_t seed;           /* the seed as given (for messages/metadata) */
} sdb_rng;

/* torch.Generator().manual_seed(seed): only the low 32 bits reach MT19937; clears the cache. */
void sdb_rng_seed(sdb_rng *g, uint64_t seed);
/* Next raw 32-bit MT19937 output (torch's random()). */
uint32_t sdb_rng_u32(sdb_rng *g);
/* torch.rand: n float uniforms in [0,1), 24-bit ((u32 & 0xFFFFFF) * 2^-24). */
void sdb_rng_rand(sdb_rng *g, float *out, size_t n);
/* torch.randn of numel n, float32 contiguous. */
void sdb_rng_randn(sdb_rng *g, float *out, size_t n);

#endif
