# BetCity data tier: build, test and run.
#
#   make run      install what is missing, build, start the local stack
#   make test     install what is missing, build, run every test
#   make SANITIZE=address,undefined test   the same under ASan/UBSan
#
# Each top-level module folder builds one static library; tools and tests link
# only the libraries they use.

CC ?= cc
SANITIZE ?=
BUILD ?= build$(if $(SANITIZE),-san)
STACK_DIR ?= $(CURDIR)/.stack

PKGS := mariadb yaml-0.1 libxxhash
API_PKGS := jansson libmicrohttpd libsodium libmemcached zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) $(API_PKGS) cmocka 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
API_LIBS := $(shell pkg-config --libs $(API_PKGS) 2>/dev/null) -lm
CURL_LIBS := $(shell pkg-config --libs libcurl jansson 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -pthread $(WARN) -MMD -MP -I. $(PKG_CFLAGS)
LDFLAGS += -pthread
# Hardening (tests/hardening/check): stack canaries, position-independent code,
# full RELRO. _FORTIFY_SOURCE needs optimisation and is left off under the
# sanitizers, whose interceptors it conflicts with.
FORTIFY := $(if $(SANITIZE),,$(if $(filter -O1 -O2 -O3 -Os -Og -Ofast,$(CFLAGS)),\
             -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2))
CFLAGS += -fstack-protector-strong -fPIE $(FORTIFY)
LDFLAGS += -pie -Wl,-z,relro,-z,now
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

MODULES := shardmap router
lib_srcs = $(wildcard $(1)/*.c)
lib_objs = $(patsubst %.c,$(BUILD)/%.o,$(call lib_srcs,$(1)))

SHARDMAP_LIB := $(BUILD)/libshardmap.a
ROUTER_LIB := $(BUILD)/librouter.a
CATALOG_LIB := $(BUILD)/libcatalog.a
RESHARD_LIB := $(BUILD)/libreshard.a
SQL_LIB := $(BUILD)/libsql.a
API_LIB := $(BUILD)/libapi.a
CACHE_LIB := $(BUILD)/libcache.a

TOOLS := $(BUILD)/shardctl $(BUILD)/betcity-api $(BUILD)/bcadmin $(BUILD)/loadgen \
         $(BUILD)/fillshard $(BUILD)/fillscale $(BUILD)/netwire
UNIT_TESTS := $(BUILD)/test_shardmap $(BUILD)/test_shardmap_conf \
              $(BUILD)/test_shardmap_files $(BUILD)/test_api $(BUILD)/test_api_routes \
              $(BUILD)/test_api_work $(BUILD)/test_api_tarpit $(BUILD)/test_api_hot \
              $(BUILD)/test_api_listen $(BUILD)/test_api_pwhash \
              $(BUILD)/test_api_log $(BUILD)/test_api_text $(BUILD)/test_api_batch \
              $(BUILD)/test_reshard $(BUILD)/test_router_lower \
              $(BUILD)/test_sql $(BUILD)/test_netwire_queue $(BUILD)/test_cache_near
INTEGRATION_TESTS := $(BUILD)/test_shardctl_int $(BUILD)/test_router_int \
                     $(BUILD)/test_router_txn_int $(BUILD)/test_router_op_int \
                     $(BUILD)/test_router_bg_int $(BUILD)/test_router_replica_int \
                     $(BUILD)/test_cache_int $(BUILD)/test_catalog_int \
                     $(BUILD)/test_catalog_jobs_int \
                     $(BUILD)/test_privilege_int

.PHONY: all deps run stop status test test-lane-1 test-lane-2 test-lane-3 unit integration \
        reshard failover \
        format format-check bench bench-scale clean valgrind openapi

all: $(SHARDMAP_LIB) $(SQL_LIB) $(CATALOG_LIB) $(RESHARD_LIB) $(ROUTER_LIB) $(CACHE_LIB) $(API_LIB) $(TOOLS) $(UNIT_TESTS) $(INTEGRATION_TESTS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(SHARDMAP_LIB): $(call lib_objs,shardmap)
$(ROUTER_LIB): $(call lib_objs,router)
$(CATALOG_LIB): $(call lib_objs,catalog)
$(RESHARD_LIB): $(call lib_objs,reshard)
$(SQL_LIB): $(call lib_objs,sql)
$(CACHE_LIB): $(call lib_objs,cache)
$(API_LIB): $(filter-out $(BUILD)/api/main.o,$(call lib_objs,api))
$(BUILD)/lib%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The schema SQL is built into the objects (.incbin): they depend on it.
$(BUILD)/catalog/catalog.o: etc/schema/global.sql
$(BUILD)/reshard/reshard_schema.o: etc/schema/shard.sql etc/schema/shard_fence.sql
SHARDCTL_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/shardctl*.c))
$(BUILD)/shardctl: $(SHARDCTL_OBJS) $(RESHARD_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/betcity-api: $(BUILD)/api/main.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS)
$(BUILD)/bcadmin: $(BUILD)/tools/bcadmin.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS)
LOADGEN_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/loadgen*.c))
$(BUILD)/loadgen: $(LOADGEN_OBJS) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(CURL_LIBS) $(PKG_LIBS)

# The delayed link of a stack's network namespaces where the kernel has no
# netem (tools/devstack, BC_NETNS=1).
$(BUILD)/netwire: $(BUILD)/tools/netwire.o $(BUILD)/tools/netwire_queue.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/rawdb: $(BUILD)/tools/bench/rawdb.o
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)
$(BUILD)/fillshard: $(BUILD)/tools/bench/fillshard.o $(BUILD)/tools/bench/fill_util.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) \
                    $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS)
$(BUILD)/fillscale: $(BUILD)/tools/bench/fillscale.o $(BUILD)/tools/bench/fillscale_plan.o $(BUILD)/tools/bench/fill_util.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) \
                    $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS)

# wrk against one API server beside the same SQL run straight on the databases
# (tools/bench/run, docs/benchmarks.md); starts and stops its own stack. The
# first four on stacks without replicas (their figures compare with the
# earlier runs'); tools/bench/failover measures what replicas cost and buy.
bench: $(BUILD)/betcity-api $(BUILD)/bcadmin $(BUILD)/shardctl $(BUILD)/rawdb \
       $(BUILD)/loadgen $(BUILD)/fillshard
	BUILD=$(BUILD) BC_REPLICAS=0 tools/bench/run
	BUILD=$(BUILD) BC_REPLICAS=0 tools/bench/cache
	BUILD=$(BUILD) BC_REPLICAS=0 tools/bench/reshard
	BUILD=$(BUILD) BC_REPLICAS=0 tools/bench/abuse
	BUILD=$(BUILD) tools/bench/failover

# 1,000,000 users and 10,000,000 bets on 512 shards (tools/bench/scale,
# docs/benchmarks.md "Scale"); starts and stops its own stack. Knobs SCALE_*.
bench-scale: $(BUILD)/betcity-api $(BUILD)/bcadmin $(BUILD)/shardctl $(BUILD)/loadgen \
             $(BUILD)/fillscale
	BUILD=$(BUILD) BC_REPLICAS=0 tools/bench/scale

$(BUILD)/test_shardmap: $(BUILD)/tests/unit/test_shardmap.o $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_shardmap_conf $(BUILD)/test_shardmap_files: $(BUILD)/%: $(BUILD)/tests/unit/%.o \
    $(BUILD)/tests/unit/yaml_fix.o $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_router_lower: $(BUILD)/tests/unit/test_router_lower.o $(ROUTER_LIB) $(CATALOG_LIB) \
    $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_sql: $(BUILD)/tests/unit/test_sql.o $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -Wl,--wrap=malloc -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_reshard: $(BUILD)/tests/unit/test_reshard.o $(BUILD)/tests/unit/reshard_fake.o \
                       $(RESHARD_LIB) $(CATALOG_LIB) \
                       $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_api: $(BUILD)/tests/unit/test_api.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_api_routes: $(BUILD)/tests/unit/test_api_routes.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_api_work $(BUILD)/test_api_tarpit: $(BUILD)/%: $(BUILD)/tests/unit/%.o $(API_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS)
$(BUILD)/test_netwire_queue: $(BUILD)/tests/unit/test_netwire_queue.o \
                             $(BUILD)/tools/netwire_queue.o
	$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS)
$(BUILD)/test_api_listen: $(BUILD)/tests/unit/test_api_listen.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_api_log: $(BUILD)/tests/unit/test_api_log.o $(API_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS)
$(BUILD)/test_api_pwhash: $(BUILD)/tests/unit/test_api_pwhash.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_api_text: $(BUILD)/tests/unit/test_api_text.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_api_batch: $(BUILD)/tests/unit/test_api_batch.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_api_hot: $(BUILD)/tests/unit/test_api_hot.o $(API_LIB) $(CACHE_LIB) $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_cache_near: $(BUILD)/tests/unit/test_cache_near.o $(CACHE_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_cache_int: $(BUILD)/tests/integration/test_cache_int.o \
                        $(BUILD)/tests/integration/itest.o $(CACHE_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_catalog_int $(BUILD)/test_catalog_jobs_int: $(BUILD)/%: \
    $(BUILD)/tests/integration/%.o $(BUILD)/tests/integration/catfix.o \
    $(BUILD)/tests/integration/itest.o $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)
$(BUILD)/test_%_int: $(BUILD)/tests/integration/test_%_int.o \
                     $(BUILD)/tests/integration/itest.o $(BUILD)/tests/integration/rtest.o \
                     $(ROUTER_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

# No object is deleted as an intermediate file: once the -MMD dependency
# files name it, a later make (a lane of make test) would only build it again.
.SECONDARY:

# Installs the Debian packages the build, the stack and the tests need.
deps:
	@tools/install-deps

# The whole local stack in the foreground: 3 MariaDB, 2 memcached, 2 API
# servers behind HAProxy on http://127.0.0.1:8080, seeded with a demo
# tournament. Ctrl-C stops everything.
run: deps
	$(MAKE) all
	BUILD=$(BUILD) BC_HTTP_PORT=$${BC_HTTP_PORT:-8080} tools/devstack run --dir $(STACK_DIR)

stop:
	tools/devstack stop --dir $(STACK_DIR)

status:
	tools/devstack status --dir $(STACK_DIR)

# The suites against stacks run in three lanes at once (tests/lanes): each
# starts a stack of its own, and each mostly waits on its servers (the lanes
# of two took 1,050-1,065 s on a 2-core machine whose CPUs were 41 % busy).
# Every suite still runs on both builds.
test: deps
	$(MAKE) all
	$(MAKE) format-check
	tests/hardening/check $(BUILD)/betcity-api $(BUILD)/shardctl $(BUILD)/bcadmin
	tests/devstack/claims
	tests/devstack/run-fails
	$(MAKE) openapi
	$(MAKE) unit
	$(MAKE) SANITIZE=address,undefined all
	tests/lanes "$(MAKE) test-lane-1" "$(MAKE) test-lane-2" "$(MAKE) test-lane-3"

test-lane-1:
	$(MAKE) integration
	$(MAKE) SANITIZE=address,undefined failover

test-lane-2:
	$(MAKE) valgrind
	$(MAKE) SANITIZE=address,undefined unit integration
	$(MAKE) fuzz-smoke

test-lane-3:
	$(MAKE) reshard
	$(MAKE) SANITIZE=address,undefined reshard
	$(MAKE) failover

unit: $(UNIT_TESTS) $(BUILD)/loadgen
	@set -e; for t in $(abspath $(UNIT_TESTS)); do (cd tests/unit && $$t); done
	python3 tests/bench/test_scale_steps.py
	BUILD=$(BUILD) python3 tests/bench/test_loadgen_retry.py

# The integration tests (C, cmocka) and the end-to-end HTTP suite (Python,
# standard library) run against one stack that tests/integration/run starts on
# free ports in a scratch directory and always stops, also when a test fails.
integration: $(INTEGRATION_TESTS) $(TOOLS)
	BUILD=$(BUILD) tests/integration/run $(INTEGRATION_TESTS) tests/e2e/run

# Online resharding under load (tests/reshard/run): it adds a host and moves
# shards around, on a stack of its own that tests/integration/run starts and
# always stops.
reshard: $(TOOLS)
	BUILD=$(BUILD) tests/integration/run tests/reshard/run

# Replicas, failover and switchover (tests/failover/run): on a stack of its own
# made with BC_REPLICAS=1 (a replica of each host and `shardctl guard`), which
# tests/integration/run starts and always stops like the one above.
failover: $(TOOLS)
	BUILD=$(BUILD) tests/failover/run

# A real OpenAPI linter (Redocly) on docs/openapi.yaml, and the server's own
# route list against the spec's paths.
openapi: $(BUILD)/betcity-api
	BETCITY_API=$(BUILD)/betcity-api tests/openapi/lint

valgrind: $(UNIT_TESTS)
	@set -e; for t in $(abspath $(UNIT_TESTS)); do (cd tests/unit && valgrind -q \
	  --error-exitcode=1 --leak-check=full $$t); done

# libFuzzer harnesses (tests/fuzz, docs/fuzzing.md), built with clang under
# ASan/UBSan into their own directory. `make fuzz` runs each for FUZZ_SECONDS;
# `make test` replays the kept crashes and runs each for FUZZ_SMOKE_SECONDS.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 15
FUZZERS := fuzz_request fuzz_http fuzz_parsers fuzz_config fuzz_map fuzz_plan
.PHONY: fuzz fuzz-build fuzz-smoke fuzzers
FUZZ_API_OBJS := $(BUILD)/tests/fuzz/fuzz_api_fake.o $(BUILD)/tests/fuzz/fuzz_util.o \
                 $(API_LIB) $(CACHE_LIB) $(CATALOG_LIB) $(SQL_LIB) $(SHARDMAP_LIB)
fuzzers: $(addprefix $(BUILD)/,$(FUZZERS))
$(BUILD)/fuzz_request $(BUILD)/fuzz_parsers: $(BUILD)/%: $(BUILD)/tests/fuzz/%.o \
                    $(BUILD)/tests/fuzz/fuzz_conn.o $(FUZZ_API_OBJS)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(API_LIBS) $(PKG_LIBS)
$(BUILD)/fuzz_http: $(BUILD)/tests/fuzz/fuzz_http.o $(FUZZ_API_OBJS)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(API_LIBS) $(PKG_LIBS)
$(BUILD)/fuzz_config $(BUILD)/fuzz_map $(BUILD)/fuzz_plan: $(BUILD)/%: $(BUILD)/tests/fuzz/%.o \
                    $(BUILD)/tests/fuzz/fuzz_util.o $(SHARDMAP_LIB)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS)
fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang SANITIZE=fuzzer-no-link,address,undefined fuzzers
fuzz: deps fuzz-build
	tests/fuzz/run $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZERS)
fuzz-smoke: fuzz-build
	tests/fuzz/run $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS) $(FUZZERS)

FORMAT_SRCS = $(shell git ls-files '*.c' '*.h' 2>/dev/null || \
                find . -path ./build\* -prune -o -name '*.[ch]' -print)
format:
	clang-format -i $(FORMAT_SRCS)
format-check:
	clang-format --dry-run -Werror $(FORMAT_SRCS)

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
