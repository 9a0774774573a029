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
# nvcc warnings are errors; host-compiler warnings inside .cu files too.
target_compile_options(_C PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror>)
target_link_libraries(_C PRIVATE CUDA::cudart_static)
