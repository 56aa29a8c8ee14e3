/*
 * draw.h — drawing on 8-bit RGB images for the contact sheet: filled boxes, pasted pictures, mask
 * outlines and text in sdbatch's own 5x7 bitmap font (printable ASCII; any other character is
 * drawn as '?'). Everything is clipped to the image.
 */
#ifndef SDB_DRAW_H
#define SDB_DRAW_H

#include <stdint.h>
#include "sdb/image.h"

#define SDB_FONT_W 5       /* glyph cell: 5 x 7 pixels at scale 1 */
#define SDB_FONT_H 7
#define SDB_FONT_ADVANCE 6 /* pixels from one character to the next (scale 1) */
#define SDB_FONT_LINE 10   /* pixels from one text line to the next (scale 1) */

/* The glyph of a byte: 7 rows of 5 bits, bit 4 = leftmost column ('?' for non-printables). */
const uint8_t *sdb_font_glyph(unsigned char c);

void sdb_draw_box(sdb_image *im, int x, int y, int w, int h, const uint8_t rgb[3]);
/* Draws text (one line; UTF-8 multi-byte sequences become one '?'); returns the width drawn. */
int sdb_draw_text(sdb_image *im, int x, int y, const char *text, const uint8_t rgb[3], int scale);
/* Characters of `text` drawn by sdb_draw_text (a UTF-8 sequence counts as one). */
int sdb_text_chars(const char *text);
/* Copies an RGB image (src->c == 3) with its top-left corner at (x, y). */
void sdb_draw_image(sdb_image *im, const sdb_image *src, int x, int y);
/* Outlines the region where mask (its first channel, drawn with its top-left at (x, y)) is >= 128:
 * its edge pixels are those of the region with a 4-neighbour outside it or off the mask; every
 * region pixel within `grow` pixels (in x and in y) of an edge pixel is painted rgb. */
void sdb_draw_mask_outline(sdb_image *im, const sdb_image *mask, int x, int y, const uint8_t rgb[3], int grow);
/* Splits text into lines of at most `width` characters, breaking at spaces where it can (a word
 * longer than a line is cut); '\n' starts a new line. Writes up to max_lines malloc'd strings
 * into lines; returns how many (text beyond max_lines is dropped, the last line ending in "..."). */
int sdb_wrap_text(const char *text, int width, char **lines, int max_lines);

#endif
