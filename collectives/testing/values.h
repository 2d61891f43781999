// Element values for collectives tests, per storage type, and an exact
// comparison of them: the one home of the conversions, the exact-sum inputs
// and ValuesAre that the backend tests and the conformance suite share.
//
// Thread-safety: pure functions.
#ifndef POTLUCK_COLLECTIVES_TESTING_VALUES_H_
#define POTLUCK_COLLECTIVES_TESTING_VALUES_H_

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "common/dtype.h"

namespace potluck {

template <typename T>
constexpr bool kIsFloatingPoint =
    std::is_floating_point_v<T> || std::is_same_v<T, Float16> || std::is_same_v<T, BFloat16>;

// `value` stored as a T (rounded to fp16/bf16 as those formats do).
template <typename T>
T Make(double value) {
  if constexpr (std::is_same_v<T, Float16>) {
    return ToFloat16(static_cast<float>(value));
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return ToBFloat16(static_cast<float>(value));
  } else {
    return static_cast<T>(value);
  }
}

template <typename T>
double AsDouble(T value) {
  if constexpr (std::is_same_v<T, Float16> || std::is_same_v<T, BFloat16>) {
    return ToFloat(value);
  } else {
    return static_cast<double>(value);
  }
}

// Unit roundoff of each floating-point format.
template <typename T>
double UnitRoundoff() {
  if constexpr (std::is_same_v<T, Float16>) return std::ldexp(1.0, -11);
  if constexpr (std::is_same_v<T, BFloat16>) return std::ldexp(1.0, -8);
  if constexpr (std::is_same_v<T, float>) return std::ldexp(1.0, -24);
  return std::ldexp(1.0, -53);
}

// What rank `rank` contributes at index `i`: small integers, or quarters from
// -1 up for floating point. Over up to kMaxRanksForExactSums ranks every
// partial sum stays below 64 in magnitude (on a quarter grid) or 127, so it is
// exact in every dtype, bf16 and int8 included, whatever the order of the
// additions.
inline constexpr int kMaxRanksForExactSums = 8;
template <typename T>
double InputValue(int rank, size_t i) {
  const double base = (rank + 1) * static_cast<double>(i % 4) + static_cast<double>(i % 2);
  if constexpr (kIsFloatingPoint<T>) return base * 0.25 - 1.0;
  return base;
}

template <typename T>
double SumOverRanks(int world_size, size_t i) {
  double sum = 0;
  for (int rank = 0; rank < world_size; ++rank) sum += InputValue<T>(rank, i);
  return sum;
}

// `actual[begin, begin + expected.size())` equals `expected` exactly; names
// the first mismatch and how many there were.
template <typename T>
inline ::testing::AssertionResult ValuesAre(const std::vector<T>& actual, size_t begin,
                                            const std::vector<double>& expected, int rank) {
  size_t mismatches = 0;
  std::string first;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double value = AsDouble(actual[begin + i]);
    if (value != expected[i] && mismatches++ == 0) {
      first = absl::StrCat("element ", begin + i, " is ", value, ", expected ", expected[i]);
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << DTypeName(DTypeOf<T>()) << ": " << mismatches << " of " << expected.size()
         << " elements differ on rank " << rank << "; first: " << first;
}

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_TESTING_VALUES_H_
