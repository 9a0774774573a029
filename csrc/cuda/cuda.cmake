# CUDA kernels of fastlstm, compiled into the same _C module (included from
# CMakeLists.txt when FASTLSTM_CUDA is auto/on and nvcc is found).
# Every csrc/cuda/*.cu joins _C; bindings see FASTLSTM_WITH_CUDA.
find_package(CUDAToolkit REQUIRED)

# enable_language(CUDA) already gave CMAKE_CUDA_ARCHITECTURES a toolkit
# default, so the project's choice has its own cache variable.
set(FASTLSTM_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures of the fastlstm kernels")
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

file(GLOB FASTLSTM_CUDA_KERNEL_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*.cu)
target_sources(_C PRIVATE ${FASTLSTM_CUDA_KERNEL_SOURCES})
set_target_properties(_C PROPERTIES
  CUDA_ARCHITECTURES "${FASTLSTM_CUDA_ARCHITECTURES}"
  CUDA_SEPARABLE_COMPILATION OFF
  CUDA_RUNTIME_LIBRARY Static)
target_compile_definitions(_C PRIVATE FASTLSTM_WITH_CUDA)
# nvcc's own warnings (device code, front end) are errors on every host.
# The host compiler's warnings inside .cu files are errors only on request
# (FASTLSTM_CUDA_HOST_WERROR=ON, as the tests do with their known gcc): a
# newer gcc's new warning must not break a user's build.
option(FASTLSTM_CUDA_HOST_WERROR "Treat host-compiler warnings in CUDA sources as errors" OFF)
target_compile_options(_C PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra>)
if(FASTLSTM_CUDA_HOST_WERROR)
  target_compile_options(_C PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Werror>)
endif()
# Static runtime: _C loads on machines without any CUDA runtime installed
# (CPU use, the torch-free runtime); the launchers select the data's device
# in it themselves (csrc/cuda/device.cuh). See docs/gpu.md, "CUDA runtime".
target_link_libraries(_C PRIVATE CUDA::cudart_static)
