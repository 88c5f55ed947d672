// The common case of python/gradfuse/functional/_multi_tensor.py:prepare, done in one call.
//
// An optimizer step over a model hands over a few hundred plain tensors (params, grads, state),
// and checking each one in Python (type, dtype, layout, device, autograd, address, then shapes
// against the param's and overlaps between all of them) cost ~2.3 us per tensor: about as much
// host time for a 150-tensor model as the fused step's own streaming saves over torch's
// (benchmarks/cpu/notes-optim-perf.md). This is the same checks through the C API, and what it
// finds stays native (PreparedList): the engine hands it straight back to optimizer_step, so the
// addresses never become Python ints and no Python object is made per tensor. (Making one per
// tensor, the Buffer tuples this used to return, cost more than the checks: ~1000 live tuples
// per step set off the garbage collector's collections, which then walked them.)
//
// It only ever *accepts*: anything unusual or wrong (a subclass, a view with another layout, a
// dtype that differs from the param's, a shape mismatch, an overlap) returns None and the
// Python path, which handles every case and words every error, runs instead. So this file
// needs no error messages of its own, and a change here cannot change what a user is told.
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bindings/common.h"
#include "bindings/dlpack_exchange.h"

namespace gf {
namespace {

// One attribute or no-argument method of torch.Tensor, read from C. Where torch defines it as a
// C getter or a C method (it does for all of these), that function is called directly: the
// same call torch's descriptor makes, without the attribute lookup around it (~15-20 ns of the
// ~50-90 ns of each read; a step reads ~7 per tensor). Anything else goes through the generic
// lookup. Only exact torch.Tensor / torch.nn.Parameter objects are read this way, and only
// when both types resolve the name to the same descriptor.
class Reader {
 public:
  enum class Kind { kAttribute, kMethod };  // t.name, or t.name()

  Reader() = default;
  Reader(PyTypeObject* tensor, PyTypeObject* param, const char* name, Kind kind)
      : name_(PyUnicode_InternFromString(name)), kind_(kind) {
    PyObject* d = _PyType_Lookup(tensor, name_);  // borrowed
    if (!d || _PyType_Lookup(param, name_) != d) return;
    if (kind == Kind::kAttribute && Py_IS_TYPE(d, &PyGetSetDescr_Type)) {
      const PyGetSetDef* def = reinterpret_cast<PyGetSetDescrObject*>(d)->d_getset;
      get_ = def->get;
      closure_ = def->closure;
    } else if (kind == Kind::kMethod && Py_IS_TYPE(d, &PyMethodDescr_Type)) {
      const PyMethodDef* def = reinterpret_cast<PyMethodDescrObject*>(d)->d_method;
      const int flags = def->ml_flags & ~METH_COEXIST;
      if (flags == METH_NOARGS) {
        noargs_ = def->ml_meth;
      } else if (flags == (METH_VARARGS | METH_KEYWORDS)) {
        varkw_ =
            reinterpret_cast<PyCFunctionWithKeywords>(reinterpret_cast<void (*)()>(def->ml_meth));
      }
    }
    // Anything else (another kind of descriptor, a Python override) takes the generic lookup.
    // Registered once, when gradfuse first meets a torch tensor: a later monkeypatch of
    // torch.Tensor is not seen here (the Python path would see it).
  }

  // New reference to t.name (or t.name()), or nullptr with the error cleared (the caller then
  // refuses the fast path, or says which read failed).
  PyObject* operator()(PyObject* t) const {
    PyObject* r;
    if (get_) {
      r = get_(t, closure_);
    } else if (noargs_) {
      r = noargs_(t, nullptr);
    } else if (varkw_) {
      r = varkw_(t, empty_args(), nullptr);
    } else {
      r = kind_ == Kind::kMethod ? PyObject_CallMethodNoArgs(t, name_) : PyObject_GetAttr(t, name_);
    }
    if (!r) PyErr_Clear();
    return r;
  }

 private:
  static PyObject* empty_args() {
    static PyObject* const empty = PyTuple_New(0);  // never released, like the interpreter's
    return empty;
  }
  PyObject* name_ = nullptr;
  Kind kind_ = Kind::kAttribute;
  getter get_ = nullptr;
  void* closure_ = nullptr;
  PyCFunction noargs_ = nullptr;
  PyCFunctionWithKeywords varkw_ = nullptr;
};

// Set once from Python (register_plain_types) when the first torch tensor is seen: gradfuse
// imports torch only when a torch tensor is passed. Strong references, never released: they
// live as long as the interpreter, like the torch module itself.
struct PlainTypes {
  PyTypeObject* buffer = nullptr;  // gradfuse._buffers.Buffer (a tuple subclass)
  PyTypeObject* tensor = nullptr;  // torch.Tensor
  PyTypeObject* param = nullptr;   // torch.nn.Parameter
  PyObject* dtypes = nullptr;      // {torch.dtype: (name, itemsize)} for the supported dtypes
  // The dtypes table's entries with their native codes (DType), to turn an entry into a code.
  std::vector<std::pair<PyObject*, int>> codes;
  // The attributes (a) and methods (m) read from tensors.
  Reader dtype, is_cpu, is_cuda, is_leaf, shape, requires_grad, grad, is_sparse;  // attributes
  Reader is_contiguous, is_neg, get_device, data_ptr, stride;                     // methods
  // torch's DLPack exchange table (DLPack >= 1.3, torch >= 2.10), null where it has none: then
  // the layout is read through the getters above.
  const dlpack::Exchange* dlpack = nullptr;
  const dlpack::Exchange* dlpack_found = nullptr;  // what registration found (use_dlpack)
};
PlainTypes g_types;

// obj.name is truthy: 1, falsy: 0, could not tell: -1 (error cleared).
int attr_true(PyObject* obj, const Reader& read) {
  PyObject* v = read(obj);
  if (!v) return -1;
  const int t = PyObject_IsTrue(v);
  Py_DECREF(v);
  if (t < 0) PyErr_Clear();
  return t;
}

// obj.name() is `expected` (Py_True or Py_False); false also when the call raised.
bool call_is(PyObject* obj, const Reader& read, PyObject* expected) {
  PyObject* r = read(obj);
  Py_XDECREF(r);  // True and False are singletons: comparing the address after this is safe
  return r == expected;
}

// The strides of a contiguous tensor of this shape, when they are determined by the shape: a
// contiguous tensor has the row-major stride in every dimension of size > 1, and only the
// strides of size-1 dimensions are free (torch keeps whatever they were). So with no size-1
// dimension (and at least one element) this is exactly t.stride(), without the call into torch;
// otherwise nullptr, and the caller asks torch.
PyObject* contiguous_strides(PyObject* shape) {
  const Py_ssize_t ndim = PyTuple_GET_SIZE(shape);
  PyObject* out = PyTuple_New(ndim);
  if (!out) {
    PyErr_Clear();
    return nullptr;
  }
  long long stride = 1;
  for (Py_ssize_t d = ndim - 1; d >= 0; --d) {
    const long long size = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, d));
    PyObject* s = size > 1 ? PyLong_FromLongLong(stride) : nullptr;
    if (!s) {
      PyErr_Clear();
      Py_DECREF(out);
      return nullptr;
    }
    PyTuple_SET_ITEM(out, d, s);
    stride *= size;
  }
  return out;
}

// Two tuples of ints (torch.Size, or the strides tuple) hold the same values: the comparison
// torch.Size.__eq__ makes, without its per-call overhead (~150 ns, twice per tensor).
bool same_ints(PyObject* a, PyObject* b) {
  if (!PyTuple_Check(a) || !PyTuple_Check(b)) return false;
  const Py_ssize_t n = PyTuple_GET_SIZE(a);
  if (PyTuple_GET_SIZE(b) != n) return false;
  for (Py_ssize_t d = 0; d < n; ++d) {
    PyObject* x = PyTuple_GET_ITEM(a, d);
    PyObject* y = PyTuple_GET_ITEM(b, d);
    if (x == y) continue;  // small ints are shared objects
    const long long vx = PyLong_AsLongLong(x);
    const long long vy = PyLong_AsLongLong(y);
    if (PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
    if (vx != vy) return false;
  }
  return true;
}

std::int64_t as_int(PyObject* v) {  // steals v; -1 on failure (error cleared)
  if (!v) return -1;
  const long long x = PyLong_AsLongLong(v);
  Py_DECREF(v);
  if (x == -1 && PyErr_Occurred()) PyErr_Clear();
  return x;
}

// A tensor's sizes, copied out of torch (at most kMax dimensions: more take the Python path).
struct Dims {
  static constexpr int kMax = 8;
  int ndim = 0;
  std::int64_t size[kMax] = {};

  bool operator==(const Dims& o) const {
    return ndim == o.ndim && std::equal(size, size + ndim, o.size);
  }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= size[d];
    return n;
  }
  // Whether a contiguous tensor of these sizes may have strides other than the row-major ones:
  // those of its size-1 dimensions are free (torch keeps whatever they were), and an empty
  // one's are whatever they were made with. The Python path compares strides, so this does too.
  bool free_strides() const {
    return numel() == 0 || std::find(size, size + ndim, std::int64_t{1}) != size + ndim;
  }
};

// a.stride() == b.stride(); false also when either could not be read.
bool same_strides(PyObject* a, PyObject* b) {
  const py::object sa = py::reinterpret_steal<py::object>(g_types.stride(a));
  const py::object sb = py::reinterpret_steal<py::object>(g_types.stride(b));
  return sa && sb && same_ints(sa.ptr(), sb.ptr());
}

// What the checks found about one tensor.
struct Entry {
  PyObject* obj = nullptr;   // the tensor (a strong reference), null for a None entry
  PyObject* info = nullptr;  // the dtypes table's entry (borrowed), null for a None entry
  int code = -1;             // its DType code
  std::int64_t device = -1;
  std::uintptr_t start = 0;
  std::int64_t numel = 0;
  std::int64_t itemsize = 0;
  std::uintptr_t end() const { return start + static_cast<std::uintptr_t>(numel * itemsize); }
};

// Where a tensor's elements are: dtype, device, first address, sizes, and whether it is
// contiguous (torch's rule: row-major strides in every dimension of size > 1, or no element).
struct Layout {
  PyObject* info = nullptr;  // the dtypes table's entry (borrowed)
  int code = -1;             // its DType code
  std::int64_t device = -1;  // -1: the CPU
  std::uintptr_t start = 0;
  Dims dims;
  bool contiguous = false;
};

// The DType code of a DLPack dtype, -1 for the others.
int dtype_code(const dlpack::DataType& t) {
  if (t.lanes != 1) return -1;
  if (t.code == dlpack::kFloat) {
    if (t.bits == 32) return static_cast<int>(DType::kFloat32);
    if (t.bits == 64) return static_cast<int>(DType::kFloat64);
    if (t.bits == 16) return static_cast<int>(DType::kFloat16);
  }
  if (t.code == dlpack::kBFloat && t.bits == 16) return static_cast<int>(DType::kBFloat16);
  return -1;
}

bool set_dtype(const PlainTypes& T, int code, Layout& out) {
  for (const auto& [entry, c] : T.codes) {
    if (c == code) {
      out.info = entry;
      out.code = code;
      return true;
    }
  }
  return false;
}

// The layout in one C call through the DLPack exchange table (~100 ns; the five getters it
// replaces cost ~350 ns: each checks for __torch_function__, is_contiguous() parses its
// arguments, shape builds a torch.Size). An error (sparse, meta, ...) is false, cleared.
bool read_layout_dlpack(const PlainTypes& T, PyObject* t, Layout& out) {
  dlpack::Tensor d;
  if (T.dlpack->dltensor_from_py_object_no_sync(t, &d) != 0) {
    PyErr_Clear();
    return false;
  }
  if (!set_dtype(T, dtype_code(d.dtype), out)) return false;
  if (d.device.type == dlpack::kCpu) {
    out.device = -1;
  } else if (kWithCuda && d.device.type == dlpack::kCuda && d.device.id >= 0) {
    out.device = d.device.id;
  } else {
    return false;
  }
  if (d.ndim < 0 || d.ndim > Dims::kMax) return false;
  out.dims.ndim = d.ndim;
  std::copy(d.shape, d.shape + d.ndim, out.dims.size);
  out.start = reinterpret_cast<std::uintptr_t>(d.data) + d.byte_offset;
  out.contiguous = true;
  if (d.strides && out.dims.numel() != 0) {  // torch's compute_contiguous
    std::int64_t expected = 1;
    for (int k = d.ndim - 1; k >= 0; --k) {
      if (d.shape[k] == 1) continue;
      if (d.strides[k] != expected) {
        out.contiguous = false;
        break;
      }
      expected *= d.shape[k];
    }
  }
  return true;
}

// The same through torch's getters (a torch without the exchange table).
bool read_layout_getters(const PlainTypes& T, PyObject* t, Layout& out) {
  PyObject* dtype = T.dtype(t);
  if (!dtype) return false;
  PyObject* info = PyDict_GetItemWithError(T.dtypes, dtype);  // borrowed
  Py_DECREF(dtype);
  if (!info) {
    PyErr_Clear();
    return false;
  }
  out.info = nullptr;
  for (const auto& [entry, code] : T.codes) {
    if (entry == info) set_dtype(T, code, out);
  }
  if (out.code < 0) return false;
  const int cpu = attr_true(t, T.is_cpu);
  if (cpu < 0) return false;
  out.device = -1;
  if (!cpu) {
    if (!kWithCuda || attr_true(t, T.is_cuda) != 1) return false;
    out.device = as_int(T.get_device(t));
    if (out.device < 0) return false;
  }
  PyObject* ptr = T.data_ptr(t);
  if (!ptr) return false;
  out.start = static_cast<std::uintptr_t>(PyLong_AsUnsignedLongLong(ptr));
  Py_DECREF(ptr);
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  const py::object shape = py::reinterpret_steal<py::object>(T.shape(t));  // raises: nested
  if (!shape || !PyTuple_Check(shape.ptr())) return false;
  const Py_ssize_t ndim = PyTuple_GET_SIZE(shape.ptr());
  if (ndim > Dims::kMax) return false;
  out.dims.ndim = static_cast<int>(ndim);
  for (Py_ssize_t k = 0; k < ndim; ++k) {
    out.dims.size[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), k));
  }
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  out.contiguous = call_is(t, T.is_contiguous, Py_True);
  return true;
}

bool read_layout(PyObject* t, Layout& out) {
  const PlainTypes& T = g_types;
  return T.dlpack ? read_layout_dlpack(T, t, out) : read_layout_getters(T, t, out);
}

// A plain tensor's Entry and sizes (the conditions of _buffers._fast_torch_buffer), or false:
// an exact torch.Tensor / torch.nn.Parameter of a supported dtype on the CPU (or a CUDA device
// when built with CUDA), contiguous, no negative bit, an address aligned to its element, and,
// if written, a leaf ("requires_grad and grad_fn is not None" is `not is_leaf`). A sparse
// tensor fails the layout read or is never contiguous (COO answers False, CSR raises).
bool read_plain(PyObject* t, bool writable, Entry& e, Dims& dims) {
  const PlainTypes& T = g_types;
  if (Py_TYPE(t) != T.tensor && Py_TYPE(t) != T.param) return false;
  Layout l;
  if (!read_layout(t, l) || !l.contiguous) return false;
  if (!call_is(t, T.is_neg, Py_False)) return false;
  if (writable && attr_true(t, T.is_leaf) != 1) return false;  // an autograd graph's output
  e.info = l.info;
  e.code = l.code;
  e.device = l.device;
  e.itemsize = PyLong_AsLongLong(PyTuple_GET_ITEM(l.info, 1));
  if (e.itemsize <= 0 || l.start % static_cast<std::uintptr_t>(e.itemsize) != 0) return false;
  e.start = l.start;
  e.numel = l.dims.numel();
  dims = l.dims;
  return true;
}

// The tensors of a call that passed prepare_plain's checks, slot-major (entries[d * n + i]),
// each holding a strong reference to its tensor (invisible to the garbage collector: a list
// lives for one call and is referenced by nothing its tensors reference). Python sees a read-only
// sequence of Buffers (made on demand, for the paths that need one); the engine's fast path hands
// the whole list back to optimizer_step, which reads the addresses from here.
class PreparedList {
 public:
  PreparedList(std::size_t depth, std::size_t n) : depth_(depth), n_(n), entries_(depth * n) {}
  PreparedList(const PreparedList&) = delete;
  PreparedList& operator=(const PreparedList&) = delete;
  ~PreparedList() {
    for (const Entry& e : entries_) Py_XDECREF(e.obj);
  }

  std::size_t depth() const { return depth_; }
  std::size_t n() const { return n_; }
  std::size_t size() const { return entries_.size(); }
  Entry& at(std::size_t k) { return entries_[k]; }
  const Entry& at(std::size_t k) const { return entries_[k]; }

  // The Buffer of entry k (None for a None entry), as _buffers._fast_torch_buffer makes it.
  py::object buffer(std::size_t k) const {
    const Entry& e = entries_[k];
    if (!e.obj) return py::none();
    const PlainTypes& T = g_types;
    // The tensor as prepare_plain found it (address and count), its shape and strides read
    // now: a tensor resized in between would show its new shape (the list is used at once).
    py::object shape = py::reinterpret_steal<py::object>(T.shape(e.obj));
    if (!shape) throw py::type_error("PreparedList: could not read the shape of a tensor");
    py::object strides =
        py::reinterpret_steal<py::object>(e.numel > 0 ? contiguous_strides(shape.ptr()) : nullptr);
    if (!strides) strides = py::reinterpret_steal<py::object>(T.stride(e.obj));
    if (!strides) throw py::type_error("PreparedList: could not read the strides of a tensor");
    // Buffer(obj, ptr, numel, itemsize, dtype, device, shape, strides, is_torch, sharding)
    py::tuple fields = py::make_tuple(
        py::reinterpret_borrow<py::object>(e.obj), py::int_(static_cast<std::uint64_t>(e.start)),
        py::int_(e.numel), py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(e.info, 1)),
        py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(e.info, 0)), py::int_(e.device), shape,
        strides, py::bool_(true), py::none());
    return py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(T.buffer))(*fields);
  }

  // Whether entries [start, stop) hold a None.
  bool none_in(std::size_t start, std::size_t stop) const {
    for (std::size_t k = start; k < std::min(stop, entries_.size()); ++k) {
      if (!entries_[k].obj) return true;
    }
    return false;
  }

  // (device, dtype code) when every entry is present and shares one device and dtype (the
  // others are laid out like their param by construction), else None: one native call.
  py::object uniform() const {
    if (entries_.empty()) return py::none();
    const Entry& ref = entries_[0];
    for (const Entry& e : entries_) {
      if (!e.obj || e.device != ref.device || e.code != ref.code) return py::none();
    }
    return py::make_tuple(ref.device, ref.code);
  }

  // The first `depth` slots' addresses (Slots) and the params' element counts.
  void pointers(std::size_t depth, Slots& slots, Numels& numels) const {
    GF_CHECK(depth <= depth_, "PreparedList: ", depth, " slots asked of ", depth_);
    slots.assign(depth, std::vector<std::uintptr_t>(n_));
    numels.resize(n_);
    for (std::size_t i = 0; i < n_; ++i) numels[i] = entries_[i].numel;
    for (std::size_t d = 0; d < depth; ++d) {
      for (std::size_t i = 0; i < n_; ++i) slots[d][i] = entries_[d * n_ + i].start;
    }
  }

 private:
  std::size_t depth_, n_;
  std::vector<Entry> entries_;
};

// A PreparedList of every slot when every entry is a plain torch tensor laid out like its param
// and no written tensor shares memory with another one; otherwise None.
py::object prepare_plain(const py::list& slots, const std::vector<bool>& written) {
  if (!g_types.buffer) return py::none();  // no torch tensor seen yet
  const std::size_t depth = slots.size();
  if (depth == 0 || written.size() != depth) return py::none();
  std::vector<PyObject*> seqs(depth);
  for (std::size_t d = 0; d < depth; ++d) {
    PyObject* s = slots[d].ptr();
    if (!PyList_Check(s) && !PyTuple_Check(s)) return py::none();
    seqs[d] = s;
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seqs[0]);
  for (PyObject* s : seqs) {
    if (PySequence_Fast_GET_SIZE(s) != n) return py::none();
  }
  auto out = std::make_unique<PreparedList>(depth, static_cast<std::size_t>(n));
  // Index-major: the param, then its grad and state, so a call that will not qualify (float32
  // state for bfloat16 params, say) is found out at its first tensor, not after whole lists.
  Dims ref_dims, dims;
  for (Py_ssize_t i = 0; i < n; ++i) {
    for (std::size_t d = 0; d < depth; ++d) {
      const std::size_t k = d * static_cast<std::size_t>(n) + static_cast<std::size_t>(i);
      // A strong reference: reading a tensor can run Python code (a TorchFunctionMode, a
      // finalizer) that could change the caller's list.
      if (PySequence_Fast_GET_SIZE(seqs[d]) != n) return py::none();
      py::object x = py::reinterpret_borrow<py::object>(PySequence_Fast_ITEMS(seqs[d])[i]);
      if (x.is_none()) {
        if (d == 0) return py::none();  // a missing param: the Python path's business
        continue;                       // stays None (a state buffer not created yet)
      }
      Entry& e = out->at(k);
      if (!read_plain(x.ptr(), written[d], e, d == 0 ? ref_dims : dims)) return py::none();
      e.obj = x.release().ptr();  // owned by the list from here
      if (d == 0) continue;
      // Laid out like its param: same shape, dtype and device, both contiguous (so the same
      // strides where they matter); any other dtype, such as float32 state for bfloat16
      // params, goes through the Python path's policy checks.
      const Entry& ref = out->at(static_cast<std::size_t>(i));
      if (e.code != ref.code || e.device != ref.device) return py::none();
      if (!(dims == ref_dims)) return py::none();
      if (dims.free_strides() && !same_strides(e.obj, ref.obj)) return py::none();
    }
  }
  // No written tensor may share memory with any other (as _buffers.find_overlap): sorted by
  // (device, start), an overlap shows against the furthest end seen so far on the device.
  std::vector<std::tuple<std::int64_t, std::uintptr_t, std::uintptr_t, std::size_t>> spans;
  spans.reserve(out->size());
  for (std::size_t k = 0; k < out->size(); ++k) {
    const Entry& e = out->at(k);
    if (e.obj && e.end() > e.start) spans.emplace_back(e.device, e.start, e.end(), k);
  }
  std::sort(spans.begin(), spans.end());
  const auto slot_written = [&](std::size_t k) { return bool(written[k / n]); };
  std::uintptr_t far_end = 0;
  std::size_t far_k = 0;
  std::int64_t far_device = -2;
  for (const auto& [device, start, end, k] : spans) {
    if (device == far_device && start < far_end && (slot_written(k) || slot_written(far_k))) {
      return py::none();
    }
    if (device != far_device || end > far_end) {
      far_end = end;
      far_k = k;
      far_device = device;
    }
  }
  return py::cast(std::move(out));
}

// torch's `step += 1` for a list of step counters, in place, and their new values: the common
// case of _steps.increment_all (every entry a plain 1-element float32/float64 CPU tensor, the
// counters torch's optimizers keep), without a tensor op per counter (torch._foreach_add_ costs
// ~2 us per 0-dim CPU tensor). Each counter is added to in its own dtype, as torch adds, and
// read back after every counter has been advanced (a counter listed twice is advanced twice,
// as by _foreach_add_). Anything else returns None before writing anything, and the Python
// path runs.
py::object increment_counters(const py::list& counters) {
  const PlainTypes& T = g_types;
  if (!T.tensor) return py::none();
  struct Counter {
    std::uintptr_t ptr;
    bool is_double;
  };
  std::vector<Counter> found;
  found.reserve(counters.size());
  for (const py::handle h : counters) {
    PyObject* t = h.ptr();
    if (Py_TYPE(t) != T.tensor) return py::none();
    Layout l;
    if (!read_layout(t, l) || l.device != -1 || l.dims.numel() != 1 || l.start == 0) {
      return py::none();
    }
    const bool is_double = l.code == static_cast<int>(DType::kFloat64);
    if (!is_double && l.code != static_cast<int>(DType::kFloat32)) return py::none();
    if (l.start % (is_double ? sizeof(double) : sizeof(float)) != 0) return py::none();
    if (attr_true(t, T.requires_grad) != 0 || !call_is(t, T.is_neg, Py_False)) return py::none();
    found.push_back({l.start, is_double});
  }
  for (const Counter& c : found) {
    if (c.is_double) {
      *reinterpret_cast<double*>(c.ptr) += 1.0;
    } else {
      *reinterpret_cast<float*>(c.ptr) += 1.0f;
    }
  }
  py::list values(found.size());
  for (std::size_t i = 0; i < found.size(); ++i) {
    const Counter& c = found[i];
    const double v = c.is_double ? *reinterpret_cast<const double*>(c.ptr)
                                 : static_cast<double>(*reinterpret_cast<const float*>(c.ptr));
    values[i] = py::float_(v);
  }
  return std::move(values);
}

// The usual step of a FusedOptimizer param group (optim/_optimizer.py:_gather), natively: the
// params that have a gradient, their gradients, and per state key and per counter key the
// entries of state[p]. None (nothing created, nothing read further) when any param with a
// gradient is unusual for this path, and the Python path, which handles every case, runs:
// a param without state yet (its first step creates it), a sparse gradient, a param whose
// dtype is not a real floating type gradfuse supports (a complex one takes real views), a
// missing counter.
//
// `state` is the optimizer's defaultdict, keyed by the params. Looking a param up in it calls
// Tensor.__hash__, a Python function (~150-250 ns, the most of this path per param), so the
// params' state is found by identity instead (what Tensor's hash and a dict lookup amount to:
// hash(t) is id(t)), from one walk over the dict's entries. Nothing is created by looking, as
// `state[p]` would. Each param's state must be a plain dict (a subclass could answer
// differently): anything else takes the Python path.
py::object gather_state(const py::object& param_list, const py::object& state,
                        const py::tuple& keys, const py::tuple& counter_keys) {
  const PlainTypes& T = g_types;
  if (!T.tensor || !PyList_Check(param_list.ptr()) || !PyDict_Check(state.ptr())) {
    return py::none();
  }
  const auto params = py::reinterpret_borrow<py::list>(param_list);
  // First every read that may run Python code (torch's getters, under a TorchFunctionMode),
  // by index, each param held.
  py::list with_grad, grads;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(params.ptr()); ++i) {
    const auto p = py::reinterpret_borrow<py::object>(PyList_GET_ITEM(params.ptr(), i));
    if (Py_TYPE(p.ptr()) != T.tensor && Py_TYPE(p.ptr()) != T.param) return py::none();
    const py::object grad = py::reinterpret_steal<py::object>(T.grad(p.ptr()));
    if (!grad) return py::none();
    if (grad.is_none()) continue;
    if (Py_TYPE(grad.ptr()) != T.tensor || attr_true(grad.ptr(), T.is_sparse) != 0) {
      return py::none();
    }
    const py::object dtype = py::reinterpret_steal<py::object>(T.dtype(p.ptr()));
    if (!dtype || !PyDict_GetItemWithError(T.dtypes, dtype.ptr())) {  // complex, say
      PyErr_Clear();
      return py::none();
    }
    with_grad.append(p);
    grads.append(grad);
  }
  py::tuple state_lists(keys.size()), counter_lists(counter_keys.size());
  if (keys.size() + counter_keys.size() == 0) {  // as torch: no state at all (SGD, no momentum)
    return py::make_tuple(with_grad, grads, state_lists, counter_lists);
  }
  const std::size_t n = with_grad.size();
  std::vector<py::list> lists, counters;  // allocated before any borrowed reference is taken
  for (std::size_t k = 0; k < keys.size(); ++k) lists.emplace_back(n);
  for (std::size_t k = 0; k < counter_keys.size(); ++k) counters.emplace_back(n);
  // Each param's own state dict, held. By identity from one walk over the state dict when it
  // is not much larger than the group (the usual one or few groups; the walk runs no Python
  // code); otherwise (many groups) by the dict's own lookup, which calls Tensor.__hash__.
  std::vector<py::object> own(n);
  const auto state_size = static_cast<std::size_t>(PyDict_GET_SIZE(state.ptr()));
  if (state_size <= 4 * n + 64) {
    std::unordered_map<PyObject*, PyObject*> by_id;
    by_id.reserve(state_size);
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(state.ptr(), &pos, &key, &value)) by_id.emplace(key, value);
    for (std::size_t i = 0; i < n; ++i) {
      const auto found = by_id.find(PyList_GET_ITEM(with_grad.ptr(), i));
      if (found != by_id.end()) own[i] = py::reinterpret_borrow<py::object>(found->second);
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      PyObject* v = PyDict_GetItemWithError(state.ptr(), PyList_GET_ITEM(with_grad.ptr(), i));
      if (!v) {
        PyErr_Clear();
        return py::none();
      }
      own[i] = py::reinterpret_borrow<py::object>(v);
    }
  }
  // Then the entries: lookups of str keys in plain dicts (no Python code runs).
  for (std::size_t i = 0; i < n; ++i) {
    PyObject* entries = own[i].ptr();
    if (!entries || !PyDict_CheckExact(entries) || PyDict_GET_SIZE(entries) == 0) {
      return py::none();  // no state yet: created on the Python path
    }
    for (std::size_t k = 0; k < keys.size(); ++k) {
      PyObject* v = PyDict_GetItemWithError(entries, keys[k].ptr());  // borrowed
      if (!v && PyErr_Occurred()) {
        PyErr_Clear();
        return py::none();
      }
      lists[k][i] = v ? py::handle(v) : py::handle(Py_None);  // state.get(key)
    }
    for (std::size_t k = 0; k < counter_keys.size(); ++k) {
      PyObject* v = PyDict_GetItemWithError(entries, counter_keys[k].ptr());  // borrowed
      if (!v) {
        PyErr_Clear();
        return py::none();
      }
      counters[k][i] = py::handle(v);
    }
  }
  for (std::size_t k = 0; k < lists.size(); ++k) state_lists[k] = lists[k];
  for (std::size_t k = 0; k < counters.size(); ++k) counter_lists[k] = counters[k];
  return py::make_tuple(with_grad, grads, state_lists, counter_lists);
}

// torch's DLPack exchange table, when torch.Tensor and torch.nn.Parameter publish the same one
// in a layout this file knows (DLPack 1.x, x >= 3) with the function it uses; else null.
const dlpack::Exchange* find_exchange(PyTypeObject* tensor, PyTypeObject* param) {
  auto table = [](PyTypeObject* type) -> const dlpack::Exchange* {
    PyObject* capsule =
        PyObject_GetAttrString(reinterpret_cast<PyObject*>(type), "__dlpack_c_exchange_api__");
    void* api = nullptr;
    if (capsule && PyCapsule_IsValid(capsule, "dlpack_exchange_api")) {
      api = PyCapsule_GetPointer(capsule, "dlpack_exchange_api");
    }
    Py_XDECREF(capsule);  // the table itself lives as long as the process (the ABI's promise)
    PyErr_Clear();
    return static_cast<const dlpack::Exchange*>(api);
  };
  const dlpack::Exchange* api = table(tensor);
  if (!api || table(param) != api) return nullptr;
  const dlpack::Version v = api->header.version;
  if (v.major != dlpack::kMajor || v.minor < dlpack::kMinMinor) return nullptr;
  return api->dltensor_from_py_object_no_sync ? api : nullptr;
}

void register_plain_types(const py::type& buffer, const py::type& tensor, const py::type& param,
                          const py::dict& dtypes) {
  GF_CHECK(PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(buffer.ptr()), &PyTuple_Type),
           "register_plain_types: Buffer must be a tuple subclass");
  PlainTypes t;
  t.buffer = reinterpret_cast<PyTypeObject*>(buffer.inc_ref().ptr());
  t.tensor = reinterpret_cast<PyTypeObject*>(tensor.inc_ref().ptr());
  t.param = reinterpret_cast<PyTypeObject*>(param.inc_ref().ptr());
  t.dtypes = dtypes.inc_ref().ptr();
  for (const auto& [key, info] : dtypes) {
    const auto name = py::cast<std::string>(py::reinterpret_borrow<py::tuple>(info)[0]);
    for (int code = 0; code <= 3; ++code) {
      // A strong reference: Entry::info and the codes compare against these tuples' addresses.
      if (name == dtype_name(static_cast<DType>(code)))
        t.codes.emplace_back(info.inc_ref().ptr(), code);
    }
  }
  // Each field with the name it reads, as an attribute (t.name) or a method (t.name()).
  using Field = std::pair<Reader PlainTypes::*, const char*>;
  const Field attributes[] = {
      {&PlainTypes::dtype, "dtype"},     {&PlainTypes::is_cpu, "is_cpu"},
      {&PlainTypes::is_cuda, "is_cuda"}, {&PlainTypes::is_leaf, "is_leaf"},
      {&PlainTypes::shape, "shape"},     {&PlainTypes::requires_grad, "requires_grad"},
      {&PlainTypes::grad, "grad"},       {&PlainTypes::is_sparse, "is_sparse"}};
  const Field methods[] = {{&PlainTypes::is_contiguous, "is_contiguous"},
                           {&PlainTypes::is_neg, "is_neg"},
                           {&PlainTypes::get_device, "get_device"},
                           {&PlainTypes::data_ptr, "data_ptr"},
                           {&PlainTypes::stride, "stride"}};
  for (const auto& [field, name] : attributes) {
    t.*field = Reader(t.tensor, t.param, name, Reader::Kind::kAttribute);
  }
  for (const auto& [field, name] : methods) {
    t.*field = Reader(t.tensor, t.param, name, Reader::Kind::kMethod);
  }
  t.dlpack = t.dlpack_found = find_exchange(t.tensor, t.param);
  g_types = std::move(t);
}

}  // namespace

bool prepared_pointers(const py::handle& obj, Slots& slots, Numels& numels) {
  if (!py::isinstance<PreparedList>(obj)) return false;
  const auto& list = obj.cast<const PreparedList&>();
  list.pointers(list.depth(), slots, numels);
  return true;
}

void register_buffers(py::module_& m) {
  py::class_<PreparedList>(
      m, "PreparedList",
      "The tensors of a call that passed prepare_plain's checks, slot-major: a read-only "
      "sequence of Buffers (made on demand); optimizer_step takes it whole as its slots.")
      .def("__len__", &PreparedList::size)
      .def("__getitem__",
           [](const PreparedList& self, std::ptrdiff_t k) {
             const auto size = static_cast<std::ptrdiff_t>(self.size());
             if (k < 0) k += size;
             if (k < 0 || k >= size) throw py::index_error("PreparedList index out of range");
             return self.buffer(static_cast<std::size_t>(k));
           })
      .def("__getitem__",
           [](const PreparedList& self, const py::slice& s) {
             std::size_t start = 0, stop = 0, step = 0, count = 0;
             if (!s.compute(self.size(), &start, &stop, &step, &count)) {
               throw py::error_already_set();
             }
             py::list out(count);
             for (std::size_t j = 0; j < count; ++j) out[j] = self.buffer(start + j * step);
             return out;
           })
      .def_property_readonly("depth", &PreparedList::depth)
      .def_property_readonly("n", &PreparedList::n)
      .def(
          "pointer_lists",
          [](const PreparedList& self, std::size_t depth) {
            Slots slots;
            Numels numels;
            self.pointers(depth, slots, numels);
            return py::make_tuple(slots, numels);
          },
          py::arg("depth"),
          "(addresses of the first `depth` slots, one list per slot; the params' element "
          "counts).")
      .def("none_in", &PreparedList::none_in, py::arg("start"), py::arg("stop"),
           "Whether entries [start, stop) hold a None.")
      .def("uniform", &PreparedList::uniform,
           "(device, dtype code) when every entry is present on one device in one dtype, else "
           "None.");
  m.def("register_plain_types", &register_plain_types, py::arg("buffer"), py::arg("tensor"),
        py::arg("parameter"), py::arg("dtypes"),
        "Tell prepare_plain which types are plain tensors and which dtypes it may accept.");
  m.def("prepare_plain", &prepare_plain, py::arg("slots"), py::arg("written"),
        "The fast path of _multi_tensor.prepare: a PreparedList of every slot, or None.");
  m.def("gather_state", &gather_state, py::arg("params"), py::arg("state"), py::arg("keys"),
        py::arg("counter_keys"),
        "The usual step of a param group: (params with a gradient, their gradients, per key "
        "the state entries, per counter key the counters), or None for anything unusual.");
  m.def(
      "use_dlpack",
      [](bool enabled) {
        g_types.dlpack = enabled ? g_types.dlpack_found : nullptr;
        return g_types.dlpack != nullptr;
      },
      py::arg("enabled"),
      "Read tensor layouts through torch's DLPack exchange table (True, the default where torch "
      "has one) or through its getters (False; the tests check both). Whether the table is in "
      "use now.");
  m.def("increment_counters", &increment_counters, py::arg("counters"),
        "step += 1 for plain 1-element float32/float64 CPU tensors, in place; their new values, "
        "or None (nothing written) for anything else.");
}

}  // namespace gf
