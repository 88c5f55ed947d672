// The one binding of every optimizer kernel: _core.optimizer_step(kernel, ...).
//
// Python (gradfuse/functional/_engine.py) has validated the tensors and computed every per-step
// scalar in double with torch's expressions. It hands over the kernel's name, the pointer lists,
// the hyperparameters as one list in the order the kernel's Hyper struct declares them
// (Hyper::kFields, exported as _core.CODES["hyper_fields"]) and the mode flags by name. This file
// checks the call once, fills the kernel's plain Args struct (gradfuse/optim_kernels.h) and runs
// it without the GIL. Adding a kernel: its Args line in GF_OPTIM_KERNELS and one args_for below.
// LAMB and Adafactor (GF_REDUCING_OPTIM_KERNELS: kernels of their own, not rules over
// map_elements) are called the same way; Adafactor also takes its factored tensors' matrix
// shapes (rows, cols).
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "bindings/common.h"

namespace gf {

namespace {

using Modes = std::map<std::string, double>;

// One optimizer_step call, checked: the kernel's tensors, hyperparameters and modes.
struct StepCall {
  const char* op;
  TensorList tensors;
  const std::vector<double>& hyper;
  const Modes& modes;
  StepTable step_table;
  const Numels& rows;  // Adafactor's factored tensors: matrix shape per tensor (else empty)
  const Numels& cols;
  bool shapes_given;  // rows or cols was passed (not None)

  // The hyperparameter list as the kernel's Hyper struct (a plain struct of doubles).
  template <typename Hyper>
  Hyper hyper_as() const {
    constexpr std::size_t n = std::size(Hyper::kFields);
    static_assert(std::is_trivially_copyable_v<Hyper> && sizeof(Hyper) == n * sizeof(double),
                  "a Hyper struct is its kFields as doubles, in order");
    GF_CHECK(hyper.size() == n, op, ": expected ", n,
             " hyperparameters (CODES[\"hyper_fields\"]), ", "got ", hyper.size());
    Hyper h;
    std::memcpy(&h, hyper.data(), sizeof h);
    return h;
  }

  // A mode by name (a flag is a mode that is 0 or not); a missing one is the caller's error.
  int mode(const char* name) const {
    const auto it = modes.find(name);
    GF_CHECK(it != modes.end(), op, ": missing mode '", name, "'");
    return static_cast<int>(it->second);
  }
  bool flag(const char* name) const { return mode(name) != 0; }

  void depth(int expected, const char* names) const { check_depth(tensors, op, expected, names); }
  // Only a kernel whose Args hold a step table (kTakesStepTable: a capturable step's per-tensor
  // scalars) accepts one.
  void refuse_step_table(bool takes_step_table) const {
    GF_CHECK(takes_step_table || step_table.data == 0, op, ": takes no step table");
  }
  // Only a kernel whose Args take matrix shapes (kTakesShapes) accepts rows/cols; every call
  // passes both or neither, of one length.
  void check_shapes(bool takes_shapes) const {
    GF_CHECK(takes_shapes || !shapes_given, op,
             ": takes no rows/cols (only adafactor's factored tensors have a matrix shape); "
             "pass None for both");
    GF_CHECK(rows.size() == cols.size(), op,
             ": rows and cols must have one entry per tensor each, got ", rows.size(), " rows and ",
             cols.size(), " cols");
  }
  // A capturable call's table holds every field the op reads per tensor.
  void table_fields(int fields) const {
    check_step_table(step_table.data, step_table.stride, op, fields);
  }
};

template <typename Args>
struct Tag {};

// The kernels that take rows/cols (matrix shapes per tensor); every other refuses them.
template <typename Args>
constexpr bool kTakesShapes = false;
template <>
constexpr bool kTakesShapes<AdafactorArgs> = true;

// The kernels whose Args hold a step table (a member step_table); every other refuses one, so a
// new kernel refuses it until its Args take it.
template <typename Args, typename = void>
constexpr bool kTakesStepTable = false;
template <typename Args>
constexpr bool kTakesStepTable<Args, std::void_t<decltype(std::declval<Args&>().step_table)>> =
    true;
static_assert(kTakesStepTable<AdamArgs> && !kTakesStepTable<LionArgs>,
              "kTakesStepTable must see an Args' step_table member");

int weight_decay_mode(const StepCall& c) {
  const int mode = c.mode("weight_decay_mode");
  GF_CHECK(mode >= math::kWdNone && mode <= math::kWdDecoupled, c.op,
           ": weight_decay_mode must be 0 (none), 1 (L2) or 2 (decoupled), got ", mode);
  return mode;
}

constexpr const char* kMoments = "param, grad, exp_avg, exp_avg_sq";

SgdArgs args_for(const StepCall& c, Tag<SgdArgs>) {
  const auto h = c.hyper_as<math::SgdHyper>();
  const bool momentum = h.momentum != 0.0;
  c.depth(momentum ? 3 : 2, momentum ? "param, grad, momentum_buffer" : "param, grad");
  c.table_fields(math::SgdScalars<float>::kStepFields);
  return {c.tensors,
          h,
          h.weight_decay != 0.0,
          momentum,
          c.flag("nesterov"),
          c.flag("first_step"),
          c.flag("maximize"),
          c.step_table};
}

AdamArgs args_for(const StepCall& c, Tag<AdamArgs>) {
  const bool amsgrad = c.flag("amsgrad");
  c.depth(amsgrad ? 5 : 4, amsgrad ? "param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq" : kMoments);
  c.table_fields(math::AdamScalars<float>::kStepFields);
  return {
      c.tensors,   c.hyper_as<math::AdamHyper>(), weight_decay_mode(c), amsgrad, c.flag("maximize"),
      c.step_table};
}

AdamaxArgs args_for(const StepCall& c, Tag<AdamaxArgs>) {
  const auto h = c.hyper_as<math::AdamaxHyper>();
  c.depth(4, "param, grad, exp_avg, exp_inf");
  c.table_fields(math::AdamaxScalars<float>::kStepFields);
  return {c.tensors, h, h.weight_decay != 0.0, c.flag("maximize"), c.step_table};
}

NadamArgs args_for(const StepCall& c, Tag<NadamArgs>) {
  c.depth(4, kMoments);
  c.table_fields(math::NadamScalars<float>::kStepFields);
  return {c.tensors, c.hyper_as<math::NadamHyper>(), weight_decay_mode(c), c.flag("maximize"),
          c.step_table};
}

RadamArgs args_for(const StepCall& c, Tag<RadamArgs>) {
  c.depth(4, kMoments);
  c.table_fields(math::RadamStepScalars<float>::kStepFields);
  return {c.tensors,
          c.hyper_as<math::RadamHyper>(),
          weight_decay_mode(c),
          c.flag("maximize"),
          c.flag("rectify"),
          c.step_table};
}

AdagradArgs args_for(const StepCall& c, Tag<AdagradArgs>) {
  const auto h = c.hyper_as<math::AdagradHyper>();
  c.depth(3, "param, grad, sum");
  c.table_fields(math::AdagradScalars<float>::kStepFields);
  return {c.tensors, h, h.weight_decay != 0.0, c.flag("maximize"), c.step_table};
}

RmspropArgs args_for(const StepCall& c, Tag<RmspropArgs>) {
  const auto h = c.hyper_as<math::RmspropHyper>();
  const bool centered = c.flag("centered"), momentum = h.momentum > 0.0;
  c.depth(3 + (centered ? 1 : 0) + (momentum ? 1 : 0),
          "param, grad, square_avg(, grad_avg if centered)(, momentum_buffer if momentum > 0)");
  c.table_fields(math::RmspropScalars<float>::kStepFields);
  return {c.tensors,          h,           h.weight_decay != 0.0, centered, momentum,
          c.flag("maximize"), c.step_table};
}

LionArgs args_for(const StepCall& c, Tag<LionArgs>) {
  const auto h = c.hyper_as<math::LionHyper>();
  c.depth(3, "param, grad, exp_avg");
  return {c.tensors, h, h.weight_decay != 0.0, c.flag("maximize")};
}

AdoptArgs args_for(const StepCall& c, Tag<AdoptArgs>) {
  c.depth(4, kMoments);
  return {c.tensors, c.hyper_as<math::AdoptHyper>(), weight_decay_mode(c), c.flag("maximize"),
          c.flag("first_step")};
}

AdemamixArgs args_for(const StepCall& c, Tag<AdemamixArgs>) {
  c.depth(5, "param, grad, exp_avg, exp_avg_slow, exp_avg_sq");
  return {c.tensors, c.hyper_as<math::AdemamixHyper>(), c.flag("maximize")};
}

ScheduleFreeAdamwArgs args_for(const StepCall& c, Tag<ScheduleFreeAdamwArgs>) {
  const auto h = c.hyper_as<math::ScheduleFreeAdamwHyper>();
  c.depth(4, "param, grad, z, exp_avg_sq");
  return {c.tensors, h, h.weight_decay != 0.0, c.flag("maximize")};
}

ScheduleFreeSgdArgs args_for(const StepCall& c, Tag<ScheduleFreeSgdArgs>) {
  const auto h = c.hyper_as<math::ScheduleFreeSgdHyper>();
  c.depth(3, "param, grad, z");
  return {c.tensors, h, h.weight_decay != 0.0, c.flag("maximize")};
}

// The train/eval switch: no gradient (its slot is z again, never read) and nothing to maximize.
ScheduleFreeSwitchArgs args_for(const StepCall& c, Tag<ScheduleFreeSwitchArgs>) {
  c.depth(3, "param, unused, z");
  return {c.tensors, c.hyper_as<math::ScheduleFreeSwitchHyper>(), false};
}

// Muon's two elementwise passes around the Newton-Schulz matmuls (gradfuse/math/muon.h).
MuonPrepareArgs args_for(const StepCall& c, Tag<MuonPrepareArgs>) {
  c.depth(3, "momentum_buffer, grad, ns_input");
  return {c.tensors, c.hyper_as<math::MuonPrepareHyper>(), c.flag("nesterov")};
}

MuonApplyArgs args_for(const StepCall& c, Tag<MuonApplyArgs>) {
  c.depth(3, "param, grad, update");
  return {c.tensors, c.hyper_as<math::MuonApplyHyper>(), c.flag("weight_decay")};
}

LambArgs args_for(const StepCall& c, Tag<LambArgs>) {
  const auto h = c.hyper_as<math::LambHyper>();
  c.depth(4, kMoments);
  GF_CHECK(h.bias_correction1 > 0.0 && h.bias_correction2 > 0.0, c.op,
           ": bias corrections must be positive, got ", h.bias_correction1, " and ",
           h.bias_correction2);
  return {c.tensors, h, c.flag("decoupled"), c.flag("trust"), c.flag("maximize")};
}

// Factored (rows/cols given): slots param, grad, row_var, col_var; else param, grad, variance.
AdafactorArgs args_for(const StepCall& c, Tag<AdafactorArgs>) {
  const bool factored = !c.rows.empty();
  const std::size_t n = static_cast<std::size_t>(c.tensors.size);
  if (factored) {
    c.depth(4, "param, grad, row_var, col_var");
    GF_CHECK(c.rows.size() == n && c.cols.size() == n, c.op,
             ": expected rows and cols for each of the ", n, " tensors, got ", c.rows.size(),
             " and ", c.cols.size());
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t numel = c.tensors.numels[i], rows = c.rows[i], cols = c.cols[i];
      // rows * cols only once it is known not to overflow (the kernel computes it too).
      const bool fits = rows >= 0 && cols >= 0 &&
                        (rows == 0 || cols <= std::numeric_limits<std::int64_t>::max() / rows);
      GF_CHECK(fits && (numel == 0 || (rows > 0 && cols > 0 && numel % (rows * cols) == 0)), c.op,
               ": rows[", i, "] = ", rows, " and cols[", i, "] = ", cols, " do not fit tensor ", i,
               " of ", numel, " elements: expected positive rows[", i, "] and cols[", i,
               "] whose product divides ", numel,
               " (for an empty tensor: non-negative, the product within int64)");
    }
  } else {
    c.depth(3, "param, grad, variance");
  }
  return {c.tensors,     c.hyper_as<math::AdafactorHyper>(),
          factored,      c.rows.data(),
          c.cols.data(), c.flag("maximize")};
}

using Runner = void (*)(const StepCall&);

// rows/cols as given: a list of ints or None (empty).
Numels shapes_arg(const char* op, const char* name, const py::object& list) {
  if (list.is_none()) return {};
  try {
    return list.cast<Numels>();
  } catch (const py::cast_error&) {
    std::string got = py::repr(list);
    if (got.size() > 80) got = got.substr(0, 77) + "...";
    throw py::type_error(std::string(op) + ": " + name +
                         " must be a list of ints, one per tensor, or None, got " + got);
  }
}

// Every kernel by name: its Args from the call, run on the tensors' backend.
const std::unordered_map<std::string, Runner>& runners() {
#define GF_RUNNER(name, ArgsType)                                     \
  {#name, [](const StepCall& c) {                                     \
     c.refuse_step_table(kTakesStepTable<ArgsType>);                  \
     c.check_shapes(kTakesShapes<ArgsType>);                          \
     run(&cpu::name, GF_CUDA_FN(name), args_for(c, Tag<ArgsType>{})); \
   }},
  static const std::unordered_map<std::string, Runner> table{
      GF_OPTIM_KERNELS(GF_RUNNER) GF_REDUCING_OPTIM_KERNELS(GF_RUNNER)};
#undef GF_RUNNER
  return table;
}

}  // namespace

py::dict hyper_fields() {
  py::dict d;
#define GF_FIELDS(name, ArgsType)                                             \
  {                                                                           \
    py::list names;                                                           \
    for (const char* f : decltype(ArgsType::hyper)::kFields) names.append(f); \
    d[#name] = names;                                                         \
  }
  GF_OPTIM_KERNELS(GF_FIELDS)
  GF_REDUCING_OPTIM_KERNELS(GF_FIELDS)
#undef GF_FIELDS
  return d;
}

void register_optim(py::module_& m) {
  m.def(
      "optimizer_step",
      [](const std::string& kernel, const py::object& slot_lists, const py::object& numel_list,
         int dtype, int device, std::uintptr_t stream, const std::vector<double>& hyper,
         const Modes& modes, std::uintptr_t grad_scale, std::uintptr_t found_inf,
         std::uintptr_t clip_coef, std::uintptr_t step_table, std::int64_t step_table_stride,
         const py::object& row_list, const py::object& col_list, int state_dtype, int policy,
         std::uint64_t seed) {
        const auto& table = runners();
        const auto it = table.find(kernel);
        GF_CHECK(it != table.end(), "optimizer_step: unknown kernel '", kernel, "'");
        const char* op = it->first.c_str();
        Slots slots;
        Numels numels;
        if (!prepared_pointers(slot_lists, slots, numels)) {
          try {
            slots = slot_lists.cast<Slots>();
            numels = numel_list.cast<Numels>();
          } catch (const py::cast_error&) {
            throw py::type_error(std::string(op) +
                                 ": slots must be a PreparedList, or lists of addresses with "
                                 "numels a list of element counts");
          }
        }
        auto holder = make_list(op, slots, numels, dtype, device, stream, grad_scale, found_inf,
                                clip_coef, PrecisionArgs{state_dtype, policy, seed});
        const Numels rows = shapes_arg(op, "rows", row_list);
        const Numels cols = shapes_arg(op, "cols", col_list);
        it->second(StepCall{op, holder.view, hyper, modes, StepTable{step_table, step_table_stride},
                            rows, cols, !row_list.is_none() || !col_list.is_none()});
      },
      py::arg("kernel"), GF_LIST_ARGS, py::arg("hyper"), py::arg("modes"), py::kw_only(),
      GF_SCALING_ARGS, GF_STEP_TABLE_ARGS, py::arg("rows") = py::none(),
      py::arg("cols") = py::none(), GF_PRECISION_ARGS,
      "One in-place optimizer step of `kernel` over its slots (pointer lists: params, grads,\n"
      "state; or a PreparedList, numels then None) of one dtype and device. hyper: the kernel's "
      "per-step scalars in the order of\n"
      "CODES['hyper_fields'][kernel]; modes: its flags by name. grad_scale/found_inf/clip_coef:\n"
      "addresses of float32 scalars, 0 for none; step_table: a capturable call's per-tensor\n"
      "scalars (gradfuse/math/per_tensor.h), 0 for none; rows/cols: adafactor's matrix shape of\n"
      "each factored tensor (two lists of one length; empty or None for an unfactored call,\n"
      "None for every other kernel).");
}

}  // namespace gf
