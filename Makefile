# Wrappers for the README's two commands.
.PHONY: train test build clean
train:
	bash scripts/train_fashion_mnist.sh
test:
	bash scripts/test.sh
build:
	bash scripts/install-deps.sh
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build -j$$(nproc)
clean:
	rm -rf build build-asan
