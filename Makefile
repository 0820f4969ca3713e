# memvisor: thin front end over Meson.  The two commands of the README:
#   make demo    build, then run the demonstration
#   make check   build and pass every test (ASan+UBSan build, then TSan build)
# Both install their own dependencies (Debian 12, as root).

BUILD      ?= build
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
BENCH_BUILD ?= build-bench
NPROC      := $(shell nproc)
FUZZ_SECONDS ?= 60

.PHONY: all deps build demo check test tsan fuzz bench format tidy clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(TSAN_BUILD)/build.ninja:
	meson setup $(TSAN_BUILD) -Db_sanitize=thread -Dthreads_only=true

demo: build
	@scripts/demo.sh $(BUILD)

# The whole suite under ASan+UBSan, then the threaded tests under TSan.
# TSan needs a fixed address-space layout, hence setarch -R.
check: build $(TSAN_BUILD)/build.ninja
	ninja -C $(TSAN_BUILD)
	-meson test -C $(BUILD) --num-processes $(NPROC) --print-errorlogs
	-setarch -R meson test -C $(TSAN_BUILD) --suite threads --num-processes $(NPROC) --print-errorlogs
	@scripts/test-summary.py $(BUILD) $(TSAN_BUILD)

test: check

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true

# Runs every libFuzzer target for FUZZ_SECONDS, starting from its corpus.
fuzz: deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)
	@for f in $(FUZZ_BUILD)/tests/fuzz/fuzz-*; do \
	    [ -f "$$f" ] && [ -x "$$f" ] || continue; \
	    name=$${f##*/fuzz-}; mkdir -p out/corpus/$$name; \
	    echo "== $$name ($(FUZZ_SECONDS)s)"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) out/corpus/$$name tests/fuzz/corpus/$$name || exit 1; \
	done

$(BENCH_BUILD)/build.ninja:
	meson setup $(BENCH_BUILD) --buildtype=release -Db_sanitize=none

bench: deps $(BENCH_BUILD)/build.ninja
	ninja -C $(BENCH_BUILD)
	@scripts/bench.sh $(BENCH_BUILD)

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i

tidy: build
	git ls-files 'src/*.c' | xargs clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD) $(TSAN_BUILD) $(FUZZ_BUILD) $(BENCH_BUILD) out
