# `cmake --install build [--prefix P]`: the header, libkiln.a and libkiln.so, the kiln
# command, a pkg-config file (kiln.pc) and a CMake package (find_package(kiln):
# kiln::kiln is the shared library, kiln::kiln_static the static one).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS kiln kiln_shared EXPORT kilnTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS kiln_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${CMAKE_SOURCE_DIR}/include/kiln.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(KN_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
install(EXPORT kilnTargets NAMESPACE kiln:: DESTINATION ${KN_CMAKE_DIR})
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/kilnConfig.cmake.in
                              ${CMAKE_BINARY_DIR}/kilnConfig.cmake INSTALL_DESTINATION ${KN_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/kilnConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/kilnConfig.cmake ${CMAKE_BINARY_DIR}/kilnConfigVersion.cmake
        DESTINATION ${KN_CMAKE_DIR})

# pkg-config: `pkg-config --cflags --libs kiln` (shared), `--static` for libkiln.a
set(KN_PC_PRIVATE "")
foreach(lib ${DNNL_LIB} ${INIH_LIB} ${CJSON_LIB} ${CSV_LIB})
  get_filename_component(dir ${lib} DIRECTORY)
  get_filename_component(name ${lib} NAME_WE)
  string(REGEX REPLACE "^lib" "" name ${name})
  string(APPEND KN_PC_PRIVATE " -L${dir} -l${name}")
endforeach()
string(APPEND KN_PC_PRIVATE " ${OpenMP_C_FLAGS} -pthread -lm")
# relocatable: the prefix is found from where kiln.pc lies (`cmake --install --prefix P` works)
file(RELATIVE_PATH KN_PC_UP "/r/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/r")
configure_file(${CMAKE_SOURCE_DIR}/cmake/kiln.pc.in ${CMAKE_BINARY_DIR}/kiln.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/kiln.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
