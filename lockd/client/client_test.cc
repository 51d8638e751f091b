// The client's decision rules, against in-process gRPC servers that answer
// as a lockd member would in situations a real cluster cannot produce on
// demand (a refusal before proposing, an ambiguous timeout, a member list
// with learners and unstarted members). Syncing against a real cluster is
// tested in tests/integration/resize_test.cc.
#include "lockd/client/client.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace lockd::client {
namespace {

// A scripted member: Put answers the queued statuses first, then OK; Range
// answers OK; MemberList answers `members`.
class ScriptedMember final : public etcdserverpb::KV::Service,
                             public etcdserverpb::Cluster::Service {
 public:
  ScriptedMember() {
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(static_cast<etcdserverpb::KV::Service*>(this));
    b.RegisterService(static_cast<etcdserverpb::Cluster::Service*>(this));
    server_ = b.BuildAndStart();
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  ~ScriptedMember() override { server_->Shutdown(); }

  const std::string& address() const { return address_; }
  void QueuePut(grpc::Status s) {
    absl::MutexLock lock(&mu_);
    put_script_.push_back(s);
  }
  int puts() {
    absl::MutexLock lock(&mu_);
    return puts_;
  }
  int ranges() {
    absl::MutexLock lock(&mu_);
    return ranges_;
  }
  void SetMembers(etcdserverpb::MemberListResponse m) {
    absl::MutexLock lock(&mu_);
    members_ = std::move(m);
  }

  grpc::Status Put(grpc::ServerContext*, const etcdserverpb::PutRequest*,
                   etcdserverpb::PutResponse*) override {
    absl::MutexLock lock(&mu_);
    ++puts_;
    if (put_script_.empty()) return grpc::Status::OK;
    grpc::Status s = put_script_.front();
    put_script_.pop_front();
    return s;
  }
  grpc::Status Range(grpc::ServerContext*, const etcdserverpb::RangeRequest*,
                     etcdserverpb::RangeResponse*) override {
    absl::MutexLock lock(&mu_);
    ++ranges_;
    return grpc::Status::OK;
  }
  grpc::Status MemberList(grpc::ServerContext*,
                          const etcdserverpb::MemberListRequest*,
                          etcdserverpb::MemberListResponse* resp) override {
    absl::MutexLock lock(&mu_);
    *resp = members_;
    return grpc::Status::OK;
  }

 private:
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  absl::Mutex mu_;
  std::deque<grpc::Status> put_script_ ABSL_GUARDED_BY(mu_);
  int puts_ ABSL_GUARDED_BY(mu_) = 0;
  int ranges_ ABSL_GUARDED_BY(mu_) = 0;
  etcdserverpb::MemberListResponse members_ ABSL_GUARDED_BY(mu_);
};

ClientOptions Options(std::vector<std::string> endpoints) {
  ClientOptions o;
  o.endpoints = std::move(endpoints);
  o.dial_timeout = absl::Milliseconds(500);
  o.call_timeout = absl::Seconds(2);
  o.auto_sync_interval = absl::ZeroDuration();
  return o;
}

// An address nothing listens on: a port the kernel handed out and we gave
// back at once.
std::string DeadEndpoint() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

void AddMember(etcdserverpb::MemberListResponse* r, uint64_t id,
               const std::string& client_address, bool learner) {
  etcdserverpb::Member* m = r->add_members();
  m->set_id(id);
  m->set_name(absl::StrCat("m", id));
  m->add_peerurls(absl::StrCat("http://127.0.0.1:", 1000 + id));
  if (!client_address.empty()) {
    m->add_clienturls("http://" + client_address);
  }
  m->set_islearner(learner);
}

TEST(ClientTest, Create_RejectsBadOptions) {
  EXPECT_TRUE(absl::IsInvalidArgument(Client::Create(Options({})).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      Client::Create(Options({"unix://lockd.sock:1"})).status()));
  ClientOptions no_deadline = Options({"127.0.0.1:1"});
  no_deadline.call_timeout = absl::ZeroDuration();
  EXPECT_TRUE(absl::IsInvalidArgument(Client::Create(no_deadline).status()));
}

TEST(ClientTest, Create_TlsAsEtcdctlDecides) {
  // https:// endpoints, or any TLS file, turn TLS on for every endpoint.
  EXPECT_FALSE(UsesTls({}, {"127.0.0.1:1", "http://127.0.0.1:2"}));
  EXPECT_TRUE(UsesTls({}, {"127.0.0.1:1", "https://127.0.0.1:2"}));
  TlsOptions ca_only;
  ca_only.ca_file = "ca.crt";
  EXPECT_TRUE(UsesTls(ca_only, {"127.0.0.1:1"}));
  EXPECT_EQ(*NormalizeEndpoint("https://127.0.0.1:2379/"), "127.0.0.1:2379");

  // A TLS client to a plaintext server is created (the files are fine) but
  // cannot connect.
  EXPECT_TRUE(Client::Create(Options({"https://127.0.0.1:1"})).ok());
  ClientOptions missing = Options({"127.0.0.1:1"});
  missing.tls.ca_file = "/nonexistent/ca.crt";
  absl::Status s = Client::Create(missing).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("cannot read --cacert /nonexistent/ca.crt"),
            absl::string_view::npos)
      << s;
  ClientOptions cert_only = Options({"127.0.0.1:1"});
  cert_only.tls.cert_file = "client.crt";
  EXPECT_TRUE(absl::IsInvalidArgument(Client::Create(cert_only).status()));
}

TEST(ClientTest, Put_RetriedOnlyWhenRefusedBeforeProposing) {
  ScriptedMember a;
  // Five refusals in a row are retried after pauses of 50, 100, ... 800 ms,
  // each jittered by up to +50%: up to 2.3 s, beyond the usual 2 s.
  ClientOptions options = Options({a.address()});
  options.call_timeout = absl::Seconds(30);
  auto c = Client::Create(options);
  ASSERT_TRUE(c.ok());
  a.QueuePut(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: no leader"));
  a.QueuePut(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: leader changed"));
  a.QueuePut(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "leadership transfer to 5 in progress"));
  // gRPC's own answer when the channel had no connection to send on (a
  // member killed just before the call); scripted here by the server.
  a.QueuePut(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "failed to connect to all addresses; last error: "
                          "UNKNOWN: Connection refused"));
  // gRPC's answer for a call that reached a server shutting down its
  // listener but no handler.
  a.QueuePut(grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED"));
  etcdserverpb::PutRequest put;
  put.set_key("k");
  EXPECT_TRUE((*c)->Put(put).ok());
  EXPECT_EQ(a.puts(), 6);

  // The write may have been applied: never sent twice.
  a.QueuePut(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: request timed out"));
  absl::StatusOr<etcdserverpb::PutResponse> r = (*c)->Put(put);
  EXPECT_TRUE(absl::IsUnavailable(r.status()));
  EXPECT_EQ(r.status().message(), "etcdserver: request timed out");
  EXPECT_EQ(a.puts(), 7);
}

TEST(ClientTest, FailedEndpointGoesToTheBack) {
  ScriptedMember live;
  const std::string dead = DeadEndpoint();
  auto c = Client::Create(Options({dead, live.address()}));
  ASSERT_TRUE(c.ok());
  etcdserverpb::RangeRequest get;
  get.set_key("k");
  ASSERT_TRUE((*c)->Range(get).ok());
  EXPECT_EQ((*c)->current_endpoints(),
            (std::vector<std::string>{live.address(), dead}));
  // Later calls go straight to the live member, without waiting on the
  // dead one.
  const absl::Time start = absl::Now();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*c)->Range(get).ok());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
  EXPECT_EQ(live.ranges(), 6);
}

TEST(ClientTest, NoEndpointAnswers_FailsByTheDeadline) {
  ClientOptions o = Options({DeadEndpoint(), DeadEndpoint()});
  o.call_timeout = absl::Seconds(1);
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  etcdserverpb::RangeRequest get;
  get.set_key("k");
  const absl::Time start = absl::Now();
  absl::Status s = (*c)->Range(get).status();
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_GE(took, absl::Milliseconds(900));
  // One dial timeout of slack: the last attempt may start just before the
  // deadline but is bounded by it.
  EXPECT_LT(took, absl::Seconds(2));
}

TEST(ClientTest, Sync_TakesStartedVotersOnly_AndForgetsRemoved) {
  ScriptedMember a, b;
  etcdserverpb::MemberListResponse list;
  AddMember(&list, 1, a.address(), false);
  AddMember(&list, 2, b.address(), false);
  AddMember(&list, 3, "127.0.0.1:9", true);  // a learner
  AddMember(&list, 4, "", false);            // not started yet
  a.SetMembers(list);
  b.SetMembers(list);
  auto c = Client::Create(Options({a.address()}));
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Sync().ok());
  std::vector<std::string> now = (*c)->current_endpoints();
  EXPECT_EQ(std::set<std::string>(now.begin(), now.end()),
            (std::set<std::string>{a.address(), b.address()}));

  // `a` is removed: the list forgets it.
  etcdserverpb::MemberListResponse after;
  AddMember(&after, 2, b.address(), false);
  a.SetMembers(after);
  b.SetMembers(after);
  ASSERT_TRUE((*c)->Sync().ok());
  EXPECT_EQ((*c)->current_endpoints(), std::vector<std::string>{b.address()});
  // The configured endpoints (for per-endpoint calls) stay as given.
  EXPECT_EQ((*c)->endpoints(), std::vector<std::string>{a.address()});

  // A list without client URLs changes nothing.
  b.SetMembers(etcdserverpb::MemberListResponse());
  EXPECT_TRUE(absl::IsFailedPrecondition((*c)->Sync()));
  EXPECT_EQ((*c)->current_endpoints(), std::vector<std::string>{b.address()});
}

TEST(ClientTest, AutoSync_LearnsMembersWithoutAnyCall) {
  ScriptedMember a, b;
  etcdserverpb::MemberListResponse list;
  AddMember(&list, 1, a.address(), false);
  AddMember(&list, 2, b.address(), false);
  a.SetMembers(list);
  ClientOptions o = Options({a.address()});
  o.auto_sync_interval = absl::Milliseconds(50);
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((*c)->current_endpoints().size() < 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ((*c)->current_endpoints().size(), 2u);
}

}  // namespace
}  // namespace lockd::client
