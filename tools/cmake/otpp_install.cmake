include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS ${OTPP_INSTALL_TARGETS} otpp_build_flags EXPORT otppTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(layer runtime/base runtime transport registry cluster cluster/resilience
              cluster/resilience/sqlite cluster/health supervisor)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${layer}/include)
    install(DIRECTORY ${PROJECT_SOURCE_DIR}/${layer}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  endif()
endforeach()
install(EXPORT otppTargets NAMESPACE otpp:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/otpp)
# The package needs SQLite only when it holds otpp::resilience_sqlite.
if(TARGET otpp_resilience_sqlite)
  set(OTPP_FIND_SQLITE3 "find_dependency(SQLite3)")
else()
  set(OTPP_FIND_SQLITE3 "")
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/tools/cmake/otppConfig.cmake.in
  ${PROJECT_BINARY_DIR}/otppConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/otpp)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/otppConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/otppConfig.cmake ${PROJECT_BINARY_DIR}/otppConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/otpp)
