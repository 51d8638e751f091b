// Key helpers shared by the server, lockctl and the tests.
#ifndef LOCKD_UTIL_KEYS_H_
#define LOCKD_UTIL_KEYS_H_

#include <string>

namespace lockd {

// The end of the range holding every key that starts with `prefix` (etcd's
// prefix end): the prefix with its last byte below 0xff incremented, or
// "\0" (every key) when there is none.
std::string PrefixEnd(const std::string& prefix);

}  // namespace lockd

#endif  // LOCKD_UTIL_KEYS_H_
