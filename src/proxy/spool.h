/* spool: a bounded first-in first-out byte store between the upstream and a slow client
 * (response buffering, "spoon-feeding"): memory up to one limit, then an unlinked temporary file
 * up to a second. It is an xport on both ends, so the ordinary pumps fill and drain it: the
 * upstream side writes at the server's speed and its connection goes back to the pool as soon
 * as the response is in; the client side reads at the client's speed.
 *
 * Writing past both limits returns EAGAIN (the upstream pump then waits like on a slow client:
 * buffering degrades to streaming, never to unbounded memory). Reading what is not there yet
 * returns EAGAIN, and 0 once the writer ended and everything was read. */
#ifndef PORTERO_PROXY_SPOOL_H
#define PORTERO_PROXY_SPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/sbuf.h"
#include "core/xport.h"

struct spool {
    struct xport xp;          /* ops: the spool's; ctx: the spool itself */
    struct sbuf mem;          /* the first mem_cap bytes */
    uint64_t mem_cap;
    uint64_t file_cap;        /* bytes allowed in the temp file, 0 = memory only */
    int fd;                   /* temp file, -1 until needed */
    uint64_t written;         /* bytes taken in all */
    uint64_t read;            /* bytes handed out */
    bool ended;               /* the writer shut down: EOF after the last byte */
    bool failed;              /* the temp file could not be used: the writer sees EAGAIN */
};

/* Prepares S (memory cap MEM, temp-file cap FILE; the file goes to $TMPDIR or /tmp). */
void spool_init(struct spool *s, uint64_t mem, uint64_t file);
/* Frees memory and closes the temp file; S may be initialized again. */
void spool_free(struct spool *s);
/* Bytes written but not yet read. */
static inline uint64_t spool_pending(const struct spool *s) { return s->written - s->read; }

#endif
