/* cache_disk: the disk tier. One file per variant, PATH/c-<id in 16 hex digits>:
 *
 *   offset 0  "PORTCACH"            magic
 *          8  u32 version (1)       little-endian, like every number here
 *         12  u32 key, secondary key, Vary names, tags, head, metadata lengths (6 of them)
 *         36  u32 CRC-32 of everything after the 48-byte header
 *         40  u64 body length
 *         48  key, secondary key, names, tags, head, metadata, body
 *
 * Files are written by one writer thread per zone (never a worker) into t-<id>, then renamed, so
 * a reader never sees a half-written c- file from a live process. There is no fsync: after a
 * machine crash a file may be short (its size no longer matches the header: removed at the next
 * start) or hold garbage (the CRC fails when it is read back: removed then). The id is a SipHash,
 * under the key kept in PATH/portero-cache.key, of the primary and secondary key; the file
 * repeats both, and a read checks them, so a collision is a miss, never the wrong response. */
#include "cache/cache_store_priv.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define DISK_MAGIC "PORTCACH"
#define DISK_VERSION 1u
#define DISK_HDR 48
#define DISK_PARTS 6
#define DISK_PART_MAX (16u << 20)     /* per key, head, ...: a file claiming more is corrupt */
#define DISK_QUEUE_MAX (64ull << 20)  /* bytes of objects waiting for the writer */
#define DISK_CHUNK (64u * 1024)
#define DISK_KEY_FILE "portero-cache.key"

struct disk_job {
    struct disk_job *next;
    struct cache_obj *o;     /* one reference */
    uint64_t seq;
    uint64_t bytes;
};

struct cache_disk {
    int dirfd;
    _Atomic uint64_t max_size;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;    /* the queue */
    pthread_cond_t wake, idle;
    struct disk_job *head, **tail;
    uint64_t queued;         /* bytes */
    uint64_t seq;
    bool busy, stop;
    _Atomic uint64_t bytes, objects, evictions, reads, writes;
    atomic_uint hand;        /* the shard trimming looks at next */
};

/* The six variable parts, in file order. */
enum { P_KEY, P_VKEY, P_NAMES, P_TAGS, P_HEAD, P_META };

struct disk_hdr {
    uint32_t len[DISK_PARTS];
    uint32_t crc;
    uint64_t body;
};

static void hdr_encode(const struct disk_hdr *h, uint8_t out[DISK_HDR])
{
    uint32_t v32;
    memcpy(out, DISK_MAGIC, 8);
    v32 = htole32(DISK_VERSION);
    memcpy(out + 8, &v32, 4);
    for (int i = 0; i < DISK_PARTS; i++) {
        v32 = htole32(h->len[i]);
        memcpy(out + 12 + 4 * i, &v32, 4);
    }
    v32 = htole32(h->crc);
    memcpy(out + 36, &v32, 4);
    uint64_t v64 = htole64(h->body);
    memcpy(out + 40, &v64, 8);
}

static int hdr_decode(const uint8_t in[DISK_HDR], struct disk_hdr *h)
{
    uint32_t v32;
    uint64_t v64;
    memcpy(&v32, in + 8, 4);
    if (memcmp(in, DISK_MAGIC, 8) != 0 || le32toh(v32) != DISK_VERSION)
        return -1;
    for (int i = 0; i < DISK_PARTS; i++) {
        memcpy(&v32, in + 12 + 4 * i, 4);
        h->len[i] = le32toh(v32);
        if (h->len[i] > DISK_PART_MAX)
            return -1;
    }
    memcpy(&v32, in + 36, 4);
    h->crc = le32toh(v32);
    memcpy(&v64, in + 40, 8);
    h->body = le64toh(v64);
    return h->body > (UINT64_MAX >> 2) ? -1 : 0;
}

static uint64_t hdr_parts(const struct disk_hdr *h)
{
    uint64_t n = 0;
    for (int i = 0; i < DISK_PARTS; i++)
        n += h->len[i];
    return n;
}

static void file_name(char out[24], char kind, uint64_t id)
{
    snprintf(out, 24, "%c-%016llx", kind, (unsigned long long)id);
}

static uint32_t crc_add(uint32_t crc, const void *p, uint64_t n)
{
    const Bytef *b = p;
    while (n) {
        uInt c = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, b, c);
        b += c;
        n -= c;
    }
    return crc;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

void cache_disk_remove_file(struct cache_zone *z, uint64_t id)
{
    if (!z->disk)
        return;
    char name[24];
    file_name(name, 'c', id);
    unlinkat(z->disk->dirfd, name, 0);
}

/* --- the index side --------------------------------------------------------------------------- */

static void clock_unlink(struct cache_shard *s, struct cache_variant *v)
{
    *(v->dolder ? &v->dolder->dnewer : &s->disk_oldest) = v->dnewer;
    *(v->dnewer ? &v->dnewer->dolder : &s->disk_newest) = v->dolder;
    v->dnewer = v->dolder = NULL;
}

static void clock_push(struct cache_shard *s, struct cache_variant *v)
{
    v->dolder = s->disk_newest;
    v->dnewer = NULL;
    *(s->disk_newest ? &s->disk_newest->dnewer : &s->disk_oldest) = v;
    s->disk_newest = v;
}

/* Shard lock held: V (DISK_NONE or DISK_PENDING) has file bytes SIZE with TAGS (taken). */
static void disk_adopt(struct cache_zone *z, struct cache_shard *s, struct cache_variant *v,
                       uint64_t size, char *tags)
{
    v->disk = DISK_ON;
    v->disk_size = size;
    v->disk_used = false;
    free(v->tags);
    v->tags = tags;
    clock_push(s, v);
    atomic_fetch_add_explicit(&s->disk_bytes, size, memory_order_relaxed);
    atomic_fetch_add_explicit(&z->disk->bytes, size, memory_order_relaxed);
    atomic_fetch_add_explicit(&z->disk->objects, 1, memory_order_relaxed);
}

void cache_disk_forget(struct cache_zone *z, struct cache_shard *s, struct cache_variant *v)
{
    clock_unlink(s, v);
    atomic_fetch_sub_explicit(&s->disk_bytes, v->disk_size, memory_order_relaxed);
    if (z->disk) {
        atomic_fetch_sub_explicit(&z->disk->bytes, v->disk_size, memory_order_relaxed);
        atomic_fetch_sub_explicit(&z->disk->objects, 1, memory_order_relaxed);
    }
    free(v->tags);
    v->tags = NULL;
    v->disk = DISK_NONE;
    v->disk_size = 0;
    v->disk_used = false;
}

/* Removes S's CLOCK victim (its oldest file not used since the hand last passed); false when S
 * has no file. */
static bool disk_evict_one(struct cache_zone *z, struct cache_shard *s)
{
    pthread_mutex_lock(&s->lock);
    struct cache_variant *v;
    while ((v = s->disk_oldest) && v->disk_used) { /* ends: each pass clears one bit */
        v->disk_used = false;
        clock_unlink(s, v);
        clock_push(s, v);
    }
    uint64_t id = v ? v->id : 0;
    if (v) {
        struct cache_entry *e = v->entry;
        cache_disk_forget(z, s, v);
        cache_variant_release(v);
        cache_entry_release(s, e);
    }
    pthread_mutex_unlock(&s->lock);
    if (v) {
        cache_disk_remove_file(z, id);
        atomic_fetch_add_explicit(&z->disk->evictions, 1, memory_order_relaxed);
    }
    return v != NULL;
}

/* Brings the files within max_size, one victim per shard in turn (approximately the global
 * CLOCK order, without a zone-wide lock). */
static void disk_trim(struct cache_zone *z)
{
    struct cache_disk *d = z->disk;
    unsigned misses = 0;
    while (atomic_load(&d->bytes) > atomic_load(&d->max_size) && misses < CACHE_SHARDS) {
        unsigned i = atomic_fetch_add(&d->hand, 1) % CACHE_SHARDS;
        misses = disk_evict_one(z, &z->shards[i]) ? 0 : misses + 1;
    }
}

/* --- writing ---------------------------------------------------------------------------------- */

static int write_obj(int fd, struct cache_obj *o, uint64_t len)
{
    const void *part[DISK_PARTS] = { o->key, o->vkey, o->names, o->tags, o->head, o->meta };
    struct disk_hdr h = { .len = { (uint32_t)o->klen, (uint32_t)o->vklen, (uint32_t)o->names_len,
                                   (uint32_t)o->tags_len, (uint32_t)o->head_len,
                                   (uint32_t)o->meta_len },
                          .body = len };
    uint32_t crc = (uint32_t)crc32(0, Z_NULL, 0);
    for (int i = 0; i < DISK_PARTS; i++)
        crc = crc_add(crc, part[i], h.len[i]);
    const char *p;
    for (uint64_t off = 0, n; off < len; off += n) {
        n = cache_obj_read(o, off, &p);
        crc = crc_add(crc, p, n);
    }
    h.crc = crc;
    uint8_t hdr[DISK_HDR];
    hdr_encode(&h, hdr);
    if (write_all(fd, hdr, sizeof hdr) < 0)
        return -1;
    for (int i = 0; i < DISK_PARTS; i++)
        if (h.len[i] && write_all(fd, part[i], h.len[i]) < 0)
            return -1;
    for (uint64_t off = 0, n; off < len; off += n)
        if ((n = cache_obj_read(o, off, &p)) && write_all(fd, p, n) < 0)
            return -1;
    return 0;
}

/* Writes O to its file; *SIZE gets the file's bytes. */
static int disk_write(struct cache_disk *d, struct cache_obj *o, uint64_t *size)
{
    uint64_t len = cache_obj_length(o);
    size_t parts[DISK_PARTS] = { o->klen, o->vklen, o->names_len, o->tags_len, o->head_len,
                                 o->meta_len };
    for (int i = 0; i < DISK_PARTS; i++)
        if (parts[i] > DISK_PART_MAX)
            return -1;
    char tmp[24], name[24];
    file_name(tmp, 't', o->id);
    file_name(name, 'c', o->id);
    int fd = openat(d->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int rc = write_obj(fd, o, len);
    if (close(fd) < 0)
        rc = -1;
    if (rc == 0 && renameat(d->dirfd, tmp, d->dirfd, name) < 0)
        rc = -1;
    if (rc < 0) {
        unlinkat(d->dirfd, tmp, 0);
        return -1;
    }
    *size = DISK_HDR + o->klen + o->vklen + o->names_len + o->tags_len + o->head_len + o->meta_len +
            len;
    return 0;
}

static char *dup_cstr(const char *s) { return strdup(s ? s : ""); }

/* The job's file is written (or not): its variant takes it when this is the write it waits for;
 * else the file goes, unless a later write for the variant will replace it. */
static void disk_job_done(struct cache_zone *z, struct disk_job *j, bool written, uint64_t size)
{
    struct cache_obj *o = j->o;
    struct cache_shard *s = cache_shard_of(z, o->hash);
    bool keep = false;
    char *tags = written ? dup_cstr(o->tags) : NULL;
    pthread_mutex_lock(&s->lock);
    struct cache_entry *e = cache_entry_find(s, o->hash, o->key, o->klen);
    struct cache_variant *v = e ? cache_variant_find(e, o->vkey, o->vklen) : NULL;
    bool pending = v && v->disk == DISK_PENDING;
    if (pending && v->disk_seq == j->seq && written && tags) {
        disk_adopt(z, s, v, size, tags);
        tags = NULL;
        keep = true;
    } else if (pending && v->disk_seq == j->seq) {
        v->disk = DISK_NONE;
        cache_variant_release(v);
        cache_entry_release(s, e);
    } else {
        keep = pending && v->disk_seq > j->seq;
    }
    pthread_mutex_unlock(&s->lock);
    free(tags);
    if (!keep)
        cache_disk_remove_file(z, o->id);
}

static struct disk_job *disk_next(struct cache_disk *d)
{
    pthread_mutex_lock(&d->lock);
    while (!d->head && !d->stop)
        pthread_cond_wait(&d->wake, &d->lock);
    struct disk_job *j = d->head;
    if (j) {
        d->head = j->next;
        if (!d->head)
            d->tail = &d->head;
        d->busy = true;
    }
    pthread_mutex_unlock(&d->lock);
    return j;
}

/* The writer: drains the queue, then stops when asked. */
static void *disk_writer(void *arg)
{
    struct cache_zone *z = arg;
    struct cache_disk *d = z->disk;
    struct disk_job *j;
    while ((j = disk_next(d))) {
        uint64_t size = 0;
        bool written = disk_write(d, j->o, &size) == 0;
        if (written)
            atomic_fetch_add_explicit(&d->writes, 1, memory_order_relaxed);
        disk_job_done(z, j, written, size);
        disk_trim(z);
        pthread_mutex_lock(&d->lock);
        d->busy = false;
        d->queued -= j->bytes;
        if (!d->head)
            pthread_cond_broadcast(&d->idle);
        pthread_mutex_unlock(&d->lock);
        cache_obj_put(j->o);
        free(j);
    }
    return NULL;
}

bool cache_disk_queue(struct cache_zone *z, struct cache_variant *v, struct cache_obj *o)
{
    struct cache_disk *d = z->disk;
    uint64_t bytes = cache_obj_length(o) + o->head_len + o->meta_len;
    struct disk_job *j = malloc(sizeof *j);
    if (!j)
        return false;
    pthread_mutex_lock(&d->lock);
    bool ok = !d->stop && d->queued + bytes <= DISK_QUEUE_MAX;
    if (ok) {
        *j = (struct disk_job){ .o = cache_obj_ref(o), .seq = ++d->seq, .bytes = bytes };
        *d->tail = j;
        d->tail = &j->next;
        d->queued += bytes;
        v->disk = DISK_PENDING;
        v->disk_seq = j->seq;
        pthread_cond_signal(&d->wake);
    }
    pthread_mutex_unlock(&d->lock);
    if (!ok)
        free(j);
    return ok;
}

void cache_disk_sync(struct cache_zone *z)
{
    struct cache_disk *d = z->disk;
    pthread_mutex_lock(&d->lock);
    while (d->head || d->busy)
        pthread_cond_wait(&d->idle, &d->lock);
    pthread_mutex_unlock(&d->lock);
}

/* --- reading ---------------------------------------------------------------------------------- */

/* Opens file ID and checks its header against its size. */
static int disk_open_file(struct cache_disk *d, uint64_t id, struct disk_hdr *h)
{
    char name[24];
    uint8_t hdr[DISK_HDR];
    struct stat st;
    file_name(name, 'c', id);
    int fd = openat(d->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || read_all(fd, hdr, sizeof hdr) < 0 || hdr_decode(hdr, h) < 0 ||
        (uint64_t)st.st_size != DISK_HDR + hdr_parts(h) + h->body) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads the six parts into one buffer (*BUF, the caller frees) and points PART at each. */
static int read_parts(int fd, const struct disk_hdr *h, char **buf, const char *part[DISK_PARTS])
{
    uint64_t n = hdr_parts(h);
    *buf = malloc(n ? n : 1);
    if (!*buf || read_all(fd, *buf, n) < 0)
        return -1;
    const char *p = *buf;
    for (int i = 0; i < DISK_PARTS; i++) {
        part[i] = p;
        p += h->len[i];
    }
    return 0;
}

static int load_body(struct cache_obj *o, int fd, uint64_t len, uint32_t *crc)
{
    char *buf = malloc(DISK_CHUNK);
    if (!buf)
        return CACHE_DISK_NOMEM;
    int rc = 0;
    while (len && rc == 0) {
        size_t n = len < DISK_CHUNK ? (size_t)len : DISK_CHUNK;
        if (read_all(fd, buf, n) < 0) {
            rc = CACHE_DISK_BAD;
            break;
        }
        *crc = crc_add(*crc, buf, n);
        if (cache_obj_append(o, buf, n) < 0)
            rc = CACHE_DISK_NOMEM;
        len -= n;
    }
    free(buf);
    return rc;
}

static int load_file(struct cache_obj *o, int fd, const struct disk_hdr *h)
{
    char *buf = NULL;
    const char *part[DISK_PARTS];
    if (h->body > o->max_size || read_parts(fd, h, &buf, part) < 0) {
        free(buf);
        return CACHE_DISK_BAD;
    }
    uint32_t crc = (uint32_t)crc32(0, Z_NULL, 0);
    crc = crc_add(crc, buf, hdr_parts(h));
    if (h->len[P_KEY] != o->klen || memcmp(part[P_KEY], o->key, o->klen) != 0 ||
        h->len[P_VKEY] != o->vklen || memcmp(part[P_VKEY], o->vkey, o->vklen) != 0) {
        free(buf);
        return CACHE_DISK_BAD;
    }
    struct cache_response r = {
        .head = part[P_HEAD], .head_len = h->len[P_HEAD],
        .meta = part[P_META], .meta_len = h->len[P_META],
        .tags = str_make(part[P_TAGS], h->len[P_TAGS]),
        .vary_names = str_make(part[P_NAMES], h->len[P_NAMES]),
        .vary_key = str_make(part[P_VKEY], h->len[P_VKEY]),
        .length_hint = h->body,
    };
    int rc = cache_obj_set_head(o, &r) < 0 ? CACHE_DISK_NOMEM : 0;
    free(buf);
    if (rc == 0)
        rc = load_body(o, fd, h->body, &crc);
    return rc == 0 && crc != h->crc ? CACHE_DISK_BAD : rc;
}

int cache_disk_load(struct cache_zone *z, struct cache_obj *o, uint64_t id)
{
    struct disk_hdr h;
    if (!z->disk)
        return CACHE_DISK_BAD;
    int fd = disk_open_file(z->disk, id, &h);
    if (fd < 0)
        return CACHE_DISK_BAD;
    int rc = load_file(o, fd, &h);
    close(fd);
    if (rc == 0)
        atomic_fetch_add_explicit(&z->disk->reads, 1, memory_order_relaxed);
    return rc;
}

/* --- opening: directory, key, index ----------------------------------------------------------- */

/* mkdir -p */
static int make_dirs(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *c = p + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *c = '/';
    }
    int rc = mkdir(p, 0700) < 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

/* Reads the zone's hash key from the directory, or stores the one Z has (a new directory). */
static int disk_key(struct cache_zone *z, int dirfd)
{
    uint64_t k[2];
    int fd = openat(dirfd, DISK_KEY_FILE, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        int rc = read_all(fd, k, sizeof k);
        close(fd);
        if (rc == 0) {
            z->k0 = le64toh(k[0]);
            z->k1 = le64toh(k[1]);
            return 0;
        }
    }
    /* none or short: a new key (files named under an old one no longer match and go) */
    k[0] = htole64(z->k0);
    k[1] = htole64(z->k1);
    fd = openat(dirfd, DISK_KEY_FILE ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int rc = write_all(fd, k, sizeof k);
    if (close(fd) < 0 || rc < 0 || renameat(dirfd, DISK_KEY_FILE ".tmp", dirfd, DISK_KEY_FILE) < 0)
        return -1;
    return 0;
}

/* Puts file ID (its header H and parts PART) into the index. -1: it should go. */
static int index_insert(struct cache_zone *z, uint64_t id, const struct disk_hdr *h,
                        const char *part[DISK_PARTS])
{
    const char *key = part[P_KEY], *vkey = part[P_VKEY];
    if (cache_hash_variant(z, key, h->len[P_KEY], vkey, h->len[P_VKEY]) != id ||
        h->body > cache_zone_max_object_size(z))
        return -1;
    char *tags = malloc(h->len[P_TAGS] + 1), *names = NULL;
    if (h->len[P_NAMES] && (names = malloc(h->len[P_NAMES])))
        memcpy(names, part[P_NAMES], h->len[P_NAMES]);
    if (!tags || (h->len[P_NAMES] && !names)) {
        free(tags);
        free(names);
        return -1;
    }
    memcpy(tags, part[P_TAGS], h->len[P_TAGS]);
    tags[h->len[P_TAGS]] = '\0';
    uint64_t hash = cache_hash_key(z, key, h->len[P_KEY]);
    struct cache_shard *s = cache_shard_of(z, hash);
    int rc = -1;
    pthread_mutex_lock(&s->lock);
    struct cache_entry *e = cache_entry_get(s, hash, key, h->len[P_KEY]);
    if (e && !e->variants && !e->names_len) {
        e->names = names; /* the first file of a key sets its names */
        e->names_len = h->len[P_NAMES];
        names = NULL;
    }
    bool same = e && e->names_len == h->len[P_NAMES] &&
                memcmp(e->names ? e->names : "", part[P_NAMES], h->len[P_NAMES]) == 0;
    struct cache_variant *v = same ? cache_variant_get(z, e, vkey, h->len[P_VKEY]) : NULL;
    if (v && v->disk == DISK_NONE) {
        disk_adopt(z, s, v, DISK_HDR + hdr_parts(h) + h->body, tags);
        tags = NULL;
        rc = 0;
    }
    if (e)
        cache_entry_release(s, e);
    pthread_mutex_unlock(&s->lock);
    free(tags);
    free(names);
    return rc;
}

/* Indexes the file named NAME; -1 when it should be removed. */
static int index_file(struct cache_zone *z, const char *name)
{
    char *end;
    if (strlen(name) != 18)
        return -1;
    errno = 0;
    uint64_t id = strtoull(name + 2, &end, 16);
    if (*end || errno)
        return -1;
    struct disk_hdr h;
    int fd = disk_open_file(z->disk, id, &h);
    if (fd < 0)
        return -1;
    char *buf = NULL;
    const char *part[DISK_PARTS];
    /* only the parts: the body's CRC is checked when it is read back */
    struct disk_hdr small = h;
    small.len[P_HEAD] = small.len[P_META] = 0;
    int rc = read_parts(fd, &small, &buf, part) < 0 ? -1 : index_insert(z, id, &h, part);
    free(buf);
    close(fd);
    return rc;
}

/* Rebuilds the index from the directory: temp files and bad files go. */
static int disk_rebuild(struct cache_zone *z)
{
    int fd = dup(z->disk->dirfd);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(dir))) {
        const char *n = de->d_name;
        if (n[0] == 't' && n[1] == '-')
            unlinkat(z->disk->dirfd, n, 0);
        else if (n[0] == 'c' && n[1] == '-' && index_file(z, n) < 0)
            unlinkat(z->disk->dirfd, n, 0);
    }
    closedir(dir);
    return 0;
}

static void disk_free(struct cache_disk *d)
{
    if (d->dirfd >= 0)
        close(d->dirfd);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->wake);
    pthread_cond_destroy(&d->idle);
    free(d);
}

static struct cache_disk *disk_new(uint64_t max_size)
{
    struct cache_disk *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->dirfd = -1;
    atomic_init(&d->max_size, max_size);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->wake, NULL);
    pthread_cond_init(&d->idle, NULL);
    d->tail = &d->head;
    return d;
}

/* The writer must not take the process's signals: they are for the thread that waits on them. */
static int disk_start(struct cache_zone *z)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&z->disk->thread, NULL, disk_writer, z);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    z->disk->started = rc == 0;
    return rc == 0 ? 0 : -1;
}

int cache_disk_open(struct cache_zone *z, uint64_t max_size, char *err, size_t cap)
{
    struct cache_disk *d = disk_new(max_size);
    if (!d) {
        snprintf(err, cap, "cache zone %s: out of memory", z->name);
        return -1;
    }
    const char *what = "cannot create";
    if (make_dirs(z->path) == 0) {
        what = "cannot open";
        d->dirfd = open(z->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (d->dirfd >= 0 && disk_key(z, d->dirfd) < 0)
        what = "cannot write in";
    else if (d->dirfd >= 0)
        what = NULL;
    if (what) {
        snprintf(err, cap, "cache zone %s: %s %s: %s", z->name, what, z->path, strerror(errno));
        disk_free(d);
        return -1;
    }
    z->disk = d;
    if (disk_rebuild(z) < 0 || disk_start(z) < 0) {
        snprintf(err, cap, "cache zone %s: cannot use %s: %s", z->name, z->path, strerror(errno));
        cache_disk_close(z);
        return -1;
    }
    disk_trim(z); /* max_size may have shrunk since the files were written */
    return 0;
}

void cache_disk_close(struct cache_zone *z)
{
    struct cache_disk *d = z->disk;
    if (!d)
        return;
    if (d->started) {
        pthread_mutex_lock(&d->lock);
        d->stop = true;
        pthread_cond_signal(&d->wake);
        pthread_mutex_unlock(&d->lock);
        pthread_join(d->thread, NULL);
    }
    /* the index forgets its files (they stay for the next start) */
    for (size_t i = 0; i < CACHE_SHARDS; i++) {
        struct cache_shard *s = &z->shards[i];
        pthread_mutex_lock(&s->lock);
        while (s->disk_oldest) {
            struct cache_variant *v = s->disk_oldest;
            struct cache_entry *e = v->entry;
            cache_disk_forget(z, s, v);
            cache_variant_release(v);
            cache_entry_release(s, e);
        }
        pthread_mutex_unlock(&s->lock);
    }
    z->disk = NULL;
    disk_free(d);
}

void cache_disk_set_max_size(struct cache_zone *z, uint64_t max_size)
{
    atomic_store(&z->disk->max_size, max_size);
}

void cache_disk_stats(struct cache_zone *z, struct cache_zone_stats *out)
{
    struct cache_disk *d = z->disk;
    out->disk_bytes = atomic_load_explicit(&d->bytes, memory_order_relaxed);
    out->disk_objects = atomic_load_explicit(&d->objects, memory_order_relaxed);
    out->disk_evictions = atomic_load_explicit(&d->evictions, memory_order_relaxed);
    out->disk_reads = atomic_load_explicit(&d->reads, memory_order_relaxed);
    out->disk_writes = atomic_load_explicit(&d->writes, memory_order_relaxed);
}
