// stb_image's decoder, compiled into data/image_decode.cpp (the only file
// that includes this) from Debian's header instead of taken from libstb.so,
// so that b3 decides how it is built: only the formats b3 reads (PNG, JPEG,
// BMP, PPM/PGM; not TGA, data/image_decode.cpp says why), from memory only,
// at most 16,384 pixels per side, every function static to that file, and
// every allocation through
// b3_stbi_malloc / b3_stbi_realloc, which refuse one larger than the image
// being decoded can need: the fuzzer found a 142-byte PNG whose zlib stream
// makes stb's inflate grow its buffer to 2 GiB. The sanitizer and fuzzing
// builds instrument the decoder with the rest. stb's warnings are its own,
// not b3's (system_header).
#pragma once
#pragma GCC system_header

#include <cstddef>
#include <cstdlib>

void* b3_stbi_malloc(size_t bytes);
void* b3_stbi_realloc(void* block, size_t bytes);

#define STBI_MALLOC(bytes) b3_stbi_malloc(bytes)
#define STBI_REALLOC(block, bytes) b3_stbi_realloc(block, bytes)
#define STBI_FREE(block) std::free(block)
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS 16384
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
