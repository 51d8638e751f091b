// lockctl snapshot restore / status: offline commands on a snapshot file
// (what `lockctl snapshot save` or `etcdctl snapshot save` wrote from a lockd
// member), with etcdctl's flags and output shapes.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lockd/ctl/command.h"
#include "lockd/ctl/output.h"
#include "lockd/server/config.h"
#include "lockd/server/restore.h"
#include "lockd/util/flags.h"

namespace lockd::ctl {
namespace {

int Restore(const std::vector<std::string>& in) {
  FlagSet fs("lockctl snapshot restore", "");
  ServerConfig config;
  fs.String("data-dir", &config.data_dir,
            "Path to the new data directory (default: <name>.lockd); it must "
            "not exist, or be empty.");
  fs.String("name", &config.name, "Human-readable name for this member.");
  fs.String("initial-cluster", &config.initial_cluster,
            "The new cluster's members, name=peer-url,... (default: "
            "<name>=<initial-advertise-peer-urls>).");
  fs.String("initial-cluster-token", &config.initial_cluster_token,
            "Initial cluster token of the new cluster.");
  fs.String("initial-advertise-peer-urls", &config.initial_advertise_peer_urls,
            "This member's peer URLs.");
  std::vector<std::string> args;
  if (!ParseCommandFlags(fs, in, &args)) return 1;
  if (args.size() != 1) {
    return Fail(
        "snapshot restore requires exactly one argument: lockctl snapshot "
        "restore FILE --name=NAME --initial-cluster=... "
        "--initial-advertise-peer-urls=...");
  }
  // The flags a member takes, checked as the member checks them: the same
  // IDs come out as when the member starts.
  if (absl::Status s = ValidateConfig(config, false, false); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  const std::string& file = args[0];
  ProgressLine progress("Restoring snapshot");
  absl::StatusOr<SnapshotSummary> restored =
      RestoreSnapshot(file, config, [&progress](uint64_t done, uint64_t total) {
        progress.Update(done, total);
      });
  progress.Finish();
  if (!restored.ok()) return Fail(std::string(restored.status().message()));
  absl::PrintF(
      "Restored snapshot %s at revision %d (%d keys) into %s: member %s "
      "(%x) of cluster %x.\n",
      file.c_str(), restored->revision, restored->total_keys,
      config.data_dir.c_str(), config.name.c_str(), config.member_id,
      config.cluster_id);
  if (config.members.size() > 1) {
    absl::PrintF(
        "Restore the same file for every other member of --initial-cluster "
        "(each with its own --name, --initial-advertise-peer-urls and "
        "--data-dir), then start each member with its --name, --data-dir "
        "and --listen-* URLs.\n");
  } else {
    absl::PrintF(
        "Start it with: lockd --name=%s --data-dir=%s (and the --listen-* "
        "URLs it is to serve on)\n",
        config.name.c_str(), config.data_dir.c_str());
  }
  return 0;
}

int Status(const CommandContext& g, const std::vector<std::string>& in) {
  FlagSet fs("lockctl snapshot status", "");
  std::vector<std::string> args;
  if (!ParseCommandFlags(fs, in, &args)) return 1;
  if (args.size() != 1) {
    return Fail(
        "snapshot status requires exactly one argument: lockctl snapshot "
        "status FILE");
  }
  const char* tmp = std::getenv("TMPDIR");
  ProgressLine progress("Reading snapshot");
  absl::StatusOr<SnapshotSummary> s =
      SummarizeSnapshot(args[0], tmp != nullptr && *tmp != '\0' ? tmp : "/tmp",
                        [&progress](uint64_t done, uint64_t total) {
                          progress.Update(done, total);
                        });
  progress.Finish();
  if (!s.ok()) return Fail(std::string(s.status().message()));
  const std::string size = HumanBytes(static_cast<int64_t>(s->total_bytes));
  if (g.write_out == "json") {
    absl::PrintF(
        "{\"hash\":%u,\"revision\":%d,\"totalKey\":%d,\"totalSize\":%d}\n",
        s->hash, s->revision, s->total_keys, s->total_bytes);
  } else if (g.write_out == "table") {
    absl::PrintF(
        "%s",
        RenderTable({"HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"},
                    {{absl::StrFormat("%x", s->hash), absl::StrCat(s->revision),
                      absl::StrCat(s->total_keys), size}})
            .c_str());
  } else {
    absl::PrintF("%x, %d, %d, %s\n", s->hash, s->revision, s->total_keys,
                 size.c_str());
  }
  return 0;
}

}  // namespace

int RunSnapshotCommand(const std::string& command, const CommandContext& g,
                       const std::vector<std::string>& in) {
  if (command == "restore") return Restore(in);
  return Status(g, in);
}

}  // namespace lockd::ctl
