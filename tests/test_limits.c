/*
 * test_limits.c — the input limits of the README's "Limits" table, each refused with an error
 * that names the file and the limit, before the work it guards: image pixels from the PNG / JPEG
 * header (a 100000 x 100000 PNG refused without allocating or decoding), PNG chunk lengths (a
 * chunk claiming more than the file holds refused before libpng allocates it), manifest bytes, YAML
 * alias expansion (a billion-laughs manifest refused in well under a second) and nesting, the
 * safetensors header size and tensor count. The job count limit (1,000,000 jobs: a 28 MB
 * manifest) is checked in test_limits_slow.c.
 */
#include "harness.h"
#include "sdb/image.h"
#include "sdb/fsutil.h"
#include "sdb/manifest.h"
#include "sdb/resize.h"
#include "sdb/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* PNG CRC-32 (ISO 3309), bit by bit: independent of zlib and libpng. */
static uint32_t crc32_png(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static size_t put_chunk(unsigned char *o, const char *type, const unsigned char *d, uint32_t len)
{
    o[0] = (unsigned char)(len >> 24); o[1] = (unsigned char)(len >> 16); o[2] = (unsigned char)(len >> 8); o[3] = (unsigned char)len;
    memcpy(o + 4, type, 4);
    if (len) memcpy(o + 8, d, len);
    uint32_t c = crc32_png(o + 4, len + 4);
    o[8 + len] = (unsigned char)(c >> 24); o[9 + len] = (unsigned char)(c >> 16);
    o[10 + len] = (unsigned char)(c >> 8); o[11 + len] = (unsigned char)c;
    return 12 + len;
}

/* A PNG of w x h 8-bit gray whose one IDAT holds a stored (uncompressed) zlib stream of two zero
 * bytes: a complete 1 x 1 image, far too short for anything larger. */
static size_t png_header_only(unsigned char *o, uint32_t w, uint32_t h)
{
    static const unsigned char magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(o, magic, 8);
    unsigned char ihdr[13] = {(unsigned char)(w >> 24), (unsigned char)(w >> 16), (unsigned char)(w >> 8), (unsigned char)w,
                              (unsigned char)(h >> 24), (unsigned char)(h >> 16), (unsigned char)(h >> 8), (unsigned char)h,
                              8, 0, 0, 0, 0};
    size_t n = 8 + put_chunk(o + 8, "IHDR", ihdr, 13);
    static const unsigned char idat[] = {0x78, 0x01, 0x01, 0x02, 0x00, 0xfd, 0xff, 0x00, 0x00, /* adler32: */ 0x00, 0x02, 0x00, 0x01};
    n += put_chunk(o + n, "IDAT", idat, sizeof idat);
    n += put_chunk(o + n, "IEND", NULL, 0);
    return n;
}

static void test_png_pixel_limit_from_the_header(void)
{
    unsigned char png[128];
    size_t n = png_header_only(png, 100000, 100000);
    /* Under an address-space limit far below the 10 GB the pixels would take (not under ASan,
     * whose shadow memory needs the address space): the refusal must not try to allocate them. */
    struct rlimit old;
    getrlimit(RLIMIT_AS, &old);
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit lim = {(rlim_t)4 << 30, old.rlim_max};
    if (old.rlim_cur == RLIM_INFINITY || old.rlim_cur > lim.rlim_cur) CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
#endif
    sdb_image im;
    sdb_err err = {0};
    double t0 = now();
    int rc = sdb_image_load_memory(png, n, "huge.png", &im, 3, 0, &err);
    double dt = now() - t0;
    setrlimit(RLIMIT_AS, &old);
    fprintf(stderr, "  %s (%.4f s)\n", err.msg, dt);
    CHECK(rc == SDB_EUNSUPPORTED);
    CHECK(strstr(err.msg, "huge.png: image is 100000x100000 = 10000000000 pixels, more than the limit of 67108864"));
    CHECK(im.px == NULL);
    CHECK(dt < 0.5);
    /* from a file: the message names it; a caller's own limit applies the same way */
    const char *path = sdb_t_tmpdir();
    char file[600];
    snprintf(file, sizeof file, "%s/huge.png", path);
    CHECK_OK(sdb_write_file_atomic(file, png, n, &err), &err);
    CHECK(sdb_image_load(file, &im, 0, 0, &err) == SDB_EUNSUPPORTED && strstr(err.msg, file));
    n = png_header_only(png, 100, 100);
    CHECK(sdb_image_load_memory(png, n, "small.png", &im, 0, 9999, &err) == SDB_EUNSUPPORTED &&
          strstr(err.msg, "10000 pixels, more than the limit of 9999"));
    /* at the limit the header passes and the decoder then finds the data missing */
    CHECK(sdb_image_load_memory(png, n, "small.png", &im, 0, 10000, &err) == SDB_EFORMAT);
}

static void test_png_chunk_length_checked_before_allocating(void)
{
    /* a 1x1 PNG whose tEXt chunk claims 2 GB (0x7fffff00 bytes) and holds 9: libpng would allocate
     * and clear the claimed size before finding the file short (fuzz_png_text found it) */
    unsigned char png[256];
    size_t n = png_header_only(png, 1, 1);
    size_t at = 8 + 25; /* after the signature and IHDR */
    unsigned char text[64];
    size_t tl = put_chunk(text, "tEXt", (const unsigned char *)"parameters\0a cat", 16);
    text[0] = 0x7f; text[1] = 0xff; text[2] = 0xff; text[3] = 0x00;
    memmove(png + at + tl, png + at, n - at);
    memcpy(png + at, text, tl);
    n += tl;
    struct rlimit old;
    getrlimit(RLIMIT_AS, &old);
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit lim = {(rlim_t)1 << 30, old.rlim_max}; /* 1 GiB: the claimed 2 GB cannot be allocated */
    if (old.rlim_cur == RLIM_INFINITY || old.rlim_cur > lim.rlim_cur) CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
#endif
    char **keys = NULL, **vals = NULL;
    int nt = 0;
    sdb_err err = {0};
    double t0 = now();
    int rc = sdb_png_read_text_memory(png, n, "bomb.png", &keys, &vals, &nt, &err);
    double dt = now() - t0;
    fprintf(stderr, "  %s (%.4f s)\n", err.msg, dt);
    CHECK(rc == SDB_EFORMAT && nt == 0 && dt < 0.1);
    CHECK(strstr(err.msg, "bomb.png: corrupt or truncated PNG: chunk 'tEXt' at byte 33 claims 2147483392 bytes, "
                          "more than the file holds"));
    sdb_image im;
    CHECK(sdb_image_load_memory(png, n, "bomb.png", &im, 0, 0, &err) == SDB_EFORMAT && im.px == NULL);
    CHECK(strstr(err.msg, "chunk 'tEXt' at byte 33 claims 2147483392 bytes"));
    setrlimit(RLIMIT_AS, &old);
    /* the same chunk with its true length is read */
    text[0] = 0; text[1] = 0; text[2] = 0; text[3] = 16;
    uint32_t c = crc32_png(text + 4, 20);
    text[24] = (unsigned char)(c >> 24); text[25] = (unsigned char)(c >> 16); text[26] = (unsigned char)(c >> 8); text[27] = (unsigned char)c;
    memcpy(png + at, text, tl);
    CHECK_OK(sdb_png_read_text_memory(png, n, "ok.png", &keys, &vals, &nt, &err), &err);
    CHECK(nt == 1 && !strcmp(keys[0], "parameters") && !strcmp(vals[0], "a cat"));
    sdb_png_text_free(keys, vals, nt);
}

static void test_jpeg_pixel_limit_from_the_header(void)
{
    char *jpg = NULL;
    size_t n = 0;
    sdb_err err = {0};
    char src[1024];
    snprintf(src, sizeof src, "%s/tests/data/garden-96x128.jpg", SDB_SOURCE_DIR);
    CHECK_OK(sdb_read_file(src, &jpg, &n, &err), &err);
    if (!jpg) return;
    /* the SOF0 marker's height and width set to 60000 x 60000 (3.6 gigapixels) */
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n; i++)
        if ((unsigned char)jpg[i] == 0xff && (unsigned char)jpg[i + 1] == 0xc0) { sof = i; break; }
    CHECK(sof > 0);
    unsigned char *p = (unsigned char *)jpg + sof;
    CHECK(p[5] == 0 && p[6] == 128 && p[7] == 0 && p[8] == 96); /* the file is 96 wide, 128 high */
    p[5] = 60000 >> 8; p[6] = 60000 & 255; p[7] = 60000 >> 8; p[8] = 60000 & 255;
    sdb_image im;
    double t0 = now();
    int rc = sdb_image_load_memory(jpg, n, "huge.jpg", &im, 3, 0, &err);
    fprintf(stderr, "  %s (%.4f s)\n", err.msg, now() - t0);
    CHECK(rc == SDB_EUNSUPPORTED && im.px == NULL);
    CHECK(strstr(err.msg, "huge.jpg: image is 60000x60000 = 3600000000 pixels, more than the limit of 67108864"));
    free(jpg);
}

static void test_resize_and_crop_of_a_sliver(void)
{
    /* a 30816 x 1 image (fuzz_image's JPEG) cropped onto 13 x 32 would first be magnified to
     * 986112 x 32 (29 s of LANCZOS): refused at once; a 4:3 image onto a square still works */
    sdb_image in, out;
    sdb_err err = {0};
    CHECK_OK(sdb_image_alloc(&in, 30816, 1, 3, &err), &err);
    double t0 = now();
    CHECK(sdb_resize_and_crop(&in, 13, 32, &out, &err) == SDB_EINVAL && out.px == NULL);
    fprintf(stderr, "  %s (%.4f s)\n", err.msg, now() - t0);
    CHECK(now() - t0 < 0.5);
    CHECK(strstr(err.msg, "30816x1 cannot be fitted onto 13x32 (aspect ratio too extreme: it would be resized to 986112x32)"));
    sdb_image_free(&in);
    CHECK_OK(sdb_image_alloc(&in, 400, 300, 3, &err), &err);
    CHECK_OK(sdb_resize_and_crop(&in, 64, 64, &out, &err), &err);
    CHECK(out.w == 64 && out.h == 64);
    sdb_image_free(&out);
    sdb_image_free(&in);
}

static void test_manifest_size_limit(void)
{
    /* a sparse file one byte over the limit: refused from its size, before it is read */
    char path[600];
    snprintf(path, sizeof path, "%s/big.yaml", sdb_t_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f && fputs("version: 1\n", f) >= 0 && fclose(f) == 0);
    CHECK(truncate(path, SDB_MANIFEST_MAX_BYTES + 1) == 0);
    sdb_manifest m;
    sdb_err err = {0};
    double t0 = now();
    CHECK(sdb_manifest_load(&m, path, &err) == SDB_EFORMAT);
    CHECK(now() - t0 < 0.1);
    fprintf(stderr, "  %s\n", err.msg);
    CHECK(strstr(err.msg, path) && strstr(err.msg, "67108865 bytes, more than the 67108864-byte limit of a manifest"));
    sdb_manifest_free(&m);
    /* the same through the text API (the daemon's spool reads files itself) */
    size_t len = (size_t)SDB_MANIFEST_MAX_BYTES + 1;
    char *text = malloc(len);
    if (!text) return;
    memset(text, ' ', len);
    memcpy(text, "version: 1\n", 11);
    CHECK(sdb_manifest_parse(&m, text, len, "/x/big.yaml", &err) == SDB_EFORMAT);
    CHECK(strstr(err.msg, "/x/big.yaml: 67108865 bytes, more than the 67108864-byte limit"));
    sdb_manifest_free(&m);
    free(text);
}

static const char head[] = "version: 1\nmodel: m\noutput_dir: out\n";

static void test_billion_laughs_refused_fast(void)
{
    /* 9 levels of 10 aliases each: 10^9 nodes once expanded, 1 KB of text */
    char text[4096];
    size_t o = (size_t)snprintf(text, sizeof text, "%sl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n", head);
    for (int lvl = 1; lvl <= 9; lvl++) {
        o += (size_t)snprintf(text + o, sizeof text - o, "l%d: &l%d [", lvl, lvl);
        for (int k = 0; k < 10; k++) o += (size_t)snprintf(text + o, sizeof text - o, "%s*l%d", k ? ", " : "", lvl - 1);
        o += (size_t)snprintf(text + o, sizeof text - o, "]\n");
    }
    o += (size_t)snprintf(text + o, sizeof text - o, "jobs:\n  - {id: a, prompt: *l9}\n");
    sdb_manifest m;
    sdb_err err = {0};
    double t0 = now();
    int rc = sdb_manifest_parse(&m, text, o, "/x/laughs.yaml", &err);
    double dt = now() - t0;
    fprintf(stderr, "  %s (%.4f s)\n", err.msg, dt);
    CHECK(rc == SDB_EFORMAT && m.n_errors == 1);
    CHECK(strstr(err.msg, "/x/laughs.yaml:") && strstr(err.msg, "expands to more than 20000000 nodes through its aliases"));
    CHECK(dt < 1.0);
    sdb_manifest_free(&m);

    /* aliases within the limit are fine: a shared prompt used by every job */
    o = (size_t)snprintf(text, sizeof text, "%sdefaults: {steps: 2}\njobs:\n  - {id: a, prompt: &p \"a cat\"}\n"
                                            "  - {id: b, prompt: *p}\n  - {id: c, prompt: *p}\n", head);
    CHECK_OK(sdb_manifest_parse(&m, text, o, "/x/ok.yaml", &err), &err);
    CHECK(m.n_jobs == 3 && !strcmp(m.jobs[2].prompt, "a cat"));
    sdb_manifest_free(&m);
}

static void test_recursive_alias_and_deep_nesting(void)
{
    sdb_manifest m;
    sdb_err err = {0};
    /* an anchor used inside its own collection (libyaml builds the loop) */
    char text[8192];
    size_t o = (size_t)snprintf(text, sizeof text, "%sx: &a [1, *a]\njobs:\n  - {id: a, prompt: p}\n", head);
    int rc = sdb_manifest_parse(&m, text, o, "/x/loop.yaml", &err);
    fprintf(stderr, "  %s\n", err.msg);
    CHECK(rc == SDB_EFORMAT && m.n_errors >= 1);
    CHECK(strstr(err.msg, "/x/loop.yaml:"));
    sdb_manifest_free(&m);
    /* 100 nested lists */
    o = (size_t)snprintf(text, sizeof text, "%sx: ", head);
    for (int i = 0; i < 100; i++) text[o++] = '[';
    for (int i = 0; i < 100; i++) text[o++] = ']';
    o += (size_t)snprintf(text + o, sizeof text - o, "\njobs:\n  - {id: a, prompt: p}\n");
    rc = sdb_manifest_parse(&m, text, o, "/x/deep.yaml", &err);
    fprintf(stderr, "  %s\n", err.msg);
    CHECK(rc == SDB_EFORMAT && strstr(err.msg, "/x/deep.yaml:4:") && strstr(err.msg, "nests deeper than 64 levels"));
    sdb_manifest_free(&m);
}

static void test_safetensors_header_and_tensor_count(void)
{
    sdb_st *st;
    sdb_err err = {0};
    /* a header length of 2 GiB: refused from the length, nothing read or parsed */
    unsigned char two_gib[16] = {0, 0, 0, 0x80, 0, 0, 0, 0, '{', '}'};
    CHECK(sdb_st_open_memory(&st, two_gib, sizeof two_gib, "big.safetensors", &err) == SDB_EFORMAT);
    CHECK(strstr(err.msg, "big.safetensors: header length 2147483648 exceeds the 100000000-byte limit"));
    /* SDB_ST_MAX_TENSORS + 1 entries: refused by their count, before any entry is looked at (so
     * they need not be tensors: "tN":0 keeps the JSON, whose parse dominates, small) */
    size_t cap = 16u * (SDB_ST_MAX_TENSORS + 2) + 64, o = 8;
    unsigned char *buf = malloc(cap);
    if (!buf) return;
    buf[o++] = '{';
    for (int i = 0; i <= SDB_ST_MAX_TENSORS; i++) o += (size_t)snprintf((char *)buf + o, cap - o, "%s\"t%d\":0", i ? "," : "", i);
    buf[o++] = '}';
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)(o - 8) >> (8 * i));
    CHECK(sdb_st_open_memory(&st, buf, o, "many.safetensors", &err) == SDB_EUNSUPPORTED);
    fprintf(stderr, "  %s\n", err.msg);
    CHECK(strstr(err.msg, "many.safetensors: 100001 tensors, more than the limit of 100000"));
    /* 100,000 entries and __metadata__ (not a tensor) pass the count: the first entry is then
     * looked at (and refused, not being a tensor) */
    o = 8;
    o += (size_t)snprintf((char *)buf + o, cap - o, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < SDB_ST_MAX_TENSORS; i++) o += (size_t)snprintf((char *)buf + o, cap - o, ",\"t%d\":0", i);
    buf[o++] = '}';
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)(o - 8) >> (8 * i));
    CHECK(sdb_st_open_memory(&st, buf, o, "many.safetensors", &err) == SDB_EFORMAT);
    CHECKF(strstr(err.msg, "entry is not an object"), "%s", err.msg);
    free(buf);
}

int main(void)
{
    RUN(test_png_pixel_limit_from_the_header);
    RUN(test_png_chunk_length_checked_before_allocating);
    RUN(test_jpeg_pixel_limit_from_the_header);
    RUN(test_resize_and_crop_of_a_sliver);
    RUN(test_manifest_size_limit);
    RUN(test_billion_laughs_refused_fast);
    RUN(test_recursive_alias_and_deep_nesting);
    RUN(test_safetensors_header_and_tensor_count);
    return sdb_t_done();
}
