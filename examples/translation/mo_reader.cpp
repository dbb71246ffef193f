#include "mo_reader.h"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace translate {
namespace {

constexpr uint32_t kMagic = 0x950412de;

class Reader {
 public:
  Reader(const std::string& bytes, const std::string& name) : b_(bytes), name_(name) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("'" + name_ + "' is not a valid .mo file: " + what);
  }

  uint32_t u32(uint64_t offset) const {
    if (offset + 4 > b_.size()) {
      fail(
          "offset " + std::to_string(offset) + " is past the end of the file (" +
          std::to_string(b_.size()) + " bytes)");
    }
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const auto byte = static_cast<uint32_t>(static_cast<unsigned char>(b_[offset + k]));
      v |= swapped_ ? byte << (8 * (3 - k)) : byte << (8 * k);
    }
    return v;
  }

  void read_magic() {
    if (b_.size() < 28)
      fail("it has " + std::to_string(b_.size()) + " bytes, fewer than a header");
    const uint32_t m = u32(0);
    if (m == kMagic)
      return;
    swapped_ = true;
    if (u32(0) != kMagic) {
      std::ostringstream hex;
      hex << std::hex << m;
      fail("bad magic number 0x" + hex.str());
    }
  }

  // The string of table entry `index` of the table at `table`.
  std::string string_at(uint64_t table, uint32_t index) const {
    const uint64_t entry = table + 8ull * index;
    const uint32_t length = u32(entry);
    const uint32_t offset = u32(entry + 4);
    if (static_cast<uint64_t>(offset) + length + 1 > b_.size()) {
      fail(
          "string " + std::to_string(index) + " (" + std::to_string(length) + " bytes at " +
          std::to_string(offset) + ") runs past the end of the file");
    }
    if (b_[offset + length] != '\0')
      fail("string " + std::to_string(index) + " lacks its NUL");
    return b_.substr(offset, length);
  }

 private:
  const std::string& b_;
  const std::string& name_;
  bool swapped_ = false;
};

std::vector<std::string> split_nul(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t p; (p = s.find('\0', start)) != std::string::npos; start = p + 1) {
    parts.push_back(s.substr(start, p - start));
  }
  parts.push_back(s.substr(start));
  return parts;
}

} // namespace

std::vector<MoEntry> parse_mo(const std::string& bytes, const std::string& name) {
  Reader r(bytes, name);
  r.read_magic();
  const uint32_t revision = r.u32(4);
  if ((revision >> 16) > 1)
    r.fail("unknown major revision " + std::to_string(revision >> 16));
  const uint32_t count = r.u32(8);
  const uint32_t originals = r.u32(12);
  const uint32_t translations = r.u32(16);
  for (uint32_t table : {originals, translations}) {
    if (static_cast<uint64_t>(table) + 8ull * count > bytes.size()) {
      r.fail(
          "a string table of " + std::to_string(count) + " entries at offset " +
          std::to_string(table) + " does not fit in the file");
    }
  }
  std::vector<MoEntry> entries;
  entries.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    std::string original = r.string_at(originals, i);
    MoEntry e;
    const size_t eot = original.find('\x04');
    if (eot != std::string::npos) {
      e.context = original.substr(0, eot);
      original = original.substr(eot + 1);
    }
    auto ids = split_nul(original);
    e.msgid = ids[0];
    if (ids.size() > 1)
      e.msgid_plural = ids[1];
    e.msgstr = split_nul(r.string_at(translations, i));
    if (e.msgid.empty() && e.context.empty())
      continue; // the header
    entries.push_back(std::move(e));
  }
  return entries;
}

std::vector<MoEntry> read_mo(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open .mo file '" + path + "'");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return parse_mo(bytes.str(), path);
}

} // namespace translate
