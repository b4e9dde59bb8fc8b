# mnemo — `make help` lists the targets.
CC ?= cc
PKGS := luajit libuv hiredis libpq tree-sitter
BUILD := build

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LUAJIT_CFLAGS := $(shell pkg-config --cflags luajit 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser
LUV_CFLAGS := -isystem /usr/include/lua5.1
LUV_LIBS := -llua5.1-luv

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -fPIC $(WARN)
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# runtime/ in layers (docs/ARCHITECTURE.md, "Layout"), each folder compiled
# with only the include flags its layer may use, so a Lua header in core/ or
# loop/ fails the build (scripts/check-layers.lua checks what include paths
# cannot: <uv.h> and the client libraries are on every compiler's path).
#   core  no Lua, no libuv: the decisions, on now_ns
#   loop  libuv, libpq, hiredis, http-parser; no Lua
#   lua   the mnemo_core Lua module
#   host  mnemo-run
CORE_INC := -Iruntime/core $(shell pkg-config --cflags tree-sitter 2>/dev/null)
LOOP_INC := $(CORE_INC) -Iruntime/loop $(shell pkg-config --cflags libuv hiredis libpq 2>/dev/null)
LUA_INC := $(LOOP_INC) -Iruntime/lua $(LUAJIT_CFLAGS) $(LUV_CFLAGS)
HOST_INC := $(LUA_INC) -Iruntime/host
# Headers a layer's objects depend on: its own and those below it.
CORE_H := $(wildcard runtime/core/*.h)
LOOP_H := $(CORE_H) $(wildcard runtime/loop/*.h)
LUA_H := $(LOOP_H) $(wildcard runtime/lua/*.h)
HOST_H := $(LUA_H) $(wildcard runtime/host/*.h)

HOST_SRC := $(wildcard runtime/host/*.c)
LUA_SRC := $(wildcard runtime/lua/*.c)
# libmnemo.a: core and loop, no Lua.
CORE_SRC := $(wildcard runtime/core/*.c) $(wildcard runtime/loop/*.c)

CORE_OBJ := $(CORE_SRC:runtime/%.c=$(BUILD)/obj/%.o)
LUA_OBJ := $(LUA_SRC:runtime/%.c=$(BUILD)/obj/%.o)
HOST_OBJ := $(HOST_SRC:runtime/%.c=$(BUILD)/obj/%.o)

C_TESTS := $(patsubst tests/c/%.c,%,$(filter-out tests/c/test_main.c,$(wildcard tests/c/test_*.c)))

.PHONY: all run test bench clean help deps format demo fuzz _run _test _bench
all: $(BUILD)/mnemo-run $(BUILD)/mnemo_core.so $(GRAMMARS_LIB)

# Tree-sitter grammars, pinned in grammars/versions.txt, fetched from npm.
include mk/grammars.mk

help:
	@echo "make          build build/mnemo-run and build/mnemo_core.so"
	@echo "make run      build, then index examples/sample-repo (private PostgreSQL + Redis in .mnemo/)"
	@echo "make demo     the runtime demo: timeouts, retries, breakers (examples/demo.lua)"
	@echo "make test     every test: C unit tests (plain and ASan+UBSan), busted specs"
	@echo "make bench    benchmarks, each printing a ratio against its baseline"
	@echo "make chaos    fault-injection specs (tests/chaos/): killed servers, resets, kill -9"
	@echo "make stress   index 10,000 generated files; wall time, peak RSS, every file accounted for"
	@echo "make recovery index a real tree under seeded faults; recovery rate, files stored"
	@echo "make fuzz     libFuzzer (clang): chunker, policy, policy_shapes targets, FUZZ_SECONDS (60) each"
	@echo "make coverage C lines and branches (gcovr) and Lua lines per file, over the C tests and specs (build/coverage/)"
	@echo "make format   clang-format the C sources"
	@echo "make deps     install missing Debian packages (scripts/install-deps)"
	@echo "make grammars fetch (npm) and build the pinned tree-sitter grammars"
	@echo "make clean    remove build/"

deps:
	@scripts/install-deps

# One rule per layer and build (plain, asan), each with its own flags.
define layer_rules
$$(BUILD)/obj/$(1)/%.o: runtime/$(1)/%.c $$($(2)_H)
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS) $$($(2)_INC) -c $$< -o $$@
$$(BUILD)/asan/obj/$(1)/%.o: runtime/$(1)/%.c $$($(2)_H)
	@mkdir -p $$(@D)
	$$(CC) $$(ASAN_CFLAGS) $$($(2)_INC) -c $$< -o $$@
endef
$(eval $(call layer_rules,core,CORE))
$(eval $(call layer_rules,loop,LOOP))
$(eval $(call layer_rules,lua,LUA))
$(eval $(call layer_rules,host,HOST))

$(BUILD)/obj $(BUILD)/asan $(BUILD)/tests:
	@mkdir -p $@

$(BUILD)/libmnemo.a: $(CORE_OBJ)
	ar rcs $@ $^

# The grammars archive follows libmnemo.a (the chunker references it).
$(BUILD)/mnemo-run: $(HOST_OBJ) $(LUA_OBJ) $(BUILD)/libmnemo.a $(GRAMMARS_LIB)
	$(CC) $(CFLAGS) -rdynamic $^ -o $@ $(PKG_LIBS) $(LUV_LIBS) -lm

$(BUILD)/mnemo_core.so: $(LUA_OBJ) $(BUILD)/libmnemo.a $(GRAMMARS_LIB)
	$(CC) $(CFLAGS) -shared $^ -o $@ $(PKG_LIBS) $(LUV_LIBS) -lm

# The same sources under AddressSanitizer + UBSan, compiled once each.
ASAN_CFLAGS = $(CFLAGS) -O1 $(SAN)
$(BUILD)/asan/obj:
	@mkdir -p $@

$(BUILD)/asan/libmnemo.a: $(CORE_OBJ:$(BUILD)/obj/%=$(BUILD)/asan/obj/%)
	ar rcs $@ $^

# C unit tests: once plain, once under AddressSanitizer + UBSan.
TEST_LIBS := $(GRAMMARS_LIB) $(PKG_LIBS) -lcmocka -lm

$(BUILD)/tests/%: tests/c/%.c tests/c/testing.h $(BUILD)/libmnemo.a $(GRAMMARS_LIB) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(HOST_INC) $< $(BUILD)/libmnemo.a -o $@ $(TEST_LIBS)

$(BUILD)/asan/%: tests/c/%.c tests/c/testing.h $(BUILD)/asan/libmnemo.a $(GRAMMARS_LIB) | $(BUILD)/asan
	$(CC) $(ASAN_CFLAGS) $(HOST_INC) $< $(BUILD)/asan/libmnemo.a -o $@ $(TEST_LIBS)

# run, test and bench first install what is missing, then build in a fresh
# make (so pkg-config sees the packages just installed).
run test bench:
	@scripts/install-deps --quiet
	@$(MAKE) --no-print-directory -j$$(nproc) _$@

# The main job: index examples/sample-repo into a private PostgreSQL and
# Redis (.mnemo/, kept between runs), print the report and a search.
_run: all
	@scripts/with-services $(BUILD)/mnemo-run --policy policies/default.lua examples/index.lua examples/sample-repo

demo: all
	$(BUILD)/mnemo-run examples/demo.lua

# mnemo-run itself, instrumented, for the host specs.
$(BUILD)/asan/mnemo-run: $(HOST_OBJ:$(BUILD)/obj/%=$(BUILD)/asan/obj/%) $(LUA_OBJ:$(BUILD)/obj/%=$(BUILD)/asan/obj/%) $(BUILD)/asan/libmnemo.a $(GRAMMARS_LIB) | $(BUILD)/asan
	$(CC) $(ASAN_CFLAGS) -rdynamic $^ -o $@ $(PKG_LIBS) $(LUV_LIBS) -lm

_test: all $(BUILD)/asan/mnemo-run $(C_TESTS:%=$(BUILD)/tests/%) $(C_TESTS:%=$(BUILD)/asan/%)
	@CC="$(CC)" CORE_INC="$(CORE_INC)" LOOP_INC="$(LOOP_INC)" scripts/run-tests $(C_TESTS)

BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))

BENCH_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc

$(BUILD)/bench/%: bench/%.c $(CORE_SRC) $(HOST_H) $(GRAMMARS_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -O2 $(LOOP_INC) $< $(CORE_SRC) -o $@ $(GRAMMARS_LIB) $(PKG_LIBS) -lm \
	  $(if $(findstring bench_guard,$@),$(BENCH_WRAP))

_bench: all $(BENCHES)
	@scripts/run-benches

# Chaos and stress: real faults, see docs/RELIABILITY.md.
.PHONY: chaos stress _chaos _stress recovery
chaos stress:
	@scripts/install-deps --quiet
	@$(MAKE) --no-print-directory -j$$(nproc) _$@

_chaos: all
	@scripts/run-chaos

_stress: all
	@scripts/run-stress

recovery: all
	@scripts/recovery-run

# Coverage (scripts/coverage): runtime/ and the C tests built with --coverage
# into build/coverage/, gcovr's lines and branches per file; lua/mnemo/ lines
# over the busted suite (a line hook). Not part of make test.
.PHONY: coverage
coverage:
	@scripts/install-deps --quiet
	@scripts/coverage

# libFuzzer targets (fuzz/*.c; see the comment at the top of each), built with
# clang under ASan+UBSan, each run FUZZ_SECONDS by fuzz/run (corpus, seeds,
# crash files: see there). Kept crash inputs in tests/corpus/<target>/ are
# replayed by tests/c/test_corpus.c in `make test`.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := chunker policy policy_shapes
FUZZ_BASE_CFLAGS := -O1 -g -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer \
  -fno-sanitize-recover=all $(WARN) $(PKG_CFLAGS) $(HOST_INC)
FUZZ_CFLAGS := $(FUZZ_BASE_CFLAGS) -fsanitize=fuzzer,address,undefined

$(BUILD)/fuzz/fuzz_chunker: fuzz/fuzz_chunker.c $(CORE_SRC) $(HOST_H) $(GRAMMARS_LIB)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(CORE_SRC) -o $@ $(GRAMMARS_LIB) $(PKG_LIBS) -lm

# The policy targets link mnemo_core (the Lua bindings, the sandbox's C half
# among them: lua_sandbox.c, lua_pattern.c, pattern.c) and libmnemo, all
# compiled here with the fuzzer's sanitizers and coverage (fuzzer-no-link),
# and open it through package.preload, not build/mnemo_core.so.
FUZZ_OBJ_CFLAGS := $(FUZZ_BASE_CFLAGS) $(LUV_CFLAGS) \
  -fsanitize=fuzzer-no-link,address,undefined
FUZZ_CORE_OBJ := $(CORE_OBJ:$(BUILD)/obj/%=$(BUILD)/fuzz/obj/%)
FUZZ_LUA_OBJ := $(LUA_OBJ:$(BUILD)/obj/%=$(BUILD)/fuzz/obj/%)

$(BUILD)/fuzz/obj/%.o: runtime/%.c $(HOST_H)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_OBJ_CFLAGS) -c $< -o $@

$(BUILD)/fuzz/libmnemo.a: $(FUZZ_CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/fuzz/fuzz_policy $(BUILD)/fuzz/fuzz_policy_shapes: $(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_policy.c $(FUZZ_LUA_OBJ) $(BUILD)/fuzz/libmnemo.a $(GRAMMARS_LIB)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(LUV_CFLAGS) $< $(FUZZ_LUA_OBJ) $(BUILD)/fuzz/libmnemo.a -o $@ \
	  $(GRAMMARS_LIB) $(PKG_LIBS) $(LUV_LIBS) -lm

# The regression test replays tests/corpus/ through the fuzz entry points;
# fuzz_policy.c opens the mnemo_core it is linked with (plain or ASan).
$(BUILD)/tests/test_corpus $(BUILD)/asan/test_corpus: $(wildcard fuzz/*.c)
$(BUILD)/tests/test_corpus: $(LUA_OBJ)
$(BUILD)/tests/test_corpus: TEST_LIBS := $(LUA_OBJ) $(BUILD)/libmnemo.a $(TEST_LIBS) $(LUV_LIBS)
$(BUILD)/asan/test_corpus: $(LUA_OBJ:$(BUILD)/obj/%=$(BUILD)/asan/obj/%)
$(BUILD)/asan/test_corpus: TEST_LIBS := $(LUA_OBJ:$(BUILD)/obj/%=$(BUILD)/asan/obj/%) \
  $(BUILD)/asan/libmnemo.a $(TEST_LIBS) $(LUV_LIBS)

fuzz: all $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)
	@fuzz/run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

format:
	clang-format -i runtime/*/*.c runtime/*/*.h tests/c/*.c tests/c/*.h

clean:
	rm -rf $(BUILD)
