# memvisor: thin front end over Meson.  The two commands of the README:
#   make demo    build, then run the demonstration
#   make check   build and pass every test (ASan+UBSan build, then TSan build)
# Both install their own dependencies (Debian 12, as root).
# Where /dev/kvm is not usable, the KVM tests and the demo run in the test VM
# (tests/vm/, docs/test-vm.md).  MEMVISOR_TEST_VM=force uses the test VM even
# where /dev/kvm is usable; MEMVISOR_TEST_VM=never forbids it (the KVM tests
# are then reported as skipped).  VM_NPT=0: the test VM without nested paging
# (KVM's shadow MMU); `make check-vm` runs only the KVM tests, in the VM.

BUILD      ?= build
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
BENCH_BUILD ?= build-bench
NPROC      := $(shell nproc)
FUZZ_SECONDS ?= 60
VM_NPT     ?= 1
VM_FLAVOUR := $(if $(filter 0,$(VM_NPT)),--no-npt,--npt)
export MEMVISOR_VM_CACHE ?= $(abspath $(BUILD))/vm-cache

.PHONY: all deps build demo check check-vm test tsan fuzz bench compare format tidy clean

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
	@VM_NPT=$(VM_NPT) scripts/demo.sh $(BUILD)

# The whole suite under ASan+UBSan, then the threaded tests under TSan; the
# libFuzzer targets (clang) and the benchmarks (release build, -O3) are
# built too, though they run only in `make fuzz` and `make bench`, so that a
# change clang or -O3 refuses fails here.
# TSan needs a fixed address-space layout, hence setarch -R.  The KVM tests
# (suite kvm; in the TSan build suites kvm and threads) run where
# tests/vm/kvm-where says: on the host's /dev/kvm, or in the test VM while
# everything else runs on the host.
check: build $(TSAN_BUILD)/build.ninja $(FUZZ_BUILD)/build.ninja $(BENCH_BUILD)/build.ninja
	ninja -C $(TSAN_BUILD)
	ninja -C $(FUZZ_BUILD)
	ninja -C $(BENCH_BUILD)
	@rm -f $(BUILD)/meson-logs/testlog-vm.json $(TSAN_BUILD)/meson-logs/testlog-vm.json
	@where=$$(tests/vm/kvm-where); text=$${where#*: }; \
	echo "memvisor: the KVM tests run on: $$text"; \
	skipped=; expect=; \
	case $$where in \
	host*) \
	    meson test -C $(BUILD) --num-processes $(NPROC) --print-errorlogs || true; \
	    setarch -R meson test -C $(TSAN_BUILD) --suite threads --num-processes $(NPROC) --print-errorlogs || true ;; \
	vm*) \
	    tests/vm/run --prepare; \
	    scripts/linux-guest >/dev/null || true; \
	    meson test -C $(BUILD) --no-suite kvm --num-processes $(NPROC) --print-errorlogs || true; \
	    setarch -R meson test -C $(TSAN_BUILD) --suite threads --no-suite kvm --num-processes $(NPROC) --print-errorlogs || true; \
	    tests/vm/kvm-suite $(VM_FLAVOUR) $(BUILD) --tsan $(TSAN_BUILD) || true; \
	    text=$$(cat $(BUILD)/meson-logs/kvm-where.txt 2>/dev/null || echo "the test VM"); \
	    expect=--expect-vm ;; \
	*) \
	    meson test -C $(BUILD) --no-suite kvm --num-processes $(NPROC) --print-errorlogs || true; \
	    setarch -R meson test -C $(TSAN_BUILD) --suite threads --no-suite kvm --num-processes $(NPROC) --print-errorlogs || true; \
	    skipped=$$(tests/vm/kvm-suite --list $(BUILD) --tsan $(TSAN_BUILD)) ;; \
	esac; \
	scripts/test-summary.py $$expect --where="$$text" --kvm-skipped="$$skipped" $(BUILD) $(TSAN_BUILD)

# Only the KVM tests (both builds), in the test VM, whatever the host has:
# e.g. `make check-vm VM_NPT=0` for the flavour `make check` did not run.
check-vm: build $(TSAN_BUILD)/build.ninja
	ninja -C $(TSAN_BUILD)
	@scripts/linux-guest >/dev/null || true
	@tests/vm/kvm-suite $(VM_FLAVOUR) $(BUILD) --tsan $(TSAN_BUILD) || true; \
	scripts/test-summary.py --vm-only --where="$$(cat $(BUILD)/meson-logs/kvm-where.txt 2>/dev/null || echo 'the test VM')" \
	    $(BUILD) $(TSAN_BUILD)

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

# memvisor beside QEMU: live migration and boot of the same workload
# (bench/compare/compare.py; COMPARE_ARGS=--quick for 512 MiB and one rep).
compare: deps $(BENCH_BUILD)/build.ninja
	ninja -C $(BENCH_BUILD)
	bench/compare/compare.py --memvisor $(BENCH_BUILD)/src/cli/memvisor \
	    --pvkernel $(BENCH_BUILD)/guest/pvkernel \
	    --image $(BENCH_BUILD)/guest/pvh/pvh-workload \
	    --json $(BENCH_BUILD)/compare.json $(COMPARE_ARGS)

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i

tidy: build
	git ls-files 'src/*.c' | xargs clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD) $(TSAN_BUILD) $(FUZZ_BUILD) $(BENCH_BUILD) out
