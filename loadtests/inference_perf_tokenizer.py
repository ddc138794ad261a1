"""Write a small local Hugging Face tokenizer for running `inference-perf` against the fleet.

inference-perf counts and generates prompts with a Hugging Face tokenizer and, by default,
downloads the served model's from the Hub. Offline, point its `tokenizer:` section at the folder
this writes instead: a word-level tokenizer over 4,096 made-up four-letter words (one word is one
token here and one token in the simulated fleet, which counts runs of up to 8 word characters),
so prompt lengths come out as configured. Needs `tokenizers` and `transformers` (both installed
with inference-perf); run it with inference-perf's Python:

    /tmp/ipvenv/bin/python loadtests/inference_perf_tokenizer.py /tmp/sluice-tokenizer
"""

import importlib
import itertools
import sys
from pathlib import Path

CONSONANTS = "bcdfghjklmnprstvwz"
VOCALS = "aeiou"
VOCAB_SIZE = 4096
SPECIAL = ("<unk>", "<s>", "</s>")


def vocabulary() -> list[str]:
    syllables = [c + v for c in CONSONANTS for v in VOCALS]
    words = ("".join(pair) for pair in itertools.product(syllables, repeat=2))
    return [*SPECIAL, *itertools.islice(words, VOCAB_SIZE - len(SPECIAL))]


def write_tokenizer(folder: Path) -> None:
    # Imported by name: these packages come with inference-perf, not with Sluice.
    tk = importlib.import_module("tokenizers")
    fast = importlib.import_module("transformers").PreTrainedTokenizerFast
    vocab = {word: i for i, word in enumerate(vocabulary())}
    tokenizer = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = tk.normalizers.Lowercase()
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    tokenizer.decoder = tk.decoders.WordPiece(prefix="##")  # joins words with single spaces
    wrapped = fast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=8192,
    )
    wrapped.save_pretrained(str(folder))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    write_tokenizer(Path(args[0]))
    print(f"tokenizer written to {args[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
