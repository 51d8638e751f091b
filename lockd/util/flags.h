// Command-line flags with the conventions etcd's users know: `-name` and
// `--name` are the same flag, values go as `--name=value` or `--name value`,
// booleans as `--name` or `--name=false`, and a flag not given on the command
// line may come from the environment (`<PREFIX>_NAME_WITH_UNDERSCORES`).
//
// Not thread-safe; build and parse once at startup.
#ifndef LOCKD_UTIL_FLAGS_H_
#define LOCKD_UTIL_FLAGS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace lockd {

class FlagSet {
 public:
  // `program` names the binary in messages; `env_prefix` (e.g. "LOCKD") turns
  // on environment fallback, empty turns it off.
  FlagSet(std::string program, std::string env_prefix);

  // Registers a flag writing to `*target`, which must outlive Parse(). The
  // target's current value is the default shown in Usage().
  void String(const std::string& name, std::string* target, std::string help);
  void Bool(const std::string& name, bool* target, std::string help);
  void Uint64(const std::string& name, uint64_t* target, std::string help);
  void Int64(const std::string& name, int64_t* target, std::string help);
  // Go-style durations: "500ms", "2s", "1m30s".
  void Duration(const std::string& name, absl::Duration* target,
                std::string help);

  // Parses argv[first..argc). Stops at the first non-flag argument when
  // `interspersed` is false (so a subcommand's own flags are left alone);
  // otherwise collects positional arguments anywhere. `--` ends flags.
  // Errors: kInvalidArgument, with Go's wording ("flag provided but not
  // defined: -x", "invalid value ... for flag -x: ...").
  [[nodiscard]] absl::Status Parse(int argc, const char* const* argv,
                                   int first = 1, bool interspersed = true);

  // Positional arguments left after Parse().
  const std::vector<std::string>& args() const { return args_; }
  // True when the flag was given on the command line or in the environment.
  bool IsSet(const std::string& name) const;
  // "  --name value\n      help (default ...)\n" for every flag, sorted.
  std::string Usage() const;
  bool help_requested() const { return help_; }

 private:
  struct Flag {
    std::string help;
    std::string default_value;
    bool is_bool = false;
    std::function<absl::Status(const std::string&)> set;
  };
  void Add(const std::string& name, Flag flag);
  absl::Status Set(const std::string& name, const std::string& value);

  std::string program_;
  std::string env_prefix_;
  std::map<std::string, Flag> flags_;
  std::map<std::string, bool> set_;
  std::vector<std::string> args_;
  bool help_ = false;
};

}  // namespace lockd

#endif  // LOCKD_UTIL_FLAGS_H_
