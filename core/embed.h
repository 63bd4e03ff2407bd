/* The Lua half built into libluagent.a and the C log sink (embed.c). */
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

/* How many modules the process-wide chunk cache holds (embed.c). */
int lg_chunk_cache_count(void);

/* Hands a message to the sink of luagent_set_log, if any; called on the
 * host thread (bind_embed.c's core.log). */
void lg_log_sink(const char *level, const char *message);

#endif
