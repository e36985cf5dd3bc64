include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS ${OTPP_INSTALL_TARGETS} otpp_build_flags EXPORT otppTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(layer runtime/base runtime transport registry cluster cluster/resilience cluster/health supervisor)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${layer}/include)
    install(DIRECTORY ${PROJECT_SOURCE_DIR}/${layer}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  endif()
endforeach()
install(EXPORT otppTargets NAMESPACE otpp:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/otpp)
configure_package_config_file(${PROJECT_SOURCE_DIR}/tools/cmake/otppConfig.cmake.in
  ${PROJECT_BINARY_DIR}/otppConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/otpp)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/otppConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/otppConfig.cmake ${PROJECT_BINARY_DIR}/otppConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/otpp)
