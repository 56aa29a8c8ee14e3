/*
 * sheet.c — contact sheets of a batch (see sheet.h): pages rendered with draw.h, and an HTML
 * version. Owns nothing across calls.
 */
#include "sdb/sheet.h"

#include "sdb/draw.h"
#include "sdb/resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t BG[3] = {24, 24, 28}, PANEL[3] = {52, 52, 58}, INK[3] = {235, 235, 235},
                     DIM[3] = {160, 160, 170}, RED[3] = {255, 64, 64}, GREEN[3] = {110, 220, 120},
                     AMBER[3] = {240, 190, 80}, OUTLINE[3] = {255, 32, 32};

static void opts_or_default(const sdb_sheet_opts *o, int *thumb, int *per)
{
    *thumb = o && o->thumb > 0 ? o->thumb : 160;
    *per = o && o->per_page > 0 ? o->per_page : 25;
}

int sdb_sheet_pages(const sdb_manifest *m, const sdb_sheet_opts *o)
{
    int t, per;
    opts_or_default(o, &t, &per);
    return m->n_jobs ? (m->n_jobs + per - 1) / per : 1;
}

/* Scales an image to fit a t x t box (aspect kept, at least 1 pixel a side). */
static int fit(const sdb_image *in, int t, sdb_image *out, sdb_err *err)
{
    int w = t, h = t;
    if (in->w >= in->h) h = (int)lround((double)t * in->h / in->w);
    else w = (int)lround((double)t * in->w / in->h);
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    return sdb_resize_lanczos(in, w, h, out, err);
}

/* A picture in its box: the image (RGB), optionally its mask outlined; or a grey box with a word. */
static void draw_cell(sdb_image *page, int x, int y, int t, const char *img_path, const char *mask_path,
                      const char *empty_word, char *why, size_t why_sz)
{
    sdb_draw_box(page, x, y, t, t, PANEL);
    if (!img_path) {
        sdb_draw_text(page, x + (t - sdb_text_chars(empty_word) * SDB_FONT_ADVANCE) / 2, y + t / 2 - 4, empty_word, DIM, 1);
        return;
    }
    sdb_err e = {0};
    sdb_image im = {0}, th = {0}, mk = {0}, mt = {0};
    if (sdb_image_load(img_path, &im, 3, 0, &e) || fit(&im, t, &th, &e)) {
        snprintf(why, why_sz, "%s", e.msg);
        sdb_draw_text(page, x + 4, y + t / 2 - 4, "unreadable", RED, 1);
    } else {
        int ox = x + (t - th.w) / 2, oy = y + (t - th.h) / 2;
        sdb_draw_image(page, &th, ox, oy);
        if (mask_path) {
            if (sdb_image_load(mask_path, &mk, 1, 0, &e) || sdb_resize_lanczos(&mk, th.w, th.h, &mt, &e))
                snprintf(why, why_sz, "mask: %s", e.msg);
            else sdb_draw_mask_outline(page, &mt, ox, oy, OUTLINE, 1);
        }
    }
    sdb_image_free(&im); sdb_image_free(&th); sdb_image_free(&mk); sdb_image_free(&mt);
}

/* Caption lines at (x, y), at most max_lines of SDB_SHEET_CAPTION_CHARS; returns lines used. */
static int caption(sdb_image *page, int x, int y, int max_lines, const char *text, const uint8_t rgb[3])
{
    char *lines[64];
    if (max_lines > 64) max_lines = 64;
    int n = sdb_wrap_text(text, SDB_SHEET_CAPTION_CHARS, lines, max_lines);
    for (int i = 0; i < n; i++) {
        sdb_draw_text(page, x, y + i * SDB_FONT_LINE, lines[i], rgb, 1);
        free(lines[i]);
    }
    return n;
}

int sdb_sheet_render(const sdb_manifest *m, const sdb_batch_state *bs, const sdb_sheet_opts *o, int page,
                     sdb_image *out, sdb_err *err)
{
    int t, per;
    opts_or_default(o, &t, &per);
    const int pages = sdb_sheet_pages(m, o);
    if (page < 0 || page >= pages) return sdb_fail(err, SDB_EINVAL, "sheet: page %d of %d", page + 1, pages);
    const int first = page * per, n = m->n_jobs - first < per ? m->n_jobs - first : per;
    const int cap_w = SDB_SHEET_CAPTION_CHARS * SDB_FONT_ADVANCE;
    const int W = SDB_SHEET_PAD + 2 * (t + SDB_SHEET_PAD) + cap_w + SDB_SHEET_PAD;
    const int H = SDB_SHEET_HEADER + (n > 0 ? n : 1) * (t + SDB_SHEET_PAD);
    int rc = sdb_image_alloc(out, W, H, 3, err);
    if (rc) return rc;
    sdb_draw_box(out, 0, 0, W, H, BG);
    char head[512];
    snprintf(head, sizeof head, "%s  page %d/%d  done %d  failed %d  pending %d  running %d", m->path, page + 1, pages,
             bs->counts[SDB_JOB_DONE], bs->counts[SDB_JOB_FAILED], bs->counts[SDB_JOB_PENDING], bs->counts[SDB_JOB_RUNNING]);
    sdb_draw_text(out, SDB_SHEET_PAD, (SDB_SHEET_HEADER - SDB_FONT_H) / 2, head, INK, 1);
    for (int r = 0; r < n; r++) {
        const sdb_job_spec *j = &m->jobs[first + r];
        const sdb_job_view *v = &bs->jobs[first + r];
        const int y = SDB_SHEET_HEADER + r * (t + SDB_SHEET_PAD), x1 = SDB_SHEET_PAD, x2 = x1 + t + SDB_SHEET_PAD,
                  xc = x2 + t + SDB_SHEET_PAD;
        char why_in[300] = "", why_out[300] = "";
        draw_cell(out, x1, y, t, j->image, j->mask, "txt2img", why_in, sizeof why_in);
        const char *word = v->state == SDB_JOB_FAILED ? "failed" : v->state == SDB_JOB_RUNNING ? "running" : "pending";
        draw_cell(out, x2, y, t, v->state == SDB_JOB_DONE ? v->output : NULL, NULL, word, why_out, sizeof why_out);
        /* caption */
        const int max_lines = t / SDB_FONT_LINE;
        int line = 0;
        sdb_draw_text(out, xc, y + line++ * SDB_FONT_LINE, j->id, INK, 1);
        char buf[512];
        const uint8_t *sc = v->state == SDB_JOB_DONE ? GREEN : v->state == SDB_JOB_FAILED ? RED : AMBER;
        if (isfinite(v->seconds)) snprintf(buf, sizeof buf, "%s, attempt %d, %.1f s", sdb_job_state_name(v->state), v->attempts, v->seconds);
        else snprintf(buf, sizeof buf, "%s%s", sdb_job_state_name(v->state), v->stale ? " (its process died)" : "");
        sdb_draw_text(out, xc, y + line++ * SDB_FONT_LINE, buf, sc, 1);
        snprintf(buf, sizeof buf, "seed %llu  steps %d  cfg %g  strength %g  %s", (unsigned long long)j->seed, j->steps,
                 j->guidance_scale, j->strength, j->scheduler ? j->scheduler : "default scheduler");
        line += caption(out, xc, y + line * SDB_FONT_LINE, max_lines - line, buf, DIM);
        if (v->state == SDB_JOB_FAILED && v->error && line < max_lines) {
            snprintf(buf, sizeof buf, "error: %s", v->error);
            line += caption(out, xc, y + line * SDB_FONT_LINE, max_lines - line > 4 ? 4 : max_lines - line, buf, RED);
        }
        if (why_in[0] && line < max_lines) line += caption(out, xc, y + line * SDB_FONT_LINE, 2, why_in, RED);
        if (why_out[0] && line < max_lines) line += caption(out, xc, y + line * SDB_FONT_LINE, 2, why_out, RED);
        if (line < max_lines) {
            char *pt = malloc(strlen(j->prompt) + 16);
            if (pt) {
                sprintf(pt, "prompt: %s", j->prompt);
                line += caption(out, xc, y + line * SDB_FONT_LINE, max_lines - line, pt, INK);
                free(pt);
            }
        }
    }
    return 0;
}

static void html_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* A path as an href: relative to dir when below it, percent-encoding what URLs need. */
static void html_path(FILE *f, const char *path, const char *dir)
{
    size_t dl = dir ? strlen(dir) : 0;
    const char *p = path;
    if (dl && !strncmp(path, dir, dl) && path[dl] == '/') p = path + dl + 1;
    else if (path[0] == '/') fputs("file://", f);
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == '"' || c == '%' || c == '#' || c == '?' || c == '<' || c == '>' || c == '&' || c >= 0x7f)
            fprintf(f, "%%%02X", c);
        else fputc(c, f);
    }
}

int sdb_sheet_html(const sdb_manifest *m, const sdb_batch_state *bs, const char *html_dir, FILE *f, sdb_err *err)
{
    fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sdbatch sheet: ", f);
    html_text(f, m->path);
    fputs("</title>\n<style>body{background:#18181c;color:#eee;font-family:sans-serif}td{vertical-align:top;padding:4px}"
          "img{max-width:240px;max-height:240px}.failed{color:#f44}.done{color:#6d7}.pending,.running{color:#eb5}"
          ".mask{max-width:80px;max-height:80px}</style></head><body>\n<h1>", f);
    html_text(f, m->path);
    fprintf(f, "</h1>\n<p>done %d, failed %d, pending %d, running %d</p>\n<table>\n", bs->counts[SDB_JOB_DONE],
            bs->counts[SDB_JOB_FAILED], bs->counts[SDB_JOB_PENDING], bs->counts[SDB_JOB_RUNNING]);
    for (int i = 0; i < m->n_jobs; i++) {
        const sdb_job_spec *j = &m->jobs[i];
        const sdb_job_view *v = &bs->jobs[i];
        const char *st = sdb_job_state_name(v->state);
        fprintf(f, "<tr id=\"job-");
        html_text(f, j->id);
        fputs("\"><td>", f);
        if (j->image) { fputs("<img src=\"", f); html_path(f, j->image, html_dir); fputs("\" alt=\"input\">", f); }
        else fputs("(txt2img)", f);
        if (j->mask) { fputs("<br><img class=\"mask\" src=\"", f); html_path(f, j->mask, html_dir); fputs("\" alt=\"mask\">", f); }
        fputs("</td><td>", f);
        if (v->state == SDB_JOB_DONE && v->output) { fputs("<img src=\"", f); html_path(f, v->output, html_dir); fputs("\" alt=\"output\">", f); }
        else fprintf(f, "<span class=\"%s\">(%s)</span>", st, st);
        fputs("</td><td><b>", f);
        html_text(f, j->id);
        fprintf(f, "</b><br><span class=\"%s\">%s</span>", st, st);
        if (isfinite(v->seconds)) fprintf(f, ", attempt %d, %.1f s", v->attempts, v->seconds);
        fprintf(f, "<br>seed %llu, steps %d, cfg %g, strength %g, %s<br>prompt: ", (unsigned long long)j->seed, j->steps,
                j->guidance_scale, j->strength, j->scheduler ? j->scheduler : "default scheduler");
        html_text(f, j->prompt);
        if (j->negative_prompt && j->negative_prompt[0]) { fputs("<br>negative: ", f); html_text(f, j->negative_prompt); }
        if (v->state == SDB_JOB_FAILED && v->error) { fputs("<br><span class=\"failed\">error: ", f); html_text(f, v->error); fputs("</span>", f); }
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n</body></html>\n", f);
    if (ferror(f)) return sdb_fail(err, SDB_EIO, "sheet: writing the HTML failed");
    return 0;
}
