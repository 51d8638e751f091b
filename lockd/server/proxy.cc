#include "lockd/server/proxy.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etcdserverpb/rpc.pb.h"
#include "lockd/util/log.h"
#include "lockd/version.h"

namespace lockd {
namespace {

constexpr char kRemovedError[] =
    "etcdserver: the member has been permanently removed from the cluster; "
    "use another endpoint";
constexpr char kStatusMethod[] = "/etcdserverpb.Maintenance/Status";

// Metadata a client library sets itself; everything else is the caller's
// and travels on.
bool Relayable(const std::string& key) {
  return !key.empty() && key[0] != ':' && !absl::StartsWith(key, "grpc-") &&
         key != "user-agent" && key != "content-type" && key != "te" &&
         key != "host";
}

bool Serialize(const google::protobuf::Message& m, grpc::ByteBuffer* out) {
  std::string bytes = m.SerializeAsString();
  grpc::Slice slice(bytes);
  *out = grpc::ByteBuffer(&slice, 1);
  return true;
}

}  // namespace

// One relayed call: the client's stream (this reactor) joined to a stream to
// a current member (`upstream_`).
//
// Upstream operations are started only while the upstream call cannot have
// finished: either an upstream read or write is outstanding, or a hold is
// taken. The write side holds from the start until the client half-closes,
// writing fails, or the member ends the call (its reads end: a watch it
// ended must reach the client even if the client never writes again); the
// read side holds between an upstream read and the next one while the
// message is written to the client. So OnDone of the upstream comes only
// once this side will start nothing more there, and the client is answered
// with the member's status then.
class RetiredProxy::Relay final : public grpc::ServerGenericBidiReactor {
 public:
  Relay(RetiredProxy* proxy, grpc::GenericCallbackServerContext* ctx)
      : proxy_(proxy), ctx_(ctx), upstream_(this) {
    if (proxy->closed_.load()) {
      upstream_done_ = true;
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, kRemovedError));
      return;
    }
    if (ctx->method() == kStatusMethod) {
      upstream_done_ = true;
      local_ = true;
      StartRead(&in_);
      return;
    }
    proxy->NoteClient(proxy->peer_of_(ctx->peer()));
    Target* target = proxy->Pick();
    if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
      upstream_ctx_.set_deadline(ctx->deadline());
    }
    for (const auto& [key, value] : ctx->client_metadata()) {
      std::string k(key.data(), key.size());
      if (Relayable(k)) {
        upstream_ctx_.AddMetadata(k, std::string(value.data(), value.size()));
      }
    }
    proxy->relayed_.fetch_add(1);
    target->stub->PrepareBidiStreamingCall(&upstream_ctx_, ctx->method(),
                                           grpc::StubOptions(), &upstream_);
    upstream_.AddHold();  // the write side, until the client half-closes
    {
      absl::MutexLock lock(&mu_);
      write_hold_ = true;
    }
    upstream_.StartRead(&up_in_);
    upstream_.StartCall();
    StartRead(&in_);
  }

  // Client -> member.
  void OnReadDone(bool ok) override {
    if (local_) {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
        return;
      }
      AnswerStatus();
      return;
    }
    bool had_hold, over;
    {
      absl::MutexLock lock(&mu_);
      had_hold = write_hold_;
      write_hold_ = false;
      over = upstream_reads_over_;
    }
    // Once the member has ended the call nothing more goes up; otherwise
    // the write (or half-close) keeps the call open in place of the hold.
    if (!over) {
      if (ok) {
        upstream_.StartWrite(&in_);
      } else {
        upstream_.StartWritesDone();
      }
    }
    if (had_hold) upstream_.RemoveHold();
  }
  void UpstreamWriteDone(bool ok) {
    if (!ok) return;  // the member ended the call; its status follows
    {
      absl::MutexLock lock(&mu_);
      if (upstream_reads_over_) return;  // no more reads from the client
      upstream_.AddHold();  // cannot run a reaction: safe under mu_
      write_hold_ = true;
    }
    StartRead(&in_);
  }

  // Member -> client.
  void UpstreamReadDone(bool ok) {
    if (!ok) {
      // The member ended the call (a watch it ended, an error, the end of
      // a unary answer). The write side's hold would keep OnDone, and so
      // the member's status, from the client until the client sends again,
      // which a watching client may never do: drop it now.
      bool had_hold;
      {
        absl::MutexLock lock(&mu_);
        upstream_reads_over_ = true;
        had_hold = write_hold_;
        write_hold_ = false;
      }
      if (had_hold) upstream_.RemoveHold();
      return;
    }
    upstream_.AddHold();
    StartWrite(&up_in_);
  }
  void OnWriteDone(bool ok) override {
    if (local_) return;
    if (ok) {
      upstream_.StartRead(&up_in_);
    } else {
      upstream_ctx_.TryCancel();  // the client went away
    }
    upstream_.RemoveHold();
  }

  void UpstreamDone(const grpc::Status& status) {
    Finish(status);
    bool last;
    {
      absl::MutexLock lock(&mu_);
      upstream_done_ = true;
      last = server_done_;
    }
    if (last) delete this;
  }
  void OnCancel() override {
    if (!local_) upstream_ctx_.TryCancel();
  }
  void OnDone() override {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      server_done_ = true;
      last = upstream_done_;
    }
    if (last) delete this;
  }

 private:
  class Upstream final
      : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Upstream(Relay* relay) : relay_(relay) {}
    void OnWriteDone(bool ok) override { relay_->UpstreamWriteDone(ok); }
    void OnReadDone(bool ok) override { relay_->UpstreamReadDone(ok); }
    void OnDone(const grpc::Status& s) override { relay_->UpstreamDone(s); }

   private:
    Relay* relay_;
  };

  void AnswerStatus() {
    etcdserverpb::StatusResponse resp;
    resp.mutable_header()->set_cluster_id(proxy_->config_->cluster_id);
    resp.mutable_header()->set_member_id(proxy_->config_->member_id);
    resp.set_version(kEtcdApiVersion);
    std::vector<std::string> addresses;
    for (const auto& t : proxy_->targets_) addresses.push_back(t->address);
    resp.add_errors(absl::StrCat(
        "this member was removed from the cluster; it relays calls to the "
        "current members (",
        absl::StrJoin(addresses, ","), "): update your endpoints"));
    Serialize(resp, &out_);
    StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
  }

  RetiredProxy* proxy_;
  grpc::GenericCallbackServerContext* ctx_;
  grpc::ClientContext upstream_ctx_;
  Upstream upstream_;
  grpc::ByteBuffer in_;     // client -> member
  grpc::ByteBuffer up_in_;  // member -> client
  grpc::ByteBuffer out_;    // local answers
  bool local_ = false;
  absl::Mutex mu_;
  bool upstream_done_ ABSL_GUARDED_BY(mu_) = false;
  bool server_done_ ABSL_GUARDED_BY(mu_) = false;
  // The write side's hold is taken (no client read is being written up).
  bool write_hold_ ABSL_GUARDED_BY(mu_) = false;
  // The member's side has ended: every upstream read from now fails.
  bool upstream_reads_over_ ABSL_GUARDED_BY(mu_) = false;
};

RetiredProxy::RetiredProxy(
    const ServerConfig* config, std::vector<Url> targets,
    std::shared_ptr<grpc::ChannelCredentials> tls_credentials,
    std::function<std::string(const std::string&)> peer_of)
    : config_(config), peer_of_(std::move(peer_of)) {
  for (const Url& url : targets) {
    auto t = std::make_unique<Target>();
    t->address = url.HostPort();
    t->channel = grpc::CreateChannel(
        t->address,
        url.https() ? tls_credentials : grpc::InsecureChannelCredentials());
    t->stub = std::make_unique<grpc::GenericStub>(t->channel);
    targets_.push_back(std::move(t));
  }
}

RetiredProxy::~RetiredProxy() = default;

grpc::ServerGenericBidiReactor* RetiredProxy::CreateReactor(
    grpc::GenericCallbackServerContext* ctx) {
  if (targets_.empty()) Close();
  return new Relay(this, ctx);
}

RetiredProxy::Target* RetiredProxy::Pick() {
  const size_t n = targets_.size();
  const size_t start = next_.fetch_add(1);
  // Prefer a member this proxy is connected to; a member that is down fails
  // one call and then loses its turn to connected ones.
  for (size_t i = 0; i < n; ++i) {
    Target* t = targets_[(start + i) % n].get();
    if (t->channel->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY) {
      return t;
    }
  }
  return targets_[start % n].get();
}

void RetiredProxy::NoteClient(const std::string& peer) {
  // "ipv4:127.0.0.1:54321": one line per host, not per connection.
  std::string host = peer.substr(0, peer.rfind(':'));
  {
    absl::MutexLock lock(&mu_);
    if (!clients_seen_.insert(host).second) return;
  }
  Logf(LogLevel::kWarning, "proxy",
       "client %s uses this removed member's endpoint; its calls are relayed "
       "to the current members. Update its endpoints.",
       host);
}

}  // namespace lockd
