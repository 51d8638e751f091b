// Names the calling thread, so `top -H`, `ps -L` and profilers tell a
// member's threads apart. Linux keeps at most 15 characters.
#ifndef LOCKD_UTIL_THREAD_NAME_H_
#define LOCKD_UTIL_THREAD_NAME_H_

#include <pthread.h>

#include <string>

namespace lockd {

inline void SetThreadName(const std::string& name) {
  (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace lockd

#endif  // LOCKD_UTIL_THREAD_NAME_H_
