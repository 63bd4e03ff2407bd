/* The PostgreSQL engine of the store (store_engine.h). */
#include "store_engine.h"

#include <stdio.h>

int lg_store_pg_open(const char *conninfo, const lg_store_opts *o, lg_store_engine *out,
                     char *err, size_t errlen) {
  (void)conninfo;
  (void)o;
  (void)out;
  snprintf(err, errlen, "this build has no PostgreSQL engine");
  return -1;
}
