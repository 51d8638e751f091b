// Client::Watch on a real 3-member cluster: the member the watch is on is
// killed while writes go on, and the watch must resume on another member
// with every event exactly once, in order (checked against the history read
// from a surviving member). Also: a compacted start revision is etcd's
// compacted error, and a watch from "now" resumes from where it was created.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "lockd/client/client.h"
#include "tests/harness/cluster.h"
#include "tests/harness/history.h"
#include "tests/harness/process.h"

namespace lockd::testing {
namespace {

// Everything a watch delivered, as event lines, with the callback's checks.
struct Delivered {
  absl::Mutex mu;
  std::vector<mvccpb::Event> events ABSL_GUARDED_BY(mu);
  std::vector<std::string> problems ABSL_GUARDED_BY(mu);

  bool Add(const etcdserverpb::WatchResponse& r) {
    absl::MutexLock lock(&mu);
    for (const mvccpb::Event& e : r.events()) {
      if (!events.empty() &&
          e.kv().mod_revision() < events.back().kv().mod_revision()) {
        problems.push_back(absl::StrCat("out of order: ", EventLine(e),
                                        " after ", EventLine(events.back())));
      }
      events.push_back(e);
    }
    return true;
  }
  int64_t LastRevision() {
    absl::MutexLock lock(&mu);
    return events.empty() ? 0 : events.back().kv().mod_revision();
  }
};

// `endpoints`: comma-separated.
std::unique_ptr<client::Client> NewClient(const std::string& endpoints) {
  client::ClientOptions o;
  o.endpoints = absl::StrSplit(endpoints, ',');
  o.call_timeout = absl::Seconds(10);
  o.auto_sync_interval = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<client::Client>> c = client::Client::Create(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

int64_t Put(client::Client* c, const std::string& key,
            const std::string& value) {
  etcdserverpb::PutRequest put;
  put.set_key(key);
  put.set_value(value);
  absl::StatusOr<etcdserverpb::PutResponse> r = c->Put(put);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->header().revision() : 0;
}

TEST(ClientWatchTest, KillTheMemberTheWatchIsOn_EveryEventOnceInOrder) {
  LocalCluster cluster(3, "cwatch");
  ASSERT_TRUE(cluster.StartAll().ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  // The watching client knows one member at first and learns the others.
  std::unique_ptr<client::Client> watching =
      NewClient(cluster.member(0).endpoint());
  ASSERT_NE(watching, nullptr);
  for (absl::Time until = absl::Now() + absl::Seconds(15);
       watching->current_endpoints().size() < 3 && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(watching->current_endpoints().size(), 3u);

  // Written before the watch is created, at or after its start revision:
  // delivered from history.
  const int64_t start = Put(watching.get(), "w/before", "0");
  ASSERT_GT(start, 0);
  Put(watching.get(), "unwatched", "x");
  Delivered got;
  etcdserverpb::WatchCreateRequest req;
  req.set_key("w/");
  req.set_range_end(PrefixEnd("w/"));
  req.set_start_revision(start);
  absl::StatusOr<std::unique_ptr<client::Watcher>> w = watching->Watch(
      req, [&](const etcdserverpb::WatchResponse& r) { return got.Add(r); });
  ASSERT_TRUE(w.ok()) << w.status();

  // The writer uses only the other members: a write in flight on a killed
  // member is ambiguous, and the writer is not what this test is about.
  const std::string on = (*w)->endpoint();
  int victim = -1;
  std::vector<std::string> others;
  for (int i = 0; i < cluster.size(); ++i) {
    if (cluster.member(i).endpoint() == on) {
      victim = i;
    } else {
      others.push_back(cluster.member(i).endpoint());
    }
  }
  ASSERT_GE(victim, 0) << "the watch is on " << on;
  client::ClientOptions wo;
  wo.endpoints = others;
  wo.auto_sync_interval = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<client::Client>> writer =
      client::Client::Create(wo);
  ASSERT_TRUE(writer.ok());
  // Writes (puts, deletes, a two-key txn) go on while the member is killed.
  std::atomic<bool> stop{false};
  std::atomic<int64_t> last_write{start};
  std::thread load([&] {
    for (int i = 0; !stop.load(); ++i) {
      int64_t rev;
      if (i % 7 == 6) {
        etcdserverpb::TxnRequest txn;
        auto* a = txn.add_success()->mutable_request_put();
        a->set_key(absl::StrCat("w/txn/", i, "/a"));
        a->set_value("a");
        auto* b = txn.add_success()->mutable_request_put();
        b->set_key(absl::StrCat("w/txn/", i, "/b"));
        b->set_value("b");
        absl::StatusOr<etcdserverpb::TxnResponse> r = (*writer)->Txn(txn);
        rev = r.ok() ? r->header().revision() : 0;
      } else if (i % 5 == 4) {
        etcdserverpb::DeleteRangeRequest del;
        del.set_key(absl::StrCat("w/", i - 1));
        absl::StatusOr<etcdserverpb::DeleteRangeResponse> r =
            (*writer)->DeleteRange(del);
        rev = r.ok() ? r->header().revision() : 0;
      } else {
        etcdserverpb::PutRequest put;
        put.set_key(absl::StrCat("w/", i));
        put.set_value(absl::StrCat(i));
        absl::StatusOr<etcdserverpb::PutResponse> r = (*writer)->Put(put);
        rev = r.ok() ? r->header().revision() : 0;
      }
      // A write in flight when the leader is killed may fail either way
      // ("Socket closed" relayed by the member that forwarded it); the
      // history read below says what happened, and is what is compared.
      if (rev > 0) last_write = rev;
    }
  });
  auto wait_delivered = [&](int64_t revision) {
    for (absl::Time until = absl::Now() + absl::Seconds(30);
         got.LastRevision() < revision && absl::Now() < until;) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    return got.LastRevision() >= revision;
  };
  ASSERT_TRUE(wait_delivered(start + 20));

  cluster.process(victim).Signal(SIGKILL);
  ASSERT_TRUE(cluster.process(victim).Wait(absl::Seconds(10)).ok());
  const int64_t killed_at = last_write.load();
  // The watch moves and keeps delivering what is written after the kill.
  ASSERT_TRUE(wait_delivered(killed_at + 30))
      << "the watch stopped at " << got.LastRevision() << " after the kill at "
      << killed_at;
  stop = true;
  load.join();
  const int64_t end = last_write.load();
  ASSERT_TRUE(wait_delivered(end));
  EXPECT_GE((*w)->streams(), 2);
  EXPECT_NE((*w)->endpoint(), on);
  (*w)->Cancel();
  EXPECT_TRUE((*w)->Wait(absl::Seconds(10)).ok());

  const int survivor = victim == 0 ? 1 : 0;
  absl::StatusOr<std::vector<mvccpb::Event>> history = ReadHistory(
      cluster.member(survivor).endpoint(), "w/", PrefixEnd("w/"), start, end);
  ASSERT_TRUE(history.ok()) << history.status();
  std::vector<std::string> want, have;
  for (const mvccpb::Event& e : *history) want.push_back(EventLine(e));
  {
    absl::MutexLock lock(&got.mu);
    EXPECT_TRUE(got.problems.empty()) << got.problems.front();
    for (const mvccpb::Event& e : got.events) {
      if (e.kv().mod_revision() <= end) have.push_back(EventLine(e));
    }
  }
  EXPECT_GT(want.size(), 50u);
  ASSERT_EQ(have.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(have[i], want[i]) << "event " << i;
  }
}

TEST(ClientWatchTest, CompactedStartRevision_IsEtcdsCompactedError) {
  LocalCluster cluster(3, "cwatch-compact");
  ASSERT_TRUE(cluster.StartAll().ok());
  ASSERT_NE(cluster.WaitForLeader(absl::Seconds(30)), 0u);
  std::unique_ptr<client::Client> c = NewClient(cluster.endpoints());
  ASSERT_NE(c, nullptr);
  const int64_t first = Put(c.get(), "k", "1");
  Put(c.get(), "k", "2");
  const int64_t third = Put(c.get(), "k", "3");
  etcdserverpb::CompactionRequest compact;
  compact.set_revision(third);
  compact.set_physical(true);
  // Answered once the member the client uses has applied the compaction
  // (a follower holds the leader's answer until then), so a watch there
  // from before it is refused.
  ASSERT_TRUE(c->Compact(compact).ok());
  etcdserverpb::WatchCreateRequest req;
  req.set_key("k");
  req.set_start_revision(first);
  absl::StatusOr<std::unique_ptr<client::Watcher>> w =
      c->Watch(req, [](const etcdserverpb::WatchResponse&) { return true; });
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(w.status().message(),
            "etcdserver: mvcc: required revision has been compacted");

  // From the compaction revision on, it works; "from now" starts after
  // the current revision.
  req.set_start_revision(third);
  std::atomic<int> seen{0};
  w = c->Watch(req, [&](const etcdserverpb::WatchResponse& r) {
    seen += r.events_size();
    return true;
  });
  ASSERT_TRUE(w.ok()) << w.status();
  req.set_start_revision(0);
  Delivered now;
  absl::StatusOr<std::unique_ptr<client::Watcher>> from_now = c->Watch(
      req, [&](const etcdserverpb::WatchResponse& r) { return now.Add(r); });
  ASSERT_TRUE(from_now.ok()) << from_now.status();
  EXPECT_EQ((*from_now)->next_revision(), third + 1);
  const int64_t fourth = Put(c.get(), "k", "4");
  for (absl::Time until = absl::Now() + absl::Seconds(10);
       (seen < 2 || now.LastRevision() < fourth) && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(seen.load(), 2);  // k=3 and k=4
  absl::MutexLock lock(&now.mu);
  ASSERT_EQ(now.events.size(), 1u);
  EXPECT_EQ(EventLine(now.events[0]), absl::StrCat("PUT k=4 @", fourth));
}

}  // namespace
}  // namespace lockd::testing
