/*
 * sheet.h — a contact sheet of a batch, for reviewing a night's work: one row per job, with the
 * input (the mask's outline drawn on it in red), the output, and a caption (id, state, seed,
 * steps, guidance, strength, scheduler, the prompt; a failed job's error in red instead of an
 * output). Rows are paged: page p (0-based) holds jobs p*per_page .. in manifest order.
 *
 * Layout (pixels): a page is SDB_SHEET_PAD + 2 * (thumb + SDB_SHEET_PAD) + caption width +
 * SDB_SHEET_PAD wide; a header band of SDB_SHEET_HEADER, then per row thumb + SDB_SHEET_PAD.
 * Pictures are scaled (Lanczos, aspect kept) to fit a thumb x thumb box, centred in it.
 */
#ifndef SDB_SHEET_H
#define SDB_SHEET_H

#include <stdio.h>
#include "sdb/batch_state.h"
#include "sdb/image.h"
#include "sdb/manifest.h"

#define SDB_SHEET_PAD 8
#define SDB_SHEET_HEADER 28
#define SDB_SHEET_CAPTION_CHARS 56

typedef struct sdb_sheet_opts {
    int thumb;     /* box side in pixels (default 160) */
    int per_page;  /* rows per page (default 25) */
} sdb_sheet_opts;

int sdb_sheet_pages(const sdb_manifest *m, const sdb_sheet_opts *o);
/* Renders page `page` (0-based) into *out (RGB; free with sdb_image_free). An input or output
 * that cannot be read shows as a grey box with the reason in the caption; it is not an error. */
int sdb_sheet_render(const sdb_manifest *m, const sdb_batch_state *bs, const sdb_sheet_opts *o, int page,
                     sdb_image *out, sdb_err *err);
/* The same as an HTML page: a table with one row per job (all jobs, no paging) referring to the
 * input, mask and output files by their paths relative to html_dir (absolute when not below it). */
int sdb_sheet_html(const sdb_manifest *m, const sdb_batch_state *bs, const char *html_dir, FILE *f, sdb_err *err);

#endif
