# Spool build. `make` builds the release binaries into build/bin; `make test` builds everything
# again with AddressSanitizer and UndefinedBehaviorSanitizer into build/asan and runs every test.

CC      ?= cc
FUZZCC  ?= clang
PREFIX  ?= /usr/local

LLHTTP_SRC_DIR ?= /usr/share/llhttp
LLHTTP_INC_DIR ?= /usr/share/include/llhttp

DEBIAN_DEPS = build-essential pkg-config libuv1-dev libcjson-dev libhiredis-dev libcmocka-dev \
              node-llhttp redis-server wrk clang libclang-rt-14-dev python3 tmux chromium shellcheck python3-yaml systemd \
              clang-format

WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
INCLUDES = -Icommon -Iworker -Iserver -I$(LLHTTP_INC_DIR)
BASEFLAGS = -std=c11 -D_GNU_SOURCE -g -pthread $(INCLUDES) \
            $(shell pkg-config --cflags libuv 2>/dev/null)
LDLIBS   = $(shell pkg-config --libs libuv 2>/dev/null || echo -luv) \
           $(shell pkg-config --libs hiredis 2>/dev/null || echo -lhiredis) -ldl -lm -pthread

REL_CFLAGS  = -O2 $(BASEFLAGS)
ASAN_CFLAGS = -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=undefined $(BASEFLAGS)

# The library: everything under common/ and worker/ except worker/main.c (spool-worker's main).
LIB_SRC    = $(wildcard common/*.c) $(filter-out worker/main.c,$(wildcard worker/*.c))
SERVER_SRC = $(wildcard server/*.c)
WORKER_MAIN = $(wildcard worker/main.c)
CLI_SRC    = $(wildcard cli/*.c)
LLHTTP_SRC = llhttp.c api.c http.c
TEST_SRC   = $(wildcard tests/test_*.c)
TEST_SCRIPTS = $(wildcard tests/test_*.sh)
TESTSUP_SRC = $(wildcard tests/support/*.c)
FUZZ_SRC   = $(wildcard tests/fuzz/fuzz_*.c)
# The Redis backend's Lua library, generated from common/redis.lua (see below).
LUA_GEN    = build/gen/redis_lua.c

BINS = spool-server $(if $(WORKER_MAIN),spool-worker) $(if $(CLI_SRC),spool)

# ---- object lists per flavour ----------------------------------------------------------------
objs = $(patsubst %.c,build/$(1)/obj/%.o,$(2))
LLHTTP_OBJ = $(patsubst %.c,build/$(1)/obj/llhttp/%.o,$(LLHTTP_SRC))

REL_LIB  = build/rel/libspool.a
ASAN_LIB = build/asan/libspool.a

.PHONY: all deps run test test-unit test-bin bench fuzz format lint clean install help
.DEFAULT_GOAL := all

all: $(addprefix build/bin/,$(BINS))

help:
	@echo "make            build build/bin/{$(BINS)}"
	@echo "make deps       install missing Debian packages (apt-get)"
	@echo "make run        build and start spool-server on 127.0.0.1:7700 with 8 workers, jobs kept in ./var"
	@echo "make test       build with ASan+UBSan and run every test"
	@echo "make bench      benchmarks (wrk); prints req/s, latency and memory per job"
	@echo "make fuzz       run the fuzzers for FUZZ_SECONDS (default 60) each"
	@echo "make format     apply .clang-format; make lint checks it"

# Installs only what is missing: a machine that has everything installs nothing.
deps:
	@missing=""; for p in $(DEBIAN_DEPS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

run: deps
	@$(MAKE) --no-print-directory all
	./build/bin/spool-server --listen 127.0.0.1:7700 --workers 8 --data-dir ./var

# ---- release build ---------------------------------------------------------------------------
build/rel/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) $(WARN) -MMD -MP -c $< -o $@

build/rel/obj/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -w -c $< -o $@

$(REL_LIB): $(call objs,rel,$(LIB_SRC)) $(call LLHTTP_OBJ,rel)
	@rm -f $@
	ar rcs $@ $^

build/bin/spool-server: $(call objs,rel,$(SERVER_SRC)) $(REL_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LDLIBS)

build/bin/spool-worker: $(call objs,rel,$(WORKER_MAIN)) $(REL_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LDLIBS)

build/bin/spool: $(call objs,rel,$(CLI_SRC)) $(REL_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LDLIBS)

# ---- sanitizer build and tests ---------------------------------------------------------------
build/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) $(WARN) -MMD -MP -c $< -o $@

build/asan/obj/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -w -c $< -o $@

$(ASAN_LIB): $(call objs,asan,$(LIB_SRC)) $(call LLHTTP_OBJ,asan)
	@rm -f $@
	ar rcs $@ $^

build/asan/bin/spool-server: $(call objs,asan,$(SERVER_SRC)) $(ASAN_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)

build/asan/bin/spool-worker: $(call objs,asan,$(WORKER_MAIN)) $(ASAN_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)

build/asan/bin/spool: $(call objs,asan,$(CLI_SRC)) $(ASAN_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)

TESTSUP_OBJ = $(call objs,asan,$(TESTSUP_SRC))
TEST_BINS   = $(patsubst tests/%.c,build/asan/test/%,$(TEST_SRC))
# Objects of server/ other than main.o, so that tests can drive the API layer in-process.
SERVER_LIB_OBJ = $(call objs,asan,$(filter-out server/main.c,$(SERVER_SRC)))

build/asan/test/%: build/asan/obj/tests/%.o $(TESTSUP_OBJ) $(SERVER_LIB_OBJ) $(ASAN_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -o $@ $^ -lcmocka $(shell pkg-config --libs libcjson 2>/dev/null || echo -lcjson) $(LDLIBS)

# The HTTP integration tests that run a second time with every spool-server on Redis.
REDIS_TEST_BINS = $(addprefix build/asan/test/,test_api_jobs test_api_worker test_api_queues)

test-bin: $(addprefix build/asan/bin/,$(BINS)) $(TEST_BINS) fuzz-bin all

# Unit tests first (fast), then the integration tests that start real processes.
test: deps
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-bin
	@export SPOOL_BIN_DIR=$(CURDIR)/build/asan/bin SPOOL_SOURCE_DIR=$(CURDIR) \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1; \
	  tests/run.sh $(TEST_BINS) $(TEST_SCRIPTS) $(addprefix redis:,$(REDIS_TEST_BINS)) \
	    $(addprefix fuzz:,$(FUZZ_BINS))

# ---- fuzzing ---------------------------------------------------------------------------------
FUZZ_CFLAGS = -O1 -g -fsanitize=fuzzer,address,undefined $(BASEFLAGS)
FUZZ_BINS   = $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
FUZZ_LIB_SRC = $(LIB_SRC) $(LUA_GEN)
FUZZ_SECONDS ?= 60

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZCC) -O1 -g -fsanitize=fuzzer-no-link,address,undefined $(BASEFLAGS) -c $< -o $@

build/fuzz/obj/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	@mkdir -p $(dir $@)
	$(FUZZCC) -O1 -g -fsanitize=fuzzer-no-link,address,undefined $(BASEFLAGS) -w -c $< -o $@

build/fuzz/%: tests/fuzz/%.c $(call objs,fuzz,$(FUZZ_LIB_SRC)) $(call LLHTTP_OBJ,fuzz)
	@mkdir -p $(dir $@)
	$(FUZZCC) $(FUZZ_CFLAGS) -o $@ $^ $(LDLIBS)

fuzz-bin: $(FUZZ_BINS)

fuzz: deps
	@$(MAKE) --no-print-directory fuzz-bin
	@for f in $(FUZZ_BINS); do \
	  n=$$(basename $$f); mkdir -p tests/fuzz/corpus/$$n; \
	  echo "fuzzing $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 tests/fuzz/corpus/$$n || exit 1; \
	done

# ---- benchmarks ------------------------------------------------------------------------------
bench: deps
	@$(MAKE) --no-print-directory all
	@bench/run.sh

# ---- formatting ------------------------------------------------------------------------------
FORMAT_SRC = $(wildcard common/*.[ch] server/*.[ch] worker/*.[ch] cli/*.[ch] tests/*.c \
                        tests/support/*.[ch] tests/fuzz/*.c)
format:
	clang-format -i $(FORMAT_SRC)

lint:
	@echo "clang-format: checking $(words $(FORMAT_SRC)) files"
	@clang-format --dry-run --Werror $(FORMAT_SRC)

# Binaries, systemd units (their ExecStart pointed at $(PREFIX)/bin) and each binary's --help as
# a man-style text page. DESTDIR stages the tree for a package.
UNITS = $(wildcard deploy/systemd/*.service)
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system \
	  $(DESTDIR)$(PREFIX)/share/doc/spool
	install -m 0755 $(addprefix build/bin/,$(BINS)) $(DESTDIR)$(PREFIX)/bin/
	for u in $(UNITS); do \
	  sed 's|/usr/local/|$(PREFIX)/|g' $$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u) && \
	  chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u) || exit 1; \
	done
	for b in $(BINS); do \
	  bash deploy/helpdoc.sh build/bin/$$b > $(DESTDIR)$(PREFIX)/share/doc/spool/$$b.txt || exit 1; \
	done

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)

# ---- dashboard assets ------------------------------------------------------------------------
# The page under server/dashboard/ (HTML, script, style, vendored uPlot) is embedded into the
# server as the C table of build/gen/dashboard_assets.c (server/dashboard/embed.sh: od and awk).
# server/dashboard.o uses it, so it is linked into spool-server and into every test binary.
DASH_DIR      = server/dashboard
DASH_FILES    = $(filter-out %.sh %.md,$(sort $(shell find $(DASH_DIR) -type f 2>/dev/null)))
DASH_GEN      = build/gen/dashboard_assets.c
DASH_REL_OBJ  = $(call objs,rel,$(DASH_GEN))
DASH_ASAN_OBJ = $(call objs,asan,$(DASH_GEN))

$(DASH_GEN): $(DASH_FILES) $(DASH_DIR)/embed.sh
	@mkdir -p $(dir $@)
	sh $(DASH_DIR)/embed.sh $@ $(DASH_DIR) $(DASH_FILES)

build/bin/spool-server: $(DASH_REL_OBJ)
build/asan/bin/spool-server: $(DASH_ASAN_OBJ)
$(TEST_BINS): $(DASH_ASAN_OBJ)
# ---- end of dashboard assets -----------------------------------------------------------------

# ---- the Redis backend's Lua library ----------------------------------------------------------
# common/redis.lua is embedded into libspool as the string sp_redis_lua of $(LUA_GEN)
# (octal escapes from od, so that any byte is safe), which common/backend_redis.c loads.
$(LUA_GEN): common/redis.lua
	@mkdir -p $(dir $@)
	{ echo '/* Generated from common/redis.lua by the Makefile: do not edit. */'; \
	  echo '#include <stddef.h>'; \
	  echo 'extern const char sp_redis_lua[];'; \
	  echo 'extern const size_t sp_redis_lua_len;'; \
	  echo 'const char sp_redis_lua[] ='; \
	  od -An -v -to1 $< | awk '{ s = "    \""; for (k = 1; k <= NF; k++) s = s "\\" $$k; print s "\"" }'; \
	  echo '    ;'; \
	  echo 'const size_t sp_redis_lua_len = sizeof sp_redis_lua - 1;'; } > $@.tmp
	mv $@.tmp $@

$(REL_LIB): $(call objs,rel,$(LUA_GEN))
$(ASAN_LIB): $(call objs,asan,$(LUA_GEN))
# ---- end of the Lua library -------------------------------------------------------------------

# ---- handler libraries: the example lib handler (examples/) and the tests' fixture library ----
# Plain shared objects without sanitizers: a lib handler is the operator's own code, loaded with
# dlopen by the worker (the sanitizer build loads them too).
SHLIB_CFLAGS = -std=c11 -D_GNU_SOURCE -O2 -g -fPIC -shared
EXAMPLE_SO   = build/lib/libspool_example.so
TESTLIB_SO   = build/lib/libspool_testlib.so

$(EXAMPLE_SO): $(wildcard examples/*.c)
	@mkdir -p $(dir $@)
	$(CC) $(SHLIB_CFLAGS) $(WARN) -o $@ $^

$(TESTLIB_SO): tests/fixtures/testlib.c
	@mkdir -p $(dir $@)
	$(CC) $(SHLIB_CFLAGS) $(WARN) -o $@ $^

all: $(EXAMPLE_SO)
test-bin: $(EXAMPLE_SO) $(TESTLIB_SO)
# ---- end of handler libraries ---------------------------------------------------------------
