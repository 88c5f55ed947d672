// Bindings of the block-wise 8-bit primitives (issue 16; cpu/quant8.h, cuda/quant8.cu): quantize
// float32 values into codes and absmax, dequantize back (host memory, or a CUDA device's on the
// caller's stream), and the dynamic maps. Python (gradfuse/optim/_quant8.py) checks the tensors;
// these check the sizes they are told.
#include <utility>
#include <vector>

#include "bindings/common.h"
#include "cpu/quant8.h"

namespace gf {

namespace {

constexpr std::int64_t kBlock = 256;

void blockwise8(const char* op, std::uintptr_t values, std::uintptr_t codes, std::uintptr_t absmax,
                std::int64_t n, std::int64_t absmax_len, bool is_signed, bool quantize, int device,
                std::uintptr_t stream) {
  GF_CHECK(n >= 0, op, ": negative size ", n);
  GF_CHECK(absmax_len == (n + kBlock - 1) / kBlock, op, ": absmax must hold ceil(", n,
           " / 256) = ", (n + kBlock - 1) / kBlock, " values, got ", absmax_len);
  GF_CHECK(n == 0 || (values != 0 && codes != 0 && absmax != 0), op, ": null pointer");
  Blockwise8Args args{reinterpret_cast<float*>(values),
                      reinterpret_cast<std::uint8_t*>(codes),
                      reinterpret_cast<float*>(absmax),
                      n,
                      is_signed,
                      quantize,
                      device,
                      stream};
  py::gil_scoped_release release;
  if (device >= 0) {
#if GRADFUSE_WITH_CUDA
    return cuda::blockwise8(args);
#else
    GF_FAIL(op, ": device ", device,
            " is a CUDA device, and this gradfuse build has no CUDA kernels");
#endif
  }
  cpu::blockwise8(args);
}

}  // namespace

void register_quant8(py::module_& m) {
  m.def(
      "blockwise8",
      [](std::uintptr_t values, std::uintptr_t codes, std::uintptr_t absmax, std::int64_t n,
         std::int64_t absmax_len, bool is_signed, bool quantize, int device,
         std::uintptr_t stream) {
        blockwise8(quantize ? "quantize_blockwise8" : "dequantize_blockwise8", values, codes,
                   absmax, n, absmax_len, is_signed, quantize, device, stream);
      },
      py::arg("values"), py::arg("codes"), py::arg("absmax"), py::arg("n"), py::arg("absmax_len"),
      py::arg("signed"), py::arg("quantize"), py::arg("device") = -1, py::arg("stream") = 0,
      "quantize: n float32 values -> uint8 codes and one float32 absmax per 256 values; "
      "otherwise the codes and absmax -> the n values (device -1: host memory; else that CUDA "
      "device's, on `stream`).");
  m.def(
      "dynamic_map",
      [](bool is_signed) {
        const auto& map = cpu::q8::dynamic_map(is_signed);
        return std::vector<float>(map.code, map.code + 256);
      },
      py::arg("signed"),
      "bitsandbytes' dynamic quantization map (create_dynamic_map), 256 sorted float32 values.");
  m.def(
      "q8_self_test",
      [](std::uintptr_t values, std::uintptr_t codes, std::uintptr_t forced, std::int64_t n,
         bool is_signed, int damage) {
        GF_CHECK(n >= 0 && (n == 0 || (values != 0 && codes != 0 && forced != 0)),
                 "q8_self_test: bad buffers");
        std::int32_t flags[2] = {0, 0};
        Q8SelfTestArgs args{reinterpret_cast<const float*>(values),
                            reinterpret_cast<std::uint8_t*>(codes),
                            reinterpret_cast<std::uint8_t*>(forced),
                            flags,
                            n,
                            is_signed,
                            damage};
        {
          py::gil_scoped_release release;
          cpu::q8_self_test(args);
        }
        return std::make_pair(flags[0] != 0, flags[1] != 0);
      },
      py::arg("values"), py::arg("codes"), py::arg("forced"), py::arg("n"), py::arg("signed"),
      py::arg("damage"),
      "Tests only (cpu/quant8.h): quantize n float32 values with the arithmetic quantizer's "
      "constants damaged (1..3; 0: as built); codes by quantize_block, forced with the damaged "
      "constants used anyway. Returns (the constants passed their checks, this ISA has the "
      "arithmetic quantizer).");
  m.def(
      "state_q8_code", []() { return kStateQ8; },
      "The first state dtype code of 8-bit state (gradfuse/tensor_list.h).");
}

}  // namespace gf
