#include "raft/transport/transport.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "raft/transport/convert.h"

namespace lockd::raft {
namespace {

// Collects delivered messages; can reject a peer.
class Inbox : public MessageHandler {
 public:
  absl::Status CheckPeer(uint64_t from) override {
    absl::MutexLock lock(&mu_);
    if (from == rejected_) {
      return absl::PermissionDeniedError(
          "the member has been permanently removed from the cluster");
    }
    return absl::OkStatus();
  }
  void Deliver(std::vector<Message> messages) override {
    absl::MutexLock lock(&mu_);
    for (Message& m : messages) got_.push_back(std::move(m));
  }
  // Waits until at least `n` messages arrived.
  bool WaitFor(size_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return got_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  std::vector<Message> got() {
    absl::MutexLock lock(&mu_);
    return got_;
  }
  void Reject(uint64_t id) {
    absl::MutexLock lock(&mu_);
    rejected_ = id;
  }

 private:
  absl::Mutex mu_;
  std::vector<Message> got_ ABSL_GUARDED_BY(mu_);
  uint64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
};

// A member's peer side: a transport and the gRPC server hosting it.
struct Member {
  Member(uint64_t id, uint64_t cluster, int port = 0) {
    TransportOptions o;
    o.cluster_id = cluster;
    o.self_id = id;
    o.backoff_min = absl::Milliseconds(10);
    o.backoff_max = absl::Milliseconds(100);
    o.queue_messages_max = 64;
    transport = std::make_unique<Transport>(o, &inbox);
    grpc::ServerBuilder b;
    b.AddListeningPort(absl::StrCat("127.0.0.1:", port),
                       grpc::InsecureServerCredentials(), &bound_port);
    b.RegisterService(transport->service());
    server = b.BuildAndStart();
  }
  ~Member() {
    transport->Stop();
    server->Shutdown(std::chrono::system_clock::now());
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", bound_port); }

  Inbox inbox;
  std::unique_ptr<Transport> transport;
  std::unique_ptr<grpc::Server> server;
  int bound_port = 0;
};

Message App(uint64_t from, uint64_t to, uint64_t index) {
  Message m;
  m.type = MessageType::kApp;
  m.from = from;
  m.to = to;
  m.term = 3;
  m.index = index;
  Entry e;
  e.index = index + 1;
  e.term = 3;
  e.data = "entry-" + std::to_string(index);
  m.entries.push_back(e);
  return m;
}

// Polls `done` until it holds or `timeout` passes (for state the transport
// reaches on its own threads without a notification).
bool Eventually(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

TEST(ConvertTest, ToProtoFromProto_RoundTripsEveryType) {
  for (int t = 0; t < kNumMessageTypes; ++t) {
    Message m = App(1, 2, 7);
    m.type = static_cast<MessageType>(t);
    m.reject = true;
    m.reject_hint = 4;
    m.context = "ctx";
    m.snapshot.metadata.index = 9;
    m.snapshot.metadata.term = 2;
    m.snapshot.metadata.conf_state.voters = {1, 2};
    m.snapshot.data = "img";
    raftpb::Message p;
    ToProto(m, &p);
    Message back;
    ASSERT_TRUE(FromProto(p, &back).ok());
    EXPECT_EQ(static_cast<int>(back.type), t);
    EXPECT_EQ(back.entries[0].data, "entry-7");
    EXPECT_EQ(back.snapshot.metadata.conf_state,
              m.snapshot.metadata.conf_state);
    EXPECT_EQ(back.context, "ctx");
  }
  raftpb::Message bad;
  bad.set_type(static_cast<raftpb::Message::Type>(99));
  Message out;
  EXPECT_FALSE(FromProto(bad, &out).ok());
}

TEST(TransportTest, Send_DeliversInOrderBothWays) {
  Member a(1, 77), b(2, 77);
  a.transport->AddPeer(2, b.address());
  b.transport->AddPeer(1, a.address());
  ASSERT_TRUE(Eventually([&] { return a.transport->Stats(2).connected; },
                         absl::Seconds(20)));
  // Rounds within the queue bound (64), as raft's flow control keeps it.
  for (int round = 0; round < 10; ++round) {
    std::vector<Message> batch;
    for (int i = 0; i < 50; ++i) batch.push_back(App(1, 2, round * 50 + i));
    a.transport->Send(std::move(batch));
    ASSERT_TRUE(b.inbox.WaitFor((round + 1) * 50, absl::Seconds(20)));
  }
  b.transport->Send({App(2, 1, 0)});
  ASSERT_TRUE(a.inbox.WaitFor(1, absl::Seconds(20)));
  std::vector<Message> got = b.inbox.got();
  ASSERT_EQ(got.size(), 500u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].index, i);
    EXPECT_EQ(got[i].from, 1u);
    EXPECT_EQ(got[i].entries[0].data, "entry-" + std::to_string(i));
  }
  // The sender counts a batch once Write() returns, which can be after the
  // receiver already has it.
  EXPECT_TRUE(Eventually([&] { return a.transport->Stats(2).sent == 500u; },
                         absl::Seconds(20)));
  EXPECT_EQ(a.transport->Stats(2).dropped, 0u);
}

TEST(TransportTest, Stream_OtherClusterAndRemovedMembersRejected) {
  Member b(2, 77);
  Member stranger(1, 99);  // another cluster
  stranger.transport->AddPeer(2, b.address());
  stranger.transport->Send({App(1, 2, 0)});
  Member removed(3, 77);
  b.inbox.Reject(3);
  removed.transport->AddPeer(2, b.address());
  removed.transport->Send({App(3, 2, 0)});
  // A legitimate peer still gets through.
  Member a(4, 77);
  a.transport->AddPeer(2, b.address());
  a.transport->Send({App(4, 2, 0)});
  ASSERT_TRUE(b.inbox.WaitFor(1, absl::Seconds(20)));
  // The refused senders see their streams end at their next write (raft
  // heartbeats guarantee one) and report the peer.
  auto reported = [](Member& m, uint64_t self) {
    return Eventually(
        [&] {
          m.transport->Send({App(self, 2, 1)});
          for (uint64_t id : m.transport->TakeUnreachable()) {
            if (id == 2) return true;
          }
          return false;
        },
        absl::Seconds(20));
  };
  EXPECT_TRUE(reported(stranger, 1));
  EXPECT_TRUE(reported(removed, 3));
  for (const Message& m : b.inbox.got()) EXPECT_EQ(m.from, 4u);
}

TEST(TransportTest, Send_PeerDownIsReportedThenRecovers) {
  Member a(1, 77);
  // Reserve a port, then free it so nothing listens there yet.
  int port;
  {
    Member placeholder(2, 77);
    port = placeholder.bound_port;
  }
  a.transport->AddPeer(2, absl::StrCat("127.0.0.1:", port));
  a.transport->Send({App(1, 2, 0)});
  EXPECT_TRUE(Eventually(
      [&] {
        auto u = a.transport->TakeUnreachable();
        return !u.empty() && u[0] == 2;
      },
      absl::Seconds(20)));
  // Bounded: with the peer down, the queue never holds more than its cap.
  std::vector<Message> flood;
  for (int i = 0; i < 1000; ++i) flood.push_back(App(1, 2, i));
  a.transport->Send(std::move(flood));
  EXPECT_GE(a.transport->Stats(2).dropped, 1000u - 64u);

  Member b(2, 77, port);
  ASSERT_EQ(b.bound_port, port);
  // Raft retransmits; so does this test, until something gets through.
  EXPECT_TRUE(Eventually(
      [&] {
        a.transport->Send({App(1, 2, 5000)});
        return !b.inbox.got().empty();
      },
      absl::Seconds(20)));
}

TEST(TransportTest, Send_StreamBreaksThenReconnects) {
  Member a(1, 77);
  auto b = std::make_unique<Member>(2, 77);
  const int port = b->bound_port;
  a.transport->AddPeer(2, b->address());
  a.transport->Send({App(1, 2, 0)});
  ASSERT_TRUE(b->inbox.WaitFor(1, absl::Seconds(20)));
  ASSERT_TRUE(a.transport->Stats(2).connected);
  // The peer goes away under an open stream: sends fail, the peer is
  // reported unreachable, and the stream is closed.
  b.reset();
  EXPECT_TRUE(Eventually(
      [&] {
        a.transport->Send({App(1, 2, 1)});
        for (uint64_t id : a.transport->TakeUnreachable()) {
          if (id == 2) return true;
        }
        return false;
      },
      absl::Seconds(20)));
  EXPECT_TRUE(Eventually([&] { return !a.transport->Stats(2).connected; },
                         absl::Seconds(20)));
  // Back on the same address: a new stream carries messages again.
  b = std::make_unique<Member>(2, 77, port);
  ASSERT_EQ(b->bound_port, port);
  EXPECT_TRUE(Eventually(
      [&] {
        a.transport->Send({App(1, 2, 7000)});
        for (const Message& m : b->inbox.got()) {
          if (m.index == 7000) return true;
        }
        return false;
      },
      absl::Seconds(20)));
  EXPECT_GE(a.transport->Stats(2).connects, 2u);
}

}  // namespace
}  // namespace lockd::raft
