# rlhi: one plain GNU Makefile. Objects go to $(BUILD) (default build/).
#   make            build librlhi.a and the rlhi command
#   make test       install missing packages, build, run every test
#   make demo       install missing packages, build, run the end-to-end demo
#   make asan       build and test with AddressSanitizer + UBSan (build-asan/)
#   make tsan       the threaded pipeline tests under ThreadSanitizer
#   make check-long the slow checks (kept out of `make test`): also the
#                   measurement of the feedback detector on held-out WildChat
#   make bench      the benchmarks
#   make fixtures   regenerate tests/fixtures with python3-torch

BUILD ?= build
CC ?= cc
OPT ?= -O2 -march=native
WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
       -Wvla -Wformat=2
ifdef WERROR
WARN += -Werror
endif
# Libraries are named directly rather than through pkg-config: make reads
# this file before scripts/deps.sh has installed anything on a fresh
# machine, and a pkg-config query made then would come back empty.
BLASDIR = /usr/lib/x86_64-linux-gnu/openblas-openmp
CPPFLAGS += -Iinclude -Isrc -D_GNU_SOURCE  \
            -I/usr/include/x86_64-linux-gnu/openblas-openmp
CFLAGS += -std=c11 $(OPT) -g -fopenmp $(WARN)
LDLIBS += -ljansson -lpcre2-8 -lsqlite3 -lz -lzstd -lcurl -lmicrohttpd \
          -lutf8proc -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas -lm \
          -lpthread
LDFLAGS += -fopenmp

ifdef SAN
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer \
          -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
ifdef TSAN
CFLAGS += -fsanitize=thread -fno-omit-frame-pointer
LDFLAGS += -fsanitize=thread
endif

LIB_SRC := $(sort $(wildcard src/*/*.c))
CLI_SRC := $(sort $(wildcard cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
DEPS_STAMP := $(BUILD)/.deps-ok

.PHONY: all deps test demo asan tsan check-long bench fixtures clean format
# Keep the test objects: they are intermediate files to make otherwise.
.SECONDARY:
all: $(BUILD)/rlhi $(TEST_BIN)

# Packages first: every object depends on the stamp, so a fresh machine
# installs them before compiling anything.
$(DEPS_STAMP): scripts/deps.sh
	@mkdir -p $(BUILD)
	@sh scripts/deps.sh
	@touch $@
deps: $(DEPS_STAMP)

$(BUILD)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/librlhi.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/rlhi: $(CLI_OBJ) $(BUILD)/librlhi.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/librlhi.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

test: all
	@sh tests/run.sh $(BUILD)

check-long: all
	@RLHI_LONG=1 RLHI_HELDOUT=1 sh tests/run.sh $(BUILD)

asan:
	$(MAKE) BUILD=build-asan SAN=1 OPT="-O1" test

# The pthread pipelines (ingest's reading thread, the feedback stage's
# classifying threads) under ThreadSanitizer. OpenMP code is left out:
# libgomp is not instrumented and would report its own barriers.
tsan:
	$(MAKE) BUILD=build-tsan TSAN=1 OPT="-O1" build-tsan/tests/test_ingest \
	    build-tsan/tests/test_feedback
	sh tests/run.sh build-tsan test_ingest test_feedback

demo: $(BUILD)/rlhi
	$(BUILD)/rlhi demo

bench: $(BUILD)/rlhi
	sh scripts/deps.sh --bench
	$(BUILD)/rlhi bench generate
	$(BUILD)/rlhi bench ingest --mb 100
	$(BUILD)/rlhi bench feedback

fixtures:
	sh scripts/deps.sh --torch
	/usr/bin/python3 tests/ref/make_fixtures.py tests/fixtures
	/usr/bin/python3 tests/ref/train_ref.py tests/fixtures/train
	/usr/bin/python3 tests/ref/dpo_ref.py tests/fixtures/dpo

format:
	clang-format -i include/rlhi/*.h src/*/*.c src/*/*.h cli/*.c cli/*.h \
	    tests/*.c tests/*.h

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:=.d)
