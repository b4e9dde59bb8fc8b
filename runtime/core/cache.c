#include "cache.h"
#include "siphash.h"

#include <stdlib.h>
#include <string.h>

struct mnemo_cache_entry {
  mnemo_cache_entry_t *hnext;   /* bucket chain */
  mnemo_cache_entry_t **hpprev; /* the pointer that points at this entry */
  mnemo_cache_entry_t *newer;   /* LRU list, towards the head */
  mnemo_cache_entry_t *older;
  uint64_t hash;
  uint64_t expires_ns; /* 0 = never */
  size_t klen;
  size_t vlen;
  char data[]; /* key, then value */
};

#define MIN_BUCKETS 16

/* The header, up to two bucket pointers (the table holds between n and 2n
 * for n entries) and the allocator's own bookkeeping. */
size_t mnemo_cache_entry_overhead(void) {
  return sizeof(mnemo_cache_entry_t) + 2 * sizeof(void *) + 16;
}

/* ---- LRU list ---- */

static void lru_unlink(mnemo_cache_t *c, mnemo_cache_entry_t *e) {
  if (e->newer != NULL)
    e->newer->older = e->older;
  else
    c->lru_head = e->older;
  if (e->older != NULL)
    e->older->newer = e->newer;
  else
    c->lru_tail = e->newer;
  e->newer = e->older = NULL;
}

static void lru_push_head(mnemo_cache_t *c, mnemo_cache_entry_t *e) {
  e->newer = NULL;
  e->older = c->lru_head;
  if (c->lru_head != NULL)
    c->lru_head->newer = e;
  else
    c->lru_tail = e;
  c->lru_head = e;
}

/* ---- hash table ---- */

static void chain_insert(mnemo_cache_entry_t **slot, mnemo_cache_entry_t *e) {
  e->hnext = *slot;
  if (*slot != NULL)
    (*slot)->hpprev = &e->hnext;
  *slot = e;
  e->hpprev = slot;
}

static void chain_remove(mnemo_cache_entry_t *e) {
  *e->hpprev = e->hnext;
  if (e->hnext != NULL)
    e->hnext->hpprev = e->hpprev;
}

static mnemo_cache_entry_t **bucket(mnemo_cache_t *c, uint64_t hash) {
  return &c->buckets[hash & (c->nbuckets - 1)];
}

static mnemo_cache_entry_t *find(mnemo_cache_t *c, const void *key, size_t klen,
                                 uint64_t hash) {
  mnemo_cache_entry_t *e;
  for (e = *bucket(c, hash); e != NULL; e = e->hnext)
    if (e->hash == hash && e->klen == klen &&
        (klen == 0 || memcmp(e->data, key, klen) == 0))
      return e;
  return NULL;
}

/* Doubles the table. On allocation failure the table stays as it is: the
 * chains only get longer. */
static void grow(mnemo_cache_t *c) {
  size_t n = c->nbuckets * 2;
  mnemo_cache_entry_t **b = calloc(n, sizeof(*b));
  mnemo_cache_entry_t *e;
  if (b == NULL)
    return;
  c->nbuckets = n;
  free(c->buckets);
  c->buckets = b;
  /* Re-link from the LRU list: it holds every entry. */
  for (e = c->lru_head; e != NULL; e = e->older)
    chain_insert(bucket(c, e->hash), e);
}

static size_t charge(const mnemo_cache_entry_t *e) {
  return e->klen + e->vlen + mnemo_cache_entry_overhead();
}

/* Takes e out of the table and the list, and frees it. */
static void remove_entry(mnemo_cache_t *c, mnemo_cache_entry_t *e) {
  chain_remove(e);
  lru_unlink(c, e);
  c->stats.bytes -= charge(e);
  c->stats.entries--;
  free(e);
}

static int expired(const mnemo_cache_entry_t *e, uint64_t now_ns) {
  return e->expires_ns != 0 && e->expires_ns <= now_ns;
}

int mnemo_cache_init(mnemo_cache_t *c, const mnemo_cache_config_t *config) {
  memset(c, 0, sizeof(*c));
  if (config->max_bytes == 0)
    return MNEMO_EINVAL;
  c->config = *config;
  c->nbuckets = MIN_BUCKETS;
  c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
  if (c->buckets == NULL)
    return MNEMO_ENOMEM;
  return 0;
}

void mnemo_cache_clear(mnemo_cache_t *c) {
  mnemo_cache_entry_t *e = c->lru_head, *next;
  while (e != NULL) {
    next = e->older;
    free(e);
    e = next;
  }
  c->lru_head = c->lru_tail = NULL;
  if (c->buckets != NULL)
    memset(c->buckets, 0, c->nbuckets * sizeof(*c->buckets));
  c->stats.bytes = 0;
  c->stats.entries = 0;
}

void mnemo_cache_free(mnemo_cache_t *c) {
  mnemo_cache_clear(c);
  free(c->buckets);
  c->buckets = NULL;
  c->nbuckets = 0;
}

int mnemo_cache_get(mnemo_cache_t *c, const void *key, size_t klen,
                    uint64_t now_ns, const void **value, size_t *vlen) {
  uint64_t hash = mnemo_siphash13(key, klen, c->config.seed);
  mnemo_cache_entry_t *e = find(c, key, klen, hash);
  if (e == NULL) {
    c->stats.misses++;
    return MNEMO_ENOENT;
  }
  if (expired(e, now_ns)) {
    remove_entry(c, e);
    c->stats.expirations++;
    c->stats.misses++;
    return MNEMO_ENOENT;
  }
  if (c->lru_head != e) {
    lru_unlink(c, e);
    lru_push_head(c, e);
  }
  c->stats.hits++;
  *value = e->data + e->klen;
  *vlen = e->vlen;
  return 0;
}

int mnemo_cache_set(mnemo_cache_t *c, const void *key, size_t klen,
                    const void *value, size_t vlen, uint64_t expires_ns,
                    uint64_t now_ns) {
  uint64_t hash = mnemo_siphash13(key, klen, c->config.seed);
  mnemo_cache_entry_t *old = find(c, key, klen, hash), *e;
  size_t overhead = mnemo_cache_entry_overhead();
  size_t need;

  /* klen + vlen + overhead, without wrapping around. */
  if (klen > c->config.max_bytes || vlen > c->config.max_bytes - klen ||
      overhead > c->config.max_bytes - klen - vlen) {
    if (old != NULL)
      remove_entry(c, old); /* the caller meant to replace it */
    c->stats.rejected++;
    return MNEMO_E2BIG;
  }
  need = klen + vlen + overhead;

  if (old != NULL && old->vlen == vlen) {
    /* Same size: overwrite in place, no allocation. */
    if (vlen > 0)
      memcpy(old->data + klen, value, vlen);
    old->expires_ns = expires_ns;
    if (c->lru_head != old) {
      lru_unlink(c, old);
      lru_push_head(c, old);
    }
    c->stats.sets++;
    return 0;
  }

  /* Allocate first: on failure nothing has changed. */
  e = malloc(sizeof(*e) + klen + vlen);
  if (e == NULL)
    return MNEMO_ENOMEM;
  if (old != NULL)
    remove_entry(c, old);
  while (c->lru_tail != NULL &&
         (c->stats.bytes + need > c->config.max_bytes ||
          (c->config.max_entries != 0 &&
           c->stats.entries + 1 > c->config.max_entries))) {
    if (expired(c->lru_tail, now_ns))
      c->stats.expirations++;
    else
      c->stats.evictions++;
    remove_entry(c, c->lru_tail);
  }

  e->hash = hash;
  e->expires_ns = expires_ns;
  e->klen = klen;
  e->vlen = vlen;
  /* (memcpy from NULL is undefined even for 0 bytes) */
  if (klen > 0)
    memcpy(e->data, key, klen);
  if (vlen > 0)
    memcpy(e->data + klen, value, vlen);
  chain_insert(bucket(c, hash), e);
  lru_push_head(c, e);
  c->stats.bytes += need;
  c->stats.entries++;
  c->stats.sets++;
  if (c->stats.entries > c->nbuckets)
    grow(c);
  return 0;
}

int mnemo_cache_delete(mnemo_cache_t *c, const void *key, size_t klen) {
  uint64_t hash = mnemo_siphash13(key, klen, c->config.seed);
  mnemo_cache_entry_t *e = find(c, key, klen, hash);
  if (e == NULL)
    return MNEMO_ENOENT;
  remove_entry(c, e);
  return 0;
}
