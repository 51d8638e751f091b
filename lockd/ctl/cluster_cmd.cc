// lockctl cluster resize: takes a cluster to a target membership one safe
// step at a time. New members join as learners and are promoted only once in
// sync; members outside the target are removed one at a time, leadership
// moved off first. Every step is planned afresh from the current member
// list, so running the command again after an interruption continues where
// it stopped. A step that would leave fewer reachable voters than a quorum is
// refused, with the reason.
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lockd/client/client.h"
#include "lockd/ctl/command.h"
#include "lockd/util/flags.h"

namespace lockd::ctl {

namespace {

using Args = std::vector<std::string>;

constexpr char kRerun[] =
    "run the same `lockctl cluster resize` again to continue from here";

void Say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

std::string Hex(uint64_t id) { return absl::StrFormat("%x", id); }

std::string NormalizeUrl(absl::string_view url) {
  absl::ConsumeSuffix(&url, "/");
  return std::string(url);
}

struct Target {
  std::string name;
  std::string peer_url;  // normalized
};

// --members=NAME=URL[,NAME=URL...]. Errors name the bad entry.
absl::StatusOr<std::vector<Target>> ParseTargets(const std::string& flag) {
  std::vector<Target> out;
  std::set<std::string> names, urls;
  for (absl::string_view entry : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
    std::vector<std::string> kv =
        absl::StrSplit(entry, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty() ||
        !absl::StartsWith(kv[1], "http://") ||
        kv[1].rfind(':') <= std::string("http://").size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad --members entry \"", entry,
          "\": expected NAME=http://HOST:PORT (the member's peer URL)"));
    }
    Target t{kv[0], NormalizeUrl(kv[1])};
    if (!names.insert(t.name).second || !urls.insert(t.peer_url).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--members names ", t.name, " or ", t.peer_url,
                       " twice: each member needs its own name and peer URL"));
    }
    out.push_back(t);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        "--members is required: the target membership, e.g. "
        "--members=m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2480");
  }
  return out;
}

// One member of the current list, as the resize sees it.
struct Current {
  etcdserverpb::Member m;
  int target = -1;  // index into the targets, -1 when not in the target
  bool started() const { return !m.name().empty() && m.clienturls_size() > 0; }
  std::string label() const {
    return m.name().empty() ? absl::StrCat("(unstarted ", Hex(m.id()), ")")
                            : m.name();
  }
};

class Resizer {
 public:
  Resizer(const CommandContext& g, std::vector<Target> targets,
          absl::Duration wait_timeout)
      : g_(g), targets_(std::move(targets)), wait_timeout_(wait_timeout) {}

  absl::Status Connect() {
    client::ClientOptions o;
    o.endpoints = g_.endpoints;
    o.dial_timeout = g_.dial_timeout;
    o.call_timeout = g_.command_timeout;
    o.tls = g_.tls;
    // Follow the membership as it changes under us: members we remove drop
    // out of the list, members we add come in.
    o.auto_sync_interval = absl::Seconds(2);
    absl::StatusOr<std::unique_ptr<client::Client>> c =
        client::Client::Create(o);
    if (!c.ok()) return c.status();
    client_ = *std::move(c);
    return absl::OkStatus();
  }

  // The current members, matched to the targets by peer URL.
  absl::StatusOr<std::vector<Current>> List() {
    absl::StatusOr<etcdserverpb::MemberListResponse> r = client_->MemberList();
    if (!r.ok()) {
      // Without a quorum no linearizable answer comes; a member's own view
      // still lets CheckQuorum say which members are missing.
      absl::StatusOr<etcdserverpb::MemberListResponse> local =
          client_->MemberList(/*linearizable=*/false);
      if (!local.ok()) return r.status();
      r = std::move(local);
    }
    std::vector<Current> out;
    for (const etcdserverpb::Member& m : r->members()) {
      Current c;
      c.m = m;
      for (const std::string& u : m.peerurls()) {
        for (size_t t = 0; t < targets_.size(); ++t) {
          if (NormalizeUrl(u) == targets_[t].peer_url) c.target = t;
        }
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  // Maintenance.Status of a member through its client URLs; nullopt-like
  // error when it does not answer within the dial timeout.
  absl::StatusOr<etcdserverpb::StatusResponse> StatusOf(const Current& c) {
    if (c.m.clienturls_size() == 0) {
      return absl::UnavailableError("not started");
    }
    const std::string url = c.m.clienturls(0);
    auto it = status_clients_.find(url);
    if (it == status_clients_.end()) {
      client::ClientOptions o;
      o.endpoints = {url};
      o.dial_timeout = std::min(g_.dial_timeout, absl::Seconds(2));
      o.call_timeout = std::min(g_.command_timeout, absl::Seconds(3));
      o.auto_sync_interval = absl::ZeroDuration();
      o.tls = g_.tls;
      absl::StatusOr<std::unique_ptr<client::Client>> cl =
          client::Client::Create(o);
      if (!cl.ok()) return cl.status();
      it = status_clients_.emplace(url, *std::move(cl)).first;
    }
    return it->second->Status(0);
  }

  // Voters that answer Status and are not retired (a removed member's
  // proxy answers too, but is no voter any more).
  // `silent` (if given) gets the labels of the voters that did not answer.
  int ReachableVoters(const std::vector<Current>& list,
                      const std::set<uint64_t>& excluded,
                      std::vector<std::string>* silent = nullptr) {
    int n = 0;
    for (const Current& c : list) {
      if (c.m.islearner() || excluded.count(c.m.id())) continue;
      absl::StatusOr<etcdserverpb::StatusResponse> s = StatusOf(c);
      if (s.ok() && s->header().member_id() == c.m.id()) {
        ++n;
      } else if (silent != nullptr) {
        silent->push_back(c.label());
      }
    }
    return n;
  }

  // The leader's ID as some member sees it; 0 when none answers.
  uint64_t Leader(const std::vector<Current>& list,
                  etcdserverpb::StatusResponse* leader_status) {
    for (const Current& c : list) {
      absl::StatusOr<etcdserverpb::StatusResponse> s = StatusOf(c);
      if (!s.ok() || s->leader() == 0) continue;
      for (const Current& l : list) {
        if (l.m.id() != s->leader()) continue;
        absl::StatusOr<etcdserverpb::StatusResponse> ls = StatusOf(l);
        if (ls.ok() && leader_status != nullptr) *leader_status = *ls;
      }
      return s->leader();
    }
    return 0;
  }

  // The flags a new member starts with to join the cluster as it is now.
  std::string StartFlags(const std::vector<Current>& list, const Target& t) {
    std::vector<std::string> cluster;
    for (const Current& c : list) {
      std::string name = c.m.name();
      if (c.target >= 0) name = targets_[c.target].name;
      if (name.empty() || c.m.peerurls_size() == 0) continue;
      if (c.target < 0 || targets_[c.target].name != t.name) {
        cluster.push_back(absl::StrCat(name, "=", c.m.peerurls(0)));
      }
    }
    cluster.push_back(absl::StrCat(t.name, "=", t.peer_url));
    return absl::StrCat("--name=", t.name,
                        " --initial-advertise-peer-urls=", t.peer_url,
                        " --listen-peer-urls=", t.peer_url,
                        " --initial-cluster=", absl::StrJoin(cluster, ","),
                        " --initial-cluster-state=existing",
                        " (plus its own --data-dir and client URLs)");
  }

  absl::Status Run(bool dry_run);

 private:
  absl::Status CheckQuorum(const std::vector<Current>& list) {
    int voters = 0;
    for (const Current& c : list) voters += c.m.islearner() ? 0 : 1;
    std::vector<std::string> silent;
    const int reachable = ReachableVoters(list, {}, &silent);
    if (reachable < voters / 2 + 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "only ", reachable, " of ", voters,
          " voting members answer, fewer than a quorum (", voters / 2 + 1,
          "); not answering: ", absl::StrJoin(silent, ", "),
          ". The cluster cannot change its membership now: start or repair "
          "those members, then ",
          kRerun));
    }
    return absl::OkStatus();
  }

  absl::Status WaitAndPromote(const Current& learner);
  absl::Status WaitStarted(const Current& member);
  absl::Status Remove(const Current& victim, const std::vector<Current>& list);

  CommandContext g_;
  std::vector<Target> targets_;
  absl::Duration wait_timeout_;
  std::unique_ptr<client::Client> client_;
  std::map<std::string, std::unique_ptr<client::Client>> status_clients_;
  int step_ = 0;
};

absl::Status Resizer::WaitStarted(const Current& member) {
  const Target& t = targets_[member.target];
  absl::StatusOr<std::vector<Current>> list = List();
  if (!list.ok()) return list.status();
  Say(absl::StrCat("[", ++step_, "] waiting for ", t.name, " (", t.peer_url,
                   ", member ", Hex(member.m.id()),
                   ") to start; start it with: ", StartFlags(*list, t)));
  const absl::Time deadline = absl::Now() + wait_timeout_;
  while (absl::Now() < deadline) {
    list = List();
    if (list.ok()) {
      for (const Current& c : *list) {
        if (c.m.id() == member.m.id() && c.started()) {
          Say(absl::StrCat("    ", t.name, " started (client URLs ",
                           absl::StrJoin(c.m.clienturls(), ","), ")"));
          return absl::OkStatus();
        }
      }
    }
    absl::SleepFor(absl::Milliseconds(300));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(t.name, " did not start within --wait-timeout=",
                   absl::FormatDuration(wait_timeout_),
                   ". Start it with the flags above, "
                   "check its log, then ",
                   kRerun));
}

absl::Status Resizer::WaitAndPromote(const Current& learner) {
  if (!learner.started()) {
    if (absl::Status s = WaitStarted(learner); !s.ok()) return s;
  }
  const Target& t = targets_[learner.target];
  Say(absl::StrCat("[", ++step_, "] waiting for learner ", t.name,
                   " to catch up, then promoting it"));
  const absl::Time deadline = absl::Now() + wait_timeout_;
  absl::Time next_progress = absl::InfinitePast();
  std::string last_error;
  while (absl::Now() < deadline) {
    absl::StatusOr<etcdserverpb::MemberPromoteResponse> r =
        client_->MemberPromote(learner.m.id());
    if (r.ok()) {
      Say(absl::StrCat("    promoted ", t.name, " (member ",
                       Hex(learner.m.id()), ") to voter"));
      return absl::OkStatus();
    }
    last_error = std::string(r.status().message());
    if (absl::StrContains(last_error, "can only promote a learner member")) {
      // Already a voter: an earlier run's promotion went through even
      // though its answer was lost.
      absl::StatusOr<std::vector<Current>> list = List();
      if (list.ok()) {
        for (const Current& c : *list) {
          if (c.m.id() == learner.m.id() && !c.m.islearner()) {
            Say(absl::StrCat("    ", t.name, " is a voter already"));
            return absl::OkStatus();
          }
        }
      }
    } else if (absl::StrContains(last_error, "member not found")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "learner ", t.name, " was removed while waiting for it; ", kRerun,
          " (it adds it again)"));
    } else if (!absl::IsUnavailable(r.status()) &&
               !absl::IsDeadlineExceeded(r.status())) {
      return absl::Status(r.status().code(),
                          absl::StrCat("promoting ", t.name, ": ", last_error,
                                       "; fix the cause, then ", kRerun));
    }
    if (absl::Now() >= next_progress) {
      next_progress = absl::Now() + absl::Seconds(1);
      absl::StatusOr<std::vector<Current>> list = List();
      etcdserverpb::StatusResponse leader;
      if (list.ok() && Leader(*list, &leader) != 0) {
        absl::StatusOr<etcdserverpb::StatusResponse> mine = StatusOf(learner);
        Say(absl::StrCat("    ", t.name, " applied index ",
                         mine.ok() ? absl::StrCat(mine->raftappliedindex())
                                   : std::string("?"),
                         " / leader ", leader.raftappliedindex()));
      }
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "learner ", t.name, " was not in sync within --wait-timeout=",
      absl::FormatDuration(wait_timeout_), " (last answer: ", last_error,
      "). Check that it is running and can reach the leader, then ", kRerun));
}

absl::Status Resizer::Remove(const Current& victim,
                             const std::vector<Current>& list) {
  if (!victim.m.islearner()) {
    int voters = 0;
    for (const Current& c : list) voters += c.m.islearner() ? 0 : 1;
    const int after = voters - 1;
    std::vector<std::string> silent;
    const int reachable = ReachableVoters(list, {victim.m.id()}, &silent);
    if (after == 0 || reachable < after / 2 + 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to remove ", victim.label(), ": afterwards ", reachable,
          " of ", after, " voting members would answer, fewer than a quorum (",
          after / 2 + 1,
          "), because these do not answer: ", absl::StrJoin(silent, ", "),
          ". Start or repair them first (lockctl endpoint status --cluster), "
          "then ",
          kRerun));
    }
    etcdserverpb::StatusResponse leader_status;
    const uint64_t leader = Leader(list, &leader_status);
    if (leader == victim.m.id()) {
      // Hand leadership to a started target voter before removing.
      const Current* to = nullptr;
      for (const Current& c : list) {
        if (c.target >= 0 && !c.m.islearner() && c.started() &&
            StatusOf(c).ok()) {
          to = &c;
          break;
        }
      }
      if (to == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the leader ", victim.label(),
            " is to be removed but no member of the target answers to take "
            "over; start the target members, then ",
            kRerun));
      }
      Say(absl::StrCat("[", ++step_, "] moving leadership from ",
                       victim.label(), " to ", to->label()));
      client::ClientOptions o;
      o.endpoints = {victim.m.clienturls(0)};
      o.dial_timeout = g_.dial_timeout;
      o.call_timeout = g_.command_timeout;
      o.tls = g_.tls;
      o.auto_sync_interval = absl::ZeroDuration();
      absl::StatusOr<std::unique_ptr<client::Client>> lc =
          client::Client::Create(o);
      if (!lc.ok()) return lc.status();
      absl::StatusOr<etcdserverpb::MoveLeaderResponse> mv =
          (*lc)->MoveLeader(0, to->m.id());
      if (!mv.ok()) {
        // The server moves leadership itself when it removes its leader;
        // say what happened and go on.
        Say(absl::StrCat("    move-leader failed (", mv.status().message(),
                         "); the removal moves leadership itself"));
      }
    }
  }
  Say(absl::StrCat("[", ++step_, "] removing ", victim.label(), " (member ",
                   Hex(victim.m.id()), victim.m.islearner() ? ", learner" : "",
                   ")"));
  absl::StatusOr<etcdserverpb::MemberRemoveResponse> r =
      client_->MemberRemove(victim.m.id());
  if (!r.ok()) {
    if (absl::StrContains(r.status().message(), "member not found")) {
      return absl::OkStatus();  // an earlier answer was lost
    }
    return absl::Status(
        r.status().code(),
        absl::StrCat("removing ", victim.label(), ": ", r.status().message(),
                     "; ", kRerun, " (lockctl member list shows the state)"));
  }
  Say(absl::StrCat("    removed ", victim.label(),
                   "; its client port relays to the cluster for its "
                   "--removed-member-grace, then it exits"));
  return absl::OkStatus();
}

absl::Status Resizer::Run(bool dry_run) {
  // Each round re-reads the member list and takes one step; bounded, since
  // every step brings the membership closer to the target.
  const int max_rounds = 4 * static_cast<int>(targets_.size()) + 64;
  for (int round = 0; round < max_rounds; ++round) {
    absl::StatusOr<std::vector<Current>> list = List();
    if (!list.ok()) {
      return absl::Status(
          list.status().code(),
          absl::StrCat("listing members: ", list.status().message(),
                       "; check --endpoints and that the cluster is up "
                       "(lockctl endpoint health --cluster)"));
    }
    std::vector<const Current*> learners_in, unstarted_in, extra_learners,
        extra_voters;
    std::set<int> present;
    for (const Current& c : *list) {
      if (c.target >= 0) {
        present.insert(c.target);
        if (c.m.islearner()) {
          learners_in.push_back(&c);
        } else if (!c.started()) {
          unstarted_in.push_back(&c);
        }
      } else if (c.m.islearner()) {
        extra_learners.push_back(&c);
      } else {
        extra_voters.push_back(&c);
      }
    }
    std::vector<int> missing;
    for (size_t t = 0; t < targets_.size(); ++t) {
      if (!present.count(t)) missing.push_back(t);
    }

    if (dry_run) {
      Say("plan:");
      int n = 0;
      for (const Current* c : extra_learners) {
        Say(absl::StrCat("  ", ++n, ". remove learner ", c->label()));
      }
      for (const Current* c : unstarted_in) {
        Say(absl::StrCat(
            "  ", ++n, ". wait for ", targets_[c->target].name,
            " to start: ", StartFlags(*list, targets_[c->target])));
      }
      for (const Current* c : learners_in) {
        Say(absl::StrCat("  ", ++n, ". wait for learner ",
                         targets_[c->target].name,
                         " to start and catch up; promote it"));
      }
      for (int t : missing) {
        Say(absl::StrCat("  ", ++n, ". add ", targets_[t].name, " (",
                         targets_[t].peer_url,
                         ") as a learner; wait for it to start and catch "
                         "up; promote it"));
      }
      uint64_t leader = Leader(*list, nullptr);
      for (const Current* c : extra_voters) {
        Say(absl::StrCat("  ", ++n, ". ",
                         c->m.id() == leader
                             ? "move leadership to a target member, then "
                             : "",
                         "remove ", c->label()));
      }
      if (n == 0) Say("  nothing to do: the cluster has the target members");
      return absl::OkStatus();
    }

    if (learners_in.empty() && unstarted_in.empty() && missing.empty() &&
        extra_learners.empty() && extra_voters.empty()) {
      Say(absl::StrCat("done: the cluster has the ", targets_.size(),
                       " target members"));
      return absl::OkStatus();
    }
    absl::Status s;
    if (!unstarted_in.empty()) {
      // A target voter that has not published its client URLs cannot be
      // asked whether it answers; waiting for it changes nothing, so it
      // needs no quorum check.
      s = WaitStarted(*unstarted_in[0]);
      if (!s.ok()) return s;
      continue;
    }
    if (absl::Status q = CheckQuorum(*list); !q.ok()) return q;

    if (!extra_learners.empty()) {
      // Only one learner may be in flight: clear strays first.
      s = Remove(*extra_learners[0], *list);
    } else if (!learners_in.empty()) {
      s = WaitAndPromote(*learners_in[0]);
    } else if (!missing.empty()) {
      const Target& t = targets_[missing[0]];
      Say(absl::StrCat("[", ++step_, "] adding ", t.name, " (", t.peer_url,
                       ") as a learner"));
      etcdserverpb::MemberAddRequest req;
      req.add_peerurls(t.peer_url);
      req.set_islearner(true);
      absl::StatusOr<etcdserverpb::MemberAddResponse> r =
          client_->MemberAdd(req);
      if (!r.ok() && !absl::StrContains(r.status().message(),
                                        "Peer URLs already exists")) {
        return absl::Status(r.status().code(),
                            absl::StrCat("adding ", t.name, ": ",
                                         r.status().message(), "; ", kRerun));
      }
      if (r.ok()) {
        Say(absl::StrCat("    added member ", Hex(r->member().id())));
      }
    } else {
      // Unreachable members first: removing them never costs availability.
      // The leader last, so leadership moves once at most.
      etcdserverpb::StatusResponse unused;
      const uint64_t leader = Leader(*list, &unused);
      const Current* victim = nullptr;
      for (const Current* c : extra_voters) {
        if (!StatusOf(*c).ok()) victim = c;
      }
      for (const Current* c : extra_voters) {
        if (victim == nullptr && c->m.id() != leader) victim = c;
      }
      if (victim == nullptr) victim = extra_voters[0];
      s = Remove(*victim, *list);
    }
    if (!s.ok()) return s;
  }
  return absl::InternalError(absl::StrCat(
      "the membership did not reach the target after ", max_rounds,
      " steps (is another operator changing it?); lockctl member list shows "
      "the state; ",
      kRerun));
}

}  // namespace

int RunClusterResize(const CommandContext& g, const Args& in) {
  FlagSet fs("lockctl cluster resize", "");
  std::string members;
  bool dry_run = false;
  absl::Duration wait_timeout = absl::Minutes(5);
  fs.String("members", &members,
            "The target membership: NAME=PEER_URL[,NAME=PEER_URL...].");
  fs.Bool("dry-run", &dry_run, "Print the plan and change nothing.");
  fs.Duration("wait-timeout", &wait_timeout,
              "How long to wait for a new member to start and catch up.");
  std::vector<const char*> argv = {"lockctl"};
  for (const std::string& a : in) argv.push_back(a.c_str());
  if (absl::Status s = fs.Parse(static_cast<int>(argv.size()), argv.data());
      !s.ok()) {
    return Fail(std::string(s.message()));
  }
  if (fs.help_requested()) {
    std::printf(
        "usage: lockctl cluster resize --members=NAME=PEER_URL[,...] "
        "[--dry-run] [--wait-timeout=5m]\n\n%s",
        fs.Usage().c_str());
    return 0;
  }
  if (!fs.args().empty()) {
    return Fail(absl::StrCat("unexpected argument \"", fs.args()[0],
                             "\": the target goes in --members"));
  }
  absl::StatusOr<std::vector<Target>> targets = ParseTargets(members);
  if (!targets.ok()) return Fail(std::string(targets.status().message()));
  Resizer r(g, *std::move(targets), wait_timeout);
  if (absl::Status s = r.Connect(); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  if (absl::Status s = r.Run(dry_run); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  return 0;
}

}  // namespace lockd::ctl
