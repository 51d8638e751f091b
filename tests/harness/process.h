// Real processes for multi-process tests: start a binary, watch its output,
// signal it, run a command to completion. Nothing here sleeps; every wait is
// on a condition with a deadline.
#ifndef LOCKD_TESTS_HARNESS_PROCESS_H_
#define LOCKD_TESTS_HARNESS_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lockd::testing {

// A child process whose stdout and stderr are captured together, kept in
// memory and copied to `log_path` (if not empty) as they arrive.
// Thread-safe. The destructor kills the child (SIGKILL) if still running.
class Subprocess {
 public:
  Subprocess() = default;
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Starts argv[0] (a path) with argv. `env` entries ("K=V") are added to the
  // inherited environment. Errors: kInternal if fork/exec fails.
  absl::Status Start(const std::vector<std::string>& argv,
                     const std::vector<std::string>& env = {},
                     const std::string& log_path = "");

  // Waits until the output contains `text`, the child exits, or `timeout`
  // passes. True only in the first case.
  bool WaitForOutput(const std::string& text, absl::Duration timeout);
  // Waits for the child to exit; returns its exit code (128+signal when
  // killed), or kDeadlineExceeded.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  void Signal(int sig);
  // SIGSTOP, then waits until every thread of the child has stopped (a
  // thread in the middle of a system call, or on a CPU the hypervisor has
  // descheduled, runs on for a while after the signal). False if that takes
  // longer than `timeout`.
  bool Pause(absl::Duration timeout = absl::Seconds(10));
  // SIGTERM, then SIGKILL after `grace`; returns the exit code.
  int Stop(absl::Duration grace = absl::Seconds(10));

  bool running() const;
  pid_t pid() const { return pid_; }
  std::string output() const;

 private:
  void ReadLoop(int fd);

  pid_t pid_ = -1;
  std::thread reader_;
  std::string log_path_;
  mutable absl::Mutex mu_;
  std::string output_ ABSL_GUARDED_BY(mu_);
  bool eof_ ABSL_GUARDED_BY(mu_) = false;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  int exit_code_ ABSL_GUARDED_BY(mu_) = -1;
};

struct CommandResult {
  int exit_code = -1;  // 128+signal when killed by the timeout
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs a command to completion with separate stdout/stderr; kills it after
// `timeout`. Errors: kInternal (fork/exec), kDeadlineExceeded.
// `stdin_text` is written to the command's standard input (then closed).
absl::StatusOr<CommandResult> RunCommand(
    const std::vector<std::string>& argv,
    absl::Duration timeout = absl::Seconds(30),
    const std::vector<std::string>& env = {},
    const std::string& stdin_text = "");

// A TCP port on 127.0.0.1 that is free now, from 20000-31999 (below the
// kernel's ephemeral range, so outgoing connections never take it).
int PickFreePort();

// Path of a file in this test's runfiles, e.g. "lockd/lockd".
std::string Runfile(const std::string& path);
// A fresh directory under the test's TEST_TMPDIR.
std::string TempDir(const std::string& name);

}  // namespace lockd::testing

#endif  // LOCKD_TESTS_HARNESS_PROCESS_H_
