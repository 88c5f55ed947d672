// Argument checks that throw. A Python extension must never exit() or abort(): pybind11 turns
// these exceptions into ValueError (std::invalid_argument) and RuntimeError (std::runtime_error).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace gf::detail {

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename Error, typename... Args>
[[noreturn]] void throw_error(const Args&... args) {
  throw Error(concat(args...));
}

}  // namespace gf::detail

// GF_CHECK(cond, "what", ...): throws std::invalid_argument (Python ValueError) with the message.
#define GF_CHECK(cond, ...)                                                     \
  do {                                                                          \
    if (!(cond)) ::gf::detail::throw_error<std::invalid_argument>(__VA_ARGS__); \
  } while (0)

// GF_FAIL("what", ...): an internal failure, std::runtime_error (Python RuntimeError).
#define GF_FAIL(...) ::gf::detail::throw_error<std::runtime_error>(__VA_ARGS__)
