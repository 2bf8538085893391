# portero build. `make run` and `make test` are the two commands of the README.
CC      ?= gcc
PKGS    := yaml-0.1 libpcre2-8 openssl libcrypt hiredis modsecurity libnghttp2 zlib libbrotlienc libbrotlidec libzstd
CSTD    := -std=c17 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
CFLAGS  += $(CSTD) $(WARN) -pthread -Isrc $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := -pthread $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
PYTHON  := /usr/bin/python3

LIB_SRC := $(sort $(shell find src -name '*.c' ! -name main.c))
LIB_OBJ := $(LIB_SRC:src/%.c=build/obj/%.o)
SAN_OBJ := $(LIB_SRC:src/%.c=build/asan/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/unit/%)
UNIT_SAN := $(UNIT_SRC:tests/unit/%.c=build/asan/unit/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 120
FUZZ_TEST_SECONDS ?= 10

.PHONY: all deps build asan run test unit unit-asan integration integration-asan fuzz bench clean

all: build
build: build/portero
asan: build/asan/portero

deps:
	@scripts/deps.sh

build/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

build/asan/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -MMD -MP -c $< -o $@

build/portero: build/obj/main.o $(LIB_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/asan/portero: build/asan/obj/main.o $(SAN_OBJ)
	$(CC) $(CFLAGS) $(SAN) $^ -o $@ $(LDLIBS)

build/unit/%: tests/unit/%.c $(LIB_OBJ) tests/unit/unit.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/unit $< $(LIB_OBJ) -o $@ $(LDLIBS)

build/asan/unit/%: tests/unit/%.c $(SAN_OBJ) tests/unit/unit.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN) -Itests/unit $< $(SAN_OBJ) -o $@ $(LDLIBS)

# libFuzzer needs clang; targets link only the pure modules they exercise.
FUZZ_DEPS := src/http/h1.c src/core/str.c src/core/sbuf.c src/core/fdpass.c src/conf/config.c \
             src/conf/config_policy.c src/conf/config_tls.c src/conf/config_cache.c src/conf/cidr.c src/conf/yaml_doc.c src/admin/admin_json.c
# Per-target extra sources: FUZZ_EXTRA_<target>.
FUZZ_EXTRA_fuzz_proxyproto := src/http/proxyproto.c
FUZZ_EXTRA_fuzz_jwt := src/policy/jwt.c src/policy/jwt_keys.c src/policy/jwt_claims.c src/policy/base64.c src/core/log.c
FUZZ_EXTRA_fuzz_path := src/http/path.c
FUZZ_EXTRA_fuzz_compress := src/http/compress.c src/http/compress_stream.c
FUZZ_EXTRA_fuzz_redirect := src/proxy/route.c
FUZZ_EXTRA_fuzz_basic_auth := src/policy/basic_auth.c src/policy/base64.c
FUZZ_EXTRA_fuzz_cache_rules := src/cache/cache_cc.c src/cache/cache_date.c src/cache/cache_rules.c \
    src/cache/cache_head.c src/cache/cache_range.c src/http/msg.c
FUZZ_EXTRA_fuzz_h2_bridge := src/http/h2_bridge.c src/http/h2_bridge_nv.c src/http/h2_bridge_body.c \
    src/http/hdr.c src/http/msg.c src/http/compress.c
FUZZ_EXTRA_fuzz_real_client := src/policy/policy.c src/policy/policy_addr.c src/policy/policy_rate.c \
    src/policy/policy_auth.c src/policy/basic_auth.c src/policy/base64.c src/core/offload.c \
    src/policy/fwdauth.c src/policy/jwt.c src/policy/jwt_keys.c src/policy/jwt_claims.c \
    src/policy/ratelimit.c src/core/siphash.c src/policy/redis_limit.c src/policy/waf.c src/core/log.c \
    src/core/sock.c src/core/loop.c src/http/hdr.c src/http/msg.c src/http/compress.c
# Each source is compiled once for all targets (instrumented, not linked with libFuzzer's main).
FUZZ_CFLAGS := $(CSTD) -O1 -g -Isrc $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
fuzz_objs = $(patsubst src/%.c,build/fuzz/obj/%.o,$(1))
.PRECIOUS: build/fuzz/obj/%.o
build/fuzz/obj/%.o: src/%.c
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@
.SECONDEXPANSION:
build/fuzz/%: tests/fuzz/%.c $$(call fuzz_objs,$(FUZZ_DEPS) $$(FUZZ_EXTRA_$$*))
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $< $(call fuzz_objs,$(FUZZ_DEPS) $(FUZZ_EXTRA_$*)) -o $@ $(LDLIBS)

unit: $(UNIT_BIN)
	@tests/run_unit.sh $(UNIT_BIN)

unit-asan: $(UNIT_SAN)
	@tests/run_unit.sh $(UNIT_SAN)

integration: build/portero
	cd tests/integration && PORTERO_BIN=$(CURDIR)/build/portero $(PYTHON) -m pytest -q -p no:cacheprovider .

integration-asan: build/asan/portero
	cd tests/integration && PORTERO_BIN=$(CURDIR)/build/asan/portero PORTERO_ASAN=1 $(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow" .

fuzz: $(FUZZ_BIN)
	@tests/run_fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

test: deps
	$(MAKE) -j2 build asan $(UNIT_BIN) $(UNIT_SAN)
	$(MAKE) unit unit-asan
	# The two integration passes mostly wait on sockets and timers: side by side they take the
	# time of the longer one. --output-sync keeps each pass's report in one piece.
	$(MAKE) -j2 --output-sync=target integration integration-asan
	$(MAKE) -j2 fuzz FUZZ_SECONDS=$(FUZZ_TEST_SECONDS)

# The eviction policy's simulator (S3-FIFO vs LRU on a scan-heavy trace), used by make bench.
build/bench/cache_trace: bench/cache_trace.c src/cache/cache_evict.c src/cache/cache_sim.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $^ -o $@ -lm

run: deps build
	@scripts/run-demo.sh

bench: deps build build/bench/cache_trace
	$(PYTHON) bench/run.py

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(SAN_OBJ:.o=.d) build/obj/main.d build/asan/obj/main.d \
         $(wildcard build/fuzz/obj/*/*.d)
