# Finds the CUDA toolkit (nvcc, cudart, cuBLAS) and cuDNN for b3's CUDA backend.
# b3_find_cuda_backend(<ok-var> <why-var>) sets <ok-var> TRUE when everything is
# there, else FALSE and <why-var> to the missing piece, so that B3_CUDA=AUTO can
# fall back to the CPU build and B3_CUDA=ON can fail naming what is missing.
include(CheckLanguage)

# The probing is a function (its variables stay local); enable_language(CUDA)
# must run at directory scope, or CMake's CUDA rule variables
# (CMAKE_CUDA_COMPILE_OBJECT, ...) stay inside the function and generation
# fails as soon as there is a .cu source; so the public entry is a macro.
function(_b3_probe_cuda_backend ok_var why_var)
  set(${ok_var} FALSE PARENT_SCOPE)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "nvcc")
  endif()
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    set(${why_var} "no CUDA compiler (nvcc) found; install the CUDA toolkit" PARENT_SCOPE)
    return()
  endif()
  find_package(CUDAToolkit QUIET)
  if(NOT CUDAToolkit_FOUND)
    set(${why_var} "the CUDA toolkit libraries were not found" PARENT_SCOPE)
    return()
  endif()
  # CUDA 12.0 is the minimum: b3's .cu files include its C++20 headers, and
  # nvcc compiles C++20 from 12.0 on. 12.x and 13.x toolkits are supported.
  if(CUDAToolkit_VERSION VERSION_LESS 12.0)
    string(CONCAT why "the CUDA toolkit at ${CUDAToolkit_BIN_DIR} is version ${CUDAToolkit_VERSION}, "
                      "older than b3's minimum, CUDA 12.0 (nvcc compiles C++20 from 12.0 on): "
                      "install a CUDA 12.x or 13.x toolkit, or point CMAKE_CUDA_COMPILER at one")
    set(${why_var} "${why}" PARENT_SCOPE)
    return()
  endif()
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include
                                        /usr/include/x86_64-linux-gnu)
  find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
  if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
    set(${why_var} "cuDNN (cudnn.h, libcudnn) was not found" PARENT_SCOPE)
    return()
  endif()
  # The GPUs present (nvidia-smi answers), else a stated list: A100 (80) and
  # H100/H200 (90). Each extra architecture compiles every .cu file once more,
  # which CI on 2 cores pays for; pass -DCMAKE_CUDA_ARCHITECTURES to widen it.
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    execute_process(COMMAND nvidia-smi -L RESULT_VARIABLE b3_smi_status OUTPUT_QUIET ERROR_QUIET)
    if(b3_smi_status EQUAL 0)
      set(CMAKE_CUDA_ARCHITECTURES native CACHE STRING "CUDA architectures")
    else()
      set(CMAKE_CUDA_ARCHITECTURES 80 90 CACHE STRING "CUDA architectures")
    endif()
  endif()
  if(NOT TARGET b3_cudnn)
    add_library(b3_cudnn INTERFACE IMPORTED GLOBAL)
    target_include_directories(b3_cudnn INTERFACE ${CUDNN_INCLUDE_DIR})
    target_link_libraries(b3_cudnn INTERFACE ${CUDNN_LIBRARY})
  endif()
  set(${ok_var} TRUE PARENT_SCOPE)
  set(${why_var} "" PARENT_SCOPE)
endfunction()

macro(b3_find_cuda_backend ok_var why_var)
  _b3_probe_cuda_backend(${ok_var} ${why_var})
  if(${ok_var})
    enable_language(CUDA)
    # CMake < 3.26 does not know nvcc's C++20 flag (nvcc >= 12 has it); b3's
    # headers, which the .cu files include, are C++20.
    if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(CMAKE_CUDA_EXTENSIONS OFF)
  endif()
endmacro()
