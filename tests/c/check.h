/* The checks of the C tests: CHECK(c) marks the current test failed, and
 * done(name) prints "ok N - name" or "not ok N - name". */
#ifndef LUAGENT_TEST_CHECK_H
#define LUAGENT_TEST_CHECK_H

#include <stdio.h>

static int failures, test_no, test_failed;

#define CHECK(c)                                                             \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      test_failed = 1;                                                       \
    }                                                                        \
  } while (0)

static void done(const char *name) {
  test_no++;
  printf("%sok %d - %s\n", test_failed ? "not " : "", test_no, name);
  failures += test_failed;
  test_failed = 0;
}

#endif
