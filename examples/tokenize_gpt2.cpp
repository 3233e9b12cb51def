// tokenize_gpt2: the tokenize program under its former name (same flags; GPT-2's files are the default).
#include "examples/tokenize.cpp"
