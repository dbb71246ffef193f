# The two commands of the README, on a fresh Debian 12 machine:
#   make demo   installs what is missing, builds, and runs the main example
#   make test   installs what is missing, builds, and runs every test (CTest)
# BUILD_DIR and CMAKE_ARGS may be overridden: make test BUILD_DIR=build-debug CMAKE_ARGS=-DCMAKE_BUILD_TYPE=Debug

BUILD_DIR ?= build
CMAKE_ARGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# The first python3 that imports torch (Debian's python3-torch), for the Python-side tests; the
# python3 first on PATH may be another interpreter.
# Looked up once, at its first use: after `deps` has installed python3-torch, and not again for
# each recipe that names it (importing torch takes seconds).
ifeq ($(origin PYTHON),undefined)
PYTHON = $(eval PYTHON := $(shell for p in python3 /usr/bin/python3; do $$p -c 'import torch' >/dev/null 2>&1 && command -v $$p && break; done))$(PYTHON)
endif
PYTHON_ARG = $(if $(PYTHON),-DPython3_EXECUTABLE=$(PYTHON))

.PHONY: all deps configure build test test-slow test-asan test-2.6 bench-2.6 demo demo-graph demo-tatoeba bench bench-translation bench-translation-build bench-speedups clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(PYTHON_ARG) $(CMAKE_ARGS)

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The [.slow] Catch2 cases CTest hides (the 4000-configuration sweep of the fused kernel).
test-slow: build
	@OMP_NUM_THREADS=2 $(BUILD_DIR)/tests/torchattn_tests "[.slow]"

# The library, the test suite and the fuzzer built with clang's AddressSanitizer and
# UndefinedBehaviorSanitizer in $(ASAN_DIR); the fuzzer runs FUZZ_RUNS inputs with a fixed seed
# from the committed corpus (tests/fuzz), at most FUZZ_SECONDS. LibTorch is not instrumented;
# tests/sanitizers/ lists the suppressions. Line tables only: the reports' stack traces keep
# their file:line, and the build takes 15% less time than with full debug information.
ASAN_DIR ?= build-asan
FUZZ_RUNS ?= 12000
FUZZ_SECONDS ?= 300
SANITIZER_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/tests/sanitizers/ubsan.supp
test-asan:
	@bash scripts/install-deps.sh --sanitizers
	@cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
	  -DTORCHATTN_BUILD_FUZZERS=ON -DTORCHATTN_FUZZ_RUNS=$(FUZZ_RUNS) -DTORCHATTN_FUZZ_SECONDS=$(FUZZ_SECONDS)
	@cmake --build $(ASAN_DIR) -j $(JOBS)
	@cd $(ASAN_DIR) && $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS)

# The same suite against LibTorch 2.6, in the Debian 13 chroot of scripts/chroot.sh (created
# on first use, outside the clone), with its own build directory.
# The package tests that compile the library a second time, as a subproject, run under 1.13 only:
# what they check (CMake's subproject and static-install logic) does not depend on LibTorch.
# test-slow's 4000-configuration sweep runs under 1.13 only (CI's hour; the 600-configuration
# sweep of the suite runs here too).
test-2.6:
	@bash scripts/chroot.sh run make test BUILD_DIR=build-trixie CTEST_ARGS="-LE package_source_build"

# bench/'s fused kernel against PyTorch 2.6's at::scaled_dot_product_attention, in the chroot.
bench-2.6:
	@bash scripts/chroot.sh run bash -c 'cmake -S . -B build-trixie -G Ninja -DCMAKE_BUILD_TYPE=Release -DTORCHATTN_BUILD_BENCH=ON && cmake --build build-trixie --target torchattn-bench-flash && build-trixie/bench/torchattn-bench-flash --benchmark_filter="(fma|mm|torch|fused/(1024|2048|4096|8192)/[01]/2)"'

# The translation demo: the default corpus, a few minutes of training, BLEU, translations and
# heatmaps (examples/translation/demo.sh; TORCHATTN_DEMO_SECONDS sets the training time).
demo: build
	@bash examples/translation/demo.sh $(BUILD_DIR)

# The graph example: a GAT on Cora (../shared/data/cora, 10 seeds), or on a stochastic block
# model it generates where that folder is absent (examples/graph).
CORA ?= ../shared/data/cora
demo-graph: build
	@if [ -s $(CORA)/nodes.tsv ]; then $(BUILD_DIR)/examples/graph/torchattn-graph --data $(CORA) --seeds 10; \
	else echo "($(CORA) not found: the generated graph instead)"; $(BUILD_DIR)/examples/graph/torchattn-graph --sbm --seeds 10; fi

# torchattn-translate on the Tatoeba pairs in ../shared (development data, not in the repo):
# two models trained side by side in the 300 s, half the CPUs each (one thread each on two
# cores; seeds 1 and 2), decoded as an ensemble, greedy and with beam 4. On two cores their
# ensemble beats one model trained on both threads (README, "Ensembles").
TATOEBA ?= ../shared/data/tatoeba-eng-fra/pairs.tsv
demo-tatoeba: build
	@$(BUILD_DIR)/examples/translation/torchattn-translate prepare --data $(TATOEBA) --out $(BUILD_DIR)/tatoeba/data --dev 0.03 --test 0.1
	@bash examples/translation/train_side_by_side.sh $(BUILD_DIR)/examples/translation/torchattn-translate \
	  $(BUILD_DIR)/tatoeba 2 --data $(BUILD_DIR)/tatoeba/data --time-budget 300 --pack --ema 0.998 --dropout 0.2 --precision auto
	@$(BUILD_DIR)/examples/translation/torchattn-translate evaluate --model $(BUILD_DIR)/tatoeba/model-1,$(BUILD_DIR)/tatoeba/model-2 --data $(BUILD_DIR)/tatoeba/data/test.tsv --show 5
	@$(BUILD_DIR)/examples/translation/torchattn-translate evaluate --model $(BUILD_DIR)/tatoeba/model-1,$(BUILD_DIR)/tatoeba/model-2 --data $(BUILD_DIR)/tatoeba/data/test.tsv --beam 4

# Benchmarks print ratios measured in one process; they are not tests.
bench: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DTORCHATTN_BUILD_BENCH=ON $(CMAKE_ARGS)
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target torchattn-bench-mha torchattn-bench-flash torchattn-bench-additive
	@$(BUILD_DIR)/bench/torchattn-bench-mha
	@$(BUILD_DIR)/bench/torchattn-bench-flash
	@$(BUILD_DIR)/bench/torchattn-bench-additive
	@$(MAKE) --no-print-directory bench-translation
	@echo "--- the math path again with OPENBLAS_CORETYPE=SkylakeX (Debian 12's OpenBLAS misdetects this CPU) ---"
	@OPENBLAS_CORETYPE=SkylakeX $(BUILD_DIR)/bench/torchattn-bench-flash --benchmark_filter='fma|math|mm' | sed -n '/^FMA peak/,$$p'

# Training tokens/s of the translation models against the same models in Python PyTorch, on the
# default corpus (prepared as by make demo).
bench-translation-build: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DTORCHATTN_BUILD_BENCH=ON $(PYTHON_ARG) $(CMAKE_ARGS)
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target torchattn-translate torchattn-bench-translation
	@test -s $(BUILD_DIR)/demo/data/train.tsv || $(BUILD_DIR)/examples/translation/torchattn-translate prepare --out $(BUILD_DIR)/demo/data

bench-translation: bench-translation-build
	@OMP_NUM_THREADS=2 $(BUILD_DIR)/bench/torchattn-bench-translation --data $(BUILD_DIR)/demo/data --threads 2 --python $(or $(PYTHON),python3)

# What each of the translation example's speed-ups (examples/translation/speedups) buys.
bench-speedups: bench-translation-build
	@OMP_NUM_THREADS=2 $(BUILD_DIR)/bench/torchattn-bench-translation --data $(BUILD_DIR)/demo/data --threads 2 --ablation 1 --rounds 2 --steps 30

clean:
	@rm -rf $(BUILD_DIR)
