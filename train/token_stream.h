// One long stream of tokens for random-window training (train/window_source.h): a raw text file encoded
// with a tokenizer, or an llm.c token file (train/token_file.h), split into a training part and a
// held-out tail.
#pragma once

#include <string>

#include "models/tokenizer/tokenizer.h"
#include "train/window_source.h"

namespace lora::train {

// Reads `path` and splits it: the first `train_fraction` of its characters (text, encoded with
// `tokenizer`; special tokens written in the text stay text; the cut falls between two characters) or of
// its tokens (an llm.c token file, recognised by its magic; the tokenizer may then be null) for
// training, the rest held out. Errors name the file.
TokenSplit load_token_split(const std::string& path, const tokenizer::Tokenizer* tokenizer,
                            double train_fraction = 0.9);

}  // namespace lora::train
