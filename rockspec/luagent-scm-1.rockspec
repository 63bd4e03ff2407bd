rockspec_format = "3.0"
package = "luagent"
version = "scm-1"
source = {
  url = "git+https://github.com/luagent/luagent.git",
}
description = {
  summary = "LLM agents for Lua 5.1 to 5.4 and LuaJIT with background agent runs on worker threads",
  detailed = [[
luagent runs LLM agents written in Lua. A C core (pthreads, libcurl, SQLite)
runs them on worker threads that each own a Lua state, enforces global and
per-agent concurrency caps, timeouts, retries and cancellation, keeps every
task in a store, streams merged trace events, and gives the model five
control tools: bg_list, bg_check, bg_cancel, bg_send, bg_wait. For C hosts it installs
luagent.h, libluagent.a (the Lua half built in) and luagent.pc.]],
  license = "MIT",
}
dependencies = {
  -- 5.4 first; LuaJIT is --lua-version=5.1 with its headers and interpreter:
  -- luarocks --lua-version=5.1 make LUA=luajit LUA_INCDIR=/usr/include/luajit-2.1
  "lua >= 5.1, < 5.5",
  "argparse >= 0.7", -- the luagent command (Debian: lua-argparse)
}
-- libcurl's flags come from pkg-config in the Makefile (Debian keeps
-- curl.h in a multiarch directory that a header probe would miss).
external_dependencies = {
  SQLITE = { header = "sqlite3.h", library = "sqlite3" },
}
build = {
  type = "make",
  -- a build directory of its own, made afresh: never a build of the
  -- checkout with other flags
  build_target = "fresh",
  install_target = "install-lib",
  variables = {
    OUT = "build/rock/luagent",
    LUA = "$(LUA)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    SQLITE_LIBS = "-L$(SQLITE_LIBDIR) -lsqlite3",
  },
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
  },
  -- the C surface sits next to the module, in the tree's lib/lua/<version>:
  -- libluagent.a, include/luagent.h, pkgconfig/luagent.pc
  install_variables = {
    PREFIX = "$(PREFIX)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    STATICLIBDIR = "$(LIBDIR)",
    INCDIR = "$(LIBDIR)/include",
    PKGCONFIGDIR = "$(LIBDIR)/pkgconfig",
    DOCDIR = "$(DOCDIR)",
  },
  -- LuaRocks writes a wrapper for it in the tree's bin/
  install = {
    bin = { luagent = "bin/luagent" },
  },
}
