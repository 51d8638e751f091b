#include "raft/core/fuzz.h"

#include <string>
#include <vector>

#include "raft/core/raft.h"
#include "raft/core/test_cluster.h"

namespace lockd::raft::fuzz {
namespace {

class Fuzzer {
 public:
  explicit Fuzzer(uint64_t seed)
      : rng_(seed), cluster_([seed](Config* c) {
          c->check_invariants = true;
          c->seed ^= seed;
          c->max_size_per_msg_bytes = 256;
          c->max_inflight_msgs = 4;
        }) {}

  FuzzStats Run(int steps) {
    cluster_.Bootstrap({1, 2, 3});
    cluster_.Stabilize();
    cluster_.Elect(1);
    cluster_.StabilizeBounded(50);
    for (int i = 0; i < steps; ++i) {
      switch (rng_.Uniform(8)) {
        case 0:
        case 1:
          Inject();
          break;
        case 2:
          cluster_.Tick(1 + rng_.Uniform(3),
                        1 + static_cast<int>(rng_.Uniform(12)));
          break;
        case 3:
          (void)cluster_.raw(1 + rng_.Uniform(3))
              .Propose(std::string(rng_.Uniform(40), 'p'));
          break;
        case 4:
          (void)cluster_.raw(1 + rng_.Uniform(3))
              .ReadIndex("r" + std::to_string(i));
          break;
        case 5:
          if (rng_.Uniform(10) == 0) {
            ConfChange cc;
            cc.changes.push_back({static_cast<ConfChangeType>(rng_.Uniform(3)),
                                  1 + rng_.Uniform(5)});
            (void)cluster_.raw(1 + rng_.Uniform(3)).ProposeConfChange(cc);
          } else if (rng_.Uniform(10) == 0) {
            (void)cluster_.raw(1 + rng_.Uniform(3))
                .TransferLeadership(rng_.Uniform(5));
          }
          break;
        default:
          cluster_.StabilizeBounded(1 + static_cast<int>(rng_.Uniform(5)));
          break;
      }
      for (uint64_t id : cluster_.ids()) {
        cluster_.raft(id).CheckInvariants();
        stats_.protocol_violations = 0;
      }
    }
    for (uint64_t id : cluster_.ids()) {
      stats_.protocol_violations += cluster_.raft(id).protocol_violations();
    }
    return stats_;
  }

 private:
  uint64_t Pick(std::initializer_list<uint64_t> options) {
    return *(options.begin() + rng_.Uniform(options.size()));
  }

  // A value near something meaningful, or anything at all.
  uint64_t Near(uint64_t base) {
    switch (rng_.Uniform(6)) {
      case 0:
        return 0;
      case 1:
        return base;
      case 2:
        return base + 1 + rng_.Uniform(3);
      case 3:
        return base > 0 ? base - 1 - rng_.Uniform(std::min<uint64_t>(base, 3))
                        : 0;
      case 4:
        return rng_.Uniform(1000);
      default:
        return rng_.Next() >> 2;  // huge, but no overflow on +1
    }
  }

  void Inject() {
    const uint64_t to = 1 + rng_.Uniform(3);
    const Raft& r = cluster_.raft(to);
    Message m;
    m.type = static_cast<MessageType>(rng_.Uniform(kNumMessageTypes));
    m.to = rng_.Uniform(20) == 0 ? rng_.Uniform(5) : to;
    // Known peers, unknown senders, removed-looking ids; rarely self/none.
    m.from = rng_.Uniform(20) == 0 ? Pick({0, to}) : Pick({1, 2, 3, 4, 9});
    if (m.from == to && rng_.Uniform(20) != 0) m.from = to % 3 + 1;
    m.term = rng_.Uniform(20) == 0 ? 0 : std::max<uint64_t>(1, Near(r.term()));
    const uint64_t last = r.raft_log().LastIndex();
    m.index = Near(last);
    m.log_term = Near(r.raft_log().LastTerm());
    m.commit = Near(r.raft_log().committed());
    m.reject = rng_.Uniform(2) == 0;
    m.reject_hint = Near(last);
    if (rng_.Uniform(2) == 0)
      m.context = "ctx" + std::to_string(rng_.Uniform(4));
    const uint64_t n = rng_.Uniform(4);
    for (uint64_t i = 0; i < n; ++i) {
      Entry e;
      e.index = rng_.Uniform(4) == 0 ? Near(m.index) : m.index + 1 + i;
      e.term = rng_.Uniform(4) == 0 ? Near(m.term) : m.term;
      e.type = static_cast<EntryType>(rng_.Uniform(2));
      e.data =
          std::string(rng_.Uniform(8), static_cast<char>(rng_.Uniform(256)));
      if (e.type == EntryType::kConfChange && rng_.Uniform(2) == 0) {
        ConfChange cc;
        cc.changes.push_back(
            {static_cast<ConfChangeType>(rng_.Uniform(3)), rng_.Uniform(6)});
        e.data = EncodeConfChange(cc);
      }
      m.entries.push_back(std::move(e));
    }
    if (m.type == MessageType::kSnap || rng_.Uniform(20) == 0) {
      m.snapshot.metadata.index = Near(r.raft_log().committed());
      m.snapshot.metadata.term = Near(m.term);
      ConfState& cs = m.snapshot.metadata.conf_state;
      for (uint64_t id = 1; id <= 5; ++id) {
        switch (rng_.Uniform(5)) {
          case 0:
            cs.voters.push_back(id);
            break;
          case 1:
            cs.learners.push_back(id);
            break;
          case 2:
            cs.voters_outgoing.push_back(id);
            break;
          default:
            break;
        }
      }
      if (rng_.Uniform(4) == 0 && !cs.voters_outgoing.empty()) {
        cs.learners_next.push_back(cs.voters_outgoing[0]);
      }
      cs.auto_leave = rng_.Uniform(2) == 0;
      m.snapshot.data = "fuzz";
    }
    ++stats_.messages;
    if (!cluster_.raw(to).Step(std::move(m)).ok()) ++stats_.rejected;
  }

  Rng rng_;
  testing::Cluster cluster_;
  FuzzStats stats_;
};

}  // namespace

FuzzStats RunFuzzIteration(uint64_t seed, int steps) {
  Fuzzer f(seed);
  return f.Run(steps);
}

}  // namespace lockd::raft::fuzz
