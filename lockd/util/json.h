// JSON string literals, for the few places that write JSON by hand.
#ifndef LOCKD_UTIL_JSON_H_
#define LOCKD_UTIL_JSON_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace lockd {

// Appends `s` as a JSON string literal, quotes included: '"', '\' and
// control characters escaped; other bytes (UTF-8 included) as they are.
void AppendJsonString(absl::string_view s, std::string* out);
std::string JsonString(absl::string_view s);

// Splits text holding JSON objects one after another (whitespace between)
// into the objects' texts, by balanced braces and brackets outside strings
// (it does not check what is inside). Returns false when something else is
// there, or an object is not closed.
bool SplitJsonObjects(absl::string_view body,
                      std::vector<absl::string_view>* out);

}  // namespace lockd

#endif  // LOCKD_UTIL_JSON_H_
