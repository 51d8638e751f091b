// lockd-ceiling: a gRPC server that speaks the parts of the etcd v3 API the
// load generator drives (KV Put/Range/Txn, Lease grant and keep-alive) and
// answers at once, storing nothing. It is a measuring instrument, not a
// store: driven by lockd-bench on the same machine, it shows how many
// requests per second gRPC alone allows here, and what a call costs the
// server and the load generator in CPU, before any replication, disk or
// state. No real server can be faster than it on the same machine, so a
// throughput goal above its figure cannot be met here by any design.
//
// It uses the same gRPC library and callback API as lockd's client port, so
// its cost per call is the floor under lockd's own.
//
//   lockd-ceiling --listen=127.0.0.1:0   prints "listening on HOST:PORT"
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "lockd/util/flags.h"
#include "proto/etcdserverpb/rpc.grpc.pb.h"

namespace {

// The header every answer carries, as a member would fill it.
void FillHeader(etcdserverpb::ResponseHeader* h, int64_t revision) {
  h->set_cluster_id(0x1);
  h->set_member_id(0x2);
  h->set_revision(revision);
  h->set_raft_term(1);
}

// Answers a unary call with OK at once.
grpc::ServerUnaryReactor* AnswerNow(grpc::CallbackServerContext* ctx) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(grpc::Status::OK);
  return r;
}

class NullKv final : public etcdserverpb::KV::CallbackService {
 public:
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx,
                                const etcdserverpb::PutRequest* req,
                                etcdserverpb::PutResponse* resp) override {
    (void)req;
    FillHeader(resp->mutable_header(), ++revision_);
    return AnswerNow(ctx);
  }
  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* ctx,
                                  const etcdserverpb::RangeRequest* req,
                                  etcdserverpb::RangeResponse* resp) override {
    FillHeader(resp->mutable_header(), revision_.load());
    // One key found, as a single-key range over a loaded key space would.
    mvccpb::KeyValue* kv = resp->add_kvs();
    kv->set_key(req->key());
    kv->set_value(std::string(256, 'v'));
    kv->set_create_revision(1);
    kv->set_mod_revision(1);
    kv->set_version(1);
    resp->set_count(1);
    return AnswerNow(ctx);
  }
  grpc::ServerUnaryReactor* Txn(grpc::CallbackServerContext* ctx,
                                const etcdserverpb::TxnRequest* req,
                                etcdserverpb::TxnResponse* resp) override {
    const int64_t rev = ++revision_;
    FillHeader(resp->mutable_header(), rev);
    resp->set_succeeded(true);
    for (int i = 0; i < req->success_size(); ++i) {
      FillHeader(
          resp->add_responses()->mutable_response_put()->mutable_header(), rev);
    }
    return AnswerNow(ctx);
  }

 private:
  std::atomic<int64_t> revision_{1};
};

// Answers each keep-alive on its stream with the lease's full TTL.
class KeepAliveReactor final
    : public grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                                     etcdserverpb::LeaseKeepAliveResponse> {
 public:
  KeepAliveReactor() { StartRead(&req_); }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    resp_.Clear();
    FillHeader(resp_.mutable_header(), 1);
    resp_.set_id(req_.id());
    resp_.set_ttl(600);
    StartWrite(&resp_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    StartRead(&req_);
  }
  void OnDone() override { delete this; }

 private:
  etcdserverpb::LeaseKeepAliveRequest req_;
  etcdserverpb::LeaseKeepAliveResponse resp_;
};

class NullLease final : public etcdserverpb::Lease::CallbackService {
 public:
  grpc::ServerUnaryReactor* LeaseGrant(
      grpc::CallbackServerContext* ctx,
      const etcdserverpb::LeaseGrantRequest* req,
      etcdserverpb::LeaseGrantResponse* resp) override {
    FillHeader(resp->mutable_header(), 1);
    resp->set_id(req->id() != 0 ? req->id() : ++next_id_);
    resp->set_ttl(req->ttl());
    return AnswerNow(ctx);
  }
  grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                          etcdserverpb::LeaseKeepAliveResponse>*
  LeaseKeepAlive(grpc::CallbackServerContext* ctx) override {
    (void)ctx;
    return new KeepAliveReactor();
  }

 private:
  std::atomic<int64_t> next_id_{1000};
};

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  lockd::FlagSet flags("lockd-ceiling", "");
  flags.String("listen", &listen, "host:port to serve on (port 0: any free)");
  if (absl::Status s = flags.Parse(argc, argv); !s.ok()) {
    std::cerr << "lockd-ceiling: " << s.message() << "\n"
              << "usage: lockd-ceiling [flags]\n"
              << flags.Usage();
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << "usage: lockd-ceiling [flags]\n" << flags.Usage();
    return 0;
  }
  NullKv kv;
  NullLease lease;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&kv);
  builder.RegisterService(&lease);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "lockd-ceiling: cannot listen on " << listen
              << ": pick a free port, or use port 0\n";
    return 1;
  }
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::cout << "listening on " << host << ":" << port << std::endl;
  server->Wait();
  return 0;
}
