/* runtime/core/cache.c: LRU order, byte accounting, replacement, delete,
 * expiry, oversize values, the entry limit, and 100,000 random operations
 * checked against a plain reference model. */
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

#define OVERHEAD mnemo_cache_entry_overhead()

static void init(mnemo_cache_t *c, size_t max_bytes, size_t max_entries) {
  mnemo_cache_config_t cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.max_bytes = max_bytes;
  cfg.max_entries = max_entries;
  cfg.seed[0] = 0x0123456789abcdefull;
  cfg.seed[1] = 0xfedcba9876543210ull;
  assert_int_equal(mnemo_cache_init(c, &cfg), 0);
}

static int set(mnemo_cache_t *c, const char *k, const char *v, uint64_t expires,
               uint64_t now) {
  return mnemo_cache_set(c, k, strlen(k), v, strlen(v), expires, now);
}

/* The value as a string ("" when missing: use has() to tell). */
static const char *get(mnemo_cache_t *c, const char *k, uint64_t now) {
  static char buf[256];
  const void *v;
  size_t n;
  if (mnemo_cache_get(c, k, strlen(k), now, &v, &n) != 0)
    return NULL;
  assert_true(n < sizeof(buf));
  memcpy(buf, v, n);
  buf[n] = '\0';
  return buf;
}

static void test_init_rejects_zero(void **state) {
  mnemo_cache_t c;
  mnemo_cache_config_t cfg;
  (void)state;
  memset(&cfg, 0, sizeof(cfg));
  assert_int_equal(mnemo_cache_init(&c, &cfg), MNEMO_EINVAL);
  mnemo_cache_free(&c);
}

static void test_lru_eviction_order(void **state) {
  mnemo_cache_t c;
  (void)state;
  /* Room for exactly three entries of 1-byte keys and 9-byte values. */
  init(&c, 3 * (10 + OVERHEAD), 0);
  assert_int_equal(set(&c, "a", "111111111", 0, 0), 0);
  assert_int_equal(set(&c, "b", "222222222", 0, 0), 0);
  assert_int_equal(set(&c, "c", "333333333", 0, 0), 0);
  assert_int_equal(c.stats.entries, 3);
  /* A read makes "a" the most recently used: "b" goes first. */
  assert_string_equal(get(&c, "a", 0), "111111111");
  assert_int_equal(set(&c, "d", "444444444", 0, 0), 0);
  assert_null(get(&c, "b", 0));
  assert_int_equal(c.stats.evictions, 1);
  /* Then "c" (a and d were used since). */
  assert_int_equal(set(&c, "e", "555555555", 0, 0), 0);
  assert_null(get(&c, "c", 0));
  assert_string_equal(get(&c, "a", 0), "111111111");
  assert_string_equal(get(&c, "d", 0), "444444444");
  assert_string_equal(get(&c, "e", 0), "555555555");
  assert_int_equal(c.stats.evictions, 2);
  /* A value twice as large needs two slots: the two least recent go. */
  assert_int_equal(set(&c, "f", "66666666666666666666", 0, 0), 0);
  assert_int_equal(c.stats.evictions, 4);
  assert_null(get(&c, "a", 0));
  assert_null(get(&c, "d", 0));
  assert_string_equal(get(&c, "e", 0), "555555555");
  mnemo_cache_free(&c);
}

static void test_byte_accounting(void **state) {
  mnemo_cache_t c;
  (void)state;
  init(&c, 1 << 20, 0);
  assert_int_equal(c.stats.bytes, 0);
  set(&c, "key1", "value", 0, 0);
  assert_int_equal(c.stats.bytes, 4 + 5 + OVERHEAD);
  set(&c, "k2", "", 0, 0);
  assert_int_equal(c.stats.bytes, 4 + 5 + 2 + 2 * OVERHEAD);
  set(&c, "key1", "a longer value", 0, 0); /* replaced: re-charged */
  assert_int_equal(c.stats.bytes, 4 + 14 + 2 + 2 * OVERHEAD);
  assert_int_equal(mnemo_cache_delete(&c, "k2", 2), 0);
  assert_int_equal(c.stats.bytes, 4 + 14 + OVERHEAD);
  assert_int_equal(c.stats.entries, 1);
  mnemo_cache_clear(&c);
  assert_int_equal(c.stats.bytes, 0);
  assert_int_equal(c.stats.entries, 0);
  assert_null(get(&c, "key1", 0));
  mnemo_cache_free(&c);
}

static void test_update_in_place(void **state) {
  mnemo_cache_t c;
  (void)state;
  init(&c, 3 * (10 + OVERHEAD), 0);
  set(&c, "a", "111111111", 0, 0);
  set(&c, "b", "222222222", 0, 0);
  set(&c, "c", "333333333", 0, 0);
  /* Same size, different size: still three entries, nothing evicted, and
   * the updated key is the most recent. */
  assert_int_equal(set(&c, "a", "AAAAAAAAA", 0, 0), 0);
  assert_int_equal(set(&c, "b", "BBBBBBBB", 0, 0), 0);
  assert_int_equal(c.stats.entries, 3);
  assert_int_equal(c.stats.evictions, 0);
  assert_int_equal(c.stats.sets, 5);
  assert_int_equal(c.stats.bytes, 3 * (10 + OVERHEAD) - 1);
  set(&c, "d", "444444444", 0, 0); /* evicts c, the least recent */
  assert_null(get(&c, "c", 0));
  assert_string_equal(get(&c, "a", 0), "AAAAAAAAA");
  assert_string_equal(get(&c, "b", 0), "BBBBBBBB");
  /* An update that grows past the budget evicts others, never itself. */
  assert_int_equal(set(&c, "a", "AAAAAAAAAAAAAAAAAAA", 0, 0), 0);
  assert_string_equal(get(&c, "a", 0), "AAAAAAAAAAAAAAAAAAA");
  assert_true(c.stats.bytes <= c.config.max_bytes);
  mnemo_cache_free(&c);
}

static void test_delete(void **state) {
  mnemo_cache_t c;
  (void)state;
  init(&c, 4096, 0);
  set(&c, "a", "1", 0, 0);
  set(&c, "b", "2", 0, 0);
  assert_int_equal(mnemo_cache_delete(&c, "a", 1), 0);
  assert_int_equal(mnemo_cache_delete(&c, "a", 1), MNEMO_ENOENT);
  assert_int_equal(mnemo_cache_delete(&c, "zz", 2), MNEMO_ENOENT);
  assert_null(get(&c, "a", 0));
  assert_string_equal(get(&c, "b", 0), "2");
  assert_int_equal(mnemo_cache_delete(&c, "b", 1), 0);
  assert_int_equal(c.stats.entries, 0);
  assert_int_equal(c.stats.bytes, 0);
  assert_null(c.lru_head);
  assert_null(c.lru_tail);
  /* Empty keys and values are keys and values. */
  assert_int_equal(mnemo_cache_set(&c, "", 0, "", 0, 0, 0), 0);
  assert_string_equal(get(&c, "", 0), "");
  assert_int_equal(mnemo_cache_delete(&c, "", 0), 0);
  mnemo_cache_free(&c);
}

static void test_expiry(void **state) {
  mnemo_cache_t c;
  (void)state;
  init(&c, 4096, 0);
  set(&c, "short", "x", 100, 0);
  set(&c, "long", "y", 1000, 0);
  set(&c, "never", "z", 0, 0);
  assert_string_equal(get(&c, "short", 99), "x");
  assert_null(get(&c, "short", 100)); /* due at 100: gone */
  assert_int_equal(c.stats.expirations, 1);
  assert_int_equal(c.stats.entries, 2);
  assert_string_equal(get(&c, "long", 500), "y");
  assert_string_equal(get(&c, "never", 1u << 30), "z");
  /* Setting again renews (or removes) the expiry. */
  set(&c, "long", "y", 0, 500);
  assert_string_equal(get(&c, "long", 5000), "y");
  assert_int_equal(c.stats.misses, 1);
  assert_int_equal(c.stats.hits, 4);
  mnemo_cache_free(&c);
}

static void test_expired_tail_counts_as_expiration(void **state) {
  mnemo_cache_t c;
  (void)state;
  init(&c, 2 * (2 + OVERHEAD), 0);
  set(&c, "a", "1", 10, 0);
  set(&c, "b", "2", 0, 0);
  set(&c, "c", "3", 0, 20); /* "a" is the tail and expired at 20 */
  assert_int_equal(c.stats.expirations, 1);
  assert_int_equal(c.stats.evictions, 0);
  set(&c, "d", "4", 0, 20); /* "b" is live */
  assert_int_equal(c.stats.evictions, 1);
  mnemo_cache_free(&c);
}

static void test_refuses_oversize(void **state) {
  mnemo_cache_t c;
  char big[512];
  (void)state;
  memset(big, 'x', sizeof(big));
  init(&c, 256 + OVERHEAD, 0);
  set(&c, "small", "1", 0, 0);
  set(&c, "k", "old value", 0, 0);
  assert_int_equal(mnemo_cache_set(&c, "k", 1, big, sizeof(big), 0, 0),
                   MNEMO_E2BIG);
  assert_int_equal(c.stats.rejected, 1);
  /* Nothing else was evicted for it, and the old value is gone (it would
   * be stale). */
  assert_string_equal(get(&c, "small", 0), "1");
  assert_null(get(&c, "k", 0));
  assert_int_equal(c.stats.evictions, 0);
  /* Exactly the budget fits (after evicting everything else). */
  assert_int_equal(mnemo_cache_set(&c, "k", 1, big, 255, 0, 0), 0);
  assert_int_equal(c.stats.bytes, c.config.max_bytes);
  assert_int_equal(c.stats.entries, 1);
  /* Sizes that would wrap around are refused too. */
  assert_int_equal(mnemo_cache_set(&c, "k", 1, big, (size_t)-1, 0, 0),
                   MNEMO_E2BIG);
  mnemo_cache_free(&c);
}

static void test_max_entries(void **state) {
  mnemo_cache_t c;
  char k[16];
  int i;
  (void)state;
  init(&c, 1 << 20, 3);
  for (i = 0; i < 10; i++) {
    snprintf(k, sizeof(k), "k%d", i);
    set(&c, k, "v", 0, 0);
  }
  assert_int_equal(c.stats.entries, 3);
  assert_int_equal(c.stats.evictions, 7);
  assert_null(get(&c, "k6", 0));
  assert_string_equal(get(&c, "k7", 0), "v");
  assert_string_equal(get(&c, "k9", 0), "v");
  mnemo_cache_free(&c);
}

static void test_many_keys_grow_table(void **state) {
  mnemo_cache_t c;
  char k[32];
  int i;
  (void)state;
  init(&c, 64u << 20, 0);
  for (i = 0; i < 50000; i++) {
    snprintf(k, sizeof(k), "key:%d", i);
    assert_int_equal(set(&c, k, k, 0, 0), 0);
  }
  assert_true(c.nbuckets >= 50000);
  for (i = 0; i < 50000; i += 7) {
    snprintf(k, sizeof(k), "key:%d", i);
    assert_string_equal(get(&c, k, 0), k);
  }
  assert_int_equal(c.stats.entries, 50000);
  mnemo_cache_free(&c);
}

/* ---- random operations against a reference model ---- */

#define NKEYS 300
#define MAXV 200

typedef struct model_entry {
  int present;
  char value[MAXV];
  size_t vlen;
  uint64_t expires;
  uint64_t used; /* logical time of last use: the smallest goes first */
} model_entry_t;

typedef struct model {
  model_entry_t e[NKEYS];
  size_t max_bytes, max_entries, bytes, entries;
  uint64_t tick;
  uint64_t hits, misses, evictions, expirations, rejected;
} model_t;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

static void key_of(int i, char *k, size_t *klen) {
  /* Varied lengths, including ones that share prefixes. */
  *klen = (size_t)snprintf(k, 32, "%0*d", 1 + i % 9, i);
}

static size_t model_charge(int i, size_t vlen) {
  char k[32];
  size_t klen;
  key_of(i, k, &klen);
  return klen + vlen + OVERHEAD;
}

static void model_remove(model_t *m, int i) {
  m->bytes -= model_charge(i, m->e[i].vlen);
  m->entries--;
  m->e[i].present = 0;
}

static void model_set(model_t *m, int i, const char *v, size_t vlen,
                      uint64_t expires, uint64_t now) {
  size_t need = model_charge(i, vlen);
  if (need > m->max_bytes) {
    if (m->e[i].present)
      model_remove(m, i);
    m->rejected++;
    return;
  }
  if (m->e[i].present)
    model_remove(m, i);
  while (m->bytes + need > m->max_bytes ||
         (m->max_entries && m->entries + 1 > m->max_entries)) {
    int j, lru = -1;
    for (j = 0; j < NKEYS; j++)
      if (m->e[j].present && (lru < 0 || m->e[j].used < m->e[lru].used))
        lru = j;
    if (m->e[lru].expires && m->e[lru].expires <= now)
      m->expirations++;
    else
      m->evictions++;
    model_remove(m, lru);
  }
  m->e[i].present = 1;
  memcpy(m->e[i].value, v, vlen);
  m->e[i].vlen = vlen;
  m->e[i].expires = expires;
  m->e[i].used = ++m->tick;
  m->bytes += need;
  m->entries++;
}

/* Returns the model's value or NULL. */
static model_entry_t *model_get(model_t *m, int i, uint64_t now) {
  model_entry_t *e = &m->e[i];
  if (!e->present) {
    m->misses++;
    return NULL;
  }
  if (e->expires && e->expires <= now) {
    model_remove(m, i);
    m->expirations++;
    m->misses++;
    return NULL;
  }
  e->used = ++m->tick;
  m->hits++;
  return e;
}

static void run_random(size_t max_bytes, size_t max_entries, int ops) {
  static model_t m;
  mnemo_cache_t c;
  uint64_t now = 1000;
  char k[32], v[MAXV + 64];
  size_t klen;
  int n;

  memset(&m, 0, sizeof(m));
  m.max_bytes = max_bytes;
  m.max_entries = max_entries;
  init(&c, max_bytes, max_entries);
  for (n = 0; n < ops; n++) {
    int i = (int)(rnd() % NKEYS);
    unsigned op = (unsigned)(rnd() % 100);
    key_of(i, k, &klen);
    now += rnd() % 3;
    if (op < 45) {
      const void *got;
      size_t glen;
      model_entry_t *want = model_get(&m, i, now);
      int rc = mnemo_cache_get(&c, k, klen, now, &got, &glen);
      if (want == NULL) {
        assert_int_equal(rc, MNEMO_ENOENT);
      } else {
        assert_int_equal(rc, 0);
        assert_int_equal(glen, want->vlen);
        assert_memory_equal(got, want->value, glen);
      }
    } else if (op < 90) {
      /* Mostly small values, a few near or over the budget. */
      size_t vlen = (size_t)(rnd() % MAXV), j;
      uint64_t expires = rnd() % 4 == 0 ? now + 1 + rnd() % 50 : 0;
      int rc;
      for (j = 0; j < vlen; j++)
        v[j] = (char)rnd();
      rc = mnemo_cache_set(&c, k, klen, v, vlen, expires, now);
      model_set(&m, i, v, vlen, expires, now);
      assert_int_equal(rc, model_charge(i, vlen) > max_bytes ? MNEMO_E2BIG : 0);
    } else {
      int present = m.e[i].present;
      if (present)
        model_remove(&m, i);
      assert_int_equal(mnemo_cache_delete(&c, k, klen),
                       present ? 0 : MNEMO_ENOENT);
    }
    assert_int_equal(c.stats.bytes, m.bytes);
    assert_int_equal(c.stats.entries, m.entries);
    assert_true(c.stats.bytes <= max_bytes);
  }
  assert_int_equal(c.stats.hits, m.hits);
  assert_int_equal(c.stats.misses, m.misses);
  assert_int_equal(c.stats.evictions, m.evictions);
  assert_int_equal(c.stats.expirations, m.expirations);
  assert_int_equal(c.stats.rejected, m.rejected);
  assert_true(m.evictions > 100); /* the budget was exercised */
  mnemo_cache_free(&c);
}

static void test_random_against_model(void **state) {
  (void)state;
  /* Bytes bind (some values are refused: MAXV > the budget's share). */
  run_random(20 * (100 + OVERHEAD), 0, 100000);
}

static void test_random_against_model_entry_limit(void **state) {
  (void)state;
  run_random(1 << 20, 40, 100000);
}

static void test_random_oversize_values(void **state) {
  (void)state;
  /* A budget smaller than the larger values: many refusals. */
  run_random(150 + OVERHEAD, 0, 20000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_rejects_zero),
      cmocka_unit_test(test_lru_eviction_order),
      cmocka_unit_test(test_byte_accounting),
      cmocka_unit_test(test_update_in_place),
      cmocka_unit_test(test_delete),
      cmocka_unit_test(test_expiry),
      cmocka_unit_test(test_expired_tail_counts_as_expiration),
      cmocka_unit_test(test_refuses_oversize),
      cmocka_unit_test(test_max_entries),
      cmocka_unit_test(test_many_keys_grow_table),
      cmocka_unit_test(test_random_against_model),
      cmocka_unit_test(test_random_against_model_entry_limit),
      cmocka_unit_test(test_random_oversize_values),
  };
  return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
