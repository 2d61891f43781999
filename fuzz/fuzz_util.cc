#include "fuzz/fuzz_util.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/check.h"

namespace potluck::fuzz {

const std::string& ScratchDir() {
  static const std::string* const dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/potluck-fuzz-XXXXXX";
    POTLUCK_CHECK(mkdtemp(pattern.data()) != nullptr) << "cannot create " << pattern;
    auto* made = new std::string(pattern);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(ScratchDir(), ignored);
    });
    return made;
  }();
  return *dir;
}

std::string WriteScratchFile(absl::string_view name, absl::string_view bytes) {
  const std::string path = ScratchDir() + "/" + std::string(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  POTLUCK_CHECK(out.good()) << "cannot write " << path;
  return path;
}

}  // namespace potluck::fuzz
