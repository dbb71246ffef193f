// Corpus files, splits, batches and the .mo reader of the translation example.

#include <corpus.h>
#include <data.h>
#include <mo_reader.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>

using namespace translate;
using Catch::Matchers::ContainsSubstring;

namespace {

std::string temp_file(const std::string& name, const std::string& content) {
  const auto path = std::filesystem::temp_directory_path() / ("torchattn_" + name);
  std::ofstream(path, std::ios::binary) << content;
  return path.string();
}

// Writes a .mo file as the gettext manual describes it: header, two tables of (length,
// offset) pairs, no hash table, then the NUL-terminated strings.
std::string make_mo(
    const std::vector<std::pair<std::string, std::string>>& entries, bool big_endian) {
  const auto n = static_cast<uint32_t>(entries.size());
  std::string out;
  auto u32 = [&](uint32_t v) {
    for (int k = 0; k < 4; ++k)
      out += static_cast<char>(big_endian ? (v >> (8 * (3 - k))) & 0xFF : (v >> (8 * k)) & 0xFF);
  };
  const uint32_t originals = 28, translations = originals + 8 * n;
  uint32_t offset = translations + 8 * n;
  u32(0x950412de);
  u32(0);
  u32(n);
  u32(originals);
  u32(translations);
  u32(0);
  u32(offset);
  std::string strings;
  std::vector<std::pair<uint32_t, uint32_t>> orig_table, trans_table;
  for (const auto& [id, str] : entries) {
    orig_table.emplace_back(
        static_cast<uint32_t>(id.size()), offset + static_cast<uint32_t>(strings.size()));
    strings += id + '\0';
  }
  for (const auto& [id, str] : entries) {
    trans_table.emplace_back(
        static_cast<uint32_t>(str.size()), offset + static_cast<uint32_t>(strings.size()));
    strings += str + '\0';
  }
  for (const auto& [len, off] : orig_table) {
    u32(len);
    u32(off);
  }
  for (const auto& [len, off] : trans_table) {
    u32(len);
    u32(off);
  }
  return out + strings;
}

const std::vector<std::pair<std::string, std::string>> kEntries = {
    {"", "Content-Type: text/plain; charset=UTF-8\n"},
    {"Open", "Ouvrir"},
    {std::string("menu\x04") + "File", "Fichier"},
    {std::string("One file") + '\0' + "%d files", std::string("Un fichier") + '\0' + "%d fichiers"},
};

} // namespace

TEST_CASE(
    "read_examples merges the references of a source and rejects broken lines", "[translation]") {
  const auto path = temp_file("pairs.tsv", "Go.\tVa !\r\nHi.\tSalut !\n\nGo.\tAllez !\tVa !\n");
  const auto ex = read_examples(path);
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].source == "Go.");
  CHECK(ex[0].references == std::vector<std::string>{"Va !", "Allez !"});
  CHECK(ex[1].references == std::vector<std::string>{"Salut !"});

  CHECK_THROWS_WITH(
      read_examples(temp_file("bad1.tsv", "Go.\tVa !\nno tab here\n")),
      ContainsSubstring("line 2: no tab"));
  CHECK_THROWS_WITH(
      read_examples(temp_file("bad2.tsv", "Go.\t\n")), ContainsSubstring("line 1: an empty field"));
  CHECK_THROWS_WITH(
      read_examples(temp_file("bad3.tsv", "Go.\tV\xc3\n")),
      ContainsSubstring("line 1: invalid UTF-8"));
  CHECK_THROWS_WITH(
      read_examples(temp_file("bad4.tsv", "")), ContainsSubstring("holds no sentence pairs"));
  CHECK_THROWS_WITH(read_examples("/nonexistent/pairs.tsv"), ContainsSubstring("cannot open"));
}

TEST_CASE("split_examples splits by source, disjointly and reproducibly", "[translation]") {
  std::vector<Example> ex;
  for (int i = 0; i < 100; ++i)
    ex.push_back({"s" + std::to_string(i), {"t" + std::to_string(i), "u"}});
  const Split a = split_examples(ex, 0.05, 0.1, 7), b = split_examples(ex, 0.05, 0.1, 7);
  CHECK(a.test.size() == 10);
  CHECK(a.dev.size() == 5);
  CHECK(a.train.size() == 85);
  std::set<std::string> seen;
  for (const auto* part : {&a.train, &a.dev, &a.test}) {
    for (const auto& e : *part)
      CHECK(seen.insert(e.source).second);
  }
  CHECK(seen.size() == 100);
  for (size_t i = 0; i < a.test.size(); ++i)
    CHECK(a.test[i].source == b.test[i].source);
  CHECK(split_examples(ex, 0.05, 0.1, 8).test[0].source != a.test[0].source);
  CHECK_THROWS_WITH(split_examples({ex[0], ex[1]}, 0.5, 0.5, 1), ContainsSubstring("too few"));
}

TEST_CASE("make_batch pads with masks and shifts the target", "[translation]") {
  const std::vector<EncodedPair> pairs = {{{5, 6, 7}, {8}}, {{9}, {10, 11, 12}}};
  const Batch b = make_batch(pairs, {0, 1});
  CHECK(torch::equal(b.src, torch::tensor({5, 6, 7, 9, 0, 0}, torch::kLong).view({2, 3})));
  CHECK(torch::equal(b.src_pad, torch::tensor({0, 0, 0, 0, 1, 1}, torch::kBool).view({2, 3})));
  CHECK(torch::equal(
      b.tgt_in, torch::tensor({2, 8, 0, 0, 2, 10, 11, 12}, torch::kLong).view({2, 4})));
  CHECK(torch::equal(
      b.tgt_out, torch::tensor({8, 3, 0, 0, 10, 11, 12, 3}, torch::kLong).view({2, 4})));
  CHECK(b.target_tokens == 6);
}

TEST_CASE("bucket_batches uses every pair once within the token limit", "[translation]") {
  std::vector<EncodedPair> pairs;
  std::mt19937_64 gen(3);
  for (int i = 0; i < 500; ++i) {
    pairs.push_back(
        {std::vector<int64_t>(1 + gen() % 12, 4), std::vector<int64_t>(1 + gen() % 15, 4)});
  }
  std::mt19937_64 rng(1);
  const auto batches = bucket_batches(pairs, 64, rng);
  std::vector<int> used(pairs.size(), 0);
  for (const auto& batch : batches) {
    size_t longest = 0;
    for (size_t i : batch) {
      ++used[i];
      longest = std::max({longest, pairs[i].src.size(), pairs[i].tgt.size() + 1});
    }
    CHECK((batch.size() == 1 || longest * batch.size() <= 64));
  }
  CHECK(std::count(used.begin(), used.end(), 1) == static_cast<long>(pairs.size()));
}

TEST_CASE("parse_mo reads plain, context and plural entries in both byte orders", "[translation]") {
  for (bool big : {false, true}) {
    const auto entries = parse_mo(make_mo(kEntries, big));
    REQUIRE(entries.size() == 3); // the header entry is skipped
    CHECK(entries[0].msgid == "Open");
    CHECK(entries[0].msgstr == std::vector<std::string>{"Ouvrir"});
    CHECK(entries[1].context == "menu");
    CHECK(entries[1].msgid == "File");
    CHECK(entries[2].msgid == "One file");
    CHECK(entries[2].msgid_plural == "%d files");
    CHECK(entries[2].msgstr == std::vector<std::string>{"Un fichier", "%d fichiers"});
  }
}

TEST_CASE("parse_mo rejects malformed files with a message", "[translation]") {
  const std::string good = make_mo(kEntries, false);
  CHECK_THROWS_WITH(
      parse_mo(good.substr(0, 20), "x.mo"), ContainsSubstring("'x.mo' is not a valid .mo file"));
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  CHECK_THROWS_WITH(parse_mo(bad_magic), ContainsSubstring("bad magic number"));
  std::string revision = good;
  revision[6] = 2; // major revision 2
  CHECK_THROWS_WITH(parse_mo(revision), ContainsSubstring("unknown major revision 2"));
  CHECK_THROWS_WITH(
      parse_mo(good.substr(0, good.size() - 5)), ContainsSubstring("runs past the end"));
  std::string no_nul = good;
  no_nul.back() = 'x';
  CHECK_THROWS_WITH(parse_mo(no_nul), ContainsSubstring("lacks its NUL"));
  std::string huge = good;
  huge[8] = '\x7f'; // a count whose tables cannot fit
  CHECK_THROWS_WITH(parse_mo(huge), ContainsSubstring("does not fit in the file"));
  CHECK_THROWS_WITH(read_mo("/nonexistent.mo"), ContainsSubstring("cannot open"));
}

TEST_CASE("catalog messages are cleaned and filtered for the corpus", "[translation]") {
  CHECK(clean_message("_Open", 8) == "Open");
  CHECK(clean_message("Save ~As...", 8) == "Save As");
  CHECK(clean_message("Delete %s?", 8).empty());
  CHECK(clean_message("<b>Bold</b>", 8).empty());
  CHECK(clean_message("/usr/share", 8).empty());
  CHECK(clean_message("one two three four five six seven eight nine", 8).empty());
  CHECK(clean_message("Two\nlines", 8).empty());
  CHECK(clean_message("123", 8).empty());
  std::vector<MoEntry> entries = {
      {"", "_Open", "", {"_Ouvrir"}},
      {"", "Same", "", {"Same"}},
      {"", "%d file", "%d files", {"%d fichier", "%d fichiers"}},
      {"", "Untranslated", "", {""}}};
  const auto pairs = catalog_pairs(entries);
  REQUIRE(pairs.size() == 1);
  CHECK(pairs[0] == std::make_pair(std::string("Open"), std::string("Ouvrir")));
}
