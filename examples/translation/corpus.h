#pragma once

// The default corpus of torchattn-translate: English UI messages and their French
// translations from the gettext catalogs of a pinned list of Debian packages.

#include "data.h"
#include "mo_reader.h"

#include <string>
#include <vector>

namespace translate {

/// The Debian packages whose French catalogs make the default corpus.
const std::vector<std::string>& gettext_packages();

/// Cleans one catalog message for the corpus: strips a single accelerator mark ('_', '~' or
/// '&' before a letter) and surrounding space, and returns an empty string for a message that
/// is not a short plain sentence (format placeholders, markup, entities, paths, several lines,
/// more than `max_words` words, no lowercase ASCII letter).
std::string clean_message(const std::string& message, size_t max_words);

/// The (English, French) pairs of catalog entries that survive clean_message on both sides,
/// skipping plural entries and untranslated or identical messages.
std::vector<std::pair<std::string, std::string>> catalog_pairs(const std::vector<MoEntry>& entries);

/// Downloads (apt-get download, no root needed) and unpacks (dpkg-deb -x) the packages into
/// `cache_dir` (default: $XDG_CACHE_HOME/torchattn/gettext, else ~/.cache/...), reads every
/// French catalog, and returns the deduplicated pairs grouped by English message. A package
/// that cannot be downloaded or unpacked is skipped with a warning; none at all is an error.
std::vector<Example> gettext_corpus(std::string cache_dir);

} // namespace translate
