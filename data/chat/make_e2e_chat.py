"""Makes data/chat/e2e-chat-{train,valid}.jsonl: a small chat dataset (OpenAI "messages" records) derived from the
E2E NLG Challenge data in data/e2e/ (CC BY-SA 4.0, so these files are CC BY-SA 4.0 too). Run once from the
repository root; its outputs are committed with it:

    python3 data/chat/make_e2e_chat.py

Each record: a system message, a user message that lists a restaurant's attributes, and the assistant's answer,
one of the crowd-sourced E2E references for those attributes, with E2E's word tokenization undone ("£ 30 ." ->
"£30."). Train takes every 14th line of e2e/train.txt (3,005 records), valid every 8th of e2e/valid.txt (584).
"""
import json
import re

SYSTEM = "You describe restaurants in one or two sentences, using only the facts you are given."


def detokenize(text: str) -> str:
    text = text.strip()
    text = re.sub(r" ([.,!?;:%)])", r"\1", text)
    text = re.sub(r"([(£]) ", r"\1", text)
    text = re.sub(r" - ", "-", text)
    text = re.sub(r" n't", "n't", text)
    text = re.sub(r" '(s|re|ve|ll|d|m)\b", r"'\1", text)
    return text


def record(line: str) -> dict:
    mr, ref = line.rstrip("\n").split("||")
    facts = []
    for part in mr.split(" | "):
        key, value = part.split(" : ", 1)
        facts.append(f"{key.strip()}: {detokenize(value)}")
    return {"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Describe this restaurant. " + "; ".join(facts) + "."},
        {"role": "assistant", "content": detokenize(ref)},
    ]}


def convert(src: str, dst: str, every: int) -> int:
    with open(src, encoding="utf-8") as f:
        lines = f.readlines()
    out = [record(line) for i, line in enumerate(lines) if i % every == 0]
    with open(dst, "w", encoding="utf-8", newline="\n") as f:
        for r in out:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(out)


if __name__ == "__main__":
    print("train", convert("data/e2e/train.txt", "data/chat/e2e-chat-train.jsonl", 14))
    print("valid", convert("data/e2e/valid.txt", "data/chat/e2e-chat-valid.jsonl", 8))
