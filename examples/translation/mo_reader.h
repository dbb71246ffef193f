#pragma once

// A reader for GNU gettext's compiled message catalogs (.mo files), as documented in the
// gettext manual, "The Format of GNU MO Files".

#include <string>
#include <vector>

namespace translate {

struct MoEntry {
  std::string context; ///< msgctxt, empty when none
  std::string msgid;
  std::string msgid_plural;        ///< empty unless a plural entry
  std::vector<std::string> msgstr; ///< one translation, or one per plural form
};

/// Parses the bytes of a .mo file, either byte order. The header entry (empty msgid) is
/// skipped. Throws std::runtime_error naming `name` and what is wrong (bad magic, unknown major
/// revision, a table or string outside the file, a string without its terminating NUL).
std::vector<MoEntry> parse_mo(const std::string& bytes, const std::string& name = "<memory>");

/// Reads and parses a .mo file.
std::vector<MoEntry> read_mo(const std::string& path);

} // namespace translate
