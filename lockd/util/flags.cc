#include "lockd/util/flags.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace lockd {

FlagSet::FlagSet(std::string program, std::string env_prefix)
    : program_(std::move(program)), env_prefix_(std::move(env_prefix)) {}

void FlagSet::Add(const std::string& name, Flag flag) {
  flags_[name] = std::move(flag);
}

void FlagSet::String(const std::string& name, std::string* target,
                     std::string help) {
  Add(name,
      Flag{std::move(help), *target, false, [target](const std::string& v) {
             *target = v;
             return absl::OkStatus();
           }});
}

void FlagSet::Bool(const std::string& name, bool* target, std::string help) {
  Add(name,
      Flag{std::move(help), *target ? "true" : "false", true,
           [target](const std::string& v) {
             std::string lower = absl::AsciiStrToLower(v);
             if (lower == "true" || lower == "1" || lower == "t") {
               *target = true;
             } else if (lower == "false" || lower == "0" || lower == "f") {
               *target = false;
             } else {
               return absl::InvalidArgumentError("parse error");
             }
             return absl::OkStatus();
           }});
}

void FlagSet::Uint64(const std::string& name, uint64_t* target,
                     std::string help) {
  Add(name, Flag{std::move(help), absl::StrCat(*target), false,
                 [target](const std::string& v) {
                   uint64_t parsed;
                   if (!absl::SimpleAtoi(v, &parsed)) {
                     return absl::InvalidArgumentError("parse error");
                   }
                   *target = parsed;
                   return absl::OkStatus();
                 }});
}

void FlagSet::Int64(const std::string& name, int64_t* target,
                    std::string help) {
  Add(name, Flag{std::move(help), absl::StrCat(*target), false,
                 [target](const std::string& v) {
                   int64_t parsed;
                   if (!absl::SimpleAtoi(v, &parsed)) {
                     return absl::InvalidArgumentError("parse error");
                   }
                   *target = parsed;
                   return absl::OkStatus();
                 }});
}

void FlagSet::Duration(const std::string& name, absl::Duration* target,
                       std::string help) {
  Add(name, Flag{std::move(help), absl::FormatDuration(*target), false,
                 [target](const std::string& v) {
                   absl::Duration parsed;
                   if (!absl::ParseDuration(v, &parsed) ||
                       parsed < absl::ZeroDuration()) {
                     return absl::InvalidArgumentError(
                         "expected a duration such as 500ms, 2s or 1m");
                   }
                   *target = parsed;
                   return absl::OkStatus();
                 }});
}

absl::Status FlagSet::Set(const std::string& name, const std::string& value) {
  auto it = flags_.find(name);
  absl::Status s = it->second.set(value);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid value \"", value, "\" for flag -", name, ": ", s.message()));
  }
  set_[name] = true;
  return absl::OkStatus();
}

absl::Status FlagSet::Parse(int argc, const char* const* argv, int first,
                            bool interspersed) {
  args_.clear();
  int i = first;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (!interspersed) break;
      args_.push_back(arg);
      continue;
    }
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string name = body;
    std::string value;
    bool has_value = false;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    if (name == "h" || name == "help") {
      help_ = true;
      continue;
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag provided but not defined: -", name));
    }
    if (!has_value) {
      if (it->second.is_bool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag needs an argument: -", name));
      }
    }
    if (absl::Status s = Set(name, value); !s.ok()) return s;
  }
  for (; i < argc; ++i) args_.push_back(argv[i]);

  if (!env_prefix_.empty()) {
    for (const auto& [name, flag] : flags_) {
      if (set_.count(name)) continue;
      std::string key = absl::StrCat(
          env_prefix_, "_",
          absl::AsciiStrToUpper(absl::StrReplaceAll(name, {{"-", "_"}})));
      if (const char* env = std::getenv(key.c_str()); env != nullptr) {
        if (absl::Status s = Set(name, env); !s.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              s.message(), " (from environment variable ", key, ")"));
        }
      }
    }
  }
  return absl::OkStatus();
}

bool FlagSet::IsSet(const std::string& name) const {
  return set_.count(name) > 0;
}

std::string FlagSet::Usage() const {
  std::string out;
  for (const auto& [name, flag] : flags_) {
    absl::StrAppend(&out, "  --", name, flag.is_bool ? "" : " value",
                    "\n      ", flag.help);
    if (!flag.default_value.empty() && flag.default_value != "false" &&
        flag.default_value != "0") {
      absl::StrAppend(&out, " (default \"", flag.default_value, "\")");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace lockd
