#include "kv/watch/hub.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace lockd::kv {
namespace {

class NoLeases : public LeaseOracle {
 public:
  bool LeaseExists(int64_t) const override { return false; }
};

// A received event, flattened for comparisons.
struct Ev {
  int64_t revision;
  bool del;
  std::string key, value, prev_value;
  bool has_prev;
  bool operator==(const Ev& o) const {
    return revision == o.revision && del == o.del && key == o.key &&
           value == o.value && prev_value == o.prev_value &&
           has_prev == o.has_prev;
  }
};

std::ostream& operator<<(std::ostream& os, const Ev& e) {
  return os << e.revision << (e.del ? " DEL " : " PUT ") << e.key << "="
            << e.value << (e.has_prev ? " prev=" + e.prev_value : "");
}

// Each test runs twice: with every batch handed to the dispatcher thread,
// and with small batches dispatched by Publish itself (the default).
class HubTest : public ::testing::TestWithParam<size_t> {
 protected:
  void SetUp() override { Open({}); }

  // `as_given`: keep options.inline_dispatch_max instead of the parameter.
  void Open(WatchOptions options, bool as_given = false) {
    if (!as_given) options.inline_dispatch_max = GetParam();
    hub_.reset();
    store_.reset();
    static int n = 0;
    std::string dir =
        std::string(std::getenv("TEST_TMPDIR")) + "/hub" + std::to_string(n++);
    auto s = MvccStore::Open(dir);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    hub_ = std::make_unique<WatchHub>(store_.get(), options);
  }
  void TearDown() override {
    for (auto& s : streams_) s->Close();
    streams_.clear();
    hub_.reset();
  }

  std::shared_ptr<WatchStream> NewStream() {
    streams_.push_back(hub_->OpenStream([] {}));
    return streams_.back();
  }

  // One committed batch of writes; each op is "put k v", "del k", or a txn
  // "txn k1 v1 k2 v2 ..." (puts in one revision).
  void Apply(const std::vector<std::vector<std::string>>& ops,
             bool publish = true) {
    auto b = store_->BeginApply(&leases_);
    for (const auto& op : ops) {
      if (op[0] == "put") {
        etcdserverpb::PutRequest req;
        req.set_key(op[1]);
        req.set_value(op[2]);
        etcdserverpb::PutResponse resp;
        ASSERT_TRUE(b->Put(req, &resp).ok());
      } else if (op[0] == "del") {
        etcdserverpb::DeleteRangeRequest req;
        req.set_key(op[1]);
        etcdserverpb::DeleteRangeResponse resp;
        ASSERT_TRUE(b->DeleteRange(req, &resp).ok());
      } else {
        etcdserverpb::TxnRequest req;
        for (size_t i = 1; i + 1 < op.size(); i += 2) {
          auto* put = req.add_success()->mutable_request_put();
          put->set_key(op[i]);
          put->set_value(op[i + 1]);
        }
        etcdserverpb::TxnResponse resp;
        ASSERT_TRUE(b->Txn(req, &resp).ok());
      }
    }
    std::vector<mvccpb::Event> events = b->TakeEvents();
    ASSERT_TRUE(b->Commit(++index_).ok());
    if (publish) hub_->Publish(std::move(events));
  }

  void Compact(int64_t revision) {
    auto b = store_->BeginApply(&leases_);
    etcdserverpb::CompactionRequest req;
    req.set_revision(revision);
    etcdserverpb::CompactionResponse resp;
    ASSERT_TRUE(b->Compact(req, &resp).ok());
    ASSERT_TRUE(b->Commit(++index_).ok());
  }

  // Outputs of `stream` until `done` says enough (or 10 s pass).
  std::vector<WatchOutput> Drain(
      WatchStream* stream,
      const std::function<bool(const std::vector<WatchOutput>&)>& done) {
    std::vector<WatchOutput> out;
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!done(out) && absl::Now() < deadline) {
      if (stream->Take(&out) == 0) absl::SleepFor(absl::Milliseconds(1));
    }
    return out;
  }

  static std::vector<Ev> Events(const std::vector<WatchOutput>& outs,
                                int64_t watch_id) {
    std::vector<Ev> evs;
    for (const WatchOutput& o : outs) {
      if (o.kind != WatchOutput::Kind::kEvents || o.watch_id != watch_id) {
        continue;
      }
      for (uint32_t i : o.indices) {
        // Decode from the serialized form the service sends.
        mvccpb::Event ev;
        const std::string& bytes = (o.prev_kv && !o.batch->with_prev[i].empty())
                                       ? o.batch->with_prev[i]
                                       : o.batch->plain[i];
        EXPECT_TRUE(ev.ParseFromString(bytes));
        evs.push_back({ev.kv().mod_revision(),
                       ev.type() == mvccpb::Event::DELETE, ev.kv().key(),
                       ev.kv().value(), ev.prev_kv().value(),
                       ev.has_prev_kv()});
      }
    }
    return evs;
  }

  static size_t EventCount(const std::vector<WatchOutput>& outs) {
    size_t n = 0;
    for (const auto& o : outs) n += o.indices.size();
    return n;
  }

  // The committed history as the store has it (what a watcher from rev 1 on
  // [key, end) must see).
  std::vector<Ev> StoredHistory(const std::string& key, const std::string& end,
                                bool prev_kv) {
    std::vector<Ev> evs;
    int64_t from = 1;
    while (true) {
      std::vector<mvccpb::Event> batch;
      int64_t next;
      EXPECT_TRUE(store_->History(from, 1000, &batch, &next).ok());
      if (batch.empty()) break;
      for (const auto& ev : batch) {
        const std::string& k = ev.kv().key();
        if (k < key || (!end.empty() && k >= end)) continue;
        Ev e{ev.kv().mod_revision(),
             ev.type() == mvccpb::Event::DELETE,
             k,
             ev.kv().value(),
             "",
             false};
        bool create = !e.del && ev.kv().create_revision() == e.revision;
        if (prev_kv && !create) {
          auto prev = store_->GetAt(k, e.revision - 1);
          if (prev.ok()) {
            e.has_prev = true;
            e.prev_value = prev->value();
          }
        }
        evs.push_back(e);
      }
      from = next;
    }
    return evs;
  }

  NoLeases leases_;
  uint64_t index_ = 0;
  std::unique_ptr<MvccStore> store_;
  std::unique_ptr<WatchHub> hub_;
  std::vector<std::shared_ptr<WatchStream>> streams_;
};

TEST_P(HubTest, Create_deliversInRevisionOrderAndGroupsTxns) {
  hub_->Start();
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "a/";
  spec.range_end = "a0";
  absl::StatusOr<int64_t> id = s->Create(spec);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, 0);
  Apply({{"put", "a/1", "x"}, {"put", "b", "y"}});
  Apply({{"txn", "a/2", "p", "a/3", "q", "zz", "r"}});
  Apply({{"del", "a/1"}});
  auto outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 4; });
  ASSERT_GE(outs.size(), 2u);
  EXPECT_EQ(outs[0].kind, WatchOutput::Kind::kCreated);
  std::vector<Ev> got = Events(outs, 0);
  // An empty store is at revision 1; each write request makes one more.
  std::vector<Ev> want = {{2, false, "a/1", "x", "", false},
                          {4, false, "a/2", "p", "", false},
                          {4, false, "a/3", "q", "", false},
                          {5, true, "a/1", "", "", false}};
  EXPECT_EQ(got, want);
  // The txn's two events came in one output.
  for (const auto& o : outs) {
    if (o.kind != WatchOutput::Kind::kEvents) continue;
    for (uint32_t i : o.indices) {
      if (o.batch->events[i].kv().mod_revision() == 4) {
        EXPECT_EQ(o.indices.size(), 2u);
      }
    }
  }
}

TEST_P(HubTest, Create_filtersAndSingleKeyAndFromKey) {
  hub_->Start();
  auto s = NewStream();
  WatchSpec one;
  one.key = "k";
  one.no_delete = true;
  one.prev_kv = true;
  ASSERT_TRUE(s->Create(one).ok());
  WatchSpec from;
  from.key = "m";
  from.range_end = std::string(1, '\0');
  from.no_put = true;
  ASSERT_TRUE(s->Create(from).ok());
  Apply({{"put", "k", "1"}, {"put", "k2", "x"}, {"put", "z", "z"}});
  Apply({{"put", "k", "2"}});
  Apply({{"del", "k"}});
  Apply({{"del", "z"}});
  auto outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 3; });
  EXPECT_EQ(Events(outs, 0),
            (std::vector<Ev>{{2, false, "k", "1", "", false},
                             {5, false, "k", "2", "1", true}}));
  EXPECT_EQ(Events(outs, 1), (std::vector<Ev>{{7, true, "z", "", "", false}}));
}

TEST_P(HubTest, Create_watchIdsAsEtcd) {
  hub_->Start();
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "k";
  spec.watch_id = 1;
  ASSERT_EQ(*s->Create(spec), 1);
  absl::StatusOr<int64_t> dup = s->Create(spec);
  EXPECT_EQ(dup.status(), ErrWatcherDuplicateID());
  spec.watch_id = 0;
  EXPECT_EQ(*s->Create(spec), 0);
  EXPECT_EQ(*s->Create(spec), 2);  // skips the client's 1
  spec.range_end = "a";            // key >= range_end
  EXPECT_EQ(s->Create(spec).status(), ErrEmptyWatcherRange());
}

TEST_P(HubTest, StartRevision_replaysHistoryWithPrevKv) {
  hub_->Start();
  Apply({{"put", "k", "1"}});
  Apply({{"put", "k", "2"}});
  Apply({{"del", "k"}});
  while (hub_->revision() < 4) absl::SleepFor(absl::Milliseconds(1));
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "k";
  spec.start_revision = 1;
  spec.prev_kv = true;
  ASSERT_TRUE(s->Create(spec).ok());
  Apply({{"put", "k", "3"}});
  auto outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 4; });
  EXPECT_EQ(Events(outs, 0), StoredHistory("k", "k\x01", true));
  EXPECT_EQ(Events(outs, 0).size(), 4u);
  EXPECT_EQ(Events(outs, 0)[2], (Ev{4, true, "k", "", "2", true}));
}

TEST_P(HubTest, NoWatchers_revisionMovesWithoutTheDispatcher) {
  WatchOptions options;
  options.inline_dispatch_max = 0;
  Open(options, /*as_given=*/true);
  // The dispatcher is not running: with no watcher, publishing moves the
  // hub's revision on by itself.
  Apply({{"put", "a", "1"}});
  Apply({{"txn", "a", "2", "b", "1"}});
  EXPECT_EQ(hub_->revision(), 3);
  // With a watcher, batches go through the dispatcher again.
  auto s = NewStream();
  WatchSpec from_now;
  from_now.key = "a";
  ASSERT_TRUE(s->Create(from_now).ok());
  WatchSpec history;
  history.key = "a";
  history.range_end = "c";
  history.start_revision = 2;
  ASSERT_TRUE(s->Create(history).ok());
  Apply({{"put", "a", "3"}});
  EXPECT_EQ(hub_->revision(), 3);
  hub_->Start();
  auto outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 5; });
  // From now: revision 4 only, once. From 2: all of it, once.
  EXPECT_EQ(Events(outs, 0),
            (std::vector<Ev>{{4, false, "a", "3", "", false}}));
  EXPECT_EQ(Events(outs, 1),
            (std::vector<Ev>{{2, false, "a", "1", "", false},
                             {3, false, "a", "2", "", false},
                             {3, false, "b", "1", "", false},
                             {4, false, "a", "3", "", false}}));
  EXPECT_EQ(hub_->revision(), 4);
}

// A small batch that finds the dispatcher idle is matched by Publish
// itself: the stream has it when Publish returns, with the dispatcher not
// even running. A larger one waits for the dispatcher.
TEST_P(HubTest, Inline_smallBatchIsOnTheStreamWhenPublishReturns) {
  WatchOptions options;
  options.inline_dispatch_max = 2;  // events times watchers
  Open(options, /*as_given=*/true);
  auto s = NewStream();
  WatchSpec a;
  a.key = "a";
  ASSERT_TRUE(s->Create(a).ok());
  std::vector<WatchOutput> outs;
  s->Take(&outs);  // the created answer
  outs.clear();
  Apply({{"put", "a", "1"}, {"put", "b", "1"}});  // 2 events x 1 watcher
  ASSERT_GT(s->Take(&outs), 0u);
  EXPECT_EQ(Events(outs, 0),
            (std::vector<Ev>{{2, false, "a", "1", "", false}}));
  EXPECT_EQ(hub_->revision(), 3);
  // 3 events x 1 watcher: for the dispatcher, which is not running yet.
  Apply({{"put", "a", "2"}, {"put", "b", "2"}, {"put", "c", "2"}});
  outs.clear();
  EXPECT_EQ(s->Take(&outs), 0u);
  EXPECT_EQ(hub_->revision(), 3);
  // Behind a queued batch, even a small one waits its turn: order holds.
  Apply({{"put", "a", "3"}});
  EXPECT_EQ(s->Take(&outs), 0u);
  hub_->Start();
  outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 2; });
  EXPECT_EQ(Events(outs, 0),
            (std::vector<Ev>{{4, false, "a", "2", "", false},
                             {7, false, "a", "3", "", false}}));
}

TEST_P(HubTest, StartRevision_belowCompactionIsCompacted) {
  hub_->Start();
  for (int i = 0; i < 5; ++i) Apply({{"put", "k", absl::StrCat(i)}});
  Compact(4);
  // Until the hub has dispatched them, revisions count as future ones.
  while (hub_->revision() < 6) absl::SleepFor(absl::Milliseconds(1));
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "k";
  spec.start_revision = 2;
  ASSERT_TRUE(s->Create(spec).ok());
  auto outs = Drain(s.get(), [](const auto& o) { return o.size() >= 2; });
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[0].kind, WatchOutput::Kind::kCreated);
  EXPECT_EQ(outs[1].kind, WatchOutput::Kind::kCompacted);
  EXPECT_EQ(outs[1].compact_revision, 4);
  EXPECT_EQ(s->watcher_count(), 0u);
  // At the compaction point itself history is still there.
  spec.start_revision = 4;
  ASSERT_TRUE(s->Create(spec).ok());
  outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 3; });
  EXPECT_EQ(Events(outs, 1).size(), 3u);  // revisions 4, 5, 6
}

TEST_P(HubTest, Cancel_stopsDeliveryAndAnswers) {
  hub_->Start();
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "k";
  ASSERT_TRUE(s->Create(spec).ok());
  EXPECT_TRUE(s->Cancel(0));
  EXPECT_FALSE(s->Cancel(0));
  Apply({{"put", "k", "1"}});
  // A second watcher shows when the put has been dispatched.
  ASSERT_TRUE(s->Create(spec).ok());
  Apply({{"put", "k", "2"}});
  auto outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 1; });
  EXPECT_TRUE(Events(outs, 0).empty());
  ASSERT_GE(outs.size(), 2u);
  EXPECT_EQ(outs[1].kind, WatchOutput::Kind::kCanceled);
  ASSERT_FALSE(Events(outs, 1).empty());
  EXPECT_EQ(Events(outs, 1).back().value, "2");
}

// A slow stream (tiny buffer, drained rarely) under a random load: every
// watcher still sees exactly the stored history, via catch-up from storage.
TEST_P(HubTest, Overflow_catchesUpWithoutLossOrDuplicates) {
  WatchOptions options;
  options.stream_buffer_bytes_max = 512;
  options.catchup_events_max = 7;
  options.catchup_bytes_max = 300;
  options.hub_queue_batches_max = 3;
  Open(options);
  hub_->Start();
  auto s = NewStream();
  WatchSpec prefix;
  prefix.key = "p/";
  prefix.range_end = "p0";
  prefix.prev_kv = true;
  ASSERT_TRUE(s->Create(prefix).ok());
  WatchSpec key;
  key.key = "p/3";
  ASSERT_TRUE(s->Create(key).ok());
  std::mt19937 rng(7);
  std::vector<WatchOutput> outs;
  for (int i = 0; i < 400; ++i) {
    std::string k = absl::StrCat("p/", rng() % 5);
    std::string k2 = absl::StrCat("p/", 5 + rng() % 3);
    switch (rng() % 4) {
      case 0:
        Apply({{"del", k}});
        break;
      case 1:
        Apply({{"txn", k, absl::StrCat(i), k2, "t", "q", "x"}});
        break;
      default:
        Apply({{"put", k, std::string(rng() % 50, 'v')}, {"put", "o", "x"}});
    }
    if (rng() % 50 == 0) s->Take(&outs);
  }
  Apply({{"put", "p/3", "last"}});
  const int64_t last = store_->revision();
  auto more = Drain(s.get(), [&](const std::vector<WatchOutput>& o) {
    std::vector<Ev> a = Events(o, 0), b = Events(o, 1);
    return !a.empty() && a.back().revision == last && !b.empty() &&
           b.back().revision == last;
  });
  for (auto& o : more) outs.push_back(std::move(o));
  EXPECT_EQ(Events(outs, 0), StoredHistory("p/", "p0", true));
  EXPECT_EQ(Events(outs, 1), StoredHistory("p/3", "p/3\x01", false));
  // Back in the synced set: a new write arrives without catch-up.
  Apply({{"put", "p/3", "after"}});
  auto after = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 2; });
  EXPECT_EQ(EventCount(after), 2u);
}

// Batches published before the dispatcher runs overflow the hub's own queue.
TEST_P(HubTest, HubQueueOverflow_resyncsFromStorage) {
  WatchOptions options;
  options.hub_queue_batches_max = 2;
  options.inline_dispatch_max = 0;  // every batch queues for the dispatcher
  Open(options, /*as_given=*/true);
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "a";
  spec.range_end = "z";
  ASSERT_TRUE(s->Create(spec).ok());
  for (int i = 0; i < 20; ++i) Apply({{"put", absl::StrCat("k", i % 3), "v"}});
  hub_->Start();
  Apply({{"put", "k9", "v"}});
  auto outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 21; });
  EXPECT_EQ(Events(outs, 0), StoredHistory("a", "z", false));
}

TEST_P(HubTest, OnStoreReplaced_watchersCatchUpFromStorage) {
  hub_->Start();
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "k";
  ASSERT_TRUE(s->Create(spec).ok());
  Apply({{"put", "k", "1"}});
  auto outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 1; });
  // As a snapshot install would: new data appears without being published.
  {
    auto b = store_->BeginApply(&leases_);
    etcdserverpb::PutRequest req;
    req.set_key("k");
    req.set_value("2");
    etcdserverpb::PutResponse resp;
    ASSERT_TRUE(b->Put(req, &resp).ok());
    ASSERT_TRUE(b->Commit(++index_).ok());
  }
  hub_->OnStoreReplaced();
  Apply({{"put", "k", "3"}});
  auto more = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 2; });
  for (auto& o : more) outs.push_back(std::move(o));
  EXPECT_EQ(Events(outs, 0), StoredHistory("k", "k\x01", false));
}

// A snapshot install that swaps the MvccStore object: the new store holds
// the old history plus more; watchers continue from it without a gap.
TEST_P(HubTest, OnStoreReplaced_newStoreObject) {
  hub_->Start();
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "k";
  spec.range_end = "l";
  ASSERT_TRUE(s->Create(spec).ok());
  const std::vector<std::vector<std::string>> before = {{"put", "k1", "a"},
                                                        {"put", "k2", "b"}};
  Apply(before);
  auto outs = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 2; });
  // The replacement: the same history, then writes this member never
  // applied itself.
  std::unique_ptr<MvccStore> old = std::move(store_);
  // A directory of its own for each parameter's run.
  auto opened = MvccStore::Open(std::string(std::getenv("TEST_TMPDIR")) +
                                "/replacement" + std::to_string(GetParam()));
  ASSERT_TRUE(opened.ok());
  store_ = *std::move(opened);
  index_ = 0;
  Apply(before, /*publish=*/false);
  Apply({{"del", "k1"}}, /*publish=*/false);
  Apply({{"put", "k3", "c"}}, /*publish=*/false);
  hub_->OnStoreReplaced(store_.get());
  old.reset();
  Apply({{"put", "k1", "d"}});
  auto more = Drain(s.get(), [](const auto& o) { return EventCount(o) >= 3; });
  for (auto& o : more) outs.push_back(std::move(o));
  EXPECT_EQ(Events(outs, 0), StoredHistory("k", "l", false));
  EXPECT_EQ(Events(outs, 0).size(), 5u);
}

TEST_P(HubTest, Progress_reportsDeliveredRevision) {
  WatchOptions options;
  options.progress_interval = absl::Milliseconds(100);
  Open(options);
  hub_->Start();
  Apply({{"put", "x", "1"}});
  auto s = NewStream();
  WatchSpec spec;
  spec.key = "k";
  spec.progress_notify = true;
  ASSERT_TRUE(s->Create(spec).ok());
  Apply({{"put", "x", "2"}});
  auto outs = Drain(s.get(), [](const std::vector<WatchOutput>& o) {
    for (const auto& x : o) {
      if (x.kind == WatchOutput::Kind::kProgress && x.revision == 3)
        return true;
    }
    return false;
  });
  ASSERT_GE(outs.size(), 2u);
  EXPECT_EQ(outs.back().kind, WatchOutput::Kind::kProgress);
  EXPECT_EQ(outs.back().watch_id, 0);
  s->RequestProgress();
  outs = Drain(s.get(), [](const auto& o) { return !o.empty(); });
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].watch_id, -1);
  EXPECT_EQ(outs[0].revision, 3);
}

INSTANTIATE_TEST_SUITE_P(Dispatch, HubTest, ::testing::Values(0, 256),
                         [](const auto& info) {
                           return info.param == 0 ? "DispatcherOnly"
                                                  : "InlineSmallBatches";
                         });

}  // namespace
}  // namespace lockd::kv
