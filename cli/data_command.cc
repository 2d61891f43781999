#include "cli/data_command.h"

#include <iostream>
#include <memory>

#include "data/dataset.h"

namespace potluck {

CLI::App* AddDataCommand(CLI::App* app, int* exit_code) {
  CLI::App* data = app->add_subcommand("data", "Prepare token shards from text files");
  data->require_subcommand(1);
  auto options = std::make_shared<PrepareOptions>();
  CLI::App* prepare = data->add_subcommand(
      "prepare", "Byte-level token shards + manifest (default input: the built-in corpus)");
  prepare
      ->add_option("--input", options->inputs, "Text files (default: /usr/share/common-licenses/*)")
      ->check(CLI::ExistingFile);
  prepare->add_option("--out", options->out_dir, "Dataset directory to write")->required();
  prepare->add_option("--shard-tokens", options->shard_tokens, "Tokens per shard")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  prepare
      ->add_option("--validation-fraction", options->validation_fraction,
                   "Share of the corpus held out for validation")
      ->check(CLI::Range(0.0, 0.5));
  prepare->callback([options, exit_code] {
    const absl::StatusOr<Dataset> dataset = PrepareDataset(*options);
    if (!dataset.ok()) {
      std::cerr << "potluck data prepare: " << dataset.status() << "\n";
      *exit_code = 2;
      return;
    }
    uint64_t validation = 0;
    for (const ShardInfo& shard : dataset->validation) validation += shard.tokens;
    std::cout << "prepared " << dataset->sources.size() << " file(s) into " << dataset->dir << ": "
              << dataset->train_tokens() << " training tokens in " << dataset->train.size()
              << " shard(s), " << validation << " validation tokens\n";
    *exit_code = 0;
  });
  return data;
}

}  // namespace potluck
