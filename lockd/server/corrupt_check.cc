#include "lockd/server/corrupt_check.h"

#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lockd/util/clock.h"
#include "lockd/util/log.h"

namespace lockd {

CorruptionChecker::CorruptionChecker(uint64_t self, Hooks hooks)
    : self_(self), hooks_(std::move(hooks)) {}

CorruptionChecker::~CorruptionChecker() { Stop(); }

absl::Status CorruptionChecker::InitialCheck() {
  Logf(LogLevel::kInfo, "corrupt", "%x: starting initial corruption check",
       self_);
  absl::StatusOr<kv::MvccStore::HashResult> local = hooks_.local_hash();
  if (!local.ok()) {
    return absl::InternalError(absl::StrCat(absl::Hex(self_),
                                            " failed to fetch hash (",
                                            local.status().message(), ")"));
  }
  int mismatches = 0;
  for (uint64_t peer : hooks_.peers()) {
    absl::StatusOr<etcdserverpb::HashKVResponse> r =
        hooks_.peer_hash(peer, local->revision);
    if (!r.ok()) {
      const std::string why(r.status().message());
      Logf(LogLevel::kWarning, "corrupt",
           "%x cannot check the hash of peer %x at revision %d: %s", self_,
           peer, local->revision,
           absl::StrContains(why, "future revision") ? "the peer is behind"
           : absl::StrContains(why, "compacted")     ? "this member is behind"
                                                     : why);
      continue;
    }
    if (r->hash() == local->hash) continue;
    if (r->compact_revision() != local->compact_revision) {
      Logf(LogLevel::kWarning, "corrupt",
           "%x cannot check the hash of peer %x: it has compact revision %d, "
           "this member %d",
           self_, peer, r->compact_revision(), local->compact_revision);
      continue;
    }
    Logf(LogLevel::kError, "corrupt",
         "%x's hash %d != %x's hash %d (revision %d, peer revision %d, "
         "compact revision %d)",
         self_, local->hash, peer, r->hash(), local->revision,
         r->header().revision(), local->compact_revision);
    ++mismatches;
  }
  if (mismatches > 0) {
    return absl::DataLossError(absl::StrCat(
        absl::Hex(self_),
        " found data inconsistency with peers: this member's data differs "
        "from theirs; do not start it with this data directory (remove it "
        "and add the member again, or restore the cluster from a snapshot)"));
  }
  Logf(LogLevel::kInfo, "corrupt",
       "%x passed the initial corruption check: no corruption", self_);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> CorruptionChecker::CheckOnce() {
  if (!hooks_.is_leader()) return uint64_t{0};
  absl::StatusOr<kv::MvccStore::HashResult> before = hooks_.local_hash();
  if (!before.ok()) return before.status();
  std::vector<std::pair<uint64_t, etcdserverpb::HashKVResponse>> answers;
  for (uint64_t peer : hooks_.peers()) {
    absl::StatusOr<etcdserverpb::HashKVResponse> r =
        hooks_.peer_hash(peer, before->revision);
    if (r.ok()) answers.emplace_back(peer, *std::move(r));
  }
  if (absl::Status s = hooks_.read_barrier(); !s.ok()) return s;
  absl::StatusOr<kv::MvccStore::HashResult> after = hooks_.local_hash();
  if (!after.ok()) return after.status();

  uint64_t alarmed = 0;
  auto mismatch = [&](uint64_t member, const std::string& why) {
    Logf(LogLevel::kError, "corrupt", "member %x: %s", member, why);
    if (alarmed != 0) return;
    alarmed = member;
    if (absl::Status s = hooks_.raise_alarm(member); !s.ok()) {
      Logf(LogLevel::kWarning, "corrupt",
           "cannot raise the CORRUPT alarm for %x: %s", member,
           std::string(s.message()));
    }
  };
  if (after->hash != before->hash && after->revision == before->revision &&
      after->compact_revision == before->compact_revision) {
    mismatch(self_,
             absl::StrCat("the hash of revision ", before->revision,
                          " changed from ", before->hash, " to ", after->hash));
  }
  for (const auto& [peer, r] : answers) {
    if (r.header().revision() > after->revision) {
      mismatch(peer,
               absl::StrCat("revision ", r.header().revision(),
                            " is ahead of the leader's ", after->revision));
    }
    if (r.compact_revision() > after->compact_revision) {
      mismatch(peer, absl::StrCat("compact revision ", r.compact_revision(),
                                  " is ahead of the leader's ",
                                  after->compact_revision));
    }
    if (r.compact_revision() == before->compact_revision &&
        r.hash() != before->hash) {
      mismatch(peer, absl::StrCat("hash ", r.hash(), " at revision ",
                                  before->revision,
                                  " differs from the leader's ", before->hash));
    }
  }
  if (alarmed == 0) {
    Logf(LogLevel::kDebug, "corrupt",
         "corruption check at revision %d: %d members agree with the leader",
         before->revision, answers.size());
  }
  return alarmed;
}

void CorruptionChecker::Start(absl::Duration interval) {
  Logf(LogLevel::kInfo, "corrupt", "corruption checking every %s",
       absl::FormatDuration(interval));
  loop_.Start("corrupt-check", MonotonicNow() + interval, [this, interval] {
    absl::StatusOr<uint64_t> r = CheckOnce();
    if (!r.ok()) {
      Logf(LogLevel::kDebug, "corrupt", "corruption check failed: %s",
           std::string(r.status().message()));
    }
    return MonotonicNow() + interval;
  });
}

void CorruptionChecker::Stop() { loop_.Stop(); }

}  // namespace lockd
