/* compress: content-coding for responses (RFC 9110 §8.4, §12.5.3) — Accept-Encoding negotiation, the
 * compressible-type test, and streaming gzip / brotli / zstd encoders behind one interface.
 *
 * Pure: no I/O, no config lookups. A stream is owned by whoever called compress_new() and freed with
 * compress_free(); it is used by one thread at a time. */
#ifndef PORTERO_HTTP_COMPRESS_H
#define PORTERO_HTTP_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h" /* enum compress_algo */
#include "core/str.h"

/* Picks the coding for a response from the request's Accept-Encoding value ACCEPT (RFC 9110 §12.5.3: q-values,
 * "*", "identity;q=0", x-gzip as gzip, case-insensitive, malformed elements skipped) among ENABLED[0..N) in server
 * preference order: the highest q wins, ties go to the server's order. Returns the algorithm, or -1 for identity
 * (no acceptable coding, or the header absent). An "identity" listed with a q above every coding's wins too
 * (the client prefers the plain body); an identity that is not listed never outranks a coding. */
int compress_negotiate(struct str accept, const enum compress_algo *enabled, size_t n);

/* True when the media type of CONTENT_TYPE (parameters ignored, case-insensitive) is in TYPES[0..N) (lower-cased);
 * an entry whose subtype is "*" (text, slash, star) matches its whole top-level type, and star-slash-star any type. */
bool compress_type_matches(struct str content_type, char *const *types, size_t n);

/* The Content-Encoding token: "br", "zstd", "gzip". */
const char *compress_token(enum compress_algo a);

/* Weakens an ETag value for a compressed representation (RFC 9110 §8.8.3): "x" -> W/"x", W/ kept. Writes into
 * OUT[0..CAP) and returns the length; 0 when it does not fit or ETAG is not an entity-tag (then send no ETag). */
size_t compress_weak_etag(struct str etag, char *out, size_t cap);

struct compress_stream;

/* LEVEL is clamped to the algorithm's range (gzip 1..9, br 0..11, zstd 1..19). NULL on allocation failure.
 * Windows are kept modest, since there is one stream per response in flight: gzip 32 KiB, brotli 256 KiB (levels
 * up to 5), 512 KiB (up to 9) or 4 MiB, zstd 512 KiB (1 MiB from level 10). compress_mem() tells the cost. */
struct compress_stream *compress_new(enum compress_algo a, int level);
/* As compress_new() for a body of exactly SIZE bytes (a Content-Length, a cached object; -1: unknown). Small bodies
 * then get small windows and tables (a 20 KiB page costs a fraction of an unknown-size stream), and zstd records
 * the size in its frame. Feeding more than SIZE bytes, or finishing short of it, is an error (-1). */
struct compress_stream *compress_new_sized(enum compress_algo a, int level, int64_t size);

enum compress_flush { COMPRESS_NONE, COMPRESS_SYNC, COMPRESS_FINISH };

/* Feeds IN[0..in_len) and writes compressed bytes to OUT[0..cap). *CONSUMED / *PRODUCED report progress. FLUSH:
 * NONE buffers freely; SYNC makes everything consumed so far decodable by the client (a streaming response that
 * paused: Server-Sent Events must not sit in the compressor); FINISH ends the stream. Returns 1 when FLUSH's goal
 * is reached (all input consumed and everything it asked for written), 0 when called again with more output room
 * is needed (pass the input not consumed yet, optionally extended), -1 on error. Any cap works, even 1 byte.
 * After FINISH succeeded, calls with no input return 1 and produce nothing; input is an error. */
int compress_run(struct compress_stream *s, const void *in, size_t in_len, size_t *consumed, void *out, size_t cap,
                 size_t *produced, enum compress_flush flush);

/* Bytes the stream's encoder currently holds on the heap (its window and tables, plus the stream itself).
 * zstd and brotli allocate lazily, so the figure grows on the first compress_run(). */
size_t compress_mem(const struct compress_stream *s);

void compress_free(struct compress_stream *s);

#endif
