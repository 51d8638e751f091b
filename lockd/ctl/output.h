// Output helpers for lockctl: etcdctl's table look and sizes.
#ifndef LOCKD_CTL_OUTPUT_H_
#define LOCKD_CTL_OUTPUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "lockd/util/json.h"

namespace lockd::ctl {

// An ASCII table with a header row, as etcdctl -w table draws it.
std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);
// "2.0 kB", "1.5 MB", "34 MB": decimal units, one decimal below 10, as
// etcdctl shows database sizes.
std::string HumanBytes(int64_t bytes);
// The message as one line of JSON as etcdctl -w json prints it: field
// names as in the .proto files, 64-bit integers and enums as numbers, bytes
// in base64, unset (zero) fields left out.
std::string ToJson(const google::protobuf::Message& m);
// `s` as a JSON string literal, quoted and escaped.
using ::lockd::JsonString;

// What lockctl prints for a failed call: etcd's error (which says what went
// wrong) and, for the common ones, a line saying what to do next.
std::string ErrorWithHint(const absl::Status& s);

}  // namespace lockd::ctl

#endif  // LOCKD_CTL_OUTPUT_H_
