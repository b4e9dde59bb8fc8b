/* The fuzzers' regression inputs: every file in tests/corpus/<target>/ is
 * replayed through the same entry point as the libFuzzer target (the fuzz
 * sources are included here with MNEMO_FUZZ_NO_MAIN, so the checks are the
 * same: a failure abort()s, which fails this test). Run from the repository
 * root, like the other tests (fuzz_policy loads lua/ and build/mnemo_core.so
 * from there, or from $MNEMO_FUZZ_ROOT). An input that hangs (the fuzzers
 * count > 10 s as a bug) is killed by SIGALRM after REPLAY_SECONDS. See
 * fuzz/run for how inputs get here. */
#include "testing.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MNEMO_FUZZ_NO_MAIN
#include "../../fuzz/fuzz_chunker.c"
#include "../../fuzz/fuzz_policy.c"

#define CORPUS "tests/corpus/"
#define REPLAY_SECONDS 60

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Calls one(data, size) on every regular file of CORPUS<target>/, in name
 * order; returns how many. */
static size_t replay(const char *target, int (*one)(const uint8_t *, size_t)) {
  char dir[256], path[1024];
  char **names = NULL;
  size_t n = 0, cap = 0, i;
  struct dirent *e;
  DIR *d;
  snprintf(dir, sizeof(dir), CORPUS "%s", target);
  d = opendir(dir);
  if (d == NULL) /* git keeps no empty directory */
    return 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      names = realloc(names, cap * sizeof(*names));
      assert_non_null(names);
    }
    names[n] = strdup(e->d_name);
    assert_non_null(names[n]);
    n++;
  }
  closedir(d);
  if (n > 1)
    qsort(names, n, sizeof(*names), by_name);
  for (i = 0; i < n; i++) {
    struct stat st;
    FILE *f;
    uint8_t *buf;
    size_t len;
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    assert_int_equal(stat(path, &st), 0);
    if (!S_ISREG(st.st_mode)) {
      free(names[i]);
      continue;
    }
    f = fopen(path, "rb");
    assert_non_null(f);
    len = (size_t)st.st_size;
    /* An exact-size copy, so ASan sees any read past the input. */
    buf = malloc(len ? len : 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, len, f), len);
    fclose(f);
    print_message("# %s\n", path);
    alarm(REPLAY_SECONDS);
    assert_int_equal(one(len ? buf : NULL, len), 0);
    alarm(0);
    free(buf);
    free(names[i]);
  }
  free(names);
  return n;
}

static void test_chunker_corpus(void **state) {
  (void)state;
  assert_true(replay("chunker", fuzz_chunker_one) > 0);
  /* The entry point itself on the edge cases. */
  assert_int_equal(fuzz_chunker_one(NULL, 0), 0);
  assert_int_equal(fuzz_chunker_one((const uint8_t *)"!", 1), 0);
}

static void test_policy_corpus(void **state) {
  (void)state;
  assert_true(replay("policy", fuzz_policy_one) > 0);
  assert_int_equal(fuzz_policy_one(NULL, 0), 0);
  fuzz_policy_close();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chunker_corpus),
      cmocka_unit_test(test_policy_corpus),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
