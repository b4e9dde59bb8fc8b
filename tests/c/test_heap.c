/* Intrusive heap: ordering, removal of arbitrary nodes, structural
 * invariants after every operation. */
#include "testing.h"

#include <stdlib.h>

#include "heap.h"

typedef struct item {
  mnemo_heap_node_t node;
  int key;
  int in_heap;
} item_t;

#define ITEM(n) ((item_t *)(n))

static int item_less(const mnemo_heap_node_t *a, const mnemo_heap_node_t *b) {
  return ITEM(a)->key < ITEM(b)->key;
}

/* Walks the tree: parent links, heap order, and the node count. */
static size_t check_subtree(const mnemo_heap_node_t *node,
                            const mnemo_heap_node_t *parent) {
  if (node == NULL)
    return 0;
  assert_ptr_equal(node->parent, parent);
  if (parent != NULL)
    assert_false(item_less(node, parent));
  return 1 + check_subtree(node->left, node) + check_subtree(node->right, node);
}

static void check_heap(const mnemo_heap_t *heap) {
  assert_int_equal(check_subtree(heap->min, NULL), heap->count);
}

static void test_pops_in_order(void **state) {
  enum { N = 1000 };
  item_t *items = calloc(N, sizeof(*items));
  mnemo_heap_t heap;
  int i, last = -1;
  (void)state;

  srand(42);
  mnemo_heap_init(&heap, item_less);
  for (i = 0; i < N; i++) {
    items[i].key = rand() % 500;
    mnemo_heap_insert(&heap, &items[i].node);
  }
  check_heap(&heap);
  for (i = 0; i < N; i++) {
    mnemo_heap_node_t *min = mnemo_heap_min(&heap);
    assert_non_null(min);
    assert_true(ITEM(min)->key >= last);
    last = ITEM(min)->key;
    mnemo_heap_remove(&heap, min);
    if (i % 97 == 0)
      check_heap(&heap);
  }
  assert_null(mnemo_heap_min(&heap));
  assert_int_equal(heap.count, 0);
  free(items);
}

static void test_remove_arbitrary_nodes(void **state) {
  enum { N = 512, ROUNDS = 4000 };
  item_t *items = calloc(N, sizeof(*items));
  mnemo_heap_t heap;
  int round;
  (void)state;

  srand(7);
  mnemo_heap_init(&heap, item_less);
  for (round = 0; round < ROUNDS; round++) {
    item_t *it = &items[rand() % N];
    if (it->in_heap) {
      mnemo_heap_remove(&heap, &it->node);
      it->in_heap = 0;
    } else {
      it->key = rand() % 1000;
      mnemo_heap_insert(&heap, &it->node);
      it->in_heap = 1;
    }
    check_heap(&heap);
    if (heap.min != NULL) {
      /* The minimum is the smallest key of the members. */
      int i, min_key = 1 << 30;
      for (i = 0; i < N; i++)
        if (items[i].in_heap && items[i].key < min_key)
          min_key = items[i].key;
      assert_int_equal(ITEM(heap.min)->key, min_key);
    }
  }
  free(items);
}

static void test_single_node(void **state) {
  item_t a = {.key = 1};
  mnemo_heap_t heap;
  (void)state;
  mnemo_heap_init(&heap, item_less);
  mnemo_heap_insert(&heap, &a.node);
  assert_ptr_equal(mnemo_heap_min(&heap), &a.node);
  mnemo_heap_remove(&heap, &a.node);
  assert_null(mnemo_heap_min(&heap));
  /* Removing from an empty heap is a no-op. */
  mnemo_heap_remove(&heap, &a.node);
  assert_int_equal(heap.count, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pops_in_order),
      cmocka_unit_test(test_remove_arbitrary_nodes),
      cmocka_unit_test(test_single_node),
  };
  return cmocka_run_group_tests_name("heap", tests, NULL, NULL);
}
