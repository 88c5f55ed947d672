// Dispatch of every optimizer kernel (DESIGN.md rule 4), written once for both backends:
// `dispatch(args, apply)` turns the dtype code of an Args struct into a type tag and its mode
// flags into template parameters of the per-element rule, binds the rule to the call's scalars
// and hands it to `apply(tag, op)` (the CPU passes it to map_elements, CUDA to
// multi_tensor_apply). Only combinations that a call can ask for are instantiated.
// `maximize` is no template parameter: each op carries it as a math::SignFlip (math/bits.h).
#pragma once

#include <type_traits>

#include "gradfuse/check.h"
#include "gradfuse/dispatch.h"
#include "gradfuse/grad_kernels.h"
#include "gradfuse/math/bits.h"
#include "gradfuse/optim_kernels.h"

namespace gf {

// visit_weight_decay_mode(mode, op, [&](auto c) { constexpr int kWd = decltype(c)::value; ... })
template <typename F>
void visit_weight_decay_mode(int mode, const char* op, F&& f) {
  switch (mode) {
    case math::kWdNone:
      return f(std::integral_constant<int, math::kWdNone>{});
    case math::kWdL2:
      return f(std::integral_constant<int, math::kWdL2>{});
    case math::kWdDecoupled:
      return f(std::integral_constant<int, math::kWdDecoupled>{});
  }
  GF_CHECK(false, op, ": unknown weight decay mode ", mode,
           " (expected 0 none, 1 L2, 2 decoupled)");
}

// The part every optimizer shares: the storage dtype as a tag, and the rule's scalars and
// maximize flip in its compute type. f(tag, scalars, flip); decltype(flip)::Value is OpT.
template <template <typename> class Scalars, typename Args, typename F>
void visit_optim(const Args& a, const char* op, F&& f) {
  visit_dtype(a.tensors.dtype, op, [&](auto tag) {
    using OpT = OpMath<typename decltype(tag)::type>;
    f(tag, Scalars<OpT>::from(a.hyper), math::SignFlip<OpT>::when(a.maximize));
  });
}

// visit_optim, then the weight decay mode (Adam, NAdam, RAdam): f(tag, scalars, flip, wd_c).
template <template <typename> class Scalars, typename Args, typename F>
void visit_optim_wd_mode(const Args& a, const char* op, F&& f) {
  visit_optim<Scalars>(a, op, [&](auto tag, const auto& s, auto flip) {
    visit_weight_decay_mode(a.weight_decay_mode, op, [&](auto wd_c) { f(tag, s, flip, wd_c); });
  });
}

// The op bound to the call's scalars, per tensor when the call has a step table (capturable).
template <typename Op, typename Scalars, typename OpT>
math::PerTensorOp<Op, OpT> bind(const Scalars& s, math::SignFlip<OpT> flip, const StepTable& t) {
  return math::per_tensor<OpT>(Op{{s, flip}}, t);
}

// An optimizer whose only mode is weight_decay != 0 (Adamax, Adagrad): Op<kWeightDecay, OpT>.
template <template <bool, typename> class Op, template <typename> class Scalars, typename Args,
          typename Apply>
void dispatch_weight_decay_flag(const Args& a, const char* name, Apply&& apply) {
  visit_optim<Scalars>(a, name, [&](auto tag, const auto& s, auto flip) {
    using OpT = typename decltype(flip)::Value;
    bool_switch(
        [&](auto wd_c) { apply(tag, bind<Op<decltype(wd_c)::value, OpT>>(s, flip, a.step_table)); },
        a.weight_decay);
  });
}

template <typename Apply>
void dispatch(const SgdArgs& a, Apply&& apply) {
  visit_optim<math::SgdScalars>(a, "sgd", [&](auto tag, const auto& s, auto flip) {
    using OpT = typename decltype(flip)::Value;
    bool_switch(
        [&](auto wd_c, auto mom_c, auto nesterov_c, auto first_c) {
          constexpr bool mom = decltype(mom_c)::value, nesterov = decltype(nesterov_c)::value;
          constexpr bool first = decltype(first_c)::value;
          // Nesterov and the first-step rule only exist with momentum: skip those instances.
          if constexpr (mom || (!nesterov && !first)) {
            using Op = math::SgdOp<decltype(wd_c)::value, mom, nesterov, first, OpT>;
            apply(tag, bind<Op>(s, flip, a.step_table));
          }
        },
        a.weight_decay, a.momentum, a.momentum && a.nesterov, a.momentum && a.first_step);
  });
}

template <typename Apply>
void dispatch(const AdamArgs& a, Apply&& apply) {
  visit_optim_wd_mode<math::AdamScalars>(
      a, "adam", [&](auto tag, const auto& s, auto flip, auto wd_c) {
        using OpT = typename decltype(flip)::Value;
        bool_switch(
            [&](auto amsgrad_c) {
              using Op = math::AdamOp<decltype(wd_c)::value, decltype(amsgrad_c)::value, OpT>;
              apply(tag, bind<Op>(s, flip, a.step_table));
            },
            a.amsgrad);
      });
}

template <typename Apply>
void dispatch(const AdamaxArgs& a, Apply&& apply) {
  dispatch_weight_decay_flag<math::AdamaxOp, math::AdamaxScalars>(a, "adamax", apply);
}

template <typename Apply>
void dispatch(const NadamArgs& a, Apply&& apply) {
  visit_optim_wd_mode<math::NadamScalars>(
      a, "nadam", [&](auto tag, const auto& s, auto flip, auto wd_c) {
        using OpT = typename decltype(flip)::Value;
        apply(tag, bind<math::NadamOp<decltype(wd_c)::value, OpT>>(s, flip, a.step_table));
      });
}

template <typename Apply>
void dispatch(const RadamArgs& a, Apply&& apply) {
  visit_optim_wd_mode<math::RadamScalars>(
      a, "radam", [&](auto tag, const auto& s, auto flip, auto wd_c) {
        using OpT = typename decltype(flip)::Value;
        constexpr int kWd = decltype(wd_c)::value;
        if (a.step_table.data != 0) {  // capturable: rectify per tensor, from the table
          using Op = math::RadamStepOp<kWd, OpT>;
          apply(tag, math::per_tensor<OpT>(Op{{{s}, flip}}, a.step_table));
          return;
        }
        bool_switch(
            [&](auto rectify_c) {
              apply(tag, math::RadamOp<kWd, decltype(rectify_c)::value, OpT>{{s, flip}});
            },
            a.rectify);
      });
}

template <typename Apply>
void dispatch(const AdagradArgs& a, Apply&& apply) {
  dispatch_weight_decay_flag<math::AdagradOp, math::AdagradScalars>(a, "adagrad", apply);
}

template <typename Apply>
void dispatch(const RmspropArgs& a, Apply&& apply) {
  visit_optim<math::RmspropScalars>(a, "rmsprop", [&](auto tag, const auto& s, auto flip) {
    using OpT = typename decltype(flip)::Value;
    bool_switch(
        [&](auto wd_c, auto centered_c, auto mom_c, auto small_c) {
          constexpr bool centered = decltype(centered_c)::value;
          constexpr bool small = decltype(small_c)::value;
          // The lerp branch only exists for centered RMSprop: skip the other instances.
          if constexpr (centered || small) {
            using Op = math::RmspropOp<decltype(wd_c)::value, centered, decltype(mom_c)::value,
                                       small, OpT>;
            apply(tag, bind<Op>(s, flip, a.step_table));
          }
        },
        a.weight_decay, a.centered, a.momentum, !a.centered || math::lerp_small(a.hyper));
  });
}

template <typename Apply>
void dispatch(const LionArgs& a, Apply&& apply) {
  visit_optim<math::LionScalars>(a, "lion", [&](auto tag, const auto& s, auto flip) {
    using OpT = typename decltype(flip)::Value;
    bool_switch([&](auto wd_c) { apply(tag, math::LionOp<decltype(wd_c)::value, OpT>{{s, flip}}); },
                a.weight_decay);
  });
}

template <typename Apply>
void dispatch(const ScheduleFreeAdamwArgs& a, Apply&& apply) {
  visit_optim<math::ScheduleFreeAdamwScalars>(
      a, "schedule_free_adamw", [&](auto tag, const auto& s, auto flip) {
        using OpT = typename decltype(flip)::Value;
        bool_switch(
            [&](auto wd_c) {
              apply(tag, math::ScheduleFreeAdamwOp<decltype(wd_c)::value, OpT>{{s, flip}});
            },
            a.weight_decay);
      });
}

template <typename Apply>
void dispatch(const ScheduleFreeSgdArgs& a, Apply&& apply) {
  visit_optim<math::ScheduleFreeSgdScalars>(
      a, "schedule_free_sgd", [&](auto tag, const auto& s, auto flip) {
        using OpT = typename decltype(flip)::Value;
        bool_switch(
            [&](auto wd_c) {
              apply(tag, math::ScheduleFreeSgdOp<decltype(wd_c)::value, OpT>{{s, flip}});
            },
            a.weight_decay);
      });
}

template <typename Apply>
void dispatch(const ScheduleFreeSwitchArgs& a, Apply&& apply) {
  visit_optim<math::ScheduleFreeSwitchScalars>(
      a, "schedule_free_switch", [&](auto tag, const auto& s, auto flip) {
        using OpT = typename decltype(flip)::Value;
        apply(tag, math::ScheduleFreeSwitchOp<OpT>{{s, flip}});
      });
}

// Muon's passes (math/muon.h): no maximize (torch's Muon has none), one flag each.
template <typename Apply>
void dispatch(const MuonPrepareArgs& a, Apply&& apply) {
  visit_dtype(a.tensors.dtype, "muon_prepare", [&](auto tag) {
    using OpT = OpMath<typename decltype(tag)::type>;
    const auto s = math::MuonPrepareScalars<OpT>::from(a.hyper);
    const auto flip = math::SignFlip<OpT>::when(false);
    bool_switch(
        [&](auto nesterov_c) {
          apply(tag, math::MuonPrepareOp<decltype(nesterov_c)::value, OpT>{{s, flip}});
        },
        a.nesterov);
  });
}

template <typename Apply>
void dispatch(const MuonApplyArgs& a, Apply&& apply) {
  visit_dtype(a.tensors.dtype, "muon_apply", [&](auto tag) {
    using OpT = OpMath<typename decltype(tag)::type>;
    const auto s = math::MuonApplyScalars<OpT>::from(a.hyper);
    const auto flip = math::SignFlip<OpT>::when(false);
    bool_switch(
        [&](auto wd_c) { apply(tag, math::MuonApplyOp<decltype(wd_c)::value, OpT>{{s, flip}}); },
        a.weight_decay);
  });
}

// The norm reduction of clip_grad_norm_: the dtype as a tag and the norm's kind as a rule
// (math/norm.h) in the dtype's compute type. run(tag, rule).
template <typename Run>
void dispatch(const GradNormArgs& a, Run&& run) {
  visit_dtype(a.tensors.dtype, "grad_norm", [&](auto tag) {
    using OpT = OpMath<typename decltype(tag)::type>;
    using math::NormKind;
    using math::NormRule;
    switch (a.kind) {
      case NormKind::kL2:
        return run(tag, NormRule<NormKind::kL2, OpT>{});
      case NormKind::kL1:
        return run(tag, NormRule<NormKind::kL1, OpT>{});
      case NormKind::kInf:
        return run(tag, NormRule<NormKind::kInf, OpT>{});
      case NormKind::kNegInf:
        return run(tag, NormRule<NormKind::kNegInf, OpT>{});
      case NormKind::kZero:
        return run(tag, NormRule<NormKind::kZero, OpT>{});
      case NormKind::kP:
        return run(tag,
                   NormRule<NormKind::kP, OpT>{static_cast<OpT>(a.p), static_cast<OpT>(1.0 / a.p)});
    }
    GF_CHECK(false, "grad_norm: unknown norm kind ", static_cast<int>(a.kind));
  });
}

// The scaling-only pass of clip_grad_norm_: GradScaling on slot 0, no rule.
template <typename Apply>
void dispatch(const ScaleGradsArgs& a, Apply&& apply) {
  visit_dtype(a.tensors.dtype, "scale_grads", [&](auto tag) {
    apply(tag, math::ScaleGradOp<OpMath<typename decltype(tag)::type>>{});
  });
}

}  // namespace gf
