# luagent — build, test, demo, sanitizers, benchmarks.
#
#   make            build luagent/core.so
#   make test       install missing Debian packages (as root, Chromium included), build, run every spec
#                   (LUA=luajit, lua5.3, ...: the same under another Lua, README "Lua versions")
#   make demo       run the example (scripted model unless OPENAI_API_KEY/OPENAI_BASE_URL is set)
#   make sanitize   the whole suite under ASan+UBSan
#   make tsan       the whole suite under ThreadSanitizer
#   make bench      benchmarks (bench/README.md); BENCH_ONLY=host,poll runs only those sections;
#                   make bench-peers: the Node peers alone
#   make fuzz       every libFuzzer target, FUZZ_SECONDS (60) each (tests/c/README.md)
#   make run-fuzz-<sse|json|tool_args>   one of them, without installing clang
#   make ci         what CI runs (.ci/run): test, sanitize, tsan, fuzz
#   make install    module, Lua files, command, luagent.h, libluagent.a, luagent.pc

# LUA picks the Lua: lua5.4 (the default), luajit, lua5.3, lua5.2, lua5.1.
# Its Debian pkg-config name is its own name; headers and libraries come
# from there. Any Lua but 5.4 builds into build/<lua>/luagent, so its module
# and the 5.4 one in luagent/ live side by side (README, "Lua versions").
LUA       ?= lua5.4
LUA_PC    ?= $(notdir $(LUA))
# its version as install directories name it (share/lua/5.1 for LuaJIT)
LUA_ABI   := $(or $(if $(filter luajit,$(LUA_PC)),5.1,$(filter 5.%,$(patsubst lua%,%,$(LUA_PC)))),5.4)
BUSTED    ?= $(LUA) /usr/bin/busted
CC        ?= cc
PKG       := pkg-config
LUA_INCDIR  ?= $(patsubst -I%,%,$(firstword $(shell $(PKG) --cflags-only-I $(LUA_PC) 2>/dev/null)))
CURL_CFLAGS ?= $(shell $(PKG) --cflags libcurl 2>/dev/null)
CURL_LIBS   ?= $(shell $(PKG) --libs libcurl 2>/dev/null || echo -lcurl)
SQLITE_LIBS ?= $(shell $(PKG) --libs sqlite3 2>/dev/null || echo -lsqlite3)
# libpq: the PostgreSQL store (core/store_pg.c)
PQ_CFLAGS   ?= $(shell $(PKG) --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)
PQ_LIBS     ?= $(shell $(PKG) --libs libpq 2>/dev/null || echo -lpq)
LUA_LIBS    ?= $(shell $(PKG) --libs $(LUA_PC) 2>/dev/null || echo -l$(LUA_PC))

OPT      ?= -O2
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   ?= $(OPT) -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) $(CFLAGS) \
             -I$(LUA_INCDIR) $(CURL_CFLAGS) $(PQ_CFLAGS) $(EXTRA_CFLAGS)
LIBFLAG  ?= -shared
LDLIBS   = $(CURL_LIBS) $(SQLITE_LIBS) $(PQ_LIBS) -lpthread -ldl -lm

SRC := $(wildcard core/*.c)
HDR := $(wildcard core/*.h)

ifeq ($(LUA_PC),lua5.4)
OUT ?= luagent
else
OUT ?= build/$(LUA_PC)/luagent
endif
MODULE := $(OUT)/core.so

# the interpreter and headers of another LUA
LUA_DEB_PKGS := $(if $(filter luajit,$(LUA_PC)),luajit libluajit-5.1-dev,\
               $(if $(filter lua5.4,$(LUA_PC)),,$(LUA_PC) lib$(LUA_PC)$(if $(filter lua5.1,$(LUA_PC)),-0)-dev))
# Packages `make test` and `make demo` need on Debian 12 (lua-argparse: the
# luagent command; tmux: its terminal spec; libpq-dev: the PostgreSQL store).
DEB_PKGS := lua5.4 liblua5.4-dev lua-cjson libcurl4-openssl-dev libsqlite3-dev lua-busted \
            lua-socket luarocks sqlite3 pkg-config gcc make lua-argparse tmux libpq-dev $(LUA_DEB_PKGS)
# What only the specs need: headless Chromium checks the trace page
# (tests/trace_html_spec.lua); the PostgreSQL server the store specs start
# a throw-away cluster of (tests/support/pg_server.sh); Neovim and LuaJIT run
# the Neovim spec and the LuaJIT rockspec install (tests/neovim_spec.lua,
# tests/rockspec_spec.lua); lua5.1 runs the command that install writes.
# Large, so `make demo` does not install them.
TEST_PKGS := chromium postgresql neovim luajit libluajit-5.1-dev lua5.1

.PHONY: all test test-deps demo deps sanitize tsan bench bench-peers bench-peers-deps fuzz run-fuzz clean c-tests objects ci

all: $(MODULE)

$(MODULE): $(SRC) $(HDR) Makefile
	@mkdir -p $(OUT)
	$(CC) $(ALL_CFLAGS) $(LIBFLAG) -o $@ $(SRC) $(LDFLAGS) $(LDLIBS)

# libluagent.a, luagent.pc, `make install` (the paths `luarocks make` passes
# too), the example C host
include mk/embed.mk

# Install what is missing when we can (root), else print the exact command.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing || exit 1; \
	  else \
	    echo "missing packages:$$missing"; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

test-deps:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(DEB_PKGS) $(TEST_PKGS)"

# The store specs run against PostgreSQL too: a throw-away cluster on a Unix
# socket in a temp dir (tests/support/pg_server.sh), stopped afterwards.
# Another LUA runs the suite in build/<lua>/run, staged like the sanitizer
# runs below, so every spec and every process it starts loads that Lua's
# module as ./luagent/core.so; LUAGENT_TEST_LUA names the interpreter the
# specs start child processes with (tests/support/lua_bin.lua), and LUA and
# OUT in the environment (not make's command line) reach the makes specs run.
PG_RUN = pg=$$(tests/support/pg_server.sh start $$$$) || exit 1; \
  trap 'tests/support/pg_server.sh stop "$$pg"' EXIT INT TERM; \
  LUAGENT_TEST_PG_DIR="$$pg"
test: test-deps
	@$(MAKE) --no-print-directory all
ifeq ($(OUT),luagent)
	@$(PG_RUN) $(BUSTED) $(BUSTED_ARGS)
else
	@$(call STAGE,$(patsubst %/luagent,%,$(OUT)))
	@$(PG_RUN) sh -c 'cd $(patsubst %/luagent,%,$(OUT))/run && exec env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS \
	  LUAGENT_TEST_LUA=$(LUA) LUA=$(LUA) OUT=luagent $(BUSTED) --lua=$(LUA) $(BUSTED_ARGS)'
endif

demo: deps
	@$(MAKE) --no-print-directory all
	@$(LUA) examples/demo.lua

# Sanitizer runs: the stock lua5.4 is not instrumented, so the runtime is
# preloaded; every process the specs start (shells, child lua5.4, the fake
# server) inherits it and is checked too. The runtime paths are expanded only
# here (`=`, not `:=`), so no other make run starts the compiler under a
# preloaded sanitizer, and build/test_sse is built before the preload for
# the same reason. -DLUAGENT_DEBUG adds the owner-thread checks of worker.c.
ASAN_RT = $(shell $(CC) -print-file-name=libasan.so)
TSAN_RT = $(shell $(CC) -print-file-name=libtsan.so)
# Debian's dash and bash call _setjmp before anything else a preloaded TSan
# intercepts, and TSan's _setjmp jumps through a pointer set at its own
# initialisation: they crash at once. libstdc++'s static constructor calls
# malloc, which initialises TSan first.
TSAN_INIT = $(shell $(CC) -print-file-name=libstdc++.so)
# Every process of a sanitizer run must load the sanitizer build of the
# module, child processes too (examples/demo.lua puts ./?.so first). A plain
# build there is uninstrumented: TSan then sees its mutexes but not the
# atomics that order them and reports races that are not there. So the suite
# runs in build/<name>/run: links to the sources, with luagent/core.so being
# the sanitizer build (and build/test_sse built there, before the preload).
# STAGE takes the build directory (build/asan, build/luajit).
STAGE = rm -rf $(1)/run && mkdir -p $(1)/run/luagent && \
  for f in .busted Makefile bench bin core examples lua luagent.pc.in mk plugins rockspec tests tools; do \
    if [ -e $$f ]; then ln -s $(CURDIR)/$$f $(1)/run/$$f; fi; \
  done && \
  ln -s $(CURDIR)/$(1)/luagent/core.so $(1)/run/luagent/core.so && \
  $(MAKE) --no-print-directory -s -C $(1)/run build/test_sse
SAN_STAGE = $(call STAGE,build/$(1))

sanitize: test-deps
	@$(MAKE) --no-print-directory OUT=build/asan/luagent OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DLUAGENT_DEBUG" \
	  LDFLAGS="-fsanitize=address,undefined" all
	@$(call SAN_STAGE,asan)
	cd build/asan/run && LD_PRELOAD=$(ASAN_RT) \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(BUSTED) $(BUSTED_ARGS)

tsan: test-deps
	@$(MAKE) --no-print-directory OUT=build/tsan/luagent OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=thread -fno-omit-frame-pointer -DLUAGENT_DEBUG" \
	  LDFLAGS="-fsanitize=thread" all
	@$(call SAN_STAGE,tsan)
	cd build/tsan/run && LD_PRELOAD="$(TSAN_RT) $(TSAN_INIT)" \
	  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 suppressions=$(CURDIR)/tests/support/tsan.supp" \
	  $(BUSTED) $(BUSTED_ARGS)

# lua-luv: luv's thread pool, the floor the dispatch figures are put next to.
BENCH_PKGS := lua-luv

bench:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(DEB_PKGS) $(BENCH_PKGS)"
	@$(MAKE) --no-print-directory all build/raw_curl build/raw_sqlite build/host
	@UV_THREADPOOL_SIZE=2 $(LUA) bench/run.lua
	@if [ -n "$$BENCH_ONLY" ]; then echo "peers: skipped (BENCH_ONLY)"; \
	elif command -v node >/dev/null && [ -d bench/peers/node_modules ]; then \
	  $(MAKE) --no-print-directory bench-peers; \
	else echo "peers: skipped (node or bench/peers/node_modules missing: make bench-peers-deps)"; fi

# the Node peers (bench/peers/README.md): installed from npm, never needed by make test
bench-peers-deps:
	cd bench/peers && npm install --no-audit --no-fund

bench-peers: all
	@[ -d bench/peers/node_modules ] || $(MAKE) --no-print-directory bench-peers-deps
	@$(LUA) bench/peers/run.lua

build/raw_sqlite: bench/raw_sqlite.c
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -O2 $(WARN) -o $@ $< $(SQLITE_LIBS)

build/raw_curl: bench/raw_curl.c
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -O2 $(WARN) $(CURL_CFLAGS) -o $@ $< $(CURL_LIBS)

# C-level tests (run by tests/c_spec.lua, so they count in the summary line)
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
SAN_FLAGS    := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

build/test_sse: tests/c/test_sse.c tests/c/check.h core/sse.c core/sse.h
	@mkdir -p build
	$(CC) -std=c11 $(WARN) -g -O1 $(SAN_FLAGS) -Icore -o $@ tests/c/test_sse.c core/sse.c

c-tests: build/test_sse
	./build/test_sse

# One object per core file (mk/embed.mk builds them for libluagent.a), for
# the symbol check of tests/c_spec.lua (nm).
objects: $(LIB_OBJS)

# A C host calling the control tools' entries (tests/c_spec.lua runs it),
# linked like any host: libluagent.a and what luagent.pc lists.
build/test_control: tests/c/test_control.c $(LIB) core/luagent.h
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) -g -I$(LUA_INCDIR) -Icore -o $@ $< $(LIB) $(HOST_LIBS)

# Fuzzers (clang + libFuzzer, tests/c/README.md). Each target has a seed
# corpus in tests/fuzz/corpus/<target>/; what a run adds goes to
# build/fuzz/<target>/, a crash to build/fuzz/crash-<target>-<hash>.
FUZZ_TARGETS := sse json tool_args
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE $(WARN) -g -O1 -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined
FUZZ_PKGS    := clang libclang-rt-14-dev

build/fuzz_sse: tests/fuzz/fuzz_sse.c core/sse.c core/sse.h
	@mkdir -p build
	$(FUZZ_CC) $(FUZZ_FLAGS) -Icore -o $@ tests/fuzz/fuzz_sse.c core/sse.c

build/fuzz_json: tests/fuzz/fuzz_json.c core/json.c core/util.c core/internal.h
	@mkdir -p build
	$(FUZZ_CC) $(FUZZ_FLAGS) -Icore -I$(LUA_INCDIR) -o $@ tests/fuzz/fuzz_json.c core/json.c \
	  core/util.c $(LUA_LIBS) -lm -lpthread

# the whole core, and the Lua modules read from this checkout at run time
build/fuzz_tool_args: tests/fuzz/fuzz_tool_args.c $(SRC) $(HDR)
	@mkdir -p build
	$(FUZZ_CC) $(FUZZ_FLAGS) -Icore -I$(LUA_INCDIR) $(CURL_CFLAGS) $(PQ_CFLAGS) -DLUAGENT_ROOT='"$(CURDIR)"' \
	  -o $@ tests/fuzz/fuzz_tool_args.c $(SRC) $(LUA_LIBS) $(LDLIBS)

fuzz:
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(DEB_PKGS) $(FUZZ_PKGS)"
	@$(MAKE) --no-print-directory run-fuzz

# one after the other (`make -j2 run-fuzz` runs two at a time)
run-fuzz: $(addprefix run-fuzz-,$(FUZZ_TARGETS))

run-fuzz-%: build/fuzz_%
	@mkdir -p build/fuzz/$*
	@echo "fuzz $*: $(FUZZ_SECONDS) s (log: build/fuzz/$*.log)"
	@./build/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	  -artifact_prefix=build/fuzz/crash-$*- build/fuzz/$* tests/fuzz/corpus/$* \
	  >build/fuzz/$*.log 2>&1; rc=$$?; \
	  grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|^stat::number_of_executed_units' build/fuzz/$*.log; \
	  if [ $$rc = 0 ]; then echo "fuzz $*: no crash"; \
	  else tail -n 40 build/fuzz/$*.log; echo "fuzz $*: FAILED (exit $$rc)"; fi; exit $$rc

ci:
	bash .ci/run

clean:
	rm -rf luagent build
