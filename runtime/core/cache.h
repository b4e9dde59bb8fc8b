/* L1 cache: a bounded in-process LRU keyed by byte strings.
 *
 * Bounded by total bytes (key + value + MNEMO_CACHE_ENTRY_OVERHEAD per
 * entry) and optionally by entry count; the least recently used entries
 * are evicted to make room. get, set and delete are O(1) (expected): a
 * chained hash table with a seeded SipHash-1-3 (keys may come from outside,
 * so no predictable collisions) plus an intrusive doubly-linked LRU list.
 * Each entry is one allocation holding key and value.
 *
 * Expiry is optional per entry: an absolute time in ns on the caller's
 * monotonic clock. Like the rest of the core, no clock is read here: get
 * takes now_ns. An expired entry is dropped when it is looked up (or
 * evicted when it reaches the LRU tail).
 *
 * A value that could never fit (its entry alone exceeds max_bytes) is
 * refused rather than evicting everything for it. */
#ifndef MNEMO_CACHE_H
#define MNEMO_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* set: the entry alone is larger than max_bytes. */
#define MNEMO_E2BIG (-E2BIG)
/* get, delete: no such key. */
#define MNEMO_ENOENT (-ENOENT)

typedef struct mnemo_cache_entry mnemo_cache_entry_t;

typedef struct mnemo_cache_config {
  size_t max_bytes;   /* > 0 */
  size_t max_entries; /* 0 = no limit on the count */
  uint64_t seed[2];   /* hash key; any value, ideally random */
} mnemo_cache_config_t;

typedef struct mnemo_cache_stats {
  uint64_t hits;
  uint64_t misses;      /* including lookups that found an expired entry */
  uint64_t sets;        /* stored (inserted or replaced) */
  uint64_t evictions;   /* removed to make room */
  uint64_t expirations; /* found expired by get, or evicted while expired */
  uint64_t rejected;    /* sets refused as too large */
  size_t bytes;         /* charged bytes, <= max_bytes */
  size_t entries;
} mnemo_cache_stats_t;

typedef struct mnemo_cache {
  mnemo_cache_config_t config;
  mnemo_cache_entry_t **buckets;
  size_t nbuckets;               /* a power of two */
  mnemo_cache_entry_t *lru_head; /* most recently used */
  mnemo_cache_entry_t *lru_tail; /* next to go */
  mnemo_cache_stats_t stats;
} mnemo_cache_t;

/* Bytes one entry is charged beyond its key and value: the entry header
 * and its share of the bucket table. */
size_t mnemo_cache_entry_overhead(void);

/* 0, MNEMO_EINVAL (max_bytes 0) or MNEMO_ENOMEM. */
int mnemo_cache_init(mnemo_cache_t *cache, const mnemo_cache_config_t *config);
/* Frees every entry and the table. The struct may be inited again. */
void mnemo_cache_free(mnemo_cache_t *cache);

/* 0 and *value / *vlen on a hit (the entry becomes the most recently used;
 * the pointer stays valid until the next set, delete, clear or free), or
 * MNEMO_ENOENT on a miss. An entry expired at now_ns is removed and is a
 * miss. */
int mnemo_cache_get(mnemo_cache_t *cache, const void *key, size_t klen,
                    uint64_t now_ns, const void **value, size_t *vlen);

/* Stores a copy of value under key (replacing the old value, which then is
 * the most recently used), evicting from the LRU tail until it fits.
 * expires_ns is absolute (0 = never). now_ns lets eviction count expired
 * entries apart. Returns 0; MNEMO_E2BIG if the entry alone is larger than
 * max_bytes (any old value of the key is removed: it would be stale);
 * MNEMO_ENOMEM (the cache is unchanged, except for evictions). */
int mnemo_cache_set(mnemo_cache_t *cache, const void *key, size_t klen,
                    const void *value, size_t vlen, uint64_t expires_ns,
                    uint64_t now_ns);

/* 0 if the key was there, MNEMO_ENOENT if not. */
int mnemo_cache_delete(mnemo_cache_t *cache, const void *key, size_t klen);

/* Removes every entry (not counted as evictions). */
void mnemo_cache_clear(mnemo_cache_t *cache);

#endif
