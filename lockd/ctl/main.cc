// lockctl: the operator's command line for a lockd cluster (and anything
// speaking the etcd v3 API). Global flags, commands and output formats
// follow etcdctl's.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "kv/snapshot/archive.h"
#include "lockd/client/client.h"
#include "lockd/ctl/command.h"
#include "lockd/ctl/output.h"
#include "lockd/ctl/watch_cmd.h"
#include "lockd/util/flags.h"
#include "lockd/version.h"

namespace lockd::ctl {

namespace {

struct Globals {
  std::string endpoints = "127.0.0.1:2379";
  std::string write_out = "simple";
  absl::Duration dial_timeout = absl::Seconds(2);
  absl::Duration command_timeout = absl::Seconds(5);
  client::TlsOptions tls;
};

// etcd's errors already say what went wrong; add what to do for the common
// ones a new user meets.
int FailStatus(const absl::Status& s) { return Fail(ErrorWithHint(s)); }

absl::StatusOr<std::unique_ptr<client::Client>> Connect(const Globals& g) {
  client::ClientOptions o;
  o.endpoints = absl::StrSplit(g.endpoints, ',', absl::SkipEmpty());
  o.dial_timeout = g.dial_timeout;
  o.call_timeout = g.command_timeout;
  o.tls = g.tls;
  // Commands address the endpoints they were given (endpoint status, ...).
  o.auto_sync_interval = absl::ZeroDuration();
  return client::Client::Create(o);
}

using Args = std::vector<std::string>;

void PrintKvs(const etcdserverpb::RangeResponse& r, bool keys_only,
              bool value_only) {
  for (const auto& kv : r.kvs()) {
    if (!value_only) std::printf("%s\n", kv.key().c_str());
    if (!keys_only) std::printf("%s\n", kv.value().c_str());
    if (keys_only && !value_only) std::printf("\n");
  }
}

// KEY [RANGE_END] with --prefix / --from-key, as etcdctl's get and del take
// them. False (after printing the error) on bad arguments.
bool KeyRange(const char* command, const Args& args, bool prefix, bool from_key,
              std::string* key, std::string* range_end) {
  if (args.empty() || args.size() > 2) {
    Fail(absl::StrCat(command,
                      " takes a key and an optional range end: "
                      "lockctl ",
                      command, " KEY [RANGE_END]"));
    return false;
  }
  *key = args[0];
  if (args.size() == 2) *range_end = args[1];
  if (prefix) *range_end = PrefixEnd(args[0]);
  if (from_key) *range_end = std::string(1, '\0');
  return true;
}

// Connects, makes one call, and prints its response as JSON or with `print`.
template <typename Call, typename Print>
int CallAndPrint(const Globals& g, Call&& call, Print&& print) {
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  auto r = call(**c);
  if (!r.ok()) return FailStatus(r.status());
  if (g.write_out == "json") {
    std::printf("%s\n", ToJson(*r).c_str());
  } else {
    print(*r);
  }
  return 0;
}

struct GetPrint {
  bool keys_only = false;
  bool value_only = false;
  bool count_only = false;
};

// Parses `get` arguments into a request; false (after printing the error)
// on bad input.
bool BuildGet(const Args& in, etcdserverpb::RangeRequest* req,
              GetPrint* print) {
  bool prefix = false, from_key = false;
  int64_t rev = 0, limit = 0;
  std::string consistency = "l", sort_by = "", order = "";
  FlagSet fs("lockctl get", "");
  fs.Bool("prefix", &prefix, "Get keys with this prefix.");
  fs.Bool("from-key", &from_key, "Get keys >= the given key.");
  fs.Bool("keys-only", &print->keys_only, "Get only the keys.");
  fs.Bool("print-value-only", &print->value_only, "Print only the values.");
  fs.Bool("count-only", &print->count_only, "Get only the number of keys.");
  fs.Int64("rev", &rev, "Revision to read at (0: the latest).");
  fs.Int64("limit", &limit, "Maximum number of results.");
  fs.String("consistency", &consistency,
            "l (linearizable) or s (serializable).");
  fs.String("sort-by", &sort_by, "KEY, CREATE, MODIFY, VALUE or VERSION.");
  fs.String("order", &order, "ASCEND or DESCEND.");
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) return false;
  if (!KeyRange("get", args, prefix, from_key, req->mutable_key(),
                req->mutable_range_end())) {
    return false;
  }
  req->set_revision(rev);
  req->set_limit(limit);
  req->set_keys_only(print->keys_only);
  req->set_count_only(print->count_only);
  if (consistency == "s") {
    req->set_serializable(true);
  } else if (consistency != "l") {
    Fail("--consistency must be l or s");
    return false;
  }
  static const std::map<std::string, etcdserverpb::RangeRequest::SortTarget>
      kTargets = {{"KEY", etcdserverpb::RangeRequest::KEY},
                  {"CREATE", etcdserverpb::RangeRequest::CREATE},
                  {"MODIFY", etcdserverpb::RangeRequest::MOD},
                  {"VALUE", etcdserverpb::RangeRequest::VALUE},
                  {"VERSION", etcdserverpb::RangeRequest::VERSION}};
  if (!sort_by.empty()) {
    auto it = kTargets.find(sort_by);
    if (it == kTargets.end()) {
      Fail("bad --sort-by: use KEY, CREATE, MODIFY, VALUE or VERSION");
      return false;
    }
    req->set_sort_target(it->second);
    req->set_sort_order(etcdserverpb::RangeRequest::ASCEND);
  }
  if (order == "DESCEND") {
    req->set_sort_order(etcdserverpb::RangeRequest::DESCEND);
  } else if (order == "ASCEND") {
    req->set_sort_order(etcdserverpb::RangeRequest::ASCEND);
  } else if (!order.empty()) {
    Fail("bad --order: use ASCEND or DESCEND");
    return false;
  }
  return true;
}

void PrintGet(const etcdserverpb::RangeResponse& r, const GetPrint& print) {
  if (print.count_only) {
    std::printf("%lld\n", static_cast<long long>(r.count()));
  } else {
    PrintKvs(r, print.keys_only, print.value_only);
  }
}

int Get(const Globals& g, const Args& in) {
  etcdserverpb::RangeRequest req;
  GetPrint print;
  if (!BuildGet(in, &req, &print)) return 1;
  return CallAndPrint(
      g, [&](client::Client& c) { return c.Range(req); },
      [&](const etcdserverpb::RangeResponse& r) { PrintGet(r, print); });
}

bool BuildPut(const Args& in, etcdserverpb::PutRequest* req) {
  bool prev_kv = false, ignore_value = false, ignore_lease = false;
  std::string lease_hex;
  FlagSet fs("lockctl put", "");
  fs.Bool("prev-kv", &prev_kv, "Return the previous key-value pair.");
  fs.String("lease", &lease_hex, "Lease ID (hex) to attach the key to.");
  fs.Bool("ignore-value", &ignore_value, "Keep the current value.");
  fs.Bool("ignore-lease", &ignore_lease, "Keep the current lease.");
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) return false;
  if (args.size() != (ignore_value ? 1u : 2u)) {
    Fail("put takes a key and a value: lockctl put KEY VALUE");
    return false;
  }
  req->set_key(args[0]);
  if (!ignore_value) req->set_value(args[1]);
  req->set_prev_kv(prev_kv);
  req->set_ignore_value(ignore_value);
  req->set_ignore_lease(ignore_lease);
  if (!lease_hex.empty()) {
    uint64_t lease;
    if (!absl::SimpleHexAtoi(lease_hex, &lease)) {
      Fail("--lease takes a hexadecimal lease ID, e.g. 694d71ddacfda227");
      return false;
    }
    req->set_lease(static_cast<int64_t>(lease));
  }
  return true;
}

void PrintPut(const etcdserverpb::PutResponse& r) {
  std::printf("OK\n");
  if (r.has_prev_kv()) {
    std::printf("%s\n%s\n", r.prev_kv().key().c_str(),
                r.prev_kv().value().c_str());
  }
}

int Put(const Globals& g, const Args& in) {
  etcdserverpb::PutRequest req;
  if (!BuildPut(in, &req)) return 1;
  return CallAndPrint(
      g, [&](client::Client& c) { return c.Put(req); }, PrintPut);
}

bool BuildDel(const Args& in, etcdserverpb::DeleteRangeRequest* req) {
  bool prefix = false, prev_kv = false, from_key = false;
  FlagSet fs("lockctl del", "");
  fs.Bool("prefix", &prefix, "Delete keys with this prefix.");
  fs.Bool("from-key", &from_key, "Delete keys >= the given key.");
  fs.Bool("prev-kv", &prev_kv, "Return the deleted key-value pairs.");
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) return false;
  if (!KeyRange("del", args, prefix, from_key, req->mutable_key(),
                req->mutable_range_end())) {
    return false;
  }
  req->set_prev_kv(prev_kv);
  return true;
}

void PrintDel(const etcdserverpb::DeleteRangeResponse& r) {
  std::printf("%lld\n", static_cast<long long>(r.deleted()));
  for (const auto& kv : r.prev_kvs()) {
    std::printf("%s\n%s\n", kv.key().c_str(), kv.value().c_str());
  }
}

int Del(const Globals& g, const Args& in) {
  etcdserverpb::DeleteRangeRequest req;
  if (!BuildDel(in, &req)) return 1;
  return CallAndPrint(
      g, [&](client::Client& c) { return c.DeleteRange(req); }, PrintDel);
}

// Splits a line into words; double quotes group words and may contain
// backslash escapes, as etcdctl's txn lines do.
Args Words(const std::string& line) {
  Args out;
  std::string cur;
  bool in_word = false, quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '\\' && i + 1 < line.size()) {
        cur.push_back(line[++i]);
      } else if (c == '"') {
        quoted = false;
      } else {
        cur.push_back(c);
      }
    } else if (c == '"') {
      quoted = true;
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) out.push_back(cur);
      cur.clear();
      in_word = false;
    } else {
      cur.push_back(c);
      in_word = true;
    }
  }
  if (in_word) out.push_back(cur);
  return out;
}

// target("key") op "value", e.g. value("a") = "1", version("a") > "3".
bool ParseCompare(const std::string& line, etcdserverpb::Compare* cmp) {
  size_t lp = line.find('(');
  size_t rp = line.find(')', lp == std::string::npos ? 0 : lp);
  if (lp == std::string::npos || rp == std::string::npos) return false;
  std::string target = line.substr(0, lp);
  Args key = Words(line.substr(lp + 1, rp - lp - 1));
  Args rest = Words(line.substr(rp + 1));
  if (key.size() != 1 || rest.size() != 2) return false;
  static const std::map<std::string, etcdserverpb::Compare::CompareResult>
      kOps = {{"=", etcdserverpb::Compare::EQUAL},
              {"!=", etcdserverpb::Compare::NOT_EQUAL},
              {"<", etcdserverpb::Compare::LESS},
              {">", etcdserverpb::Compare::GREATER}};
  auto op = kOps.find(rest[0]);
  if (op == kOps.end()) return false;
  cmp->set_key(key[0]);
  cmp->set_result(op->second);
  const std::string& v = rest[1];
  int64_t n = 0;
  if (target == "val" || target == "value") {
    cmp->set_target(etcdserverpb::Compare::VALUE);
    cmp->set_value(v);
    return true;
  }
  if (!absl::SimpleAtoi(v, &n)) return false;
  if (target == "ver" || target == "version") {
    cmp->set_target(etcdserverpb::Compare::VERSION);
    cmp->set_version(n);
  } else if (target == "c" || target == "create") {
    cmp->set_target(etcdserverpb::Compare::CREATE);
    cmp->set_create_revision(n);
  } else if (target == "m" || target == "mod") {
    cmp->set_target(etcdserverpb::Compare::MOD);
    cmp->set_mod_revision(n);
  } else if (target == "lease") {
    cmp->set_target(etcdserverpb::Compare::LEASE);
    cmp->set_lease(n);
  } else {
    return false;
  }
  return true;
}

// Reads lines up to the next empty line (or the end of input).
std::vector<std::string> ReadSection() {
  std::vector<std::string> lines;
  char buf[64 * 1024];
  while (std::fgets(buf, sizeof(buf), stdin) != nullptr) {
    std::string line = std::string(absl::StripAsciiWhitespace(buf));
    if (line.empty()) break;
    lines.push_back(line);
  }
  return lines;
}

bool ParseOp(const std::string& line, etcdserverpb::RequestOp* op) {
  Args words = Words(line);
  if (words.size() < 2) return false;
  Args rest(words.begin() + 1, words.end());
  if (words[0] == "get") {
    GetPrint unused;
    return BuildGet(rest, op->mutable_request_range(), &unused);
  }
  if (words[0] == "put") return BuildPut(rest, op->mutable_request_put());
  if (words[0] == "del") {
    return BuildDel(rest, op->mutable_request_delete_range());
  }
  return false;
}

// Reads compares, then success ops, then failure ops from standard input,
// each section ending with an empty line, as etcdctl txn does.
int Txn(const Globals& g, const Args& in) {
  FlagSet fs("lockctl txn", "");
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) return 1;
  if (!args.empty())
    return Fail("txn takes no arguments; it reads standard input");
  const bool tty = isatty(STDIN_FILENO);
  etcdserverpb::TxnRequest req;
  if (tty) std::printf("compares:\n");
  for (const std::string& line : ReadSection()) {
    if (!ParseCompare(line, req.add_compare())) {
      return Fail(absl::StrCat("malformed comparison: ", line,
                               " (e.g. value(\"key\") = \"v\")"));
    }
  }
  for (auto* branch : {req.mutable_success(), req.mutable_failure()}) {
    if (tty) {
      std::printf(branch == req.mutable_success()
                      ? "\nsuccess requests (get, put, del):\n"
                      : "\nfailure requests (get, put, del):\n");
    }
    for (const std::string& line : ReadSection()) {
      if (!ParseOp(line, branch->Add())) {
        return Fail(absl::StrCat("invalid txn request: ", line));
      }
    }
  }
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  auto r = (*c)->Txn(req);
  if (!r.ok()) return FailStatus(r.status());
  if (g.write_out == "json") {
    std::printf("%s\n", ToJson(*r).c_str());
    return 0;
  }
  std::printf("%s\n", r->succeeded() ? "SUCCESS" : "FAILURE");
  const auto& ops = r->succeeded() ? req.success() : req.failure();
  for (int i = 0; i < r->responses_size(); ++i) {
    std::printf("\n");
    const etcdserverpb::ResponseOp& resp = r->responses(i);
    if (resp.has_response_put()) {
      PrintPut(resp.response_put());
    } else if (resp.has_response_delete_range()) {
      PrintDel(resp.response_delete_range());
    } else if (resp.has_response_range()) {
      GetPrint print;
      const auto& rr = ops.Get(i).request_range();
      print.keys_only = rr.keys_only();
      print.count_only = rr.count_only();
      PrintGet(resp.response_range(), print);
    }
  }
  return 0;
}

int Compaction(const Globals& g, const Args& in) {
  bool physical = false;
  FlagSet fs("lockctl compaction", "");
  fs.Bool("physical", &physical, "Wait until the space is reclaimed.");
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) return 1;
  int64_t rev;
  if (args.size() != 1 || !absl::SimpleAtoi(args[0], &rev)) {
    return Fail("compaction takes a revision: lockctl compaction REV");
  }
  etcdserverpb::CompactionRequest req;
  req.set_revision(rev);
  req.set_physical(physical);
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  auto r = (*c)->Compact(req);
  if (!r.ok()) return FailStatus(r.status());
  std::printf("compacted revision %lld\n", static_cast<long long>(rev));
  return 0;
}

// For `endpoint status/health`: the given endpoints, or with --cluster every
// member's client URLs as the member list names them.
// The endpoints of --endpoints, or with --cluster every member's client
// URLs. `more_flags` registers the command's other flags.
absl::StatusOr<std::unique_ptr<client::Client>> ConnectEndpoints(
    const Globals& g, const Args& in, const char* command,
    const std::function<void(FlagSet&)>& more_flags = {}) {
  FlagSet fs(command, "");
  bool cluster = false;
  fs.Bool("cluster", &cluster,
          "Use all endpoints from the cluster member list.");
  if (more_flags) more_flags(fs);
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) {
    return absl::InvalidArgumentError("bad flags");
  }
  if (!args.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(command,
                     " takes no arguments (endpoints come from "
                     "--endpoints, or --cluster)"));
  }
  if (!cluster) return Connect(g);
  auto seed = Connect(g);
  if (!seed.ok()) return seed.status();
  auto members = (*seed)->MemberList();
  if (!members.ok()) return members.status();
  // One client speaks TLS to every endpoint or to none: of a member with
  // both http and https client URLs, take those of the matching scheme.
  const std::vector<std::string> given =
      absl::StrSplit(g.endpoints, ',', absl::SkipEmpty());
  const bool tls = client::UsesTls(g.tls, given);
  std::vector<std::string> urls;
  for (const auto& m : members->members()) {
    std::vector<std::string> matching;
    for (const std::string& u : m.clienturls()) {
      if (absl::StartsWith(u, "https://") == tls) matching.push_back(u);
    }
    if (matching.empty()) {
      matching.assign(m.clienturls().begin(), m.clienturls().end());
    }
    urls.insert(urls.end(), matching.begin(), matching.end());
  }
  if (urls.empty()) {
    return absl::UnavailableError("no member has published client URLs yet");
  }
  Globals all = g;
  all.endpoints = absl::StrJoin(urls, ",");
  return Connect(all);
}

// One row (and one JSON object, `json_items` joined) per endpoint, in the
// format asked: etcdctl's JSON list, a table, or the cells comma-separated.
void PrintEndpointRows(const Globals& g, const std::vector<std::string>& header,
                       const std::vector<std::vector<std::string>>& rows,
                       const std::vector<std::string>& json_items) {
  if (g.write_out == "json") {
    std::printf("[%s]\n", absl::StrJoin(json_items, ",").c_str());
  } else if (g.write_out == "table") {
    std::printf("%s", RenderTable(header, rows).c_str());
  } else {
    for (const auto& row : rows) {
      std::printf("%s\n", absl::StrJoin(row, ", ").c_str());
    }
  }
}

int EndpointStatus(const Globals& g, const Args& in) {
  auto c = ConnectEndpoints(g, in, "lockctl endpoint status");
  if (!c.ok()) return FailStatus(c.status());
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> json;
  int failures = 0;
  for (size_t i = 0; i < (*c)->endpoints().size(); ++i) {
    const std::string& ep = (*c)->endpoints()[i];
    auto s = (*c)->Status(i);
    if (!s.ok()) {
      std::fprintf(stderr, "Failed to get the status of endpoint %s (%s)\n",
                   ep.c_str(), std::string(s.status().message()).c_str());
      ++failures;
      continue;
    }
    std::string errors;
    for (const std::string& e : s->errors())
      errors += (errors.empty() ? "" : ", ") + e;
    rows.push_back({ep, absl::StrFormat("%x", s->header().member_id()),
                    s->version(), HumanBytes(s->dbsize()),
                    s->leader() == s->header().member_id() ? "true" : "false",
                    s->islearner() ? "true" : "false",
                    absl::StrCat(s->raftterm()), absl::StrCat(s->raftindex()),
                    absl::StrCat(s->raftappliedindex()), errors});
    json.push_back(absl::StrCat("{\"Endpoint\":\"", ep,
                                "\",\"Status\":", ToJson(*s), "}"));
  }
  PrintEndpointRows(
      g,
      {"ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER",
       "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"},
      rows, json);
  return failures == 0 ? 0 : 1;
}

int EndpointHealth(const Globals& g, const Args& in) {
  auto c = ConnectEndpoints(g, in, "lockctl endpoint health");
  if (!c.ok()) return FailStatus(c.status());
  bool all_healthy = true;
  for (size_t i = 0; i < (*c)->endpoints().size(); ++i) {
    absl::Time start = absl::Now();
    absl::Status s = (*c)->Health(i);
    const std::string& ep = (*c)->endpoints()[i];
    if (s.ok()) {
      std::printf("%s is healthy: successfully committed proposal: took = %s\n",
                  ep.c_str(),
                  absl::FormatDuration(absl::Now() - start).c_str());
    } else {
      all_healthy = false;
      std::fprintf(stderr, "%s is unhealthy: failed to commit proposal: %s\n",
                   ep.c_str(), std::string(s.message()).c_str());
    }
  }
  if (!all_healthy) return Fail("unhealthy cluster");
  return 0;
}

int EndpointHashKV(const Globals& g, const Args& in) {
  int64_t revision = 0;
  auto c = ConnectEndpoints(g, in, "lockctl endpoint hashkv", [&](FlagSet& fs) {
    fs.Int64("rev", &revision,
             "The revision to hash up to (default: each member's current).");
  });
  if (!c.ok()) return FailStatus(c.status());
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> json;
  int failures = 0;
  for (size_t i = 0; i < (*c)->endpoints().size(); ++i) {
    const std::string& ep = (*c)->endpoints()[i];
    auto h = (*c)->HashKV(i, revision);
    if (!h.ok()) {
      std::fprintf(stderr, "Failed to get the hash of endpoint %s (%s)\n",
                   ep.c_str(), std::string(h.status().message()).c_str());
      ++failures;
      continue;
    }
    rows.push_back({ep, absl::StrCat(h->hash())});
    json.push_back(absl::StrCat("{\"Endpoint\":\"", ep,
                                "\",\"HashKV\":", ToJson(*h), "}"));
  }
  PrintEndpointRows(g, {"ENDPOINT", "HASH"}, rows, json);
  return failures == 0 ? 0 : 1;
}

int Defrag(const Globals& g, const Args& in) {
  auto c = ConnectEndpoints(g, in, "lockctl defrag");
  if (!c.ok()) return FailStatus(c.status());
  int failures = 0;
  for (size_t i = 0; i < (*c)->endpoints().size(); ++i) {
    const std::string& ep = (*c)->endpoints()[i];
    std::fprintf(stderr, "Defragmenting %s ...\n", ep.c_str());
    absl::Status s = (*c)->Defragment(i);
    if (s.ok()) {
      std::printf("Finished defragmenting etcd member[%s]\n", ep.c_str());
    } else {
      std::fprintf(stderr, "Failed to defragment etcd member[%s] (%s)\n",
                   ep.c_str(), std::string(s.message()).c_str());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

// "alarm list" and "alarm disarm" (every alarm), printed as etcdctl does.
std::function<int(const Globals&, const Args&)> AlarmCmd(bool disarm) {
  return [disarm](const Globals& g, const Args& in) {
    if (!in.empty()) {
      return Fail(absl::StrCat("alarm ", disarm ? "disarm" : "list",
                               " takes no arguments"));
    }
    auto c = Connect(g);
    if (!c.ok()) return FailStatus(c.status());
    etcdserverpb::AlarmRequest get;
    get.set_action(etcdserverpb::AlarmRequest::GET);
    auto listed = (*c)->Alarm(get);
    if (!listed.ok()) return FailStatus(listed.status());
    etcdserverpb::AlarmResponse out = *listed;
    if (disarm) {
      out.clear_alarms();
      for (const etcdserverpb::AlarmMember& a : listed->alarms()) {
        etcdserverpb::AlarmRequest off;
        off.set_action(etcdserverpb::AlarmRequest::DEACTIVATE);
        off.set_memberid(a.memberid());
        off.set_alarm(a.alarm());
        auto r = (*c)->Alarm(off);
        if (!r.ok()) return FailStatus(r.status());
        for (const auto& cleared : r->alarms()) *out.add_alarms() = cleared;
        *out.mutable_header() = r->header();
      }
    }
    if (g.write_out == "json") {
      std::printf("%s\n", ToJson(out).c_str());
      return 0;
    }
    for (const etcdserverpb::AlarmMember& a : out.alarms()) {
      std::printf("memberID:%llu alarm:%s\n",
                  static_cast<unsigned long long>(a.memberid()),
                  etcdserverpb::AlarmType_Name(a.alarm()).c_str());
    }
    return 0;
  };
}

int MemberList(const Globals& g, const Args& in) {
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  auto r = (*c)->MemberList();
  if (!r.ok()) return FailStatus(r.status());
  if (g.write_out == "json") {
    std::printf("%s\n", ToJson(*r).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : r->members()) {
    rows.push_back({absl::StrFormat("%x", m.id()),
                    m.name().empty() ? "unstarted" : "started", m.name(),
                    absl::StrJoin(m.peerurls(), ","),
                    absl::StrJoin(m.clienturls(), ","),
                    m.islearner() ? "true" : "false"});
  }
  if (g.write_out == "table") {
    std::printf("%s", RenderTable({"ID", "STATUS", "NAME", "PEER ADDRS",
                                   "CLIENT ADDRS", "IS LEARNER"},
                                  rows)
                          .c_str());
  } else {
    for (const auto& row : rows)
      std::printf("%s\n", absl::StrJoin(row, ", ").c_str());
  }
  return 0;
}

// A member ID as etcdctl takes it: hexadecimal. False after printing the
// error.
bool ParseMemberId(const std::string& text, const char* usage, uint64_t* id) {
  if (text.empty() || !absl::SimpleHexAtoi(text, id) || *id == 0) {
    Fail(absl::StrCat("bad member ID arg (", text,
                      "), expecting ID in Hex: ", usage));
    return false;
  }
  return true;
}

// --peer-urls: comma-separated, at least one.
bool ParsePeerUrls(const std::string& text, std::vector<std::string>* urls) {
  *urls = absl::StrSplit(text, ',', absl::SkipEmpty());
  if (urls->empty()) {
    Fail("member peer urls not provided: give --peer-urls=http://HOST:PORT");
    return false;
  }
  return true;
}

int MemberAdd(const Globals& g, const Args& in) {
  FlagSet fs("lockctl member add", "");
  std::string peer_urls;
  bool learner = false;
  fs.String("peer-urls", &peer_urls, "Comma-separated peer URLs.");
  fs.Bool("learner", &learner, "Add as a learner (non-voting) member.");
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) return 1;
  if (args.size() != 1) {
    return Fail(
        "member name not provided: lockctl member add NAME "
        "--peer-urls=http://HOST:PORT [--learner]");
  }
  etcdserverpb::MemberAddRequest req;
  std::vector<std::string> urls;
  if (!ParsePeerUrls(peer_urls, &urls)) return 1;
  for (const auto& u : urls) req.add_peerurls(u);
  req.set_islearner(learner);
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  auto r = (*c)->MemberAdd(req);
  if (!r.ok()) return FailStatus(r.status());
  if (g.write_out == "json") {
    std::printf("%s\n", ToJson(*r).c_str());
    return 0;
  }
  absl::PrintF("Member %16x added to cluster %16x\n", r->member().id(),
               r->header().cluster_id());
  // What the new member needs to start and join, as lockd's environment
  // (each is also a flag: LOCKD_INITIAL_CLUSTER is --initial-cluster).
  std::vector<std::string> cluster;
  for (const auto& m : r->members()) {
    const std::string name = m.id() == r->member().id() ? args[0] : m.name();
    if (name.empty()) continue;  // another member that has not started yet
    for (const std::string& u : m.peerurls()) {
      cluster.push_back(absl::StrCat(name, "=", u));
    }
  }
  std::printf("\nLOCKD_NAME=\"%s\"\n", args[0].c_str());
  std::printf("LOCKD_INITIAL_CLUSTER=\"%s\"\n",
              absl::StrJoin(cluster, ",").c_str());
  std::printf("LOCKD_INITIAL_ADVERTISE_PEER_URLS=\"%s\"\n",
              absl::StrJoin(urls, ",").c_str());
  std::printf("LOCKD_INITIAL_CLUSTER_STATE=\"existing\"\n");
  return 0;
}

// member remove / promote: one ID argument, a one-line report.
int MemberById(const Globals& g, const Args& in, const char* command,
               const char* done_verb) {
  const std::string usage = absl::StrCat("lockctl member ", command, " ID");
  if (in.size() != 1) {
    return Fail(absl::StrCat("member ID is not provided: ", usage));
  }
  uint64_t id = 0;
  if (!ParseMemberId(in[0], usage.c_str(), &id)) return 1;
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  uint64_t cluster_id = 0;
  std::string json;
  if (std::string(command) == "remove") {
    auto r = (*c)->MemberRemove(id);
    if (!r.ok()) return FailStatus(r.status());
    cluster_id = r->header().cluster_id();
    json = ToJson(*r);
  } else {
    auto r = (*c)->MemberPromote(id);
    if (!r.ok()) return FailStatus(r.status());
    cluster_id = r->header().cluster_id();
    json = ToJson(*r);
  }
  if (g.write_out == "json") {
    std::printf("%s\n", json.c_str());
  } else {
    absl::PrintF("Member %16x %s cluster %16x\n", id, done_verb, cluster_id);
  }
  return 0;
}

int MemberRemove(const Globals& g, const Args& in) {
  return MemberById(g, in, "remove", "removed from");
}

int MemberPromote(const Globals& g, const Args& in) {
  return MemberById(g, in, "promote", "promoted in");
}

int MemberUpdate(const Globals& g, const Args& in) {
  FlagSet fs("lockctl member update", "");
  std::string peer_urls;
  fs.String("peer-urls", &peer_urls, "Comma-separated new peer URLs.");
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) return 1;
  const char* usage = "lockctl member update ID --peer-urls=http://HOST:PORT";
  if (args.size() != 1) {
    return Fail(absl::StrCat("member ID is not provided: ", usage));
  }
  etcdserverpb::MemberUpdateRequest req;
  uint64_t id = 0;
  if (!ParseMemberId(args[0], usage, &id)) return 1;
  req.set_id(id);
  std::vector<std::string> urls;
  if (!ParsePeerUrls(peer_urls, &urls)) return 1;
  for (const auto& u : urls) req.add_peerurls(u);
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  auto r = (*c)->MemberUpdate(req);
  if (!r.ok()) return FailStatus(r.status());
  if (g.write_out == "json") {
    std::printf("%s\n", ToJson(*r).c_str());
  } else {
    absl::PrintF("Member %16x updated in cluster %16x\n", id,
                 r->header().cluster_id());
  }
  return 0;
}

int MoveLeader(const Globals& g, const Args& in) {
  const char* usage = "lockctl move-leader TRANSFEREE_ID";
  if (in.size() != 1) {
    return Fail(absl::StrCat("transferee ID is not provided: ", usage));
  }
  uint64_t target = 0;
  if (!ParseMemberId(in[0], usage, &target)) return 1;
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  // The request must reach the leader: find it among the endpoints.
  for (size_t i = 0; i < (*c)->endpoints().size(); ++i) {
    auto st = (*c)->Status(i);
    if (!st.ok() || st->leader() != st->header().member_id()) continue;
    auto r = (*c)->MoveLeader(i, target);
    if (!r.ok()) return FailStatus(r.status());
    absl::PrintF("Leadership transferred from %x to %x\n", st->leader(),
                 target);
    return 0;
  }
  return Fail(
      "no leader endpoint given: include the leader's endpoint in "
      "--endpoints (lockctl endpoint status --cluster shows which it is)");
}

int SnapshotSave(const Globals& g, const Args& in) {
  FlagSet fs("lockctl snapshot save", "");
  Args args;
  if (!ParseCommandFlags(fs, in, &args)) return 1;
  if (args.size() != 1) {
    return Fail("snapshot save takes a file name: lockctl snapshot save FILE");
  }
  auto c = Connect(g);
  if (!c.ok()) return FailStatus(c.status());
  if ((*c)->endpoints().size() != 1) {
    return Fail(
        "a snapshot must come from one member: give exactly one endpoint "
        "with --endpoints");
  }
  const std::string path = args[0];
  const std::string part = path + ".part";
  FILE* out = std::fopen(part.c_str(), "wb");
  if (out == nullptr) {
    return Fail(absl::StrCat("cannot create ", part, ": ", std::strerror(errno),
                             " (check the directory exists and is writable)"));
  }
  ProgressLine progress("Downloading snapshot");
  uint64_t received = 0;
  bool write_failed = false;
  absl::Status s =
      (*c)->Snapshot(0, [&](const std::string& chunk, uint64_t remaining) {
        if (std::fwrite(chunk.data(), 1, chunk.size(), out) != chunk.size()) {
          write_failed = true;
          return false;
        }
        received += chunk.size();
        progress.Update(received, received + remaining);
        return true;
      });
  progress.Finish();
  bool flushed = std::fflush(out) == 0 && fsync(fileno(out)) == 0;
  std::fclose(out);
  if (write_failed || !flushed) {
    std::remove(part.c_str());
    return Fail(absl::StrCat("writing ", part, " failed: ",
                             std::strerror(errno), " (is the disk full?)"));
  }
  if (!s.ok()) {
    std::remove(part.c_str());
    return FailStatus(s);
  }
  if (absl::Status v = kv::VerifyArchiveFile(part); !v.ok()) {
    std::remove(part.c_str());
    return Fail(absl::StrCat("the downloaded snapshot is damaged (",
                             v.message(), "); try again"));
  }
  if (std::rename(part.c_str(), path.c_str()) != 0) {
    return Fail(absl::StrCat("cannot rename ", part, " to ", path, ": ",
                             std::strerror(errno)));
  }
  std::printf("Snapshot saved at %s\n", path.c_str());
  return 0;
}

int Version(const Globals&, const Args& args) {
  if (!args.empty()) return Fail("version takes no arguments");
  std::printf("lockctl version: %s\nAPI version: %s\n", kLockdVersion,
              kEtcdApiMajorMinor);
  return 0;
}

// The global flags as the commands in other files take them.
CommandContext Context(const Globals& g) {
  CommandContext c;
  c.endpoints = absl::StrSplit(g.endpoints, ',', absl::SkipEmpty());
  c.write_out = g.write_out;
  c.dial_timeout = g.dial_timeout;
  c.command_timeout = g.command_timeout;
  c.tls = g.tls;
  return c;
}

// "lease SUBCOMMAND" as a command of the table below.
std::function<int(const Globals&, const Args&)> Lease(const char* command) {
  return [command](const Globals& g, const Args& in) {
    return RunLeaseCommand(command, Context(g), in);
  };
}

// "snapshot restore" and "snapshot status" as commands of the table below.
std::function<int(const Globals&, const Args&)> Snapshot(const char* command) {
  return [command](const Globals& g, const Args& in) {
    return RunSnapshotCommand(command, Context(g), in);
  };
}

// "lock" and "elect" as commands of the table below.
std::function<int(const Globals&, const Args&)> LockCmd(const char* command) {
  return [command](const Globals& g, const Args& in) {
    return RunLockCommand(command, Context(g), in);
  };
}

int ClusterResize(const Globals& g, const Args& in) {
  return RunClusterResize(Context(g), in);
}

using Command = std::function<int(const Globals&, const Args&)>;
struct CommandInfo {
  const char* summary;
  Command run;
};

const std::map<std::string, CommandInfo>& Commands() {
  static const auto* commands = new std::map<std::string, CommandInfo>{
      {"get", {"Reads a key, or the keys of a range or prefix", Get}},
      {"put", {"Writes a value under a key", Put}},
      {"del", {"Deletes a key, or the keys of a range or prefix", Del}},
      {"compaction", {"Discards the history below a revision", Compaction}},
      {"endpoint status",
       {"Shows each endpoint's member, version, store size and raft position",
        EndpointStatus}},
      {"endpoint health",
       {"Tells whether each endpoint answers a linearizable read",
        EndpointHealth}},
      {"endpoint hashkv",
       {"Shows the hash of each endpoint's key history (--rev, --cluster)",
        EndpointHashKV}},
      {"defrag",
       {"Rewrites each endpoint's storage to reclaim space (--cluster)",
        Defrag}},
      {"alarm list", {"Shows the raised alarms", AlarmCmd(false)}},
      {"alarm disarm", {"Clears every raised alarm", AlarmCmd(true)}},
      {"member list", {"Shows the cluster's members", MemberList}},
      {"member add",
       {"Announces a new member; start it afterwards", MemberAdd}},
      {"member remove", {"Takes a member out of the cluster", MemberRemove}},
      {"member promote", {"Makes a learner a voting member", MemberPromote}},
      {"member update", {"Updates a member's peer URLs", MemberUpdate}},
      {"cluster resize",
       {"Grows or shrinks the cluster to --members, one safe step at a time",
        ClusterResize}},
      {"move-leader", {"Hands leadership to the given member", MoveLeader}},
      {"txn",
       {"Runs compares, then one of two lists of requests, atomically (stdin)",
        Txn}},
      {"snapshot save",
       {"Stores a snapshot of one member to a file", SnapshotSave}},
      {"snapshot restore",
       {"Restores a snapshot file into a new member's data directory",
        Snapshot("restore")}},
      {"snapshot status",
       {"Gets the revision, key count and hash of a snapshot file",
        Snapshot("status")}},
      {"version", {"Prints the version of lockctl", Version}},
      {"lease grant",
       {"Creates a lease with a TTL in seconds", Lease("grant")}},
      {"lease revoke", {"Ends a lease and deletes its keys", Lease("revoke")}},
      {"lease timetolive",
       {"Shows a lease's TTLs (--keys: its keys too)", Lease("timetolive")}},
      {"lease list", {"Shows the IDs of all leases", Lease("list")}},
      {"lock",
       {"lock NAME [command...]: holds a lock (while running the command)",
        LockCmd("lock")}},
      {"elect",
       {"elect NAME [proposal]: campaigns, or observes the leader",
        LockCmd("elect")}},
      {"lease keep-alive",
       {"Renews a lease until interrupted; --once: one renewal",
        Lease("keep-alive")}},
      {"watch",
       {"Streams the changes to a key, range or prefix",
        [](const Globals& g, const Args& args) {
          return WatchCommand(g.endpoints, g.write_out, g.dial_timeout, g.tls,
                              args);
        }}},
  };
  return *commands;
}

std::string Usage(const FlagSet& fs) {
  std::string out =
      "usage: lockctl [global flags] <command> [args] [flags]\n\n"
      "A command line for lockd clusters (and anything speaking the etcd v3 "
      "API).\n\ncommands:\n";
  for (const auto& [name, info] : Commands()) {
    out += absl::StrFormat("  %-22s %s\n", name, info.summary);
  }
  return out + "\nglobal flags:\n" + fs.Usage();
}

int Main(int argc, char** argv) {
  Globals g;
  FlagSet fs("lockctl", "LOCKCTL");
  fs.String("endpoints", &g.endpoints, "gRPC endpoints, comma-separated.");
  fs.String("write-out", &g.write_out, "Output format: simple, json or table.");
  fs.String("w", &g.write_out, "Short for --write-out.");
  fs.Duration("dial-timeout", &g.dial_timeout,
              "Time to wait for a connection to an endpoint.");
  fs.Duration("command-timeout", &g.command_timeout,
              "Time a command may take before it fails.");
  fs.String("cacert", &g.tls.ca_file,
            "CA certificates (PEM) that the servers' certificates must chain "
            "to.");
  fs.String("cert", &g.tls.cert_file,
            "Client certificate (PEM) shown to servers that ask for one.");
  fs.String("key", &g.tls.key_file, "Private key (PEM) of --cert.");
  // Global flags may come anywhere, as with etcdctl: parse them all, and
  // hand unknown ones to the command.
  Args positional, command_flags;
  // `lock NAME command...` and `elect`: everything after the command word
  // is theirs, verbatim (the command run under the lock has its own flags).
  std::optional<Args> verbatim;
  bool seen_word = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (!seen_word && (a == "lock" || a == "elect")) {
      positional.push_back(a);
      verbatim = Args(argv + i + 1, argv + argc);
      break;
    }
    if (a.size() > 1 && a[0] == '-') {
      std::string name = a.substr(a[1] == '-' ? 2 : 1);
      std::string bare = name.substr(0, name.find('='));
      bool global = bare == "endpoints" || bare == "write-out" || bare == "w" ||
                    bare == "dial-timeout" || bare == "command-timeout" ||
                    bare == "cacert" || bare == "cert" || bare == "key" ||
                    bare == "h" || bare == "help";
      Args* sink = global ? &positional : &command_flags;
      sink->push_back(a);
      // A separate value ("-w json") travels with its flag, unless the
      // flag is a known boolean of a command.
      if (name.find('=') == std::string::npos && i + 1 < argc &&
          argv[i + 1][0] != '-' &&
          (global ? bare != "h" && bare != "help"
                  : !(bare == "prefix" || bare == "from-key" ||
                      bare == "keys-only" || bare == "print-value-only" ||
                      bare == "count-only" || bare == "prev-kv" ||
                      bare == "ignore-value" || bare == "ignore-lease" ||
                      bare == "physical" || bare == "keys" || bare == "once" ||
                      bare == "progress-notify" || bare == "dry-run"))) {
        sink->push_back(argv[++i]);
      }
    } else {
      seen_word = true;
      positional.push_back(a);
    }
  }
  std::vector<const char*> gargv = {"lockctl"};
  for (const std::string& a : positional) gargv.push_back(a.c_str());
  if (absl::Status s = fs.Parse(static_cast<int>(gargv.size()), gargv.data());
      !s.ok()) {
    std::fprintf(stderr, "Error: %s\n\n%s", std::string(s.message()).c_str(),
                 Usage(fs).c_str());
    return 1;
  }
  Args words = fs.args();
  if (fs.help_requested() || words.empty()) {
    std::printf("%s", Usage(fs).c_str());
    return fs.help_requested() ? 0 : 1;
  }
  if (g.write_out != "simple" && g.write_out != "json" &&
      g.write_out != "table") {
    return Fail(absl::StrCat("unknown output format \"", g.write_out,
                             "\": use simple, json or table"));
  }
  // Two-word commands first ("endpoint status"), then one-word ones.
  const CommandInfo* cmd = nullptr;
  size_t used = 0;
  if (words.size() >= 2) {
    auto it = Commands().find(words[0] + " " + words[1]);
    if (it != Commands().end()) {
      cmd = &it->second;
      used = 2;
    }
  }
  if (cmd == nullptr) {
    auto it = Commands().find(words[0]);
    if (it != Commands().end()) {
      cmd = &it->second;
      used = 1;
    }
  }
  if (cmd == nullptr) {
    std::fprintf(stderr,
                 "Error: unknown command \"%s\" for \"lockctl\"\nRun "
                 "'lockctl --help' for the list of commands.\n",
                 words[0].c_str());
    return 1;
  }
  Args rest(words.begin() + used, words.end());
  rest.insert(rest.end(), command_flags.begin(), command_flags.end());
  if (verbatim.has_value()) rest = *verbatim;
  return cmd->run(g, rest);
}

}  // namespace
}  // namespace lockd::ctl

int main(int argc, char** argv) { return lockd::ctl::Main(argc, argv); }
