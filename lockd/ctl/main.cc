// lockctl: the operator's command line for a lockd cluster. Global flags and
// output formats follow etcdctl's.
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lockd/util/flags.h"
#include "lockd/version.h"

namespace lockd {
namespace {

struct GlobalFlags {
  std::string endpoints = "127.0.0.1:2379";
  std::string write_out = "simple";
  absl::Duration dial_timeout = absl::Seconds(2);
  absl::Duration command_timeout = absl::Seconds(5);
};

using Command =
    std::function<int(const GlobalFlags&, const std::vector<std::string>&)>;

struct CommandInfo {
  const char* summary;
  Command run;
};

int VersionCommand(const GlobalFlags&, const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::fprintf(stderr, "Error: version takes no arguments\n");
    return 1;
  }
  std::printf("lockctl version: %s\nAPI version: %s\n", kLockdVersion,
              kEtcdApiMajorMinor);
  return 0;
}

const std::map<std::string, CommandInfo>& Commands() {
  static const auto* commands = new std::map<std::string, CommandInfo>{
      {"version", {"Prints the version of lockctl", VersionCommand}},
  };
  return *commands;
}

std::string Usage(const FlagSet& fs) {
  std::string out =
      "usage: lockctl [global flags] <command> [args]\n\n"
      "A command line for lockd clusters (and anything speaking the etcd v3 "
      "API).\n\ncommands:\n";
  for (const auto& [name, info] : Commands()) {
    char line[256];
    std::snprintf(line, sizeof(line), "  %-22s %s\n", name.c_str(),
                  info.summary);
    out += line;
  }
  out += "\nglobal flags:\n" + fs.Usage();
  return out;
}

int Main(int argc, char** argv) {
  GlobalFlags g;
  FlagSet fs("lockctl", "LOCKCTL");
  fs.String("endpoints", &g.endpoints, "gRPC endpoints, comma-separated.");
  fs.String("write-out", &g.write_out, "Output format: simple, json or table.");
  fs.String("w", &g.write_out, "Short for --write-out.");
  fs.Duration("dial-timeout", &g.dial_timeout,
              "Time to wait for a connection to an endpoint.");
  fs.Duration("command-timeout", &g.command_timeout,
              "Time a command may take before it fails.");
  if (absl::Status s = fs.Parse(argc, argv, 1, /*interspersed=*/false);
      !s.ok()) {
    std::fprintf(stderr, "Error: %s\n\n%s", std::string(s.message()).c_str(),
                 Usage(fs).c_str());
    return 1;
  }
  if (fs.help_requested() || fs.args().empty()) {
    std::printf("%s", Usage(fs).c_str());
    return fs.help_requested() ? 0 : 1;
  }
  if (g.write_out != "simple" && g.write_out != "json" &&
      g.write_out != "table") {
    std::fprintf(stderr,
                 "Error: unknown output format \"%s\": use simple, json or "
                 "table\n",
                 g.write_out.c_str());
    return 1;
  }
  const std::string& name = fs.args()[0];
  auto it = Commands().find(name);
  if (it == Commands().end()) {
    std::fprintf(stderr,
                 "Error: unknown command \"%s\" for \"lockctl\"\nRun "
                 "'lockctl --help' for the list of commands.\n",
                 name.c_str());
    return 1;
  }
  std::vector<std::string> rest(fs.args().begin() + 1, fs.args().end());
  return it->second.run(g, rest);
}

}  // namespace
}  // namespace lockd

int main(int argc, char** argv) { return lockd::Main(argc, argv); }
