// AgreeOnState: DESIGN.md invariant 3, "one model after every regroup", in
// one place. The worker calls it after every regroup and before every
// checkpoint upload.
//
// Every member all-gathers (digest of what members share, the step the
// coordinator counts) over the control communicator. When the digests all
// agree nothing else happens. Otherwise the member furthest on (the lowest
// rank among equals: rank 0, the committed owner, whenever members are at
// the same step, as they always are in sync mode) re-broadcasts its complete
// state over the data communicator, so every member ends with its bits.
//
// What members share: the whole state in sync mode; in diloco mode the
// outer state (Trainer::OuterDigest), since inner progress is each
// worker's own while the outer state agrees.
//
// Thread-safety: the training thread, collectively (every member calls it
// at the same point of the protocol).
#ifndef POTLUCK_WORKER_INTERNAL_STATE_AGREEMENT_H_
#define POTLUCK_WORKER_INTERNAL_STATE_AGREEMENT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "collectives/communicator.h"
#include "worker/trainer.h"

namespace potluck {
namespace worker_internal {

struct AgreeOnStateOptions {
  // The step the coordinator counts (steps in sync mode, rounds in diloco
  // mode): the member furthest on is the one others take the state from.
  uint64_t boundary_step = 0;
  // A mismatch is expected (a diloco joiner, who has no outer state yet):
  // repaired the same way, but not logged or counted as a divergence.
  bool mismatch_expected = false;
  // Names the occasion in the log ("worker w-1: generation 4").
  std::string context;
};

struct StateAgreement {
  bool agreed = true;  // every member's digest was equal already
  int source = 0;      // the rank whose state the members hold now
  // A divergence was found and repaired (not an expected mismatch).
  bool repaired_divergence = false;
};

// kUnavailable/kDeadlineExceeded/kAborted as the communicators' calls; on
// such an error the members' states are as before or undefined (a broadcast
// cut short), and the group must regroup and agree again.
absl::StatusOr<StateAgreement> AgreeOnState(Trainer* trainer, Communicator* control,
                                            Communicator* data, const AgreeOnStateOptions& options,
                                            absl::Time deadline);

}  // namespace worker_internal
}  // namespace potluck

#endif  // POTLUCK_WORKER_INTERNAL_STATE_AGREEMENT_H_
