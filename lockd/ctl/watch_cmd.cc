// lockctl watch. Prints like etcdctl: per event its type, then the previous
// key/value (with --prev-kv), then the key and value, one per line; with
// -w json one JSON WatchResponse per line.
//
// The watch survives its member going away: it reconnects to the next
// endpoint and resumes from the revision after the last one it printed (or
// was told by a progress notification), so nothing is printed twice or
// missed, as long as that revision has not been compacted meanwhile.
#include "lockd/ctl/watch_cmd.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "lockd/client/client.h"
#include "lockd/ctl/command.h"
#include "lockd/ctl/output.h"
#include "lockd/util/flags.h"

namespace lockd::ctl {
namespace {

void PrintEvents(const etcdserverpb::WatchResponse& r) {
  for (const mvccpb::Event& ev : r.events()) {
    std::printf("%s\n", ev.type() == mvccpb::Event::DELETE ? "DELETE" : "PUT");
    if (ev.has_prev_kv()) {
      std::printf("%s\n%s\n", ev.prev_kv().key().c_str(),
                  ev.prev_kv().value().c_str());
    }
    std::printf("%s\n%s\n", ev.kv().key().c_str(), ev.kv().value().c_str());
  }
}

enum class StreamEnd { kRetry, kFatal };

}  // namespace

int WatchCommand(const std::string& endpoints_flag,
                 const std::string& write_out, absl::Duration dial_timeout,
                 const client::TlsOptions& tls,
                 const std::vector<std::string>& in) {
  bool prefix = false, prev_kv = false, progress_notify = false;
  int64_t rev = 0;
  FlagSet fs("lockctl watch", "");
  fs.Bool("prefix", &prefix, "Watch every key that starts with KEY.");
  fs.Int64("rev", &rev, "First revision to report (history from there on).");
  fs.Bool("prev-kv", &prev_kv,
          "Print each changed key's value from before the change too.");
  fs.Bool("progress-notify", &progress_notify,
          "Ask the member for progress reports while nothing changes.");
  std::vector<const char*> argv = {"lockctl"};
  for (const std::string& a : in) argv.push_back(a.c_str());
  if (absl::Status s = fs.Parse(static_cast<int>(argv.size()), argv.data());
      !s.ok()) {
    return Fail(ErrorWithHint(s));
  }
  const std::vector<std::string> args = fs.args();
  if (args.empty() || args.size() > 2) {
    return Fail(
        "watch takes a key and an optional range end: lockctl watch KEY "
        "[RANGE_END]");
  }
  if (prefix && args.size() == 2) {
    return Fail("`range_end` and `--prefix` are mutually exclusive");
  }
  std::vector<std::string> endpoints;
  const std::vector<std::string> raw_endpoints =
      absl::StrSplit(endpoints_flag, ',', absl::SkipEmpty());
  for (const std::string& raw : raw_endpoints) {
    absl::StatusOr<std::string> e = client::NormalizeEndpoint(raw);
    if (!e.ok()) return Fail(ErrorWithHint(e.status()));
    endpoints.push_back(*e);
  }
  if (endpoints.empty()) return Fail("no endpoints given");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      client::ChannelCredentialsFor(tls, raw_endpoints);
  if (!credentials.ok()) return Fail(ErrorWithHint(credentials.status()));

  etcdserverpb::WatchRequest create;
  auto* c = create.mutable_create_request();
  c->set_key(args[0]);
  if (args.size() == 2) c->set_range_end(args[1]);
  if (prefix) c->set_range_end(PrefixEnd(args[0]));
  c->set_prev_kv(prev_kv);
  c->set_progress_notify(progress_notify);

  // The next revision to ask for when (re)creating the watch; 0 until the
  // first response tells us where the watch stands.
  int64_t next_revision = rev;
  std::mt19937 rng(std::random_device{}());
  absl::Duration backoff = absl::Milliseconds(100);
  for (size_t attempt = 0;; ++attempt) {
    const std::string& endpoint = endpoints[attempt % endpoints.size()];
    auto channel = grpc::CreateChannel(endpoint, *credentials);
    if (!channel->WaitForConnected(
            absl::ToChronoTime(absl::Now() + dial_timeout))) {
      std::fprintf(stderr, "cannot reach %s; trying the next endpoint\n",
                   endpoint.c_str());
    } else {
      auto stub = etcdserverpb::Watch::NewStub(channel);
      grpc::ClientContext ctx;
      auto stream = stub->Watch(&ctx);
      c->set_start_revision(next_revision);
      StreamEnd end = StreamEnd::kRetry;
      if (stream->Write(create)) {
        etcdserverpb::WatchResponse r;
        while (stream->Read(&r)) {
          backoff = absl::Milliseconds(100);
          if (r.canceled()) {
            std::string reason = r.cancel_reason();
            if (r.compact_revision() != 0) {
              reason = "etcdserver: mvcc: required revision has been compacted";
            }
            std::fprintf(stderr, "watch was canceled (%s)\n", reason.c_str());
            end = StreamEnd::kFatal;
            break;
          }
          if (r.created()) {
            if (next_revision == 0) next_revision = r.header().revision() + 1;
            continue;
          }
          if (r.events_size() > 0) {
            next_revision =
                r.events(r.events_size() - 1).kv().mod_revision() + 1;
          } else {
            // A progress notification: everything up to it was sent.
            next_revision = std::max(next_revision, r.header().revision() + 1);
          }
          if (write_out == "json") {
            std::printf("%s\n", ToJson(r).c_str());
          } else {
            PrintEvents(r);
          }
          std::fflush(stdout);
        }
      }
      if (end == StreamEnd::kFatal) {
        ctx.TryCancel();
        return Fail("watch is canceled by the server");
      }
      grpc::Status st = stream->Finish();
      std::fprintf(stderr, "watch stream on %s ended (%s); resuming at %lld\n",
                   endpoint.c_str(), st.error_message().c_str(),
                   static_cast<long long>(next_revision));
    }
    // Jittered backoff so many watchers do not reconnect in lockstep.
    absl::SleepFor(backoff * std::uniform_real_distribution<>(0.5, 1.0)(rng));
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

}  // namespace lockd::ctl
