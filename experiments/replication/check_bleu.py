#!/usr/bin/env python3
"""Recomputes each run's BLEU and ROUGE-L of a replicate_lora report with independent implementations and
prints the agreement: NLTK's corpus_bleu (several references per segment, closest reference length, no
smoothing) and sacreBLEU's corpus_bleu (smooth_method none), both on sacreBLEU's 13a tokenisation (mteval-v13a's rules),
lower-cased; pycocoevalcap's Rouge (the E2E script's ROUGE-L) on the same tokens less pycocoevalcap's
punctuation tokens (its PTB tokenizer is Java, not run here).

    pip install nltk sacrebleu pycocoevalcap
    python3 experiments/replication/check_bleu.py docs/replication        # the folder that holds results.json
"""
import json
import warnings
import sys
from pathlib import Path

from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS


def main() -> int:
    warnings.filterwarnings("ignore", module="nltk")  # "0 counts of n-gram overlaps": BLEU is 0, as intended
    report = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/replication")
    results = json.loads((report / "results.json").read_text())
    tok = Tokenizer13a()
    worst = 0.0
    print(f"nltk {__import__('nltk').__version__}, sacrebleu {sacrebleu.__version__}; report {report}")
    print(f"{'run':<14} {'BLEU ours':>10} {'nltk':>10} {'sacrebleu':>10} {'ROUGE-L ours':>13} {'pycocoevalcap':>14} {'max |diff|':>11}")
    for run in results["runs"]:
        if not run.get("generations_file"):
            continue
        hyps = (report / run["generations_file"]).read_text().split("\n")[:-1]
        refs = json.loads((report / run["references_file"]).read_text())
        assert len(hyps) == len(refs), f"{run['name']}: {len(hyps)} generations but {len(refs)} reference sets"
        split = lambda s: tok(s.strip()).lower().split()
        ours = run["eval"]["bleu"]
        nltk_score = nltk_corpus_bleu([[split(r) for r in rs] for rs in refs], [split(h) for h in hyps])
        # sacreBLEU takes one stream per reference position; a segment with fewer references gets None.
        n = max(len(rs) for rs in refs)
        streams = [[rs[i] if i < len(rs) else None for rs in refs] for i in range(n)]
        sacre = sacrebleu.corpus_bleu(hyps, streams, tokenize="13a", lowercase=True,
                                     smooth_method="none", force=True).score / 100
        rouge_tokens = lambda s: " ".join(t for t in split(s) if t not in PUNCTUATIONS)
        coco, _ = Rouge().compute_score({i: [rouge_tokens(r) for r in rs] for i, rs in enumerate(refs)},
                                        {i: [rouge_tokens(h)] for i, h in enumerate(hyps)})
        ours_rouge = run["eval"]["rouge_l"]
        diff = max(abs(ours - nltk_score), abs(ours - sacre), abs(ours_rouge - coco))
        worst = max(worst, diff)
        print(f"{run['name']:<14} {ours:>10.6f} {nltk_score:>10.6f} {sacre:>10.6f} {ours_rouge:>13.6f} {coco:>14.6f} {diff:>11.2e}")
    print(f"largest difference: {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
