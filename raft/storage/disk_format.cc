#include "raft/storage/disk_format.h"

#include <zlib.h>

#include "absl/strings/str_cat.h"

namespace lockd::raft::disk {
namespace {

void Put64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((v >> shift) & 0xff));
  }
}
void Put32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((v >> shift) & 0xff));
  }
}

uint32_t Crc(absl::string_view bytes) {
  return static_cast<uint32_t>(
      crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

// Prepends the checksum of `body`.
std::string Seal(const std::string& body) {
  std::string out;
  out.reserve(body.size() + 4);
  Put32(&out, Crc(body));
  out.append(body);
  return out;
}

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat("raft log record is corrupt (", what,
                   "): the member's data directory is damaged; restore it "
                   "from another member (remove and re-add this member)"));
}

// Reads fields front to back; any short read marks it failed.
class Cursor {
 public:
  explicit Cursor(absl::string_view in) : in_(in) {}
  uint64_t U64() {
    if (in_.size() < 8) return Fail();
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in_[i]);
    in_.remove_prefix(8);
    return v;
  }
  uint32_t U32() {
    if (in_.size() < 4) return static_cast<uint32_t>(Fail());
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(in_[i]);
    in_.remove_prefix(4);
    return v;
  }
  uint8_t U8() {
    if (in_.empty()) return static_cast<uint8_t>(Fail());
    uint8_t v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return v;
  }
  absl::string_view Rest() {
    absl::string_view r = in_;
    in_ = absl::string_view();
    return r;
  }
  bool ok() const { return ok_; }
  bool done() const { return in_.empty(); }

 private:
  uint64_t Fail() {
    ok_ = false;
    in_ = absl::string_view();
    return 0;
  }
  absl::string_view in_;
  bool ok_ = true;
};

// Verifies the checksum and returns the body.
absl::StatusOr<absl::string_view> Open(absl::string_view record,
                                       absl::string_view what) {
  if (record.size() < 4) return Corrupt(absl::StrCat(what, ": too short"));
  Cursor c(record);
  uint32_t crc = c.U32();
  absl::string_view body = c.Rest();
  if (Crc(body) != crc) return Corrupt(absl::StrCat(what, ": checksum"));
  return body;
}

void PutIds(std::string* out, const std::vector<uint64_t>& ids) {
  Put32(out, static_cast<uint32_t>(ids.size()));
  for (uint64_t id : ids) Put64(out, id);
}

bool GetIds(Cursor& c, std::vector<uint64_t>* ids) {
  uint32_t n = c.U32();
  if (!c.ok() || n > (1u << 16)) return false;  // far beyond any cluster
  ids->clear();
  for (uint32_t i = 0; i < n && c.ok(); ++i) ids->push_back(c.U64());
  return c.ok();
}

void PutConfState(std::string* out, const ConfState& cs) {
  PutIds(out, cs.voters);
  PutIds(out, cs.learners);
  PutIds(out, cs.voters_outgoing);
  PutIds(out, cs.learners_next);
  out->push_back(cs.auto_leave ? 1 : 0);
}

bool GetConfState(Cursor& c, ConfState* cs) {
  if (!GetIds(c, &cs->voters) || !GetIds(c, &cs->learners) ||
      !GetIds(c, &cs->voters_outgoing) || !GetIds(c, &cs->learners_next)) {
    return false;
  }
  uint8_t auto_leave = c.U8();
  if (!c.ok() || auto_leave > 1) return false;
  cs->auto_leave = auto_leave == 1;
  return true;
}

}  // namespace

std::string EntryKey(uint64_t index) {
  std::string key = "e";
  Put64(&key, index);
  return key;
}

std::string EncodeEntry(const Entry& e) {
  std::string body;
  body.reserve(9 + e.data.size());
  Put64(&body, e.term);
  body.push_back(static_cast<char>(e.type));
  body.append(e.data);
  return Seal(body);
}

absl::StatusOr<Entry> DecodeEntry(uint64_t index, absl::string_view record) {
  absl::StatusOr<absl::string_view> body = Open(record, "entry");
  if (!body.ok()) return body.status();
  Cursor c(*body);
  Entry e;
  e.index = index;
  e.term = c.U64();
  uint8_t type = c.U8();
  if (!c.ok() || type > static_cast<uint8_t>(EntryType::kConfChange)) {
    return Corrupt("entry: header");
  }
  e.type = static_cast<EntryType>(type);
  absl::string_view data = c.Rest();
  e.data.assign(data.data(), data.size());
  return e;
}

std::string EncodeHardState(const HardState& hs) {
  std::string body;
  Put64(&body, hs.term);
  Put64(&body, hs.vote);
  Put64(&body, hs.commit);
  return Seal(body);
}

absl::StatusOr<HardState> DecodeHardState(absl::string_view record) {
  absl::StatusOr<absl::string_view> body = Open(record, "hard state");
  if (!body.ok()) return body.status();
  Cursor c(*body);
  HardState hs;
  hs.term = c.U64();
  hs.vote = c.U64();
  hs.commit = c.U64();
  if (!c.ok() || !c.done()) return Corrupt("hard state: shape");
  return hs;
}

std::string EncodeCompact(uint64_t index, uint64_t term) {
  std::string body;
  Put64(&body, index);
  Put64(&body, term);
  return Seal(body);
}

absl::Status DecodeCompact(absl::string_view record, uint64_t* index,
                           uint64_t* term) {
  absl::StatusOr<absl::string_view> body = Open(record, "compaction point");
  if (!body.ok()) return body.status();
  Cursor c(*body);
  *index = c.U64();
  *term = c.U64();
  if (!c.ok() || !c.done()) return Corrupt("compaction point: shape");
  return absl::OkStatus();
}

std::string EncodeSnapshot(const SnapshotMetadata& meta,
                           absl::string_view data) {
  std::string body;
  Put64(&body, meta.index);
  Put64(&body, meta.term);
  PutConfState(&body, meta.conf_state);
  body.append(data.data(), data.size());
  return Seal(body);
}

absl::Status DecodeSnapshot(absl::string_view record, SnapshotMetadata* meta,
                            std::string* data) {
  absl::StatusOr<absl::string_view> body = Open(record, "snapshot");
  if (!body.ok()) return body.status();
  Cursor c(*body);
  meta->index = c.U64();
  meta->term = c.U64();
  if (!c.ok() || !GetConfState(c, &meta->conf_state)) {
    return Corrupt("snapshot: shape");
  }
  absl::string_view rest = c.Rest();
  data->assign(rest.data(), rest.size());
  return absl::OkStatus();
}

std::string EncodeConfStateRecord(const ConfState& cs) {
  std::string body;
  PutConfState(&body, cs);
  return Seal(body);
}

absl::StatusOr<ConfState> DecodeConfStateRecord(absl::string_view record) {
  absl::StatusOr<absl::string_view> body = Open(record, "configuration");
  if (!body.ok()) return body.status();
  Cursor c(*body);
  ConfState cs;
  if (!GetConfState(c, &cs) || !c.done()) {
    return Corrupt("configuration: shape");
  }
  return cs;
}

}  // namespace lockd::raft::disk
