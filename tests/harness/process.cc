#include "tests/harness/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"

namespace lockd::testing {
namespace {

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::vector<char*> CArgs(const std::vector<std::string>& v) {
  std::vector<char*> out;
  for (const std::string& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// This process's environment with `overrides` ("NAME=value") applied, for
// execve. Built before fork: between fork and exec a child of a
// multithreaded process may only make async-signal-safe calls, and setting
// a variable there (putenv) can allocate, which deadlocks the child when
// another thread held the allocator's lock at the fork (seen as an etcdctl
// that never started and never exited).
std::vector<std::string> ChildEnvironment(
    const std::vector<std::string>& overrides) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const std::string& o : overrides) {
      if (o.substr(0, o.find('=')) == name) overridden = true;
    }
    if (!overridden) out.push_back(entry);
  }
  for (const std::string& o : overrides) out.push_back(o);
  return out;
}

// What a child writes when exec fails (async-signal-safe: write only).
void ReportExecFailure(const char* path) {
  const char prefix[] = "exec failed: ";
  (void)!write(STDERR_FILENO, prefix, sizeof(prefix) - 1);
  (void)!write(STDERR_FILENO, path, std::strlen(path));
  (void)!write(STDERR_FILENO, "\n", 1);
}

}  // namespace

Subprocess::~Subprocess() {
  if (pid_ > 0 && running()) {
    kill(pid_, SIGKILL);
    (void)Wait(absl::Seconds(30));
  }
  if (reader_.joinable()) reader_.join();
}

absl::Status Subprocess::Start(const std::vector<std::string>& argv,
                               const std::vector<std::string>& env,
                               const std::string& log_path) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  log_path_ = log_path;
  std::vector<char*> args = CArgs(argv);
  const std::vector<std::string> environment = ChildEnvironment(env);
  std::vector<char*> envp = CArgs(environment);
  pid_ = fork();
  if (pid_ < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid_ == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, STDIN_FILENO);
    execve(args[0], args.data(), envp.data());
    ReportExecFailure(args[0]);
    _exit(127);
  }
  close(fds[1]);
  reader_ = std::thread([this, fd = fds[0]] { ReadLoop(fd); });
  return absl::OkStatus();
}

void Subprocess::ReadLoop(int fd) {
  int log_fd = -1;
  if (!log_path_.empty()) {
    log_fd = open(log_path_.c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644);
  }
  char buf[8192];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (log_fd >= 0) (void)!write(log_fd, buf, n);
    absl::MutexLock lock(&mu_);
    output_.append(buf, n);
  }
  close(fd);
  if (log_fd >= 0) close(log_fd);
  // The pipe closes when the child (and any child of it holding the pipe)
  // exits; reap it here so waiters see the exit code.
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  absl::MutexLock lock(&mu_);
  eof_ = true;
  exited_ = true;
  exit_code_ = r == pid_ ? DecodeWaitStatus(status) : -1;
}

bool Subprocess::WaitForOutput(const std::string& text,
                               absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this, &text]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return output_.find(text) != std::string::npos || exited_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  return output_.find(text) != std::string::npos;
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(&exited_), timeout)) {
    return absl::DeadlineExceededError("process still running");
  }
  return exit_code_;
}

void Subprocess::Signal(int sig) {
  if (pid_ > 0 && running()) kill(pid_, sig);
}

bool Subprocess::Pause(absl::Duration timeout) {
  Signal(SIGSTOP);
  const std::string tasks = absl::StrCat("/proc/", pid_, "/task");
  const absl::Time until = absl::Now() + timeout;
  while (true) {
    bool all_stopped = true;
    DIR* dir = opendir(tasks.c_str());
    if (dir == nullptr) return false;
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream in(absl::StrCat(tasks, "/", e->d_name, "/stat"));
      std::string stat((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
      // "tid (comm) S ...": the state follows the last ')'.
      const size_t paren = stat.rfind(')');
      if (paren == std::string::npos || paren + 2 >= stat.size()) continue;
      const char state = stat[paren + 2];
      if (state != 'T' && state != 't') all_stopped = false;
    }
    closedir(dir);
    if (all_stopped) return true;
    if (absl::Now() >= until) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
}

int Subprocess::Stop(absl::Duration grace) {
  Signal(SIGTERM);
  absl::StatusOr<int> code = Wait(grace);
  if (code.ok()) return *code;
  Signal(SIGKILL);
  code = Wait(absl::Seconds(30));
  return code.ok() ? *code : -1;
}

bool Subprocess::running() const {
  absl::MutexLock lock(&mu_);
  return pid_ > 0 && !exited_;
}

std::string Subprocess::output() const {
  absl::MutexLock lock(&mu_);
  return output_;
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout,
                                         const std::vector<std::string>& env,
                                         const std::string& stdin_text) {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0 ||
      pipe2(in_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  std::vector<char*> args = CArgs(argv);
  const std::vector<std::string> environment = ChildEnvironment(env);
  std::vector<char*> envp = CArgs(environment);
  pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    dup2(in_pipe[0], STDIN_FILENO);
    // execvpe: commands like etcdctl are found on PATH (glibc's search
    // does not allocate).
    execvpe(args[0], args.data(), envp.data());
    ReportExecFailure(args[0]);
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  close(in_pipe[0]);
  // Small inputs only (commands' scripts): fits the pipe buffer.
  if (!stdin_text.empty()) {
    (void)!write(in_pipe[1], stdin_text.data(), stdin_text.size());
  }
  close(in_pipe[1]);
  CommandResult result;
  struct pollfd pfds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  absl::Time deadline = absl::Now() + timeout;
  bool timed_out = false;
  while (open_fds > 0) {
    int wait_ms =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (wait_ms <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    int n = poll(pfds, 2, wait_ms);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < 2; ++i) {
      if (pfds[i].fd < 0 || pfds[i].revents == 0) continue;
      char buf[8192];
      ssize_t r = read(pfds[i].fd, buf, sizeof(buf));
      if (r > 0) {
        sinks[i]->append(buf, r);
      } else if (r == 0 || errno != EINTR) {
        close(pfds[i].fd);
        pfds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& p : pfds) {
    if (p.fd >= 0) close(p.fd);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(
        argv[0], " did not finish within ", absl::FormatDuration(timeout),
        "; stdout: ", result.out, " stderr: ", result.err));
  }
  result.exit_code = DecodeWaitStatus(status);
  return result;
}

namespace {

// Tests run side by side, and a test restarts a killed member on the ports
// it had: a port free now may belong to a member of another test that is
// down for a moment. Each test process claims the ports it picks with a
// file naming its pid under this directory; a claim by a live process is
// skipped, one by a finished process is taken over.
constexpr char kPortClaims[] = "/tmp/lockd-test-ports";

bool ClaimPort(int port) {
  (void)mkdir(kPortClaims, 0777);
  const std::string path = absl::StrCat(kPortClaims, "/", port);
  const std::string me = absl::StrCat(getpid());
  for (int attempt = 0; attempt < 2; ++attempt) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd >= 0) {
      (void)!write(fd, me.data(), me.size());
      close(fd);
      return true;
    }
    // Without a usable claims directory, fall back to the bind check alone.
    if (errno != EEXIST) return true;
    char buf[32] = {0};
    fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) continue;
    const ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    const long owner = n > 0 ? std::strtol(buf, nullptr, 10) : 0;
    if (owner == getpid()) return false;  // ours already, in use
    if (owner > 0 &&
        (kill(static_cast<pid_t>(owner), 0) == 0 || errno == EPERM)) {
      return false;  // another live test's
    }
    (void)unlink(path.c_str());  // stale: try to take it over
  }
  return false;
}

}  // namespace

int PickFreePort() {
  static std::mt19937 rng(std::random_device{}() ^ getpid());
  std::uniform_int_distribution<int> dist(20000, 31999);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int port = dist(rng);
    if (!ClaimPort(port)) continue;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    std::memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (ok) return port;
  }
  std::fprintf(stderr, "no free port in 20000-31999\n");
  std::abort();
}

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return path;
  return absl::StrCat(srcdir, "/", workspace ? workspace : "lockd", "/", path);
}

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base ? base : "/tmp", "/", name);
  std::string cmd = absl::StrCat("rm -rf '", dir, "'");
  (void)!std::system(cmd.c_str());
  mkdir(dir.c_str(), 0755);
  return dir;
}

}  // namespace lockd::testing
