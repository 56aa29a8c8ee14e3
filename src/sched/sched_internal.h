/*
 * sched_internal.h — the scheduler object shared by scheduler.c (config, timesteps, sigmas) and
 * step.c (the step functions). Not part of the public API.
 */
#ifndef SDB_SCHED_INTERNAL_H
#define SDB_SCHED_INTERNAL_H

#include "sdb/sched.h"

enum { SPACING_LEADING, SPACING_TRAILING, SPACING_LINSPACE };
enum { PRED_EPSILON, PRED_V };
enum { BETAS_LINEAR, BETAS_SCALED_LINEAR, BETAS_SQUAREDCOS };

struct sdb_sched {
    sdb_sched_kind kind;
    /* config (resolved with the class defaults) */
    int num_train;
    double beta_start, beta_end;
    int beta_schedule, spacing, prediction;
    long long steps_offset;
    int set_alpha_to_one;
    int skip_prk;              /* pndm */
    int clip_sample;           /* ddim */
    double clip_range;
    int use_karras;            /* euler, lms, dpm */
    double cfg_sigma_min, cfg_sigma_max; /* euler; NaN = None */
    int final_sigma_min;       /* euler, dpm: final_sigmas_type == "sigma_min" */
    int lower_order_final, euler_at_final; /* dpm */
    double lambda_min_clipped; /* dpm */
    double eta;                /* ddim */

    /* train-time tables */
    float *betas, *alphas_cumprod;
    float final_alpha_cumprod;

    /* set_timesteps */
    int n_inference;           /* the N given to set_timesteps (0 = not called) */
    int nt;                    /* length of timesteps */
    double *timesteps;
    float *sigmas;             /* nt + 1 values, or NULL */
    float init_noise_sigma;
    int n_prk;                 /* pndm without skip_prk: number of PRK timesteps */
    int begin_index;

    /* step state (reset by set_timesteps) */
    size_t n;                  /* element count of the state buffers (0 = not allocated) */
    int last_index;            /* index of the last step taken (-1 = none) */
    int counter;               /* pndm */
    int n_ets;                 /* pndm: model outputs appended so far */
    float *ets[4];             /* pndm: last 4 (ets[0] newest) */
    float *cur_sample;         /* pndm */
    int has_cur_sample;
    float *cur_model_output;   /* pndm prk */
    float *model_outputs[2];   /* dpm: [0] = previous, [1] = newest */
    int lower_order_nums;
    float *derivs[4];          /* lms: [0] newest */
    int n_derivs;
    float *tmp, *tmp2;         /* scratch */
};

/* torch.log of a float32 value as torch 1.13's CPU kernel computes it (SLEEF logf_u10, FMA). */
float sdb_sched_torch_logf(float d);

int sdb_sched_step_impl(sdb_sched *s, const float *model_output, int index, const float *sample,
                        float *prev, size_t n, sdb_rng *rng, sdb_err *err);

#endif
