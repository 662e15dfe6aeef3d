# b3's front door. The real build is CMake (CMakeLists.txt); this file only
# installs missing dependencies (scripts/setup.sh), configures, builds and runs.
#   make        build everything into build/
#   make test   build, then run every test suite through CTest
#   make run    build, then run the batch-size benchmark (build/b3 run)
#   make test-sanitize  the whole CPU suite built with clang, ASan and UBSan
#                       (build-sanitize/); any report fails its test
#   make fuzz           the libFuzzer targets (tests/fuzz/, same build): replay
#                       tests/fuzz/corpus, then FUZZ_SECONDS of fuzzing per target
#   make test-tsan      ThreadSanitizer on the data loader's and the threaded
#                       CPU kernels' suites (build-tsan/)
BUILD_DIR ?= build
BUILD_TYPE ?= Release
B3_CUDA ?= AUTO
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CLANG_CXX ?= clang++-14
SANITIZE_BUILD_DIR ?= build-sanitize
TSAN_BUILD_DIR ?= build-tsan
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?= -1
SANITIZERS := $(CURDIR)/scripts/sanitizers
# halt_on_error and exitcode: a report ends the process with a failure that
# CTest sees; the suppressions cover third-party libraries only (see the file).
SANITIZE_ENV := ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions=$(SANITIZERS)/lsan.supp:print_suppressions=0
# The suites whose code runs on several threads: the loader's workers and the
# OpenMP kernels (each sets its own thread counts). Archer makes TSan see
# OpenMP's barriers and tasks; ignore_noninstrumented_modules keeps TSan out
# of the uninstrumented OpenMP runtime itself (LLVM's advice for Archer).
TSAN_TESTS := test_data_loader test_tensor test_elementwise_cpu test_gemm_cpu test_conv2d \
  test_depthwise_cpu test_batchnorm2d test_batchnorm_activation
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$(SANITIZERS)/tsan.supp \
  OMP_TOOL_LIBRARIES=$(abspath $(shell $(CLANG_CXX) -print-resource-dir 2>/dev/null)/../../libarcher.so)

.PHONY: all build deps configure test run clean format sanitize-configure test-sanitize fuzz test-tsan

all: build

deps:
	@scripts/setup.sh --check >/dev/null 2>&1 || scripts/setup.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DB3_CUDA=$(B3_CUDA) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

run: build
	./$(BUILD_DIR)/b3 run

sanitize-configure: deps
	cmake -S . -B $(SANITIZE_BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=$(CLANG_CXX) \
	  -DB3_CUDA=OFF -DB3_SANITIZE=address,undefined -DB3_FUZZ=ON $(CMAKE_FLAGS)

test-sanitize: sanitize-configure
	cmake --build $(SANITIZE_BUILD_DIR) -j $(JOBS)
	$(SANITIZE_ENV) ctest --test-dir $(SANITIZE_BUILD_DIR) --output-on-failure -j $(JOBS)

fuzz: sanitize-configure
	cmake --build $(SANITIZE_BUILD_DIR) -j $(JOBS) --target fuzz_targets
	scripts/fuzz.sh $(SANITIZE_BUILD_DIR) --seconds $(FUZZ_SECONDS) --runs $(FUZZ_RUNS)

test-tsan: deps
	cmake -S . -B $(TSAN_BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=$(CLANG_CXX) \
	  -DB3_CUDA=OFF -DB3_MPI=OFF -DB3_SANITIZE=thread $(CMAKE_FLAGS)
	cmake --build $(TSAN_BUILD_DIR) -j $(JOBS) $(addprefix --target ,$(TSAN_TESTS))
	$(TSAN_ENV) ctest --test-dir $(TSAN_BUILD_DIR) --output-on-failure --no-tests=error -j $(JOBS) \
	  -R '^($(subst $() ,|,$(strip $(TSAN_TESTS)))):'

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD_DIR)
