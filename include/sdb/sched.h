/*
 * sched.h — the diffusers noise schedulers behind one small interface.
 *
 * Names (sdb_sched_names()): pndm (PNDMScheduler, PLMS when skip_prk_steps), ddim (DDIMScheduler,
 * optional eta), euler (EulerDiscreteScheduler), euler_a (EulerAncestralDiscreteScheduler),
 * dpmpp_2m / dpmpp_2m_karras (DPMSolverMultistepScheduler, dpmsolver++, order 2, midpoint, without /
 * with use_karras_sigmas) and lms (LMSDiscreteScheduler). Each reproduces diffusers 0.30.3 with
 * torch 1.13 on the CPU: the same order of operations, float32 where torch computes in float32 and
 * float64 where diffusers uses numpy float64.
 *
 * Built from a scheduler_config.json with diffusers' `Cls.from_config(config)` semantics: keys the
 * config has override the chosen class's defaults, keys it lacks take that class's own defaults
 * (e.g. timestep_spacing is "leading" for PNDM/DDIM and "linspace" for the others), keys the class
 * does not know are ignored. Unsupported values are refused with a message listing what is
 * supported.
 *
 * Use (what the diffusers pipelines do):
 *     sdb_sched_create(&s, "euler_a", &cfg, &err);       // NULL name: the config's own class
 *     sdb_sched_set_timesteps(s, 20, &err);               // resets all step state
 *     sdb_sched_strength(s, 0.75, &first, &steps, &err);  // optional: img2img / inpaint strength
 *     x *= sdb_sched_init_noise_sigma(s) ... (or add_noise at index `first`)
 *     for (i = first; i < sdb_sched_num_timesteps(s); i++) {
 *         sdb_sched_scale_model_input(s, x, xin, n, i);
 *         eps = unet(xin, sdb_sched_timesteps(s)[i]);    // int64 or float: sdb_sched_timestep_is_int
 *         sdb_sched_step(s, eps, i, x, x, n, rng, &err); // in place is allowed
 *     }
 * A step index is always an index into the full timesteps array (for strength runs: first, first+1,
 * ...); steps must be taken in order. The sample may hold a whole batch (n = numel): every element
 * gets the same timestep, and noise draws consume the generator as torch.randn(shape) would.
 */
#ifndef SDB_SCHED_H
#define SDB_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "sdb/config.h"
#include "sdb/error.h"
#include "sdb/rng.h"

typedef enum {
    SDB_SCHED_PNDM,
    SDB_SCHED_DDIM,
    SDB_SCHED_EULER,
    SDB_SCHED_EULER_A,
    SDB_SCHED_DPMPP_2M,
    SDB_SCHED_DPMPP_2M_KARRAS,
    SDB_SCHED_LMS,
    SDB_SCHED_COUNT
} sdb_sched_kind;

typedef struct sdb_sched sdb_sched;

/* "pndm, ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, lms" (for --help texts). */
const char *sdb_sched_names(void);
/* Looks a name up; returns SDB_EINVAL with the list of names when unknown. */
int sdb_sched_kind_from_name(const char *name, sdb_sched_kind *kind, sdb_err *err);
/* The scheduler a config describes by itself (its _class_name; for DPMSolverMultistepScheduler
 * its use_karras_sigmas), or an error when the class/variant is not supported. */
int sdb_sched_default_name(const sdb_config *cfg, const char **name, sdb_err *err);

/* name NULL or "" = the config's own class. cfg may be NULL (all class defaults).
 * The name fixes what it stands for: dpmpp_2m / dpmpp_2m_karras are always dpmsolver++, order 2,
 * midpoint, without / with Karras sigmas whatever the config says; euler and lms honour a config's
 * use_karras_sigmas (the A1111 name then says "Karras"). */
int sdb_sched_create(sdb_sched **out, const char *name, const sdb_config *cfg, sdb_err *err);
void sdb_sched_free(sdb_sched *s);

sdb_sched_kind sdb_sched_get_kind(const sdb_sched *s);
const char *sdb_sched_name(const sdb_sched *s);
/* The AUTOMATIC1111 sampler name for PNG metadata: "PNDM", "DDIM", "Euler", "Euler a", "DPM++ 2M",
 * "DPM++ 2M Karras", "LMS" ("Euler Karras"/"LMS Karras" when a config asks for Karras sigmas). */
const char *sdb_sched_a1111_name(const sdb_sched *s);
/* The scheduler name (sdb_sched_names) of an AUTOMATIC1111 sampler name as sdb_sched_a1111_name
 * writes them ("Euler a" -> "euler_a"; "Euler Karras" -> "euler"), or NULL when sdbatch has none. */
const char *sdb_sched_name_from_a1111(const char *a1111);

/* DDIM's eta (default 0; noise is then drawn from the rng passed to step). Other schedulers:
 * SDB_EINVAL for eta != 0. */
int sdb_sched_set_eta(sdb_sched *s, double eta, sdb_err *err);

/* set_timesteps(n): builds the timesteps (and sigmas) and resets every piece of step state. */
int sdb_sched_set_timesteps(sdb_sched *s, int num_inference_steps, sdb_err *err);
/* Length of the timestep array: n; n+1 for PLMS (PNDM repeats its 2nd timestep); n+9 for PNDM
 * with skip_prk_steps false (12 Runge-Kutta timesteps, then PLMS). One U-Net call each. */
int sdb_sched_num_timesteps(const sdb_sched *s);
const double *sdb_sched_timesteps(const sdb_sched *s);
/* 1: the U-Net gets an int64 timestep (pndm, ddim, dpm); 0: a float32 one (euler, euler_a, lms). */
int sdb_sched_timestep_is_int(const sdb_sched *s);
/* The sigma table (num_timesteps+1 values, last one the final sigma) or NULL (pndm, ddim). */
const float *sdb_sched_sigmas(const sdb_sched *s, int *n);
float sdb_sched_init_noise_sigma(const sdb_sched *s);
/* diffusers' scheduler.order (1 for all of these). */
int sdb_sched_order(const sdb_sched *s);
/* The train-time alphas_cumprod (num_train_timesteps float32 values). */
const float *sdb_sched_alphas_cumprod(const sdb_sched *s, int *n);

/* The pipelines' get_timesteps(N, strength) on the timesteps of the last set_timesteps(N):
 * init_timestep = min(int(N*strength), N), t_start = max(N - init_timestep, 0); *first =
 * t_start*order is the first step index to run (and the scheduler's begin index); *remaining =
 * N - t_start. strength must be in [0, 1]; zero remaining steps is an error. */
int sdb_sched_strength(sdb_sched *s, double strength, int *first, int *remaining, sdb_err *err);

/* out = scale_model_input(sample, timesteps[index]) (a copy for pndm/ddim/dpm). out may equal sample. */
void sdb_sched_scale_model_input(const sdb_sched *s, const float *sample, float *out, size_t n, int index);

/* prev = step(model_output, timesteps[index], sample).prev_sample. prev may equal sample.
 * rng: the pipeline's generator; euler draws (and discards) one randn per step like diffusers,
 * euler_a and ddim with eta > 0 use it; NULL is an error for euler_a / ddim eta>0 and skips
 * euler's unused draw. n must stay the same between set_timesteps calls. */
int sdb_sched_step(sdb_sched *s, const float *model_output, int index, const float *sample,
                   float *prev, size_t n, sdb_rng *rng, sdb_err *err);

/* out = add_noise(original, noise, timesteps[index]): sqrt(acp[t])*x0 + sqrt(1-acp[t])*noise for
 * pndm/ddim, alpha_t*x0 + sigma_t*noise with sigma = sigmas[index] for dpm, x0 + sigmas[index]*noise
 * for euler/euler_a/lms. index in [0, num_timesteps] (num_timesteps: the final sigma). */
int sdb_sched_add_noise(const sdb_sched *s, const float *original, const float *noise, float *out,
                        size_t n, int index, sdb_err *err);

#endif
