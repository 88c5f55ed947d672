// The common case of python/gradfuse/functional/_multi_tensor.py:prepare, done in one call.
//
// An optimizer step over a model hands over a few hundred plain tensors (params, grads, state),
// and checking each one in Python (type, dtype, layout, device, autograd, address, then shapes
// against the param's and overlaps between all of them) cost ~2.3 us per tensor: about as much
// host time for a 150-tensor model as the fused step's own streaming saves over torch's
// (benchmarks/cpu/notes-optim-perf.md). This is the same checks through the C API.
//
// It only ever *accepts*: anything unusual or wrong (a subclass, a view with another layout, a
// dtype that differs from the param's, a shape mismatch, an overlap) returns None and the
// Python path, which handles every case and words every error, runs instead. So this file
// needs no error messages of its own, and a change here cannot change what a user is told.
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "bindings/common.h"

namespace gf {
namespace {

// Set once from Python (register_plain_types) when the first torch tensor is seen: gradfuse
// imports torch only when a torch tensor is passed. Strong references, never released: they
// live as long as the interpreter, like the torch module itself.
struct PlainTypes {
  PyTypeObject* buffer = nullptr;  // gradfuse._buffers.Buffer (a tuple subclass)
  PyTypeObject* tensor = nullptr;  // torch.Tensor
  PyTypeObject* param = nullptr;   // torch.nn.Parameter
  PyObject* dtypes = nullptr;      // {torch.dtype: (name, itemsize)} for the supported dtypes
  // Interned names of the attributes and methods read from every tensor.
  PyObject *dtype, *is_contiguous, *is_neg, *is_cpu, *is_cuda, *get_device, *is_leaf, *data_ptr,
      *shape, *stride, *requires_grad;
};
PlainTypes g_types;

PyObject* intern(const char* s) {
  return PyUnicode_InternFromString(s);
}

// New reference to obj.name(), or nullptr with the Python error cleared.
PyObject* call0(PyObject* obj, PyObject* name) {
  PyObject* r = PyObject_CallMethodNoArgs(obj, name);
  if (!r) PyErr_Clear();
  return r;
}

// obj.name is truthy: 1, falsy: 0, could not tell: -1 (error cleared).
int attr_true(PyObject* obj, PyObject* name) {
  PyObject* v = PyObject_GetAttr(obj, name);
  if (!v) {
    PyErr_Clear();
    return -1;
  }
  const int t = PyObject_IsTrue(v);
  Py_DECREF(v);
  if (t < 0) PyErr_Clear();
  return t;
}

// obj.name() is `expected` (Py_True or Py_False); false also when the call raised.
bool call_is(PyObject* obj, PyObject* name, PyObject* expected) {
  PyObject* r = call0(obj, name);
  Py_XDECREF(r);  // True and False are singletons: comparing the address after this is safe
  return r == expected;
}

// The number of elements of a torch.Size (a tuple of ints); -1 when it is not one.
long long product(PyObject* shape) {
  if (!PyTuple_Check(shape)) return -1;
  long long n = 1;
  for (Py_ssize_t d = 0; d < PyTuple_GET_SIZE(shape); ++d) {
    n *= PyLong_AsLongLong(PyTuple_GET_ITEM(shape, d));
  }
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return -1;
  }
  return n;
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

// A Buffer for a plain tensor (the conditions of _buffers._fast_torch_buffer), or nullptr.
// `dtype_out` receives the dtypes table's entry for the tensor's dtype (borrowed: the table,
// which lives as long as the interpreter, holds it; equal entries mean equal dtypes). Eight reads
// per tensor, each one a trip through torch's bindings: is_sparse is not read because a sparse
// tensor is never is_contiguous() (COO answers False, CSR raises), and "requires_grad and
// grad_fn is not None" is `not is_leaf`.
PyObject* plain_buffer(PyObject* t, bool writable, PyObject** dtype_out, std::int64_t* device_out) {
  const PlainTypes& T = g_types;
  if (Py_TYPE(t) != T.tensor && Py_TYPE(t) != T.param) return nullptr;
  PyObject* dtype = PyObject_GetAttr(t, T.dtype);
  if (!dtype) {
    PyErr_Clear();
    return nullptr;
  }
  PyObject* info = PyDict_GetItemWithError(T.dtypes, dtype);  // borrowed
  Py_DECREF(dtype);
  if (!info) {
    PyErr_Clear();
    return nullptr;
  }
  *dtype_out = info;
  if (!call_is(t, T.is_contiguous, Py_True) || !call_is(t, T.is_neg, Py_False)) return nullptr;
  std::int64_t device = -1;
  const int cpu = attr_true(t, T.is_cpu);
  if (cpu < 0) return nullptr;
  if (!cpu) {
    if (!kWithCuda || attr_true(t, T.is_cuda) != 1) return nullptr;
    device = as_int(call0(t, T.get_device));
    if (device < 0) return nullptr;
  }
  *device_out = device;
  if (writable && attr_true(t, T.is_leaf) != 1) return nullptr;  // an autograd graph's output
  PyObject* name = PyTuple_GET_ITEM(info, 0);
  PyObject* itemsize = PyTuple_GET_ITEM(info, 1);
  const long long size = PyLong_AsLongLong(itemsize);
  PyObject* ptr = call0(t, T.data_ptr);
  if (!ptr) return nullptr;
  const unsigned long long address = PyLong_AsUnsignedLongLong(ptr);
  if (PyErr_Occurred() || size <= 0 || address % static_cast<unsigned long long>(size) != 0) {
    PyErr_Clear();
    Py_DECREF(ptr);
    return nullptr;
  }
  PyObject* shape = PyObject_GetAttr(t, T.shape);  // raises for, e.g., a nested tensor
  const long long count = shape ? product(shape) : -1;
  PyErr_Clear();  // never call into the C API with an error set
  PyObject* stride = count > 0 ? contiguous_strides(shape) : nullptr;
  if (!stride && count >= 0) stride = call0(t, T.stride);
  PyObject* numel = stride ? PyLong_FromLongLong(count) : nullptr;
  PyObject* dev = numel ? PyLong_FromLongLong(device) : nullptr;
  // Buffer(obj, ptr, numel, itemsize, dtype, device, shape, strides, is_torch, sharding),
  // allocated as the tuple subclass directly, as tuple.__new__(Buffer, fields) does it, without
  // the two intermediate tuples per tensor that calling it would cost (~10% of this call).
  PyObject* buffer = dev ? T.buffer->tp_alloc(T.buffer, 10) : nullptr;
  if (!buffer) {
    PyErr_Clear();
    Py_DECREF(ptr);
    Py_XDECREF(shape);
    Py_XDECREF(stride);
    Py_XDECREF(numel);
    Py_XDECREF(dev);
    return nullptr;
  }
#if PY_VERSION_HEX >= 0x030E0000
  // 3.14 caches a tuple's hash in the object; -1 is "not computed" (zeroed memory would read as
  // a computed hash of 0). tuple's own subtype constructor resets it the same way.
  reinterpret_cast<PyTupleObject*>(buffer)->ob_hash = -1;
#endif
  Py_INCREF(t);
  Py_INCREF(itemsize);
  Py_INCREF(name);
  Py_INCREF(Py_True);
  Py_INCREF(Py_None);
  PyTuple_SET_ITEM(buffer, 0, t);
  PyTuple_SET_ITEM(buffer, 1, ptr);
  PyTuple_SET_ITEM(buffer, 2, numel);
  PyTuple_SET_ITEM(buffer, 3, itemsize);
  PyTuple_SET_ITEM(buffer, 4, name);
  PyTuple_SET_ITEM(buffer, 5, dev);
  PyTuple_SET_ITEM(buffer, 6, shape);
  PyTuple_SET_ITEM(buffer, 7, stride);
  PyTuple_SET_ITEM(buffer, 8, Py_True);
  PyTuple_SET_ITEM(buffer, 9, Py_None);
  return buffer;
}

struct Entry {
  PyObject* dtype = nullptr;  // the dtypes table's entry (borrowed), null for a None entry
  std::int64_t device = -1;
  std::uintptr_t start = 0, end = 0;
};

// The buffers of every slot, slot-major (buffers[d * n + i]; None where the entry is None), when
// every entry is a plain torch tensor laid out like its param and no written tensor shares
// memory with another one; otherwise None.
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
  // PyList_New leaves the items NULL: start from None everywhere (None entries stay None).
  py::list out(static_cast<std::size_t>(n) * depth);
  for (Py_ssize_t k = 0; k < PyList_GET_SIZE(out.ptr()); ++k) {
    Py_INCREF(Py_None);
    PyList_SET_ITEM(out.ptr(), k, Py_None);
  }
  std::vector<Entry> entries(static_cast<std::size_t>(n) * depth);
  // Index-major: the param, then its grad and state, so a call that will not qualify (float32
  // state for bfloat16 params, say) is found out at its first tensor, not after whole lists.
  for (Py_ssize_t i = 0; i < n; ++i) {
    for (std::size_t d = 0; d < depth; ++d) {
      const std::size_t k = d * static_cast<std::size_t>(n) + static_cast<std::size_t>(i);
      // A strong reference: reading a tensor can run Python code (a TorchFunctionMode, a
      // finalizer) that could change the caller's list.
      if (PySequence_Fast_GET_SIZE(seqs[d]) != n) return py::none();
      py::object x = py::reinterpret_borrow<py::object>(PySequence_Fast_ITEMS(seqs[d])[i]);
      if (x.is_none()) {
        if (d == 0) return py::none();  // a missing param: the Python path's business
        continue;                       // out[k] stays None (a state buffer not created yet)
      }
      Entry& e = entries[k];
      PyObject* b = plain_buffer(x.ptr(), written[d], &e.dtype, &e.device);
      if (!b) return py::none();
      PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(k), b);  // steals b, replaces None
      Py_DECREF(Py_None);                                         // the None it replaces
      const auto address = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(b, 1));
      const auto numel = PyLong_AsLongLong(PyTuple_GET_ITEM(b, 2));
      const auto itemsize = PyLong_AsLongLong(PyTuple_GET_ITEM(b, 3));
      e.start = static_cast<std::uintptr_t>(address);
      e.end = e.start + static_cast<std::uintptr_t>(numel * itemsize);
      if (d == 0) continue;
      // Laid out like its param: same shape, dtype, device and strides (any other dtype, such
      // as float32 state for bfloat16 params, goes through the Python path's policy checks).
      const Entry& ref = entries[static_cast<std::size_t>(i)];
      PyObject* rb = PyList_GET_ITEM(out.ptr(), i);
      if (e.dtype != ref.dtype || e.device != ref.device) return py::none();
      for (int f : {6, 7}) {  // shape, strides
        if (!same_ints(PyTuple_GET_ITEM(b, f), PyTuple_GET_ITEM(rb, f))) return py::none();
      }
    }
  }
  // No written tensor may share memory with any other (as _buffers.find_overlap): sorted by
  // (device, start), an overlap shows against the furthest end seen so far on the device.
  std::vector<std::tuple<std::int64_t, std::uintptr_t, std::uintptr_t, std::size_t>> spans;
  spans.reserve(entries.size());
  for (std::size_t k = 0; k < entries.size(); ++k) {
    const Entry& e = entries[k];
    if (e.dtype && e.end > e.start) spans.emplace_back(e.device, e.start, e.end, k);
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
  return std::move(out);
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
    PyObject* dtype = PyObject_GetAttr(t, T.dtype);
    if (!dtype) {
      PyErr_Clear();
      return py::none();
    }
    PyObject* info = PyDict_GetItemWithError(T.dtypes, dtype);  // borrowed
    Py_DECREF(dtype);
    if (!info) {
      PyErr_Clear();
      return py::none();
    }
    const std::string name = py::reinterpret_borrow<py::str>(PyTuple_GET_ITEM(info, 0));
    if (name != "float32" && name != "float64") return py::none();
    if (attr_true(t, T.is_cpu) != 1 || attr_true(t, T.requires_grad) != 0) return py::none();
    if (!call_is(t, T.is_neg, Py_False)) return py::none();
    PyObject* shape = PyObject_GetAttr(t, T.shape);
    const long long count = shape ? product(shape) : -1;
    Py_XDECREF(shape);
    PyErr_Clear();
    if (count != 1) return py::none();
    const std::int64_t ptr = as_int(call0(t, T.data_ptr));
    if (ptr <= 0) return py::none();
    found.push_back({static_cast<std::uintptr_t>(ptr), name == "float64"});
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

void register_plain_types(const py::type& buffer, const py::type& tensor, const py::type& param,
                          const py::dict& dtypes) {
  GF_CHECK(PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(buffer.ptr()), &PyTuple_Type),
           "register_plain_types: Buffer must be a tuple subclass");
  PlainTypes t;
  t.buffer = reinterpret_cast<PyTypeObject*>(buffer.inc_ref().ptr());
  t.tensor = reinterpret_cast<PyTypeObject*>(tensor.inc_ref().ptr());
  t.param = reinterpret_cast<PyTypeObject*>(param.inc_ref().ptr());
  t.dtypes = dtypes.inc_ref().ptr();
  t.dtype = intern("dtype");
  t.is_contiguous = intern("is_contiguous");
  t.is_neg = intern("is_neg");
  t.is_cpu = intern("is_cpu");
  t.is_cuda = intern("is_cuda");
  t.get_device = intern("get_device");
  t.is_leaf = intern("is_leaf");
  t.data_ptr = intern("data_ptr");
  t.shape = intern("shape");
  t.stride = intern("stride");
  t.requires_grad = intern("requires_grad");
  g_types = t;
}

}  // namespace

void register_buffers(py::module_& m) {
  m.def("register_plain_types", &register_plain_types, py::arg("buffer"), py::arg("tensor"),
        py::arg("parameter"), py::arg("dtypes"),
        "Tell prepare_plain which types are plain tensors and which dtypes it may accept.");
  m.def("prepare_plain", &prepare_plain, py::arg("slots"), py::arg("written"),
        "The fast path of _multi_tensor.prepare: every slot's Buffers, or None.");
  m.def("increment_counters", &increment_counters, py::arg("counters"),
        "step += 1 for plain 1-element float32/float64 CPU tensors, in place; their new values, "
        "or None (nothing written) for anything else.");
}

}  // namespace gf
