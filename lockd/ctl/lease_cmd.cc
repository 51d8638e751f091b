// lockctl lease grant/revoke/timetolive/list/keep-alive: etcdctl's lease
// commands, arguments and simple output (ids in hex), plus -w json (as
// etcdctl prints each response) and -w table.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "lockd/client/client.h"
#include "lockd/ctl/command.h"
#include "lockd/ctl/output.h"
#include "lockd/util/flags.h"

namespace lockd::ctl {

namespace {

using Args = std::vector<std::string>;

// etcdctl prints most lease responses (-w json) as its Go client's structs:
// the header's fields inline, then the client's own field names. This
// builds the same object from the header and the other `fields`.
std::string JsonObject(const etcdserverpb::ResponseHeader& h,
                       const std::string& fields) {
  const std::string header = ToJson(h);  // {...}, unset fields left out
  const std::string head = header.substr(1, header.size() - 2);
  return absl::StrCat("{", head, head.empty() ? "" : ",", fields, "}");
}

std::string Hex(int64_t id) {
  return absl::StrFormat("%016x", static_cast<uint64_t>(id));
}

bool ParseId(const std::string& s, int64_t* id) {
  uint64_t v;
  // etcd's ids are positive int64s.
  if (!absl::SimpleHexAtoi(s, &v) || v > uint64_t{INT64_MAX}) {
    Fail(absl::StrCat("bad lease ID arg (", s, "), expecting ID in Hex"));
    return false;
  }
  *id = static_cast<int64_t>(v);
  return true;
}

absl::StatusOr<std::unique_ptr<client::Client>> Connect(
    const CommandContext& g) {
  client::ClientOptions o;
  o.endpoints = g.endpoints;
  o.dial_timeout = g.dial_timeout;
  o.call_timeout = g.command_timeout;
  o.tls = g.tls;
  return client::Client::Create(o);
}

void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::printf("%s", RenderTable(header, rows).c_str());
}

int Grant(const CommandContext& g, client::Client& c, const Args& args) {
  if (args.size() != 1) return Fail("lease grant command needs TTL argument");
  int64_t ttl;
  if (!absl::SimpleAtoi(args[0], &ttl)) {
    return Fail(absl::StrCat("bad TTL (", args[0], ")"));
  }
  etcdserverpb::LeaseGrantRequest req;
  req.set_ttl(ttl);
  auto r = c.LeaseGrant(req);
  if (!r.ok()) {
    return Fail(ErrorWithHint(absl::Status(
        r.status().code(),
        absl::StrCat("failed to grant lease (", r.status().message(), ")"))));
  }
  if (g.write_out == "json") {
    std::printf(
        "%s\n",
        JsonObject(r->header(),
                   absl::StrCat("\"ID\":", r->id(), ",\"TTL\":", r->ttl(),
                                ",\"Error\":", JsonString(r->error())))
            .c_str());
  } else if (g.write_out == "table") {
    PrintTable({"ID", "TTL"}, {{Hex(r->id()), absl::StrCat(r->ttl())}});
  } else {
    std::printf("lease %s granted with TTL(%llds)\n", Hex(r->id()).c_str(),
                static_cast<long long>(r->ttl()));
  }
  return 0;
}

int Revoke(const CommandContext& g, client::Client& c, const Args& args) {
  if (args.size() != 1) return Fail("lease revoke command needs 1 argument");
  etcdserverpb::LeaseRevokeRequest req;
  int64_t id;
  if (!ParseId(args[0], &id)) return 1;
  req.set_id(id);
  auto r = c.LeaseRevoke(req);
  if (!r.ok()) {
    return Fail(
        absl::StrCat("failed to revoke lease (", r.status().message(), ")"));
  }
  if (g.write_out == "json") {
    std::printf("%s\n", ToJson(*r).c_str());
  } else if (g.write_out == "table") {
    PrintTable({"ID", "REVISION"},
               {{Hex(id), absl::StrCat(r->header().revision())}});
  } else {
    std::printf("lease %s revoked\n", Hex(id).c_str());
  }
  return 0;
}

int TimeToLive(const CommandContext& g, client::Client& c, const Args& in) {
  bool keys = false;
  FlagSet fs("lockctl lease timetolive", "");
  fs.Bool("keys", &keys, "Get keys attached to this lease.");
  std::vector<const char*> argv = {"lockctl"};
  for (const std::string& a : in) argv.push_back(a.c_str());
  if (absl::Status s = fs.Parse(static_cast<int>(argv.size()), argv.data());
      !s.ok()) {
    return Fail(ErrorWithHint(s));
  }
  const Args& args = fs.args();
  if (args.size() != 1) {
    return Fail("lease timetolive command needs lease ID as argument");
  }
  etcdserverpb::LeaseTimeToLiveRequest req;
  int64_t id;
  if (!ParseId(args[0], &id)) return 1;
  req.set_id(id);
  req.set_keys(keys);
  auto r = c.LeaseTimeToLive(req);
  if (!r.ok()) return Fail(ErrorWithHint(r.status()));
  if (g.write_out == "json") {
    std::string key_list = "null";
    if (r->keys_size() > 0) {
      std::vector<std::string> quoted;
      for (const std::string& k : r->keys()) {
        quoted.push_back(absl::StrCat("\"", absl::Base64Escape(k), "\""));
      }
      key_list = absl::StrCat("[", absl::StrJoin(quoted, ","), "]");
    }
    std::printf(
        "%s\n",
        JsonObject(r->header(),
                   absl::StrCat("\"id\":", r->id(), ",\"ttl\":", r->ttl(),
                                ",\"granted-ttl\":", r->grantedttl(),
                                ",\"keys\":", key_list))
            .c_str());
    return 0;
  }
  std::vector<std::string> key_list(r->keys().begin(), r->keys().end());
  if (g.write_out == "table") {
    std::vector<std::string> header = {"ID", "GRANTED TTL", "REMAINING"};
    std::vector<std::string> row = {Hex(r->id()), absl::StrCat(r->grantedttl()),
                                    absl::StrCat(r->ttl())};
    if (keys) {
      header.push_back("KEYS");
      row.push_back(absl::StrJoin(key_list, ","));
    }
    PrintTable(header, {row});
    return 0;
  }
  if (r->ttl() == -1) {
    std::printf("lease %s already expired\n", Hex(r->id()).c_str());
    return 0;
  }
  std::string text =
      absl::StrFormat("lease %s granted with TTL(%ds), remaining(%ds)",
                      Hex(r->id()), r->grantedttl(), r->ttl());
  if (keys) {
    absl::StrAppend(&text, ", attached keys([", absl::StrJoin(key_list, " "),
                    "])");
  }
  std::printf("%s\n", text.c_str());
  return 0;
}

int List(const CommandContext& g, client::Client& c, const Args& args) {
  if (!args.empty()) return Fail("lease list takes no arguments");
  auto r = c.LeaseLeases();
  if (!r.ok()) return Fail(ErrorWithHint(r.status()));
  if (g.write_out == "json") {
    std::vector<std::string> leases;
    for (const auto& l : r->leases()) {
      leases.push_back(absl::StrCat("{\"id\":", l.id(), "}"));
    }
    std::printf(
        "%s\n",
        JsonObject(r->header(), absl::StrCat("\"leases\":[",
                                             absl::StrJoin(leases, ","), "]"))
            .c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& l : r->leases()) rows.push_back({Hex(l.id())});
  if (g.write_out == "table") {
    PrintTable({"ID"}, rows);
    return 0;
  }
  std::printf("found %d leases\n", r->leases_size());
  for (const auto& row : rows) std::printf("%s\n", row[0].c_str());
  return 0;
}

int KeepAlive(const CommandContext& g, client::Client& c, const Args& in) {
  bool once = false;
  FlagSet fs("lockctl lease keep-alive", "");
  fs.Bool("once", &once, "Renew the lease a single time, then exit.");
  std::vector<const char*> argv = {"lockctl"};
  for (const std::string& a : in) argv.push_back(a.c_str());
  if (absl::Status s = fs.Parse(static_cast<int>(argv.size()), argv.data());
      !s.ok()) {
    return Fail(ErrorWithHint(s));
  }
  const Args& args = fs.args();
  if (args.size() != 1) {
    return Fail("lease keep-alive command needs lease ID as argument");
  }
  int64_t id;
  if (!ParseId(args[0], &id)) return 1;
  absl::Status s =
      c.LeaseKeepAlive(id, [&](const etcdserverpb::LeaseKeepAliveResponse& r) {
        if (g.write_out == "json") {
          std::printf("%s\n",
                      JsonObject(r.header(), absl::StrCat("\"ID\":", r.id(),
                                                          ",\"TTL\":", r.ttl()))
                          .c_str());
        } else if (g.write_out == "table") {
          PrintTable({"ID", "TTL"}, {{Hex(r.id()), absl::StrCat(r.ttl())}});
        } else {
          std::printf("lease %s keepalived with TTL(%lld)\n",
                      Hex(r.id()).c_str(), static_cast<long long>(r.ttl()));
        }
        std::fflush(stdout);
        return !once;
      });
  if (s.ok()) return 0;
  if (!once && absl::IsNotFound(s)) {
    // As etcdctl: the stream of renewals ended because the lease is gone.
    std::printf("lease %s expired or revoked.\n", Hex(id).c_str());
    return 0;
  }
  return Fail(ErrorWithHint(s));
}

}  // namespace

int RunLeaseCommand(const std::string& command, const CommandContext& g,
                    const std::vector<std::string>& in) {
  auto c = Connect(g);
  if (!c.ok()) return Fail(ErrorWithHint(c.status()));
  if (command == "grant") return Grant(g, **c, in);
  if (command == "revoke") return Revoke(g, **c, in);
  if (command == "timetolive") return TimeToLive(g, **c, in);
  if (command == "list") return List(g, **c, in);
  if (command == "keep-alive") return KeepAlive(g, **c, in);
  return Fail(absl::StrCat("unknown lease command \"", command, "\""));
}

}  // namespace lockd::ctl
