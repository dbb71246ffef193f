#include "corpus.h"

#include "text.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace translate {
namespace fs = std::filesystem;

const std::vector<std::string>& gettext_packages() {
  // UI text of desktop applications: short, plain and translated by people.
  static const std::vector<std::string> packages = {
      "libreoffice-l10n-fr", "libgtk-3-common", "libglib2.0-data",
      "nautilus-data",       "evince-common",   "gnome-control-center-data",
      "thunar-data",         "gedit-common",    "gnome-calculator",
      "totem-common",        "vlc-l10n",        "gnome-software-common",
      "xfce4-panel",         "mousepad",        "gnome-text-editor",
  };
  return packages;
}

std::string clean_message(const std::string& message, size_t max_words) {
  std::string s;
  bool accelerator_seen = false;
  for (size_t i = 0; i < message.size(); ++i) {
    const char c = message[i];
    const bool before_letter =
        i + 1 < message.size() && (std::isalpha(static_cast<unsigned char>(message[i + 1])) != 0 ||
                                   static_cast<unsigned char>(message[i + 1]) >= 0x80);
    if ((c == '_' || c == '~' || c == '&') && before_letter && !accelerator_seen) {
      accelerator_seen = true;
      continue;
    }
    s += c;
  }
  const auto first = s.find_first_not_of(' ');
  if (first == std::string::npos)
    return {};
  s = s.substr(first, s.find_last_not_of(' ') - first + 1);
  // Placeholders (%s, {0}, $1), markup and entities, accelerators left over, paths, lines.
  if (s.find_first_of("%{}$<>&_~/\\\n\t|@#=[]*^`") != std::string::npos)
    return {};
  if (s.find("...") != std::string::npos || s.find("\u2026") != std::string::npos) {
    // Menu items that open a dialog: keep them, without the ellipsis.
    for (const std::string dots : {"...", "\u2026"}) {
      for (size_t p; (p = s.find(dots)) != std::string::npos;)
        s.erase(p, dots.size());
    }
    while (!s.empty() && s.back() == ' ')
      s.pop_back();
  }
  // Some lowercase letter: drops identifiers and function names (FISHERINV, SQL92).
  bool lower = false;
  for (unsigned char c : s)
    lower = lower || std::islower(c) != 0;
  if (!lower)
    return {};
  const auto tokens = tokenize(s);
  size_t words = 0;
  for (const auto& t : tokens)
    words += std::isalnum(static_cast<unsigned char>(t[0])) != 0 ||
             static_cast<unsigned char>(t[0]) >= 0x80;
  if (words == 0 || words > max_words)
    return {};
  return s;
}

std::vector<std::pair<std::string, std::string>> catalog_pairs(
    const std::vector<MoEntry>& entries) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& e : entries) {
    if (!e.msgid_plural.empty() || e.msgstr.empty() || e.msgstr[0].empty())
      continue;
    const std::string en = clean_message(e.msgid, 8);
    const std::string fr = clean_message(e.msgstr[0], 12);
    if (en.empty() || fr.empty() || en == fr)
      continue;
    pairs.emplace_back(en, fr);
  }
  return pairs;
}

std::vector<Example> gettext_corpus(std::string cache_dir) {
  if (cache_dir.empty()) {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    const fs::path base = xdg && *xdg ? fs::path(xdg) : fs::path(home ? home : ".") / ".cache";
    cache_dir = (base / "torchattn" / "gettext").string();
  }
  const fs::path debs = fs::path(cache_dir) / "debs", unpacked = fs::path(cache_dir) / "unpacked";
  fs::create_directories(debs);
  fs::create_directories(unpacked);
  auto find_deb = [&](const std::string& pkg) -> fs::path {
    for (const auto& f : fs::directory_iterator(debs)) {
      const std::string name = f.path().filename().string();
      if (name.rfind(pkg + "_", 0) == 0 && f.path().extension() == ".deb")
        return f.path();
    }
    return {};
  };
  std::map<std::string, std::vector<std::string>> by_source;
  std::vector<std::string> order;
  size_t used = 0;
  for (const auto& pkg : gettext_packages()) {
    fs::path deb = find_deb(pkg);
    if (deb.empty()) {
      const std::string cmd =
          fmt::format("cd '{}' && apt-get download '{}' >/dev/null 2>&1", debs.string(), pkg);
      if (std::system(cmd.c_str()) != 0 || (deb = find_deb(pkg)).empty()) {
        fmt::print(
            stderr, "prepare: warning: cannot download '{}' with apt-get download; skipped\n", pkg);
        continue;
      }
    }
    const fs::path dir = unpacked / pkg, done = unpacked / (pkg + ".done");
    if (!fs::exists(done)) {
      fs::remove_all(dir);
      const std::string cmd =
          fmt::format("dpkg-deb -x '{}' '{}' >/dev/null 2>&1", deb.string(), dir.string());
      if (std::system(cmd.c_str()) != 0) {
        fmt::print(stderr, "prepare: warning: cannot unpack '{}'; skipped\n", deb.string());
        continue;
      }
      std::ofstream(done.string()) << deb.filename().string() << '\n';
    }
    size_t n = 0;
    for (const auto& f : fs::recursive_directory_iterator(dir)) {
      const fs::path& p = f.path();
      if (p.extension() != ".mo" || p.parent_path().filename() != "LC_MESSAGES" ||
          p.parent_path().parent_path().filename() != "fr") {
        continue;
      }
      std::vector<MoEntry> entries;
      try {
        entries = read_mo(p.string());
      } catch (const std::exception& e) {
        fmt::print(stderr, "prepare: warning: {}; skipped\n", e.what());
        continue;
      }
      for (auto& [en, fr] : catalog_pairs(entries)) {
        auto [it, added] = by_source.try_emplace(en);
        if (added)
          order.push_back(en);
        if (std::find(it->second.begin(), it->second.end(), fr) == it->second.end()) {
          it->second.push_back(fr);
          ++n;
        }
      }
    }
    fmt::print(stderr, "prepare: {:<28} {:>6} new pairs\n", pkg, n);
    ++used;
  }
  if (used == 0) {
    throw std::runtime_error(
        "prepare: none of the corpus packages could be downloaded; check that apt-get "
        "works, or give a TSV file with --data");
  }
  std::vector<Example> examples;
  for (const auto& en : order)
    examples.push_back({en, by_source[en]});
  return examples;
}

} // namespace translate
