# The C surface for hosts (README, "Install" and "Embedding in a game or
# app"): libluagent.a with the Lua half built in, luagent.h and luagent.pc,
# `make install`, and the example C host. Included by the Makefile, which
# defines OUT, SRC, HDR, ALL_CFLAGS, LDLIBS, LUA, LUA_PC, LUA_ABI, LUA_INCDIR and
# LUA_LIBS.
#
#   make                   also builds $(OUT)/libluagent.a next to the module
#   make install           module, Lua files, command, header, library, .pc,
#                          examples (DESTDIR, PREFIX, LUADIR, LIBDIR, BINDIR,
#                          INCDIR, STATICLIBDIR, PKGCONFIGDIR, DOCDIR)
#   make host              build/host (static) and build/host-dynamic
#   make fresh             rebuild $(OUT) from scratch (what luarocks make runs)

AR      ?= ar
OBJCOPY ?= objcopy

LIB      := $(OUT)/libluagent.a
OBJDIR   := build/obj/$(OUT)
EMBED_C  := $(OBJDIR)/embedded_lua.c
LUA_SRC  := $(sort $(shell find lua/luagent -name '*.lua'))
PLUGIN_SRC := $(sort $(wildcard plugins/*.lua))
LIB_OBJS := $(patsubst core/%.c,$(OBJDIR)/%.o,$(SRC)) $(OBJDIR)/embedded_lua.o
VERSION  := $(shell sed -n 's/^ *version = "\([^"]*\)".*/\1/p' lua/luagent/init.lua | head -n 1)
# what a host links besides libluagent.a (also written into luagent.pc)
HOST_LIBS = $(LUA_LIBS) $(LDLIBS)

all: $(LIB)

# The Lua half as C arrays (tools/embed_lua.lua), generated into build/.
$(EMBED_C): tools/embed_lua.lua $(LUA_SRC) $(PLUGIN_SRC)
	@mkdir -p $(@D)
	$(LUA) tools/embed_lua.lua $@ $(LUA_SRC) $(PLUGIN_SRC)

$(OBJDIR)/%.o: core/%.c $(HDR) Makefile mk/embed.mk
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(OBJDIR)/embed.o: ALL_CFLAGS += -DLUAGENT_EMBED_LUA

$(OBJDIR)/embedded_lua.o: $(EMBED_C) core/embed.h
	$(CC) $(ALL_CFLAGS) -Icore -c -o $@ $<

# One relocatable object whose hidden symbols are made local: a host links
# only luaopen_luagent_core and the luagent_* API, so none of the core's
# internal names can clash with its own.
$(LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(CC) -r -nostdlib -o $(OBJDIR)/luagent.o $(LIB_OBJS)
	$(OBJCOPY) --localize-hidden $(OBJDIR)/luagent.o
	rm -f $@
	$(AR) rcs $@ $(OBJDIR)/luagent.o

fresh:
	rm -rf $(OUT) $(OBJDIR)
	@$(MAKE) --no-print-directory all

# ------------------------------------------------------------- install

PREFIX       ?= /usr/local
LUADIR       ?= $(PREFIX)/share/lua/$(LUA_ABI)
LIBDIR       ?= $(PREFIX)/lib/lua/$(LUA_ABI)
BINDIR       ?= $(PREFIX)/bin
INCDIR       ?= $(PREFIX)/include
STATICLIBDIR ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(STATICLIBDIR)/pkgconfig
DOCDIR       ?= $(PREFIX)/share/doc/luagent

# luagent.pc names its directories relative to itself (${pcfiledir}), so it
# stays right under DESTDIR and in a LuaRocks tree, where the files move.
relpath = $(shell realpath -m -s --relative-to=$(1) $(2))

install: install-lib install-bin

install-lib: $(MODULE) $(LIB)
	install -d $(DESTDIR)$(LIBDIR)/luagent $(DESTDIR)$(LUADIR)/luagent/plugins \
	  $(DESTDIR)$(INCDIR) $(DESTDIR)$(STATICLIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 $(MODULE) $(DESTDIR)$(LIBDIR)/luagent/core.so
	for f in $(LUA_SRC); do \
	  d=$(DESTDIR)$(LUADIR)/$$(dirname $${f#lua/}); install -d $$d && install -m 0644 $$f $$d/ || exit 1; \
	done
	install -m 0644 $(PLUGIN_SRC) $(DESTDIR)$(LUADIR)/luagent/plugins/
	install -m 0644 core/luagent.h $(DESTDIR)$(INCDIR)/luagent.h
	install -m 0644 $(LIB) $(DESTDIR)$(STATICLIBDIR)/libluagent.a
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@LUA_VERSION@|$(LUA_PC)|' \
	    -e 's|@INCDIR@|$${pcfiledir}/$(call relpath,$(PKGCONFIGDIR),$(INCDIR))|' \
	    -e 's|@LIBDIR@|$${pcfiledir}/$(call relpath,$(PKGCONFIGDIR),$(STATICLIBDIR))|' \
	    -e 's|@LUA_CFLAGS@|-I$(LUA_INCDIR)|' \
	    -e 's|@LIBS@|$(strip $(HOST_LIBS))|' \
	    luagent.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/luagent.pc
	cp -R examples $(DESTDIR)$(DOCDIR)/

# The command, told where the Lua files went (bin/luagent).
install-bin:
	install -d $(DESTDIR)$(BINDIR)
	sed -e 's|^local LUADIR, LIBDIR = nil, nil$$|local LUADIR, LIBDIR = "$(LUADIR)", "$(LIBDIR)"|' \
	    bin/luagent > $(DESTDIR)$(BINDIR)/luagent
	chmod 0755 $(DESTDIR)$(BINDIR)/luagent

# ------------------------------------------------------- example host

HOST_SRC := examples/host/host.c

host: build/host build/host-dynamic

build/host: $(HOST_SRC) $(LIB) core/luagent.h
	@mkdir -p build
	$(CC) -std=c11 $(WARN) -O2 -Icore -I$(LUA_INCDIR) -o $@ $(HOST_SRC) $(LIB) $(HOST_LIBS)

build/host-dynamic: $(HOST_SRC) core/luagent.h
	@mkdir -p build
	$(CC) -std=c11 $(WARN) -O2 -DHOST_REQUIRE -Icore -I$(LUA_INCDIR) -o $@ $(HOST_SRC) $(LUA_LIBS)

.PHONY: fresh install install-lib install-bin host

# The embedding API's C tests (tests/c/test_embed.c, run by tests/c_spec.lua)
build/test_embed: tests/c/test_embed.c tests/c/check.h $(LIB) core/luagent.h
	@mkdir -p build
	$(CC) -std=c11 $(WARN) -g -O1 -D_GNU_SOURCE -Icore -I$(LUA_INCDIR) -o $@ tests/c/test_embed.c $(LIB) $(HOST_LIBS)
