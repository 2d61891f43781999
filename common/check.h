// POTLUCK_CHECK: for broken invariants (bugs), never for bad input.
//
// Bad input and I/O failures are returned as absl::Status. A CHECK failure
// means potluck's own code is wrong: it prints the condition, the place and
// an optional message to stderr and aborts, so a core dump or a sanitizer
// report shows where.
//
//   POTLUCK_CHECK(rank < world_size) << "rank " << rank;
//
// Thread-safety: safe from any thread.
#ifndef POTLUCK_COMMON_CHECK_H_
#define POTLUCK_COMMON_CHECK_H_

#include <sstream>

namespace potluck::internal {

// Collects the optional message, then aborts in its destructor.
class CheckFailure {
 public:
  CheckFailure(const char* condition, const char* file, int line);
  [[noreturn]] ~CheckFailure();
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;

  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets `cond ? (void)0 : Voidify() & stream << ...` type-check.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace potluck::internal

#define POTLUCK_CHECK(condition)                 \
  (condition) ? (void)0                          \
              : ::potluck::internal::Voidify() & \
                    ::potluck::internal::CheckFailure(#condition, __FILE__, __LINE__).stream()

#endif  // POTLUCK_COMMON_CHECK_H_
