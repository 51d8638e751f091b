#include "tests/harness/history.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace lockd::testing {

std::string EventLine(const mvccpb::Event& e) {
  if (e.type() == mvccpb::Event::DELETE) {
    return absl::StrCat("DELETE ", e.kv().key(), " @", e.kv().mod_revision());
  }
  return absl::StrCat("PUT ", e.kv().key(), "=", e.kv().value(), " @",
                      e.kv().mod_revision());
}

absl::StatusOr<std::vector<mvccpb::Event>> ReadHistory(
    const std::string& endpoint, const std::string& key,
    const std::string& range_end, int64_t from_revision, int64_t to_revision,
    absl::Duration timeout) {
  std::vector<mvccpb::Event> out;
  if (to_revision < from_revision) return out;
  auto stub = etcdserverpb::Watch::NewStub(
      grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  auto stream = stub->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  req.mutable_create_request()->set_key(key);
  req.mutable_create_request()->set_range_end(range_end);
  req.mutable_create_request()->set_start_revision(from_revision);
  if (!stream->Write(req)) {
    return absl::UnavailableError(absl::StrCat("cannot watch on ", endpoint));
  }
  // Ends at the event at to_revision. (Progress requests cannot mark the
  // end: etcd 3.4 answers them at once with its current revision, whatever
  // the watcher has been sent.)
  etcdserverpb::WatchResponse resp;
  bool done = false;
  while (!done && stream->Read(&resp)) {
    if (resp.canceled()) {
      ctx.TryCancel();
      (void)stream->Finish();
      return resp.compact_revision() != 0
                 ? absl::OutOfRangeError(absl::StrCat("history compacted at ",
                                                      resp.compact_revision()))
                 : absl::AbortedError(resp.cancel_reason());
    }
    for (const mvccpb::Event& e : resp.events()) {
      if (e.kv().mod_revision() > to_revision) {
        done = true;
        break;
      }
      out.push_back(e);
      done = e.kv().mod_revision() == to_revision;
    }
  }
  ctx.TryCancel();
  grpc::Status s = stream->Finish();
  if (!done) {
    return s.ok() || s.error_code() == grpc::StatusCode::CANCELLED
               ? absl::DeadlineExceededError(
                     absl::StrCat("history up to ", to_revision,
                                  " not delivered by ", endpoint))
               : absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                              s.error_message());
  }
  return out;
}

}  // namespace lockd::testing
