/* cache_fill: lookups and the life of a fill (begin, head, body, finish or abort, 304 update). */
#include "cache/cache_store_priv.h"

#include <stdlib.h>
#include <string.h>

/* The request's secondary key under E's Vary names; false when it cannot be had (names but no
 * callback). */
static bool entry_vkey(const struct cache_entry *e, cache_vary_fn vary, void *ctx, struct str *out)
{
    if (!e->names_len) {
        *out = str_make("", 0);
        return true;
    }
    if (!vary)
        return false;
    *out = vary(ctx, str_make(e->names, e->names_len));
    if (!out->p)
        *out = str_make("", 0);
    return true;
}

static bool bytes_eq(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (!an || memcmp(a, b, an) == 0);
}

/* The fill of E a request with secondary key VK collapses onto. */
static struct cache_obj *entry_fill(const struct cache_entry *e, struct str vk)
{
    for (struct cache_obj *f = e->fills; f; f = f->next_fill)
        if (f->gen == e->gen && bytes_eq(f->vkey, f->vklen, vk.p, vk.n))
            return f;
    return NULL;
}

static void *dup_bytes(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

/* A new FILLING object linked into E's fills under secondary key VK, with two references (the
 * index's and the caller's). Shard lock held. */
static struct cache_obj *fill_new(struct cache_zone *z, struct cache_shard *s,
                                  struct cache_entry *e, struct str vk, uint64_t gen)
{
    struct cache_obj *o = cache_obj_new(z, e->hash, e->key, e->klen);
    if (!o)
        return NULL;
    o->vkey = dup_bytes(vk.p, vk.n);
    if (!o->vkey) {
        cache_obj_put(o);
        return NULL;
    }
    o->vklen = vk.n;
    o->gen = gen;
    o->entry = e;
    o->next_fill = e->fills;
    e->fills = o;
    atomic_fetch_add_explicit(&z->objects, 1, memory_order_relaxed);
    cache_charge(z, s, o, cache_obj_base_size(o));
    return cache_obj_ref(o);
}

/* --- lookup ----------------------------------------------------------------------------------- */

/* Memory miss, variant V on disk: the read becomes a fill others collapse onto. */
static struct cache_obj *lookup_disk(struct cache_zone *z, struct cache_shard *s,
                                     struct cache_entry *e, struct cache_variant *v)
{
    struct cache_obj *o = fill_new(z, s, e, str_make(v->vkey, v->vklen), e->gen);
    if (o)
        o->from_disk = true;
    return o;
}

/* The read of O's file failed: the file goes unless it changed meanwhile. */
static void disk_drop(struct cache_zone *z, struct cache_obj *o, uint64_t id)
{
    struct cache_shard *s = cache_shard_of(z, o->hash);
    bool remove = false;
    pthread_mutex_lock(&s->lock);
    struct cache_entry *e = cache_entry_find(s, o->hash, o->key, o->klen);
    struct cache_variant *v = e ? cache_variant_find(e, o->vkey, o->vklen) : NULL;
    if (v && v->id == id && v->disk == DISK_ON) {
        cache_disk_forget(z, s, v);
        cache_variant_release(v);
        cache_entry_release(s, e);
        remove = true;
    }
    pthread_mutex_unlock(&s->lock);
    if (remove)
        cache_disk_remove_file(z, id);
}

static struct cache_obj *load_from_disk(struct cache_zone *z, struct cache_obj *o, uint64_t id)
{
    int rc = cache_disk_load(z, o, id);
    if (rc == 0) {
        cache_obj_finish(o);
        return o;
    }
    cache_obj_abort(o);
    if (rc == CACHE_DISK_BAD)
        disk_drop(z, o, id);
    cache_obj_put(o);
    return NULL;
}

struct cache_obj *cache_lookup(struct cache_zone *z, const void *key, size_t klen,
                               cache_vary_fn vary, void *ctx)
{
    uint64_t hash = cache_hash_key(z, key, klen);
    struct cache_shard *s = cache_shard_of(z, hash);
    struct cache_obj *o = NULL, *load = NULL;
    uint64_t id = 0;
    struct str vk;
    pthread_mutex_lock(&s->lock);
    struct cache_entry *e = cache_entry_find(s, hash, key, klen);
    if (e && entry_vkey(e, vary, ctx, &vk)) {
        struct cache_variant *v = cache_variant_find(e, vk.p, vk.n);
        if (v && v->obj) {
            o = cache_obj_ref(v->obj);
            cache_evict_touch(&s->evict, &o->node);
            v->disk_used = true;
        } else if ((o = entry_fill(e, vk))) {
            cache_obj_ref(o);
        } else if (v && v->disk == DISK_ON) {
            v->disk_used = true;
            id = v->id;
            load = lookup_disk(z, s, e, v);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (load)
        return load_from_disk(z, load, id);
    return o;
}

/* --- fill ------------------------------------------------------------------------------------- */

enum cache_fill_result cache_fill_begin(struct cache_zone *z, const void *key, size_t klen,
                                        cache_vary_fn vary, void *ctx, struct cache_obj **out)
{
    uint64_t hash = cache_hash_key(z, key, klen);
    struct cache_shard *s = cache_shard_of(z, hash);
    enum cache_fill_result rc = CACHE_FILL_ERROR;
    struct str vk;
    *out = NULL;
    pthread_mutex_lock(&s->lock);
    struct cache_entry *e = cache_entry_get(s, hash, key, klen);
    if (e) {
        /* names but no way to compute the key: a private fill nobody collapses onto */
        bool known = entry_vkey(e, vary, ctx, &vk);
        struct cache_obj *f = known ? entry_fill(e, vk) : NULL;
        if (f) {
            *out = cache_obj_ref(f);
            rc = CACHE_FILL_COLLAPSED;
        } else if ((*out = fill_new(z, s, e, known ? vk : str_make("", 0), known ? e->gen : 0))) {
            rc = CACHE_FILL_NEW;
        } else {
            cache_entry_release(s, e);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == CACHE_FILL_NEW && cache_zone_over(z))
        cache_make_room(z, s);
    return rc;
}

/* Copies of what set_head stores; all or nothing. */
struct head_copy {
    char *head, *tags, *names, *vkey;
    void *meta;
    struct cache_body *body;
};

static void head_copy_free(struct head_copy *c)
{
    free(c->head);
    free(c->tags);
    free(c->names);
    free(c->vkey);
    free(c->meta);
    cache_body_put(c->body);
}

static int head_copy_make(struct head_copy *c, const struct cache_response *r)
{
    memset(c, 0, sizeof *c);
    c->head = dup_bytes(r->head, r->head_len);
    c->meta = r->meta_len ? dup_bytes(r->meta, r->meta_len) : NULL;
    c->tags = malloc(r->tags.n + 1);
    if (c->tags) {
        memcpy(c->tags, r->tags.p ? r->tags.p : "", r->tags.n);
        c->tags[r->tags.n] = '\0';
    }
    c->names = r->vary_names.n ? dup_bytes(r->vary_names.p, r->vary_names.n) : NULL;
    c->vkey = dup_bytes(r->vary_key.p, r->vary_key.n);
    bool ok = c->head && (c->meta || !r->meta_len) && c->tags && (c->names || !r->vary_names.n) &&
              c->vkey;
    if (!ok)
        head_copy_free(c);
    return ok ? 0 : -1;
}

static bool names_eq(const struct cache_entry *e, const char *names, size_t n)
{
    return bytes_eq(e->names, e->names_len, names, n);
}

/* Installs C in O (shard lock held). With new Vary names while E has no variant yet, E takes
 * them at once, so that requests arriving before the fill ends collapse onto it. */
static void head_install(struct cache_zone *z, struct cache_shard *s, struct cache_obj *o,
                         struct head_copy *c, const struct cache_response *r)
{
    uint64_t before = cache_obj_base_size(o);
    o->head = c->head;
    o->head_len = r->head_len;
    o->meta = c->meta;
    o->meta_len = c->meta ? r->meta_len : 0;
    o->tags = c->tags;
    o->tags_len = r->tags.n;
    o->body = c->body;
    free(o->vkey); /* the one begun for */
    o->vkey = c->vkey;
    o->vklen = r->vary_key.n;
    o->names = c->names;
    o->names_len = c->names ? r->vary_names.n : 0;
    o->id = cache_hash_variant(z, o->key, o->klen, o->vkey, o->vklen);
    struct cache_entry *e = o->entry;
    if (e && !e->variants && !names_eq(e, o->names, o->names_len)) {
        char *names = o->names_len ? dup_bytes(o->names, o->names_len) : NULL;
        if (names || !o->names_len) {
            free(e->names);
            e->names = names;
            e->names_len = o->names_len;
            e->gen++;
        }
    }
    if (e)
        o->gen = names_eq(e, o->names, o->names_len) ? e->gen : 0;
    /* a shorter secondary key than the guess may leave a few bytes overcharged: harmless, the
     * exact charge is what unlinking gives back */
    uint64_t after = cache_obj_base_size(o) + o->head_len + o->meta_len + o->tags_len + o->names_len;
    if (after > before)
        cache_charge(z, s, o, after - before);
    memset(c, 0, sizeof *c);
}

/* Head of O from R; BODY (one reference, taken) is a shared body for a 304 update, else NULL. */
static int set_head(struct cache_obj *o, const struct cache_response *r, struct cache_body *body)
{
    struct cache_zone *z = o->zone;
    struct head_copy c;
    if (cache_obj_state(o) != CACHE_OBJ_FILLING ||
        atomic_load_explicit(&o->has_head, memory_order_relaxed) ||
        head_copy_make(&c, r) < 0) {
        cache_body_put(body);
        cache_obj_abort(o);
        return -1;
    }
    c.body = body ? body : cache_body_new(r->length_hint);
    if (!c.body) {
        head_copy_free(&c);
        cache_obj_abort(o);
        return -1;
    }
    struct cache_shard *s = cache_shard_of(z, o->hash);
    pthread_mutex_lock(&s->lock);
    head_install(z, s, o, &c, r);
    if (body)
        cache_charge(z, s, o, body->alloc);
    pthread_mutex_unlock(&s->lock);
    atomic_store_explicit(&o->has_head, true, memory_order_release);
    cache_obj_notify(o);
    if (cache_zone_over(z) && cache_make_room(z, s) < 0) {
        cache_obj_abort(o);
        return -1;
    }
    return 0;
}

int cache_obj_set_head(struct cache_obj *o, const struct cache_response *r)
{
    return set_head(o, r, NULL);
}

int cache_obj_append(struct cache_obj *o, const void *data, size_t len)
{
    if (cache_obj_state(o) != CACHE_OBJ_FILLING || !o->body)
        return -1;
    struct cache_body *b = o->body;
    uint64_t have = atomic_load_explicit(&b->len, memory_order_relaxed);
    if (len > o->max_size - have) {
        cache_obj_abort(o);
        return -1;
    }
    const char *p = data;
    while (len) {
        size_t n = atomic_load_explicit(&b->n_blocks, memory_order_relaxed);
        const struct cache_block *blk = n ? (n == 1 ? &b->first : &b->more[n - 2]) : NULL;
        uint64_t room = blk ? blk->start + blk->size - have : 0;
        if (!room) {
            if (cache_body_grow(o) < 0) {
                cache_obj_abort(o);
                return -1;
            }
            continue;
        }
        size_t c = len < room ? len : (size_t)room;
        memcpy(blk->p + (have - blk->start), p, c);
        have += c;
        p += c;
        len -= c;
    }
    atomic_store_explicit(&b->len, have, memory_order_release);
    cache_obj_notify(o);
    struct cache_zone *z = o->zone;
    if (cache_zone_over(z) && cache_make_room(z, cache_shard_of(z, o->hash)) < 0) {
        cache_obj_abort(o);
        return -1;
    }
    return 0;
}

/* O (just out of E's fills) becomes its variant's object; what it replaces goes to T. */
static void finish_link(struct cache_zone *z, struct cache_shard *s, struct cache_entry *e,
                        struct cache_obj *o, struct cache_trash *t)
{
    if (!names_eq(e, o->names, o->names_len)) {
        char *names = o->names_len ? dup_bytes(o->names, o->names_len) : NULL;
        if (!names && o->names_len) {
            cache_unlink_fill(z, s, o, t);
            return;
        }
        cache_entry_drop_variants(z, s, e, t); /* stored under the old names (RFC 9111 §4.1) */
        free(e->names);
        e->names = names;
        e->names_len = o->names_len;
        e->gen++;
    }
    struct cache_variant *v = cache_variant_get(z, e, o->vkey, o->vklen);
    if (!v) {
        cache_unlink_fill(z, s, o, t);
        return;
    }
    cache_fill_list_remove(o);
    if (v->obj)
        cache_unlink_complete(z, s, v->obj, t, true);
    v->obj = o;
    o->variant = v;
    o->node.id = v->id;
    o->node.size = o->charged;
    cache_evict_insert(&s->evict, &o->node);
    cache_shard_note_small(z, s);
    if (o->from_disk) {
        v->disk_used = true;
        return;
    }
    /* a file of V is outdated now: the new write replaces it, or it goes */
    bool was_on = v->disk == DISK_ON;
    if (was_on)
        cache_disk_forget(z, s, v);
    if (z->disk && cache_disk_queue(z, v, o))
        return;
    if (was_on)
        cache_trash_file(z, t, v->id);
    v->disk = DISK_NONE; /* a write still in flight removes its file when done */
}

void cache_obj_finish(struct cache_obj *o)
{
    struct cache_zone *z = o->zone;
    struct cache_trash t = { 0 };
    if (cache_obj_state(o) != CACHE_OBJ_FILLING)
        return;
    if (!atomic_load_explicit(&o->has_head, memory_order_relaxed)) {
        cache_obj_abort(o);
        return;
    }
    struct cache_shard *s = cache_shard_of(z, o->hash);
    pthread_mutex_lock(&s->lock);
    struct cache_entry *e = o->entry;
    if (e) {
        finish_link(z, s, e, o, &t);
        cache_entry_release(s, e);
    }
    atomic_store_explicit(&o->state, CACHE_OBJ_COMPLETE, memory_order_release);
    pthread_mutex_unlock(&s->lock);
    cache_obj_notify(o);
    cache_trash_empty(z, &t);
}

void cache_obj_abort(struct cache_obj *o)
{
    struct cache_zone *z = o->zone;
    struct cache_trash t = { 0 };
    struct cache_shard *s = cache_shard_of(z, o->hash);
    pthread_mutex_lock(&s->lock);
    if (cache_obj_state(o) != CACHE_OBJ_FILLING) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    struct cache_entry *e = o->entry;
    if (e) {
        cache_unlink_fill(z, s, o, &t);
        cache_entry_release(s, e);
    }
    atomic_store_explicit(&o->state, CACHE_OBJ_ABORTED, memory_order_release);
    pthread_mutex_unlock(&s->lock);
    cache_obj_notify(o);
    cache_trash_empty(z, &t);
}

int cache_obj_update(struct cache_obj *fill, struct cache_obj *old, const struct cache_response *r)
{
    if (cache_obj_state(old) != CACHE_OBJ_COMPLETE || !old->body || fill->hash != old->hash ||
        cache_obj_state(fill) != CACHE_OBJ_FILLING) {
        cache_obj_abort(fill);
        return -1;
    }
    /* OLD's variant: its names and secondary key */
    struct cache_response u = *r;
    u.vary_names = str_make(old->names, old->names_len);
    u.vary_key = str_make(old->vkey, old->vklen);
    if (!r->tags.n)
        u.tags = str_make(old->tags, old->tags_len);
    atomic_fetch_add_explicit(&old->body->refs, 1, memory_order_relaxed);
    if (set_head(fill, &u, old->body) < 0)
        return -1;
    cache_obj_finish(fill);
    return 0;
}
