/*
 * winograd.h — 3x3 stride-1 pad-1 convolutions by Winograd's minimal filtering F(4x4, 3x3) on
 * OpenBLAS GEMMs: the same result as sdb_conv2d_forward within float rounding (the bound measured
 * on SD 1.5's layer shapes is stated in tests/test_winograd.c) with 4x fewer multiply-adds in the
 * GEMMs (36 per 4x4 output tile and channel pair instead of 144).
 *
 * A 6x6 input tile d becomes V = Bᵀ d B, a filter g becomes U = G g Gᵀ (36 values each); for each
 * of the 36 positions ξ the products over the input channels are one GEMM
 * M[ξ][cout, tiles] = U[ξ][cout, cin] · V[ξ][cin, tiles]; a tile's 4x4 output is Aᵀ M A.
 * Interpolation points 0, ±1, ±1/2, ∞ (lower error than 0, ±1, ±2, ∞ in float; see winograd.c).
 *
 * Results are identical for any thread count (a fixed grid of single-threaded sgemms, as sdb_gemm).
 */
#ifndef SDB_OPS_WINOGRAD_H
#define SDB_OPS_WINOGRAD_H

#include <stddef.h>
#include "sdb/arena.h"
#include "sdb/ops/conv.h"

#define SDB_WINO_TILE 4 /* output tile side */
#define SDB_WINO_XI 36  /* transformed-domain positions (6x6) */

/* 1 when c is a convolution Winograd computes: 3x3, stride 1, zero padding 0 or 1 on each side
 * (1 everywhere for SD's convs; 0 above/below for the VAE's upsampling strips). */
int sdb_winograd_applies(const sdb_conv2d *c);
/* Floats of c's transformed filter: SDB_WINO_XI * cout * cin. */
size_t sdb_winograd_filter_floats(const sdb_conv2d *c);
/* U[ξ][co][ci] = (G g Gᵀ)[ξ] for every filter g = w[co][ci] (float32 or half weights). Call outside
 * OpenMP parallel regions (it opens its own). */
void sdb_winograd_filter(const sdb_conv2d *c, float *U);

/* y = conv(x) (+ residual), exactly the contract of sdb_conv2d_forward_bias (bias_n [N, cout] in
 * place of c->b when not NULL) for a convolution where sdb_winograd_applies. U: c's transformed
 * filter (sdb_winograd_filter), or NULL to transform it into the scratch for this call (the models
 * do: kept, the U-Net's would take 4x its 3x3 weights, 8.6 GB in f32), in slabs of output channels
 * of at most 192 MiB each. Scratch (that filter or slab; per chunk of tiles the transformed inputs
 * and products, together about 12 MiB) comes from the arena and is released before returning. Returns 0, SDB_EINVAL (a convolution it does not compute, bad
 * sizes) or SDB_ENOMEM. */
int sdb_winograd_forward(const sdb_conv2d *c, const float *U, const float *x, int N, int H, int W,
                         float *y, const float *residual, const float *bias_n, sdb_arena *scratch);

/* Records the work units of that call into `rec` (par.h) without computing. */
void sdb_winograd_plan(const sdb_conv2d *c, int N, int H, int W, sdb_par_rec *rec);

/* F(2x2, 3x3) for small images (winograd2.c): 16 multiply-adds per 2x2 output tile and channel
 * pair instead of 36, with products of 4x as many tiles as F(4x4, 3x3) has, where that has too
 * few (the U-Net's 1280-channel convolutions at 8x8 latents). Its own transformed filter,
 * U[ξ][co][ci] = (G g Gᵀ)[ξ], 16 x the 3x3 weights' count / 9; otherwise the same contract as
 * sdb_winograd_forward, for at most SDB_WINO2_MAX_TILES output tiles (N x ceil(Ho/2) x
 * ceil(Wo/2); SDB_EINVAL past that). */
#define SDB_WINO2_XI 16
#define SDB_WINO2_MAX_TILES 256
size_t sdb_winograd2_filter_floats(const sdb_conv2d *c);
void sdb_winograd2_filter(const sdb_conv2d *c, float *U);
int sdb_winograd2_forward(const sdb_conv2d *c, const float *U, const float *x, int N, int H, int W,
                          float *y, const float *residual, const float *bias_n, sdb_arena *scratch);
void sdb_winograd2_plan(const sdb_conv2d *c, int N, int H, int W, sdb_par_rec *rec);

/* Which path runs a convolution (--conv): SDB_CONV_AUTO picks per call from the shape (Winograd
 * where it measured faster: enough input and output channels and output tiles, a transformed
 * filter of at most 192 MiB), SDB_CONV_DIRECT always im2col + sgemm, SDB_CONV_WINOGRAD every
 * convolution sdb_winograd_applies to. */
enum { SDB_CONV_AUTO = 0, SDB_CONV_DIRECT = 1, SDB_CONV_WINOGRAD = 2 };
/* "auto" / "direct" / "winograd" -> SDB_CONV_*, or -1. */
int sdb_conv_algo_of(const char *name);
const char *sdb_conv_algo_name(int algo);
/* How sdb_conv2d_forward_algo runs c on an N x H x W input: SDB_CONV_PATH_*. SDB_CONV_AUTO takes
 * F(4x4, 3x3) where it has enough tiles, else F(2x2, 3x3) where that has (and not too many), else
 * the direct product; SDB_CONV_WINOGRAD takes F(4x4, 3x3) for every convolution it applies to. */
enum { SDB_CONV_PATH_DIRECT = 0, SDB_CONV_PATH_WINO4 = 4, SDB_CONV_PATH_WINO2 = 2 };
int sdb_conv_path(const sdb_conv2d *c, int algo, int N, int H, int W);
/* 1 when sdb_conv2d_forward_algo runs c on an N x H x W input by Winograd (either). */
int sdb_conv_uses_winograd(const sdb_conv2d *c, int algo, int N, int H, int W);
/* The transformed filter that path uses (its floats, and made into U), for an owner that keeps
 * filters (c->U with c->U_tile = the path); 0 / nothing for the direct path. */
size_t sdb_conv_path_filter_floats(const sdb_conv2d *c, int path);
void sdb_conv_path_filter(const sdb_conv2d *c, int path, float *U);
/* sdb_conv2d_forward_bias or sdb_winograd_forward, as sdb_conv_uses_winograd says. */
int sdb_conv2d_forward_algo(const sdb_conv2d *c, int algo, const float *x, int N, int H, int W, float *y,
                            const float *residual, const float *bias_n, sdb_arena *scratch);
/* Its _plan twin: sdb_conv2d_plan or sdb_winograd_plan. */
void sdb_conv2d_plan_algo(const sdb_conv2d *c, int algo, int N, int H, int W, sdb_par_rec *rec);

#endif
