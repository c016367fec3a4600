# Wrappers for the README's two commands.
.PHONY: train test build clean bench
train:
	bash scripts/train_fashion_mnist.sh
test:
	bash scripts/test.sh
build:
	bash scripts/install-deps.sh
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DKN_WERROR=OFF -DKN_SANITIZE=OFF -DKN_NATIVE=OFF >/dev/null
	cmake --build build -j$$(nproc)
# kiln vs PyTorch on this machine (installs PyTorch from PyPI and Debian): docs/PERFORMANCE.md
bench:
	bash bench/bench.sh
clean:
	rm -rf build build-asan
