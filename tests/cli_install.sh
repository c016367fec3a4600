#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then a program that includes only <kiln.h>
# is built against it with pkg-config (shared and --static) and with CMake's
# find_package(kiln) (kiln::kiln and kiln::kiln_static), and run; then the example program
# examples/c (a regression on scikit-learn's diabetes data) is built the same two ways,
# run, and must reach test R^2 >= 0.40 and save a model that the installed kiln evaluates.
set -euo pipefail
build=$(dirname "$KN_BIN")
src=$KN_SRC_DIR/tests/install
rm -rf "$KN_TMP" && mkdir -p "$KN_TMP"
prefix=$KN_TMP/prefix
cmake --install "$build" --prefix "$prefix" >"$KN_TMP/install.log"
pc=$(dirname "$(find "$prefix" -name kiln.pc | head -1)")
[ -f "$prefix/include/kiln.h" ] || { echo "no kiln.h under $prefix"; exit 1; }
ls "$prefix"/lib*/libkiln.a "$prefix"/lib*/libkiln.so* "$prefix"/bin/kiln >/dev/null
# the shared library exports the public API only
if nm -D --defined-only "$prefix"/lib*/libkiln.so | awk '{print $3}' | grep -v '^kn_' | grep -qv '^_'; then
  echo "libkiln.so exports symbols outside kn_:"; nm -D --defined-only "$prefix"/lib*/libkiln.so | grep -v ' kn_' | head; exit 1
fi
if nm -D --defined-only "$prefix"/lib*/libkiln.so | grep -q ' kn_g_'; then
  echo "libkiln.so exports internals (kn_g_*)"; exit 1
fi
export PKG_CONFIG_PATH=$pc
# a sanitizer build of kiln needs consumers built with the same sanitizers
san=""
if grep -q '^KN_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then san="-fsanitize=address,undefined"; fi
cc $san -o "$KN_TMP/c_shared" "$src/consumer.c" $(pkg-config --cflags --libs kiln)
cc $san -o "$KN_TMP/c_static" "$src/consumer.c" -Wl,-Bstatic -lkiln -Wl,-Bdynamic $(pkg-config --cflags kiln) \
   $(pkg-config --static --libs-only-L kiln) $(pkg-config --static --libs kiln | sed 's/-lkiln//')
libdir=$(dirname "$(ls "$prefix"/lib*/libkiln.so | head -1)")
LD_LIBRARY_PATH=$libdir "$KN_TMP/c_shared"
"$KN_TMP/c_static"
cmake -S "$src" -B "$KN_TMP/consumer" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="$san" >"$KN_TMP/consumer.log"
cmake --build "$KN_TMP/consumer" >>"$KN_TMP/consumer.log"
LD_LIBRARY_PATH=$libdir "$KN_TMP/consumer/consumer_shared"
"$KN_TMP/consumer/consumer_static"
echo "install: pkg-config and find_package(kiln) consumers built and ran"

# ---- examples/c against the installed library ----
data=/usr/lib/python3/dist-packages/sklearn/datasets/data
for f in diabetes_data_raw.csv.gz diabetes_target.csv.gz; do
  [ -f "$data/$f" ] || { echo "install: $data/$f is missing: examples/c trains on scikit-learn's bundled diabetes data (Debian package python3-sklearn: bash scripts/install-deps.sh)"; exit 1; }
done
# the test R^2 the example printed ("test: ... R^2 X, ..."), required >= 0.40
check_example() { # LOG WHAT
  local r2
  r2=$(sed -n 's/^test: .*R^2 \([-0-9.naife]*\),.*/\1/p' "$1" | head -1)
  [ -n "$r2" ] || { echo "install: $2: no test R^2 in its output:"; cat "$1"; exit 1; }
  awk -v r="$r2" 'BEGIN { exit !(r + 0 >= 0.40) }' || { echo "install: $2: test R^2 $r2 < 0.40"; cat "$1"; exit 1; }
  grep -q "predictions identical" "$1" || { echo "install: $2: the reloaded model's predictions differ"; cat "$1"; exit 1; }
  echo "install: $2: test R^2 $r2"
}
ex=$KN_TMP/example
cp -r "$KN_SRC_DIR/examples/c" "$ex"
make -C "$ex" CFLAGS="-O2 -Wall -Wextra -Werror $san" >"$KN_TMP/example_make.log" 2>&1 || { cat "$KN_TMP/example_make.log"; exit 1; }
(cd "$ex" && LD_LIBRARY_PATH=$libdir ./diabetes "$ex/model.safetensors") >"$KN_TMP/example_pc.log" 2>&1 || { echo "install: examples/c (pkg-config) failed:"; cat "$KN_TMP/example_pc.log"; exit 1; }
check_example "$KN_TMP/example_pc.log" "examples/c built with pkg-config"
# the saved model is what kiln eval reads
"$prefix/bin/kiln" eval "$ex/model.safetensors" >"$KN_TMP/example_eval.log" 2>&1 || { cat "$KN_TMP/example_eval.log"; exit 1; }
grep -q 'R^2 0\.[4-9]' "$KN_TMP/example_eval.log" || { echo "install: kiln eval of the example's model:"; cat "$KN_TMP/example_eval.log"; exit 1; }
make -C "$ex" clean >/dev/null
make -C "$ex" STATIC=1 CFLAGS="-O2 $san" >"$KN_TMP/example_make_static.log" 2>&1 || { cat "$KN_TMP/example_make_static.log"; exit 1; }
(cd "$ex" && ./diabetes "$ex/model_static.safetensors") >"$KN_TMP/example_static.log" 2>&1 || { echo "install: examples/c (pkg-config --static) failed:"; cat "$KN_TMP/example_static.log"; exit 1; }
check_example "$KN_TMP/example_static.log" "examples/c built with pkg-config --static"
cmake -S "$KN_SRC_DIR/examples/c" -B "$KN_TMP/example_cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="$san" >"$KN_TMP/example_cmake.log"
cmake --build "$KN_TMP/example_cmake" >>"$KN_TMP/example_cmake.log" || { cat "$KN_TMP/example_cmake.log"; exit 1; }
(cd "$KN_TMP/example_cmake" && LD_LIBRARY_PATH=$libdir ./diabetes model.safetensors) >"$KN_TMP/example_cmake_run.log" 2>&1 || { echo "install: examples/c (find_package) failed:"; cat "$KN_TMP/example_cmake_run.log"; exit 1; }
check_example "$KN_TMP/example_cmake_run.log" "examples/c built with find_package(kiln)"
