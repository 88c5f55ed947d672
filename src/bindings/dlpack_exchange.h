// The part of the DLPack C ABI (https://dmlc.github.io/dlpack/latest/c_api.html) that reading a
// tensor's metadata needs: DLTensor, and the exchange table that DLPack 1.3 frameworks publish on
// their tensor type as `__dlpack_c_exchange_api__` (a capsule named "dlpack_exchange_api").
// Its `dltensor_from_py_object_no_sync` fills a caller-owned DLTensor (address, device, dtype,
// sizes, strides) from a tensor object in one C call, with no allocation and no Python object:
// what prepare_plain otherwise reads through five of torch's Python getters. A framework-neutral,
// versioned ABI (DESIGN.md rule 1: _core still links no framework); declared here from the
// specification, under gradfuse's names, with the layout of DLPack 1.x.
#pragma once

#include <cstdint>

namespace gf::dlpack {

struct Version {
  std::uint32_t major;
  std::uint32_t minor;
};

enum DeviceType : std::int32_t { kCpu = 1, kCuda = 2 };  // DLDeviceType (a C enum: int)

struct Device {
  std::int32_t type;
  std::int32_t id;
};

enum TypeCode : std::uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBFloat = 4 };  // DLDataTypeCode

struct DataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};

// DLTensor. `shape` and `strides` point into the producer's tensor: valid until control returns
// to Python (copy what is kept). Null strides mean compact row-major.
struct Tensor {
  void* data;
  Device device;
  std::int32_t ndim;
  DataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;
  std::uint64_t byte_offset;
};

struct ExchangeHeader {
  Version version;
  ExchangeHeader* prev_api;
};

// DLPackExchangeAPI (DLPack >= 1.3 layout; only the function used here is typed).
struct Exchange {
  ExchangeHeader header;
  void* managed_tensor_allocator;
  void* managed_tensor_from_py_object_no_sync;
  void* managed_tensor_to_py_object_no_sync;
  int (*dltensor_from_py_object_no_sync)(void* py_object, Tensor* out);  // 0, or -1 + exception
  void* current_work_stream;
};

constexpr std::uint32_t kMajor = 1;
constexpr std::uint32_t kMinMinor = 3;

}  // namespace gf::dlpack
