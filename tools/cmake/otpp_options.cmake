# Warning and sanitizer flags shared by every otpp target (and only ours: consumers of the
# installed package do not inherit them).
add_library(otpp_build_flags INTERFACE)
target_compile_options(otpp_build_flags INTERFACE -Wall -Wextra -Wpedantic)
if(OTPP_WERROR)
  target_compile_options(otpp_build_flags INTERFACE -Werror)
endif()
if(OTPP_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
elseif(OTPP_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # Asio uses atomic_thread_fence, which g++ warns TSan cannot model; its uses are benign
    # (TSan still sees the surrounding atomics and locks).
    add_compile_options(-Wno-tsan)
  endif()
  add_link_options(-fsanitize=thread)
elseif(NOT OTPP_SANITIZE STREQUAL "")
  message(FATAL_ERROR "OTPP_SANITIZE must be '', 'address' or 'thread'")
endif()

# otpp_register_target(T): T is installed and exported (as otpp::<T without otpp_>);
# otpp_register_layer(T): also part of the umbrella target otpp::otpp.
set(OTPP_LAYER_TARGETS "")
set(OTPP_INSTALL_TARGETS "")
# Installed targets are exported under their documented names (otpp::runtime, not
# otpp::otpp_runtime), the same names as the in-tree aliases.
macro(otpp_register_target target)
  if("${target}" MATCHES "^otpp_(.+)$")
    set_target_properties(${target} PROPERTIES EXPORT_NAME ${CMAKE_MATCH_1})
  endif()
  list(APPEND OTPP_INSTALL_TARGETS ${target})
  set(OTPP_INSTALL_TARGETS ${OTPP_INSTALL_TARGETS} PARENT_SCOPE)
  set(OTPP_INSTALL_TARGETS ${OTPP_INSTALL_TARGETS})
endmacro()
macro(otpp_register_layer target)
  list(APPEND OTPP_LAYER_TARGETS ${target})
  set(OTPP_LAYER_TARGETS ${OTPP_LAYER_TARGETS} PARENT_SCOPE)
  set(OTPP_LAYER_TARGETS ${OTPP_LAYER_TARGETS})
  otpp_register_target(${target})
endmacro()
