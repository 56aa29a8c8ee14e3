/*
 * image.h — 8-bit images: PNG/JPEG decoding that matches Pillow, PNG writing with text chunks.
 *
 * An sdb_image is row-major HWC uint8: c = 1 (L), 3 (RGB) or 4 (RGBA).
 *
 * Decoding reproduces what `PIL.Image.open(path).convert("RGB")` / `.convert("L")` give
 * (diffusers' load_image and VaeImageProcessor), without EXIF rotation and without gamma/ICC:
 *   PNG gray 1-bit         -> 0 / 255                   (Pillow mode "1")
 *   PNG gray 2/4/8-bit     -> v * 255 / (2^bits - 1)    (mode "L", rawmodes L;2 / L;4 / L)
 *   PNG gray 16-bit        -> min(v, 255)  (!)          (mode "I;16" or "I": conversion CLIPS, no >> 8)
 *   PNG gray+alpha 8-bit   -> L, alpha                  (mode "LA")
 *   PNG gray+alpha 16-bit  -> high bytes                (mode "RGBA", rawmode LA;16B)
 *   PNG RGB / RGBA 16-bit  -> high bytes                (rawmodes RGB;16B / RGBA;16B)
 *   PNG palette 1/2/4/8    -> palette RGB; tRNS gives the alpha; indices past the palette are
 *                             black (current Pillow zero-fills palettes;
 *                             very old versions used a gray ramp)
 *   tRNS on gray / RGB images is ignored (Pillow keeps it as info["transparency"] only).
 *   JPEG: libjpeg-turbo defaults (islow DCT, fancy upsampling) like Pillow; gray -> L; 3
 *   components -> RGB; 4 components (CMYK/YCCK) -> inverted as Pillow's "CMYK;I" rawmode, then
 *   Pillow's cmyk2rgb. A JPEG that ends early is an error (Pillow: "image file is truncated").
 * Conversions: to RGB drops alpha (no compositing) and replicates L; to L from RGB(A) is
 * (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (Pillow's L24).
 */
#ifndef SDB_IMAGE_H
#define SDB_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include "sdb/error.h"

typedef struct sdb_image {
    int w, h, c;   /* c = 1 (L), 3 (RGB), 4 (RGBA) */
    uint8_t *px;   /* w*h*c bytes, row-major HWC; malloc'd */
} sdb_image;

/* 64 megapixels (64 * 1024 * 1024): the default limit of sdb_image_load when max_pixels <= 0. */
#define SDB_IMAGE_DEFAULT_MAX_PIXELS (64L * 1024 * 1024)

/* Allocates a zero-filled w x h x c image (c in 1, 3, 4). */
int sdb_image_alloc(sdb_image *im, int w, int h, int c, sdb_err *err);
/* Frees the pixels and zeroes the struct (safe on a zeroed struct). */
void sdb_image_free(sdb_image *im);
int sdb_image_copy(const sdb_image *in, sdb_image *out, sdb_err *err);

/* Loads a PNG or JPEG, detected from the magic bytes (not the extension).
 * want_channels: 0 keeps the file's layout (gray without alpha -> 1; RGB, palette without tRNS,
 * color JPEG -> 3; anything with alpha (RGBA, gray+alpha with L replicated, palette with tRNS) -> 4),
 * 1 = Pillow's convert("L"), 3 = Pillow's convert("RGB").
 * max_pixels: width*height limit (<= 0: SDB_IMAGE_DEFAULT_MAX_PIXELS), checked before decoding.
 * Every failure (missing file, unknown format, corrupt or truncated data, too large) is an error
 * whose message names the file; `out` is then zeroed. */
int sdb_image_load(const char *path, sdb_image *out, int want_channels, long max_pixels, sdb_err *err);
/* The same from memory; `name` is used in messages. */
int sdb_image_load_memory(const void *buf, size_t n, const char *name, sdb_image *out,
                          int want_channels, long max_pixels, sdb_err *err);

/* ---- issue 17: job inputs and outputs beyond Pillow/diffusers ---- */
/* Flags of sdb_image_load_ex. SDB_LOAD_EXACT16: a 16-bit gray PNG keeps its high byte (as Pillow
 * does for 16-bit RGB, RGBA and gray+alpha) instead of Pillow's clip at 255, which turns most of
 * a 16-bit gray image white: every 16-bit PNG then reads as the 8-bit image it scales to (an 8-bit
 * value v stored as v * 257 reads back as v). Job inputs are read with it. */
#define SDB_LOAD_EXACT16 1
int sdb_image_load_ex(const char *path, sdb_image *out, int want_channels, long max_pixels, int flags,
                      sdb_err *err);

/* Output formats, by the path's extension (case-insensitive): .png, or .jpg / .jpeg. */
enum { SDB_FMT_PNG = 0, SDB_FMT_JPEG = 1 };
#define SDB_JPEG_QUALITY_DEFAULT 80   /* AUTOMATIC1111's default */
int sdb_image_format_of_path(const char *path);   /* SDB_FMT_*, or -1 */
/* JPEG writing (libjpeg-turbo defaults: baseline, 4:2:0 for colour, as Pillow's default) at
 * quality 1..100; an RGBA image is written without its alpha (JPEG has none); a COM segment
 * carries `comment` (the parameters text) when it is non-empty. Into a malloc'd buffer. */
int sdb_jpeg_encode(const sdb_image *im, int quality, const char *comment, uint8_t **out, size_t *out_len,
                    sdb_err *err);
/* Encodes for the format `path` names: PNG with `parameters` as its "parameters" text chunk, or
 * JPEG (jpeg_quality <= 0: SDB_JPEG_QUALITY_DEFAULT) with it as the comment. */
int sdb_image_encode_for_path(const char *path, const sdb_image *im, const char *parameters, int jpeg_quality,
                              uint8_t **out, size_t *out_len, sdb_err *err);
/* The same, written atomically (as sdb_png_write). */
int sdb_image_write(const char *path, const sdb_image *im, const char *parameters, int jpeg_quality, sdb_err *err);

/* Pillow's convert("RGB") / convert("L") of an L/RGB/RGBA image (into a new image). */
int sdb_image_to_rgb(const sdb_image *in, sdb_image *out, sdb_err *err);
int sdb_image_to_l(const sdb_image *in, sdb_image *out, sdb_err *err);
/* The L value Pillow computes from one RGB pixel. */
static inline uint8_t sdb_rgb_to_l(uint8_t r, uint8_t g, uint8_t b)
{
    return (uint8_t)(((uint32_t)r * 19595u + (uint32_t)g * 38470u + (uint32_t)b * 7471u + 0x8000u) >> 16);
}

/* PNG writing: 8-bit L / RGB / RGBA, n_text key/value pairs (UTF-8 C strings). A pair whose key
 * and value are both representable in Latin-1 is written as tEXt (converted to Latin-1), otherwise
 * as uncompressed iTXt (UTF-8; the key must still be Latin-1, 1..79 bytes, as PNG requires), like
 * Pillow's PngInfo.add_text. Output is deterministic: zlib level 6, no tIME, fixed chunk order.
 * sdb_png_write writes atomically (temp file beside `path`, fsync, rename): on any failure
 * neither `path` nor a temp file is left behind. */
int sdb_png_write(const char *path, const sdb_image *im, const char *const *keys,
                  const char *const *vals, int n_text, sdb_err *err);
/* Encodes into a malloc'd buffer. */
int sdb_png_encode(const sdb_image *im, const char *const *keys, const char *const *vals, int n_text,
                   uint8_t **out, size_t *out_len, sdb_err *err);

/* Reads every tEXt / zTXt / iTXt chunk of a PNG (before and after the image data), in file
 * order, as malloc'd UTF-8 strings (tEXt/zTXt Latin-1 converted to UTF-8). Free with
 * sdb_png_text_free. */
int sdb_png_read_text(const char *path, char ***keys, char ***vals, int *n, sdb_err *err);
int sdb_png_read_text_memory(const void *buf, size_t len, const char *name, char ***keys,
                             char ***vals, int *n, sdb_err *err);
void sdb_png_text_free(char **keys, char **vals, int n);
/* Adds a tEXt chunk (key: a PNG keyword, 1-79 printable Latin-1 characters; val: ASCII) to an
 * encoded PNG, just before its IEND chunk; *png is realloc'd. The image data are unchanged. */
int sdb_png_add_text(uint8_t **png, size_t *len, const char *key, const char *val, sdb_err *err);
/* The tEXt keyword under which `sdbatch run` records a job in its output PNG:
 * "id=<job id> identity=<64 hex digits: sdb_job_output_identity>". */
#define SDB_PNG_JOB_KEY "sdbatch-job"

#endif
