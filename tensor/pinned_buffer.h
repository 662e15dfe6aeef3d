// PinnedBuffer: page-locked host memory for asynchronous uploads to one CUDA
// device, with an event that tells the host when the last upload from it is
// done, so the buffer can be refilled (double buffering of input batches).
//
// Why pinned: cudaMemcpyAsync from ordinary (pageable) host memory is staged
// by the driver through its own pinned buffer and the host waits for that
// staging; from page-locked memory the DMA engine reads the bytes directly and
// the call returns at once. The price: the host must not overwrite the bytes
// until the copy has read them, hence the event.
//
//   PinnedBuffer buffer(bytes, device);         // cudaHostAlloc, once
//   buffer.wait_until_reusable();               // the previous upload has read it
//   std::memcpy(buffer.data(), batch, n);       // fill on the host
//   buffer.upload(device_ptr, n, stream);       // queued; records the event
//
// Uploads go to device memory of buffer.device() on a stream of that device;
// every upload records the buffer's event after it, so the event covers all
// uploads queued so far on that stream. The destructor waits for the last
// upload before it frees the memory.
//
// This header compiles in every build and includes no CUDA header. The CUDA
// calls are the launchers below, defined in tensor/pinned_buffer_cuda.cpp
// (CUDA builds); a CPU-only build gets stubs that throw "built without CUDA",
// so constructing a PinnedBuffer there throws, and a default-constructed
// (empty) one is harmless.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "tensor/cuda_stream.h"

struct CUevent_st;  // CUDA's opaque event type: cudaEvent_t is CUevent_st*

namespace b3::cuda {

using EventHandle = ::CUevent_st*;

// Page-locked host memory (cudaHostAlloc, portable to every device); nbytes > 0.
B3_CUDA_LAUNCHER(void* allocate_pinned(size_t nbytes, int device));
// Frees memory from allocate_pinned (cudaFreeHost). Never throws: a failure is
// reported on stderr and ignored, because it happens while memory is released.
B3_CUDA_LAUNCHER(void free_pinned(void* data));

// An event on `device` without timing (cheapest to record and query).
B3_CUDA_LAUNCHER(EventHandle create_event(int device));
// Never throws (reported on stderr, like free_pinned).
B3_CUDA_LAUNCHER(void destroy_event(EventHandle event));
// Records `event` on `stream` (the event must belong to stream.device).
B3_CUDA_LAUNCHER(void record_event(EventHandle event, const Stream& stream));
// Blocks the host until the work recorded by `event` is done (at once if it
// was never recorded); throws with the CUDA error if that work failed.
B3_CUDA_LAUNCHER(void wait_event(EventHandle event));
// True when the work recorded by `event` is done (or it was never recorded).
B3_CUDA_LAUNCHER(bool event_done(EventHandle event));

// Queues a copy of `nbytes` from host memory `host` (pinned, for the copy to be
// asynchronous) to device memory `device_dst` on `stream`; returns at once.
// nbytes == 0 queues nothing.
B3_CUDA_LAUNCHER(void upload_async(void* device_dst, const void* host, size_t nbytes,
                                   const Stream& stream));

class PinnedBuffer {
 public:
  PinnedBuffer() = default;  // empty: no memory, no event
  // `nbytes` (> 0) of page-locked memory for uploads to CUDA device `device`.
  PinnedBuffer(size_t nbytes, int device) : device_(device) {
    if (nbytes == 0) throw std::invalid_argument("PinnedBuffer: nbytes must be > 0");
    event_ = create_event(device);
    try {
      data_ = allocate_pinned(nbytes, device);
    } catch (...) {
      destroy_event(event_);
      throw;
    }
    nbytes_ = nbytes;
  }
  ~PinnedBuffer() { release(); }

  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& other) noexcept { take(other); }
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }

  bool empty() const { return data_ == nullptr; }
  void* data() { return data_; }
  const void* data() const { return data_; }
  uint8_t* bytes() { return static_cast<uint8_t*>(data_); }
  size_t size() const { return nbytes_; }  // bytes
  int device() const { return device_; }

  // Queues a copy of bytes [offset, offset + nbytes) of this buffer to device
  // memory `device_dst` on `stream` (a stream of device()), then records the
  // buffer's event. Do not write those bytes again before wait_until_reusable().
  void upload(void* device_dst, size_t nbytes, const Stream& stream, size_t offset = 0) {
    if (empty()) throw std::logic_error("PinnedBuffer::upload: the buffer is empty");
    if (offset > nbytes_ || nbytes > nbytes_ - offset) {
      throw std::invalid_argument("PinnedBuffer::upload: bytes [" + std::to_string(offset) + ", " +
                                  std::to_string(offset + nbytes) + ") are outside the buffer of " +
                                  std::to_string(nbytes_) + " bytes");
    }
    if (stream.device != device_) {
      throw std::invalid_argument(
          "PinnedBuffer::upload: the stream is on cuda:" + std::to_string(stream.device) +
          ", the buffer uploads to cuda:" + std::to_string(device_));
    }
    upload_async(device_dst, bytes() + offset, nbytes, stream);
    record_event(event_, stream);
  }

  // Blocks until every upload queued so far has read the buffer.
  void wait_until_reusable() const {
    if (event_ != nullptr) wait_event(event_);
  }
  // True when no queued upload still reads the buffer.
  bool reusable() const { return event_ == nullptr || event_done(event_); }

 private:
  void take(PinnedBuffer& other) noexcept {
    data_ = std::exchange(other.data_, nullptr);
    nbytes_ = std::exchange(other.nbytes_, 0);
    device_ = std::exchange(other.device_, 0);
    event_ = std::exchange(other.event_, nullptr);
  }
  // Waits for the last upload (the DMA engine may still read the memory), then
  // frees. Only a buffer made by the constructor (CUDA builds) holds anything.
  void release() noexcept {
    if (event_ != nullptr) {
      try {
        wait_event(event_);
      } catch (...) {  // a failed copy: the device is in error; free anyway
      }
      destroy_event(event_);
      event_ = nullptr;
    }
    if (data_ != nullptr) free_pinned(data_);
    data_ = nullptr;
    nbytes_ = 0;
  }

  void* data_ = nullptr;
  size_t nbytes_ = 0;
  int device_ = 0;
  EventHandle event_ = nullptr;
};

}  // namespace b3::cuda
