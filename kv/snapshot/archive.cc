#include "kv/snapshot/archive.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace lockd::kv {
namespace {

constexpr char kMagic[] = "LOCKDSNAP1";
constexpr size_t kMagicLen = 10;
constexpr size_t kTrailerLen = SHA256_DIGEST_LENGTH;
constexpr size_t kNameMax = 255;

void Put32(std::string* out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out->push_back(static_cast<char>(v >> s));
}
void Put64(std::string* out, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) out->push_back(static_cast<char>(v >> s));
}
// SHA-256 through OpenSSL's EVP interface (the SHA256_* calls are
// deprecated since OpenSSL 3).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
  // Writes the digest's SHA256_DIGEST_LENGTH bytes.
  void Final(unsigned char* digest) {
    EVP_DigestFinal_ex(ctx_, digest, nullptr);
  }

 private:
  EVP_MD_CTX* ctx_;
};

uint64_t Get(absl::string_view b, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(b[i]);
  return v;
}

absl::Status Io(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

bool SafeName(absl::string_view name) {
  return !name.empty() && name.size() <= kNameMax && name != "." &&
         name != ".." && name.find('/') == absl::string_view::npos &&
         name.find('\0') == absl::string_view::npos;
}

}  // namespace

// ---------------------------------------------------------------------------

struct ArchiveReader::Impl {
  struct File {
    std::string name;
    std::string path;
    uint64_t size;
  };
  std::vector<File> files;
  size_t next_file = 0;
  int fd = -1;
  uint64_t left_in_file = 0;
  bool header_done = false;
  bool end_done = false;
  bool trailer_done = false;
  uint64_t pad = 0;
  Sha256 sha;

  ~Impl() {
    if (fd >= 0) close(fd);
  }
  void Emit(std::string* out, absl::string_view bytes) {
    sha.Update(bytes.data(), bytes.size());
    out->append(bytes.data(), bytes.size());
  }
};

ArchiveReader::ArchiveReader(std::unique_ptr<Impl> impl, uint64_t total)
    : impl_(std::move(impl)), total_(total) {}
ArchiveReader::~ArchiveReader() = default;

absl::StatusOr<std::unique_ptr<ArchiveReader>> ArchiveReader::Open(
    const std::string& dir) {
  auto impl = std::make_unique<Impl>();
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return Io("opendir", dir);
  while (struct dirent* ent = readdir(d)) {
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    std::string path = dir + "/" + name;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      closedir(d);
      return Io("stat", path);
    }
    if (!S_ISREG(st.st_mode) || !SafeName(name)) continue;
    impl->files.push_back({name, path, static_cast<uint64_t>(st.st_size)});
  }
  closedir(d);
  std::sort(
      impl->files.begin(), impl->files.end(),
      [](const Impl::File& a, const Impl::File& b) { return a.name < b.name; });
  uint64_t body = kMagicLen + 4 + 2;
  for (const Impl::File& f : impl->files) {
    body += 4 + f.name.size() + 8 + f.size;
  }
  impl->pad = (512 - body % 512) % 512;
  uint64_t total = body + impl->pad + kTrailerLen;
  return std::unique_ptr<ArchiveReader>(
      new ArchiveReader(std::move(impl), total));
}

absl::StatusOr<bool> ArchiveReader::Next(size_t max_bytes, std::string* out) {
  Impl& s = *impl_;
  size_t start = out->size();
  auto room = [&] { return max_bytes - (out->size() - start); };
  while (room() > 0) {
    if (!s.header_done) {
      s.Emit(out, absl::string_view(kMagic, kMagicLen));
      s.header_done = true;
      continue;
    }
    if (s.fd >= 0) {
      char buf[64 * 1024];
      size_t want = std::min<uint64_t>({sizeof(buf), room(), s.left_in_file});
      ssize_t n = read(s.fd, buf, want);
      if (n <= 0) {
        return absl::InternalError(absl::StrCat(
            "read ", s.files[s.next_file - 1].path, ": file shrank or failed"));
      }
      s.Emit(out, absl::string_view(buf, n));
      s.left_in_file -= n;
      if (s.left_in_file == 0) {
        close(s.fd);
        s.fd = -1;
      }
      continue;
    }
    if (s.next_file < s.files.size()) {
      const Impl::File& f = s.files[s.next_file++];
      std::string hdr;
      Put32(&hdr, static_cast<uint32_t>(f.name.size()));
      hdr += f.name;
      Put64(&hdr, f.size);
      s.Emit(out, hdr);
      if (f.size > 0) {
        s.fd = open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
        if (s.fd < 0) return Io("open", f.path);
        s.left_in_file = f.size;
      }
      continue;
    }
    if (!s.end_done) {
      std::string end;
      Put32(&end, 0);
      end.push_back(static_cast<char>(s.pad >> 8));
      end.push_back(static_cast<char>(s.pad & 0xff));
      end.append(s.pad, '\0');
      s.Emit(out, end);
      s.end_done = true;
      continue;
    }
    if (!s.trailer_done) {
      unsigned char digest[kTrailerLen];
      s.sha.Final(digest);
      out->append(reinterpret_cast<char*>(digest), kTrailerLen);
      s.trailer_done = true;
    }
    return false;
  }
  return !s.trailer_done;
}

// ---------------------------------------------------------------------------

struct ArchiveWriter::Impl {
  enum class Stage {
    kMagic,
    kNameLen,
    kName,
    kSize,
    kData,
    kPadLen,
    kPad,
    kTrailer,
    kDone
  };
  std::string dir;
  Stage stage = Stage::kMagic;
  std::string buf;  // bytes of the current field
  std::string name;
  uint64_t left = 0;
  int fd = -1;
  Sha256 sha;
  absl::Status error;

  ~Impl() {
    if (fd >= 0) close(fd);
  }
};

ArchiveWriter::ArchiveWriter(std::string dir)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = std::move(dir);
}
ArchiveWriter::~ArchiveWriter() = default;

absl::Status ArchiveWriter::Write(absl::string_view bytes) {
  Impl& s = *impl_;
  if (!s.error.ok()) return s.error;
  auto fail = [&](absl::Status st) {
    s.error = st;
    return st;
  };
  auto corrupt = [&](absl::string_view why) {
    return fail(absl::DataLossError(
        absl::StrCat("snapshot stream is malformed: ", why)));
  };
  // Fills s.buf to `n` bytes from `bytes`; true when complete.
  auto fill = [&](size_t n, bool hash) {
    size_t take = std::min(n - s.buf.size(), bytes.size());
    if (hash) s.sha.Update(bytes.data(), take);
    s.buf.append(bytes.data(), take);
    bytes.remove_prefix(take);
    return s.buf.size() == n;
  };
  while (!bytes.empty()) {
    switch (s.stage) {
      case Impl::Stage::kMagic:
        if (!fill(kMagicLen, true)) break;
        if (s.buf != absl::string_view(kMagic, kMagicLen)) {
          return corrupt("not a lockd snapshot");
        }
        s.buf.clear();
        s.stage = Impl::Stage::kNameLen;
        break;
      case Impl::Stage::kNameLen: {
        if (!fill(4, true)) break;
        uint64_t len = Get(s.buf, 4);
        s.buf.clear();
        if (len == 0) {
          s.stage = Impl::Stage::kPadLen;
        } else if (len > kNameMax) {
          return corrupt("file name too long");
        } else {
          s.left = len;
          s.stage = Impl::Stage::kName;
        }
        break;
      }
      case Impl::Stage::kName:
        if (!fill(s.left, true)) break;
        s.name = s.buf;
        s.buf.clear();
        if (!SafeName(s.name)) return corrupt("unsafe file name");
        s.stage = Impl::Stage::kSize;
        break;
      case Impl::Stage::kSize: {
        if (!fill(8, true)) break;
        s.left = Get(s.buf, 8);
        s.buf.clear();
        std::string path = s.dir + "/" + s.name;
        s.fd =
            open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (s.fd < 0) return fail(Io("create", path));
        s.stage = s.left > 0 ? Impl::Stage::kData : Impl::Stage::kNameLen;
        if (s.left == 0) {
          close(s.fd);
          s.fd = -1;
        }
        break;
      }
      case Impl::Stage::kData: {
        size_t take = std::min<uint64_t>(s.left, bytes.size());
        s.sha.Update(bytes.data(), take);
        if (write(s.fd, bytes.data(), take) != static_cast<ssize_t>(take)) {
          return fail(Io("write", s.dir + "/" + s.name));
        }
        bytes.remove_prefix(take);
        s.left -= take;
        if (s.left == 0) {
          if (fsync(s.fd) != 0) return fail(Io("fsync", s.dir + "/" + s.name));
          close(s.fd);
          s.fd = -1;
          s.stage = Impl::Stage::kNameLen;
        }
        break;
      }
      case Impl::Stage::kPadLen:
        if (!fill(2, true)) break;
        s.left = Get(s.buf, 2);
        s.buf.clear();
        if (s.left >= 512) return corrupt("bad padding");
        s.stage = s.left > 0 ? Impl::Stage::kPad : Impl::Stage::kTrailer;
        break;
      case Impl::Stage::kPad:
        if (!fill(s.left, true)) break;
        if (s.buf.find_first_not_of('\0') != std::string::npos) {
          return corrupt("bad padding");
        }
        s.buf.clear();
        s.stage = Impl::Stage::kTrailer;
        break;
      case Impl::Stage::kTrailer: {
        if (!fill(kTrailerLen, false)) break;
        unsigned char digest[kTrailerLen];
        s.sha.Final(digest);
        if (std::memcmp(digest, s.buf.data(), kTrailerLen) != 0) {
          return corrupt("checksum mismatch");
        }
        s.stage = Impl::Stage::kDone;
        break;
      }
      case Impl::Stage::kDone:
        return corrupt("data after the end");
    }
  }
  return absl::OkStatus();
}

absl::Status ArchiveWriter::Finish() {
  if (!impl_->error.ok()) return impl_->error;
  if (impl_->stage != Impl::Stage::kDone) {
    return absl::DataLossError("snapshot stream is truncated");
  }
  return absl::OkStatus();
}

absl::Status VerifyArchiveFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(path + " does not exist");
    return Io("open", path);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return Io("stat", path);
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kMagicLen + 6 + kTrailerLen) {
    close(fd);
    return absl::DataLossError(path + " is too short to be a lockd snapshot");
  }
  Sha256 sha;
  std::string head;
  uint64_t left = size - kTrailerLen;
  char buf[64 * 1024];
  while (left > 0) {
    ssize_t n = read(fd, buf, std::min<uint64_t>(sizeof(buf), left));
    if (n <= 0) {
      close(fd);
      return Io("read", path);
    }
    if (head.size() < kMagicLen) {
      head.append(buf, std::min<size_t>(n, kMagicLen - head.size()));
    }
    sha.Update(buf, n);
    left -= n;
  }
  unsigned char want[kTrailerLen];
  ssize_t n = read(fd, want, kTrailerLen);
  close(fd);
  if (n != static_cast<ssize_t>(kTrailerLen)) return Io("read", path);
  if (head != absl::string_view(kMagic, kMagicLen)) {
    return absl::DataLossError(path + " is not a lockd snapshot");
  }
  unsigned char got[kTrailerLen];
  sha.Final(got);
  if (std::memcmp(got, want, kTrailerLen) != 0) {
    return absl::DataLossError(path + ": checksum mismatch (damaged)");
  }
  return absl::OkStatus();
}

void RemoveFlatDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (struct dirent* ent = readdir(d)) {
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    unlink((dir + "/" + name).c_str());
  }
  closedir(d);
  rmdir(dir.c_str());
}

absl::Status SyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("open ", dir, ": ", std::strerror(errno)));
  }
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("fsync ", dir, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace lockd::kv
