rockspec_format = "3.0"
package = "luagent"
version = "scm-1"
source = {
  url = "git+https://github.com/luagent/luagent.git",
}
description = {
  summary = "LLM agents for Lua 5.4 with background agent runs on worker threads",
  detailed = [[
luagent runs LLM agents written in Lua. A C core (pthreads, libcurl, SQLite)
runs them on worker threads that each own a Lua state, enforces global and
per-agent concurrency caps, timeouts, retries and cancellation, keeps every
task in a store, streams merged trace events, and gives the model four
control tools: bg_list, bg_check, bg_cancel, bg_wait.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "argparse >= 0.7", -- the luagent command (Debian: lua-argparse)
}
external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
  SQLITE = { header = "sqlite3.h", library = "sqlite3" },
}
build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    CURL_CFLAGS = "-I$(CURL_INCDIR)",
    CURL_LIBS = "-L$(CURL_LIBDIR) -lcurl",
    SQLITE_LIBS = "-L$(SQLITE_LIBDIR) -lsqlite3",
  },
  install_variables = {
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
  },
}
