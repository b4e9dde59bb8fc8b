/* Pointer-linked complete binary heap; see heap.h. The position of the
 * n-th node (1-based) is given by the bits of n below its highest set bit:
 * read from the top, 0 means "go left", 1 means "go right". */
#include "heap.h"

void mnemo_heap_init(mnemo_heap_t *heap, mnemo_heap_less_fn less) {
  heap->min = NULL;
  heap->count = 0;
  heap->less = less;
}

/* Returns the link (a root pointer or a child field) where the n-th node
 * lives or will live, and the parent that link belongs to. */
static mnemo_heap_node_t **slot_of(mnemo_heap_t *heap, size_t n,
                                   mnemo_heap_node_t **parent_out) {
  mnemo_heap_node_t **link = &heap->min;
  mnemo_heap_node_t *parent = NULL;
  int depth = 0;
  while ((n >> depth) > 1)
    depth++;
  while (depth-- > 0) {
    parent = *link;
    link = ((n >> depth) & 1) ? &parent->right : &parent->left;
  }
  *parent_out = parent;
  return link;
}

/* Make `link` (the root pointer or a child field of `parent`) point at
 * `node`, where it used to point at `old`. */
static void relink_parent(mnemo_heap_t *heap, mnemo_heap_node_t *parent,
                          mnemo_heap_node_t *old, mnemo_heap_node_t *node) {
  if (parent == NULL)
    heap->min = node;
  else if (parent->left == old)
    parent->left = node;
  else
    parent->right = node;
}

/* Exchange a node with its direct child, keeping every link consistent. */
static void swap_with_child(mnemo_heap_t *heap, mnemo_heap_node_t *upper,
                            mnemo_heap_node_t *lower) {
  mnemo_heap_node_t saved = *upper;
  mnemo_heap_node_t *sibling;

  upper->left = lower->left;
  upper->right = lower->right;
  upper->parent = lower;
  if (upper->left)
    upper->left->parent = upper;
  if (upper->right)
    upper->right->parent = upper;

  lower->parent = saved.parent;
  if (saved.left == lower) {
    lower->left = upper;
    lower->right = saved.right;
    sibling = saved.right;
  } else {
    lower->right = upper;
    lower->left = saved.left;
    sibling = saved.left;
  }
  if (sibling)
    sibling->parent = lower;
  relink_parent(heap, lower->parent, upper, lower);
}

static void sift_up(mnemo_heap_t *heap, mnemo_heap_node_t *node) {
  while (node->parent && heap->less(node, node->parent))
    swap_with_child(heap, node->parent, node);
}

static void sift_down(mnemo_heap_t *heap, mnemo_heap_node_t *node) {
  for (;;) {
    mnemo_heap_node_t *smallest = node;
    if (node->left && heap->less(node->left, smallest))
      smallest = node->left;
    if (node->right && heap->less(node->right, smallest))
      smallest = node->right;
    if (smallest == node)
      return;
    swap_with_child(heap, node, smallest);
  }
}

void mnemo_heap_insert(mnemo_heap_t *heap, mnemo_heap_node_t *node) {
  mnemo_heap_node_t *parent;
  mnemo_heap_node_t **link = slot_of(heap, heap->count + 1, &parent);
  node->left = NULL;
  node->right = NULL;
  node->parent = parent;
  *link = node;
  heap->count++;
  sift_up(heap, node);
}

void mnemo_heap_remove(mnemo_heap_t *heap, mnemo_heap_node_t *node) {
  mnemo_heap_node_t *parent;
  mnemo_heap_node_t **link;
  mnemo_heap_node_t *last;

  if (heap->count == 0)
    return;
  link = slot_of(heap, heap->count, &parent);
  last = *link;
  *link = NULL;
  heap->count--;
  if (last == node)
    return; /* the last node needs no replacement */

  /* Move the detached last node into the removed node's place. */
  last->left = node->left;
  last->right = node->right;
  last->parent = node->parent;
  if (last->left)
    last->left->parent = last;
  if (last->right)
    last->right->parent = last;
  relink_parent(heap, node->parent, node, last);

  sift_down(heap, last);
  sift_up(heap, last);
}
