/*
 * fp16.h — exact conversions between IEEE half / bfloat16 and float32.
 *
 * Widening is exact for every input (subnormals, infinities, NaN payloads kept as quiet NaN).
 * The array versions use the CPU's F16C instructions when it has them (checked at run time) and
 * give bit-identical results to the scalar code either way (NaNs narrow to the scalar code's
 * quiet NaN, 0x7E00 with the sign).
 */
#ifndef SDB_FP16_H
#define SDB_FP16_H

#include <stddef.h>
#include <stdint.h>

float sdb_f16_to_f32(uint16_t h);
float sdb_bf16_to_f32(uint16_t b);
/* Round-to-nearest-even narrowing (what torch's .half() does). */
uint16_t sdb_f32_to_f16(float f);
/* The same from a double, rounded once (not via float32, whose own rounding could move a value
 * onto a half-way point). */
uint16_t sdb_f64_to_f16(double d);
void sdb_f16_to_f32_array(const uint16_t *src, float *dst, size_t n);
void sdb_bf16_to_f32_array(const uint16_t *src, float *dst, size_t n);
void sdb_f32_to_f16_array(const float *src, uint16_t *dst, size_t n);
/* 1 when the vectorised F16C path is used on this CPU. */
int sdb_fp16_has_f16c(void);

#endif
