#include "lockd/util/timed_loop.h"

#include <utility>

#include "lockd/util/clock.h"
#include "lockd/util/thread_name.h"

namespace lockd {

void TimedLoop::Start(const std::string& name, absl::Time first,
                      std::function<absl::Time()> step) {
  thread_ = std::thread([this, name, first, step = std::move(step)] {
    SetThreadName(name);
    absl::Time next = first;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_;
        };
        AwaitUntil(mu_, absl::Condition(&stopping), next);
        if (stop_) return;
      }
      next = step();
    }
  });
}

void TimedLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace lockd
