/* The Lua half built into libluagent.a, and the embedding bindings of
 * core/embed.c. */
#ifndef LUAGENT_EMBED_H
#define LUAGENT_EMBED_H

#include <lua.h>
#include <stddef.h>

typedef struct {
  const char *name;  /* module name, e.g. "luagent.app" */
  const char *chunk; /* chunk name, e.g. "@luagent/app.lua" */
  const char *src;
  size_t len;
} lg_embedded_module;

/* Ends with an all-zero entry; only that entry when the Lua half is not
 * built in (luagent/core.so loads it from files). */
extern const lg_embedded_module lg_embedded_modules[];

/* Adds set_worker_init, log and `embedded` to the luagent.core table on
 * top of the stack. */
void lg_embed_register(lua_State *L);

#endif
