#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then a program that includes only <kiln.h>
# is built against it with pkg-config (shared and --static) and with CMake's
# find_package(kiln) (kiln::kiln and kiln::kiln_static), and run.
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
