# b3's front door. The real build is CMake (CMakeLists.txt); this file only
# installs missing dependencies (scripts/setup.sh), configures, builds and runs.
#   make        build everything into build/
#   make test   build, then run every test suite through CTest
#   make run    build, then run the batch-size benchmark (build/b3 run)
BUILD_DIR ?= build
BUILD_TYPE ?= Release
B3_CUDA ?= AUTO
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all build deps configure test run clean format

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

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD_DIR)
