#include "lockd/ctl/command.h"

#include <unistd.h>

#include <cstdio>
#include <utility>

#include "lockd/ctl/output.h"

namespace lockd::ctl {

int Fail(const std::string& message) {
  std::fprintf(stderr, "Error: %s\n", message.c_str());
  return 1;
}

bool ParseCommandFlags(FlagSet& fs, const std::vector<std::string>& in,
                       std::vector<std::string>* args) {
  std::vector<const char*> argv = {"lockctl"};
  for (const std::string& a : in) argv.push_back(a.c_str());
  absl::Status s = fs.Parse(static_cast<int>(argv.size()), argv.data());
  if (!s.ok()) {
    Fail(std::string(s.message()));
    return false;
  }
  *args = fs.args();
  return true;
}

ProgressLine::ProgressLine(std::string what)
    : what_(std::move(what)), tty_(isatty(STDERR_FILENO) != 0) {}

void ProgressLine::Update(uint64_t done, uint64_t total) {
  const int pct = total == 0 ? 100 : static_cast<int>(done * 100 / total);
  if (tty_) {
    std::fprintf(stderr, "\r%s: %s / %s (%d%%)   ", what_.c_str(),
                 HumanBytes(static_cast<int64_t>(done)).c_str(),
                 HumanBytes(static_cast<int64_t>(total)).c_str(), pct);
    drawn_ = true;
  } else if (pct / 10 != last_tenth_) {
    last_tenth_ = pct / 10;
    std::fprintf(stderr, "%s: %s / %s (%d%%)\n", what_.c_str(),
                 HumanBytes(static_cast<int64_t>(done)).c_str(),
                 HumanBytes(static_cast<int64_t>(total)).c_str(), pct);
  }
}

void ProgressLine::Finish() {
  if (drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace lockd::ctl
