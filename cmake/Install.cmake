# Installing b3 (cmake --install BUILD --prefix P): the library libb3.a, its
# public headers under P/include/b3/<folder>/, the `b3` command, a CMake
# package (P/lib/cmake/b3: find_package(b3) gives the target b3::b3, with
# its dependencies found again, the CUDA backend's included when it was
# built) and a pkg-config file (P/lib/pkgconfig/b3.pc).
#
# Public headers are what a program using b3 includes: every header of the
# library's folders except the kernels' own (the *_cpu and *_cuda headers an
# op's .cpp calls, which include Eigen or CUDA's headers), the stb_image
# build of data/image_decode.cpp, and, without the CUDA backend, the headers
# that include CUDA's. tests/test_install.sh compiles each installed header
# on its own against the installed package.
include(CMakePackageConfigHelpers)

file(GLOB B3_ALL_HEADERS CONFIGURE_DEPENDS RELATIVE ${CMAKE_SOURCE_DIR}
     tensor/*.h autograd/*.h layers/*.h optim/*.h models/*.h data/*.h train/*.h
     distributed/*.h experiment/*.h)
# Kernel headers that public headers include (their declarations are plain
# C++): the optimizers' and the loss scaler's device entry points.
set(B3_PUBLIC_KERNEL_HEADERS optim/grad_scaler_cuda.h optim/multi_tensor_cuda.h)
set(B3_CUDA_API_HEADERS tensor/cublas_check.h tensor/cuda_check.h tensor/cuda_context.h
                        tensor/cudnn_check.h)
set(B3_PUBLIC_HEADERS "")
foreach(header ${B3_ALL_HEADERS})
  set(public TRUE)
  if(header MATCHES "_cpu(_[a-z_]+)?\\.h$|_cuda\\.h$|^data/stb_image_build\\.h$")
    set(public FALSE)
  endif()
  if(header IN_LIST B3_PUBLIC_KERNEL_HEADERS)
    set(public TRUE)
  endif()
  if(NOT B3_WITH_CUDA AND header IN_LIST B3_CUDA_API_HEADERS)
    set(public FALSE)
  endif()
  if(public)
    list(APPEND B3_PUBLIC_HEADERS ${header})
  endif()
endforeach()
foreach(header ${B3_PUBLIC_HEADERS})
  get_filename_component(folder ${header} DIRECTORY)
  install(FILES ${header} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/b3/${folder})
endforeach()

install(TARGETS b3lib EXPORT b3Targets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS b3 RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

set(B3_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/b3)
install(EXPORT b3Targets NAMESPACE b3:: DESTINATION ${B3_INSTALL_CMAKEDIR})
configure_package_config_file(cmake/b3Config.cmake.in ${CMAKE_BINARY_DIR}/b3Config.cmake
                              INSTALL_DESTINATION ${B3_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/b3ConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/b3Config.cmake ${CMAKE_BINARY_DIR}/b3ConfigVersion.cmake
        DESTINATION ${B3_INSTALL_CMAKEDIR})

# pkg-config: the same flags the CMake package gives, spelled out.
set(B3_PC_CFLAGS "-std=c++20 -fopenmp")
set(B3_PC_LIBS "-fopenmp -pthread")
set(B3_PC_REQUIRES "nlohmann_json")
if(B3_NATIVE)
  string(APPEND B3_PC_CFLAGS " -march=native")
endif()
if(B3_WITH_MPI)
  string(APPEND B3_PC_CFLAGS " -DB3_WITH_MPI=1")
  string(APPEND B3_PC_REQUIRES " ompi-cxx")
endif()
if(B3_WITH_CUDA)
  find_package(CUDAToolkit QUIET)
  list(GET CUDAToolkit_INCLUDE_DIRS 0 b3_cuda_include_dir)
  string(APPEND B3_PC_CFLAGS " -DB3_WITH_CUDA=1 -I${b3_cuda_include_dir} -I${CUDNN_INCLUDE_DIR}")
  string(APPEND B3_PC_LIBS " -L${CUDAToolkit_LIBRARY_DIR} -lcublasLt -lcublas -lcudart ${CUDNN_LIBRARY}")
endif()
if(B3_WITH_NCCL)
  string(APPEND B3_PC_CFLAGS " -DB3_WITH_NCCL=1")
  string(APPEND B3_PC_LIBS " ${NCCL_LIBRARY}")
endif()
configure_file(cmake/b3.pc.in ${CMAKE_BINARY_DIR}/b3.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/b3.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
