// SentencePiece behind a C interface, for tokenizer.cpp, which loads this module with dlmopen
// into a link namespace of its own. Debian's libsentencepiece carries its own protobuf-lite and
// exports its symbols; in LibTorch's namespace they interpose on libprotobuf's, and the process
// crashes while loading. Strings cross as UTF-8 C strings: pieces separated by '\n', results
// allocated here and released with torchattn_spm_free (each namespace has its own malloc).

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

char* copy_out(const std::string& s) {
  auto* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p != nullptr)
    std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

std::vector<std::string> lines_of(const char* text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

/// The sentences of a '\n'-separated buffer, one by one, for the trainer.
class Lines : public sentencepiece::SentenceIterator {
 public:
  explicit Lines(std::vector<std::string> lines) : lines_(std::move(lines)) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::vector<std::string> lines_;
  size_t i_ = 0;
};

} // namespace

extern "C" {

/// The model at `path`, or null with *error set.
void* torchattn_spm_load(const char* path, char** error) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    *error = copy_out(status.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

void torchattn_spm_unload(void* model) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(model);
}

/// The pieces of `text`, each followed by '\n'; null with *error set on failure.
char* torchattn_spm_encode(void* model, const char* text, char** error) {
  std::vector<std::string> pieces;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(model)->Encode(text, &pieces);
  if (!status.ok()) {
    *error = copy_out(status.ToString());
    return nullptr;
  }
  std::string out;
  for (const auto& p : pieces)
    out += p + '\n';
  return copy_out(out);
}

/// The text of '\n'-separated `pieces`; null with *error set on failure.
char* torchattn_spm_decode(void* model, const char* pieces, char** error) {
  std::string text;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(model)->Decode(lines_of(pieces), &text);
  if (!status.ok()) {
    *error = copy_out(status.ToString());
    return nullptr;
  }
  return copy_out(text);
}

/// Every piece of the model but <unk>, in id order, each followed by '\n'.
char* torchattn_spm_pieces(void* model) {
  const auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(model);
  std::string out;
  for (int id = 0; id < sp->GetPieceSize(); ++id) {
    if (!sp->IsUnknown(id) && !sp->IsControl(id))
      out += sp->IdToPiece(id) + '\n';
  }
  return copy_out(out);
}

/// Trains on '\n'-separated `sentences` with `options` ("key=value" lines, the trainer's
/// flags); returns null, or the error.
char* torchattn_spm_train(const char* options, const char* sentences) {
  std::unordered_map<std::string, std::string> kwargs;
  for (const auto& line : lines_of(options)) {
    const auto eq = line.find('=');
    kwargs[line.substr(0, eq)] = eq == std::string::npos ? "" : line.substr(eq + 1);
  }
  Lines it(lines_of(sentences));
  const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs, &it);
  return status.ok() ? nullptr : copy_out(status.ToString());
}

void torchattn_spm_free(char* p) {
  std::free(p);
}

} // extern "C"
