// Data-driven golden tests: scripts in raft/core/testdata/*.txt drive a small
// cluster; each command's rendered output is compared with the expectation
// checked in below it. Regenerate after an intended behaviour change with
//
//   bazel run //raft/core:golden_test -- --rewrite
//
// and review the diff like code. Script format (blocks separated by a blank
// line; lines starting with '#' before a command are comments):
//
//   command arg...
//   ----
//   expected output (no blank lines)
//
// Commands:
//   bootstrap ID...           new cluster of these voters
//   add-node ID               empty node, to be added by conf-change
//   restart ID                crash and restart from storage
//   campaign ID | tick ID [N] | propose ID DATA | read-index ID CTX
//   conf-change ID v4 l5 r2 [implicit|explicit]   (no changes: leave joint)
//   transfer ID TO            ask ID to transfer leadership to TO
//   process-ready ID | deliver [TO] | stabilize | drop
//   isolate ID | cut FROM TO | heal
//   compact ID INDEX          snapshot at INDEX and compact the log
//   report-snapshot ID TO ok|fail | report-unreachable ID TO
//   status ID                 role, term, commit, config, progress
//   log ID                    persisted entries
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "raft/core/test_cluster.h"

namespace lockd::raft {
namespace {

bool g_rewrite = false;

struct Block {
  std::vector<std::string> comments;
  std::string command;
  std::vector<std::string> expected;
};

std::vector<Block> ParseScript(const std::string& text) {
  std::vector<Block> blocks;
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  size_t i = 0;
  while (i < lines.size()) {
    Block b;
    while (i < lines.size() && (lines[i].empty() || lines[i][0] == '#')) {
      if (!lines[i].empty()) b.comments.push_back(lines[i]);
      ++i;
    }
    if (i >= lines.size()) break;
    b.command = lines[i++];
    if (i < lines.size() && lines[i] == "----") ++i;
    while (i < lines.size() && !lines[i].empty())
      b.expected.push_back(lines[i++]);
    blocks.push_back(std::move(b));
  }
  return blocks;
}

uint64_t U(const std::string& s) {
  uint64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(s, &v)) << "not a number: " << s;
  return v;
}

class Driver {
 public:
  std::vector<std::string> Run(const std::string& line) {
    std::vector<std::string> args =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    std::vector<std::string> out;
    const std::string& cmd = args[0];
    auto status = [&](const absl::Status& s) {
      out.push_back(s.ok() ? "ok" : absl::StrCat("error: ", s.ToString()));
    };
    if (cmd == "bootstrap") {
      std::vector<uint64_t> ids;
      for (size_t i = 1; i < args.size(); ++i) ids.push_back(U(args[i]));
      c_.Bootstrap(ids);
    } else if (cmd == "add-node") {
      c_.AddEmptyNode(U(args[1]));
    } else if (cmd == "restart") {
      c_.Restart(U(args[1]));
    } else if (cmd == "campaign") {
      status(c_.raw(U(args[1])).Campaign());
    } else if (cmd == "tick") {
      c_.Tick(U(args[1]), args.size() > 2 ? static_cast<int>(U(args[2])) : 1);
    } else if (cmd == "propose") {
      status(c_.raw(U(args[1])).Propose(args[2]));
    } else if (cmd == "read-index") {
      status(c_.raw(U(args[1])).ReadIndex(args[2]));
    } else if (cmd == "transfer") {
      status(c_.raw(U(args[1])).TransferLeadership(U(args[2])));
    } else if (cmd == "conf-change") {
      ConfChange cc;
      for (size_t i = 2; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "implicit") {
          cc.transition = ConfChangeTransition::kJointImplicit;
        } else if (a == "explicit") {
          cc.transition = ConfChangeTransition::kJointExplicit;
        } else {
          const ConfChangeType t = a[0] == 'v' ? ConfChangeType::kAddNode
                                   : a[0] == 'l'
                                       ? ConfChangeType::kAddLearnerNode
                                       : ConfChangeType::kRemoveNode;
          cc.changes.push_back({t, U(a.substr(1))});
        }
      }
      status(c_.raw(U(args[1])).ProposeConfChange(cc));
    } else if (cmd == "process-ready") {
      if (!c_.ProcessReady(U(args[1]), &out)) out.push_back("<no Ready>");
    } else if (cmd == "deliver") {
      c_.Deliver(args.size() > 1 ? U(args[1]) : 0, &out);
    } else if (cmd == "stabilize") {
      c_.Stabilize(&out);
    } else if (cmd == "drop") {
      out.push_back(absl::StrCat("dropped ", c_.queue().size(), " messages"));
      c_.DropPending();
    } else if (cmd == "isolate") {
      c_.Isolate(U(args[1]));
    } else if (cmd == "cut") {
      c_.Cut(U(args[1]), U(args[2]));
    } else if (cmd == "heal") {
      c_.Heal();
    } else if (cmd == "compact") {
      testing::Cluster::Node& n = c_.node(U(args[1]));
      const uint64_t idx = U(args[2]);
      absl::StatusOr<Snapshot> s =
          n.storage->CreateSnapshot(idx, &n.conf, "snap");
      if (!s.ok()) {
        status(s.status());
      } else {
        status(n.storage->Compact(idx));
      }
    } else if (cmd == "report-snapshot") {
      c_.raw(U(args[1])).ReportSnapshot(U(args[2]), args[3] == "ok");
    } else if (cmd == "report-unreachable") {
      c_.raw(U(args[1])).ReportUnreachable(U(args[2]));
    } else if (cmd == "status") {
      Status(U(args[1]), &out);
    } else if (cmd == "log") {
      const MemoryStorage& s = *c_.node(U(args[1])).storage;
      absl::StatusOr<std::vector<Entry>> ents =
          s.Entries(s.FirstIndex(), s.LastIndex() + 1, kNoLimit);
      for (const Entry& e : *ents) out.push_back(DescribeEntry(e));
    } else {
      out.push_back(absl::StrCat("unknown command ", cmd));
    }
    if (out.empty()) out.push_back("ok");
    for (std::string& l : out) {
      if (l.empty()) l = "<empty>";
    }
    return out;
  }

 private:
  void Status(uint64_t id, std::vector<std::string>* out) {
    const Raft& r = c_.raft(id);
    out->push_back(absl::StrCat(id, ": ", StateTypeName(r.state()),
                                " term=", r.term(), " lead=", r.lead(),
                                " vote=", r.vote(),
                                " commit=", r.raft_log().committed(),
                                " applied=", r.raft_log().applied(),
                                " last=", r.raft_log().LastIndex()));
    out->push_back(absl::StrCat("config: ", r.tracker().config.DebugString()));
    if (r.state() == StateType::kLeader) {
      for (const auto& [pid, pr] : r.tracker().progress) {
        out->push_back(absl::StrCat(pid, ": ", pr.DebugString()));
      }
    }
  }

  testing::Cluster c_;
};

class GoldenTest : public ::testing::TestWithParam<std::string> {};

std::string SourcePath(const std::string& name) {
  const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  const std::string rel = "raft/core/testdata/" + name;
  return ws != nullptr ? absl::StrCat(ws, "/", rel) : rel;
}

TEST_P(GoldenTest, Script) {
  const std::string path = SourcePath(GetParam());
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<Block> blocks = ParseScript(ss.str());
  Driver d;
  std::string rewritten;
  for (const Block& b : blocks) {
    std::vector<std::string> got = d.Run(b.command);
    if (!g_rewrite) {
      EXPECT_EQ(absl::StrJoin(got, "\n"), absl::StrJoin(b.expected, "\n"))
          << GetParam() << ": command `" << b.command << "`";
    }
    for (const std::string& c : b.comments)
      absl::StrAppend(&rewritten, c, "\n");
    absl::StrAppend(&rewritten, b.command, "\n----\n", absl::StrJoin(got, "\n"),
                    "\n\n");
  }
  if (g_rewrite) {
    std::ofstream outf(path);
    outf << rewritten;
    ASSERT_TRUE(outf.good()) << "cannot write " << path;
  }
}

INSTANTIATE_TEST_SUITE_P(Scripts, GoldenTest,
                         ::testing::Values("election.txt", "replication.txt",
                                           "confchange.txt",
                                           "read_index_transfer.txt",
                                           "snapshot.txt"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           std::string n = p.param.substr(0, p.param.find('.'));
                           for (char& ch : n) {
                             if (ch == '-') ch = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace lockd::raft

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--rewrite") lockd::raft::g_rewrite = true;
  }
  if (std::getenv("RAFT_GOLDEN_REWRITE") != nullptr)
    lockd::raft::g_rewrite = true;
  return RUN_ALL_TESTS();
}
