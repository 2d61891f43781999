// Helpers for the worker tests: tiny models, ranks as threads over loopback
// TCP, and a transport that counts the bytes it sends.
#ifndef POTLUCK_WORKER_TEST_UTIL_H_
#define POTLUCK_WORKER_TEST_UTIL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "collectives/communicator.h"
#include "potluck/v1/job.pb.h"
#include "worker/model.h"

namespace potluck {

// A GPT small enough for finite differences and fast tests.
potluck::v1::ModelSpec TinyGptSpec(uint32_t vocab = 13, uint32_t context = 6, uint32_t layers = 2,
                                   uint32_t heads = 2, uint32_t width = 8);

// Random token batch (B,T) for a GPT of `vocab`, from `seed`.
Batch RandomTokens(int64_t batch, int64_t time, int64_t vocab, uint64_t seed);

// Rows [begin, begin + count) of a batch.
Batch Rows(const Batch& batch, int64_t begin, int64_t count);

// Runs `body(rank, comm)` on `world_size` threads joined by a TCP group on
// loopback. Counts every byte the ranks send into `*bytes_sent` if non-null.
void RunRanks(int world_size, const std::function<void(int, Communicator*)>& body,
              std::atomic<uint64_t>* bytes_sent = nullptr);

// Bitwise equality of two models' trainable parameters.
bool SameBits(Model& a, Model& b);

// A fresh, empty directory under the test's temporary directory.
std::string FreshTempDir(const std::string& name);

}  // namespace potluck

#endif  // POTLUCK_WORKER_TEST_UTIL_H_
