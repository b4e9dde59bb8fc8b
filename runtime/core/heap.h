/* Intrusive binary min-heap.
 *
 * The node lives inside the caller's struct, so inserting costs no
 * allocation: this is what lets a million pending deadlines cost only their
 * own memory. The tree is pointer-linked and kept complete, so insert and
 * remove are O(log n) and any node (not only the minimum) can be removed. */
#ifndef MNEMO_HEAP_H
#define MNEMO_HEAP_H

#include <stddef.h>

typedef struct mnemo_heap_node {
  struct mnemo_heap_node *left;
  struct mnemo_heap_node *right;
  struct mnemo_heap_node *parent;
} mnemo_heap_node_t;

/* Strict ordering: non-zero when a must come out before b. */
typedef int (*mnemo_heap_less_fn)(const mnemo_heap_node_t *a,
                                  const mnemo_heap_node_t *b);

typedef struct mnemo_heap {
  mnemo_heap_node_t *min;
  size_t count;
  mnemo_heap_less_fn less;
} mnemo_heap_t;

void mnemo_heap_init(mnemo_heap_t *heap, mnemo_heap_less_fn less);
void mnemo_heap_insert(mnemo_heap_t *heap, mnemo_heap_node_t *node);
/* node must be in the heap. */
void mnemo_heap_remove(mnemo_heap_t *heap, mnemo_heap_node_t *node);

static inline mnemo_heap_node_t *mnemo_heap_min(const mnemo_heap_t *heap) {
  return heap->min;
}

#endif
