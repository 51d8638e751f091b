// JSON string literals, for the few places that write JSON by hand.
#ifndef LOCKD_UTIL_JSON_H_
#define LOCKD_UTIL_JSON_H_

#include <string>

#include "absl/strings/string_view.h"

namespace lockd {

// Appends `s` as a JSON string literal, quotes included: '"', '\' and
// control characters escaped; other bytes (UTF-8 included) as they are.
void AppendJsonString(absl::string_view s, std::string* out);
std::string JsonString(absl::string_view s);

}  // namespace lockd

#endif  // LOCKD_UTIL_JSON_H_
