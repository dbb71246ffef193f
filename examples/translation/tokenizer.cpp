#include "tokenizer.h"

#include "text.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace fs = std::filesystem;

namespace translate {

namespace {

/// SentencePiece, loaded once with dlmopen into a link namespace of its own
/// (sentencepiece_shim.cpp says why), found at $TORCHATTN_SPM_SHIM, beside the running
/// program, or where the build put it.
struct SentencePieceLibrary {
  void* (*load)(const char*, char**) = nullptr;
  void (*unload)(void*) = nullptr;
  char* (*encode)(void*, const char*, char**) = nullptr;
  char* (*decode)(void*, const char*, char**) = nullptr;
  char* (*train)(const char*, const char*) = nullptr;
  char* (*pieces)(void*) = nullptr;
  void (*release)(char*) = nullptr;

  static const SentencePieceLibrary& get() {
    static const SentencePieceLibrary lib = open();
    return lib;
  }

  /// The string `s` made by the module, released there.
  std::string take(char* s) const {
    std::string out = s != nullptr ? s : "";
    release(s);
    return out;
  }

 private:
  static fs::path find() {
    constexpr const char* kName = "libtorchattn_sentencepiece.so";
    if (const char* env = std::getenv("TORCHATTN_SPM_SHIM"); env != nullptr && *env != '\0')
      return env;
    std::error_code ec;
    const fs::path beside = fs::read_symlink("/proc/self/exe", ec).parent_path() / kName;
    if (!ec && fs::exists(beside))
      return beside;
    return TORCHATTN_SPM_SHIM_PATH;
  }

  static SentencePieceLibrary open() {
    const fs::path path = find();
    void* h = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      throw std::runtime_error(
          "cannot load SentencePiece ('" + path.string() + "'): " + dlerror() +
          "; set TORCHATTN_SPM_SHIM to the libtorchattn_sentencepiece.so of this build");
    }
    SentencePieceLibrary lib;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (fn == nullptr)
        throw std::runtime_error("'" + path.string() + "' has no " + name);
    };
    sym(lib.load, "torchattn_spm_load");
    sym(lib.unload, "torchattn_spm_unload");
    sym(lib.encode, "torchattn_spm_encode");
    sym(lib.decode, "torchattn_spm_decode");
    sym(lib.train, "torchattn_spm_train");
    sym(lib.pieces, "torchattn_spm_pieces");
    sym(lib.release, "torchattn_spm_free");
    return lib;
  }
};

/// `s` with its line breaks as spaces: the module separates pieces by '\n'.
std::string one_line(std::string s) {
  for (auto& c : s) {
    if (c == '\n' || c == '\r')
      c = ' ';
  }
  return s;
}

} // namespace

Tokenizer Tokenizer::load_sentencepiece(const std::string& path) {
  if (!fs::is_regular_file(path))
    throw std::runtime_error("'" + path + "' is missing (the SentencePiece model)");
  const auto& lib = SentencePieceLibrary::get();
  char* error = nullptr;
  void* model = lib.load(path.c_str(), &error);
  if (model == nullptr) {
    throw std::runtime_error("'" + path + "' is not a SentencePiece model: " + lib.take(error));
  }
  Tokenizer t;
  t.sp_ = std::shared_ptr<void>(model, [&lib](void* m) { lib.unload(m); });
  return t;
}

void Tokenizer::train_sentencepiece(
    const std::vector<std::string>& sentences, const std::string& path, const std::string& type,
    int64_t vocab_size) {
  if (type != "unigram" && type != "bpe")
    throw std::runtime_error("subword model '" + type + "': expected unigram or bpe");
  if (sentences.empty())
    throw std::runtime_error("no sentences to train the SentencePiece model '" + path + "' on");
  // Ids are Vocab's (text.h): SentencePiece's own <s>, </s> and <pad> are switched off, and
  // its <unk> never reaches the model (Vocab maps pieces it has not seen to its own <unk>).
  const std::string prefix = path + ".tmp";
  const std::string options = "model_prefix=" + prefix + "\nmodel_type=" + type +
                              "\nvocab_size=" + std::to_string(vocab_size) +
                              "\nhard_vocab_limit=false\ncharacter_coverage=1.0\nbos_id=-1\n"
                              "eos_id=-1\npad_id=-1\nunk_id=0\nnum_threads=2\nminloglevel=2\n";
  std::string text;
  for (const auto& s : sentences)
    text += one_line(utf8_lower(s)) + '\n';
  const auto& lib = SentencePieceLibrary::get();
  if (char* error = lib.train(options.c_str(), text.c_str()); error != nullptr) {
    throw std::runtime_error(
        "training the SentencePiece model '" + path + "' failed: " + lib.take(error));
  }
  // Written beside it, then renamed: an interrupted prepare leaves no half-written model.
  fs::rename(prefix + ".model", path);
  fs::remove(prefix + ".vocab");
}

namespace {

/// The lines of `all`, each ended by '\n'.
std::vector<std::string> split_lines(const std::string& all) {
  std::vector<std::string> out;
  for (size_t i = 0, j; i < all.size(); i = j + 1) {
    j = all.find('\n', i);
    out.push_back(all.substr(i, j - i));
  }
  return out;
}

} // namespace

std::vector<std::string> Tokenizer::encode(const std::string& text) const {
  if (!sp_)
    return tokenize(text);
  const auto& lib = SentencePieceLibrary::get();
  char* error = nullptr;
  char* pieces = lib.encode(sp_.get(), one_line(utf8_lower(text)).c_str(), &error);
  if (pieces == nullptr) {
    throw std::runtime_error(
        "SentencePiece could not encode '" + printable(text) + "': " + lib.take(error));
  }
  return split_lines(lib.take(pieces));
}

std::vector<std::string> Tokenizer::pieces() const {
  if (!sp_)
    return {};
  const auto& lib = SentencePieceLibrary::get();
  return split_lines(lib.take(lib.pieces(sp_.get())));
}

std::string Tokenizer::decode(const std::vector<std::string>& tokens) const {
  if (!sp_)
    return detokenize(tokens);
  std::string joined;
  for (const auto& t : tokens)
    joined += one_line(t) + '\n';
  const auto& lib = SentencePieceLibrary::get();
  char* error = nullptr;
  char* text = lib.decode(sp_.get(), joined.c_str(), &error);
  if (text == nullptr)
    throw std::runtime_error("SentencePiece could not decode a translation: " + lib.take(error));
  return capitalize_first(lib.take(text));
}

std::vector<int64_t> Tokenizer::word_index(const std::vector<std::string>& tokens) const {
  if (!sp_)
    return detokenized_words(tokens);
  std::vector<int64_t> words;
  int64_t w = -1;
  for (const auto& t : tokens) {
    if (w < 0 || t.rfind("\u2581", 0) == 0)
      ++w;
    words.push_back(w);
  }
  return words;
}

} // namespace translate
