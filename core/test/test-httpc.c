#include "test.h"
TEST(placeholder) {}
int main(int argc, char **argv) {
  static const test_entry_t tests[] = {TEST_ENTRY(placeholder), {NULL, NULL}};
  return test_main(argc, argv, tests);
}
