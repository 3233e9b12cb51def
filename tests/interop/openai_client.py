"""The serve program against the official `openai` Python client (not run in CI: it needs pip).

    python3 -m venv /tmp/oai && /tmp/oai/bin/pip install openai
    ./build/serve --config gpt2 --port 8091 --context 256 &          # a random GPT-2 small: gibberish text
    /tmp/oai/bin/python tests/interop/openai_client.py --port 8091 > tests/interop/openai_client.out

Checks what a client sees: the model list, a completion, the same completion streamed (the chunks add up to
the same text), stop strings, and that refusals arrive as the client's typed errors with the server's
message. Prints what it saw; exits non-zero on the first mismatch.
"""
import argparse
import sys

import openai


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="unused", max_retries=0)
    print("openai", openai.__version__)

    models = [m.id for m in client.models.list().data]
    print("models:", models)
    assert "base" in models

    prompt = "The meaning of life is"
    done = client.completions.create(model="base", prompt=prompt, max_tokens=8, temperature=0, seed=1)
    text = done.choices[0].text
    print("completion:", repr(text), "finish:", done.choices[0].finish_reason, "usage:", done.usage.model_dump())
    assert done.object == "text_completion" and done.usage.completion_tokens == 8
    assert done.choices[0].finish_reason == "length"

    chunks = list(client.completions.create(model="base", prompt=prompt, max_tokens=8, temperature=0, stream=True))
    streamed = "".join(c.choices[0].text for c in chunks)
    print("streamed:", repr(streamed), "in", len(chunks), "chunks, finish:", chunks[-1].choices[0].finish_reason)
    assert streamed == text, "the streamed text differs from the completion"

    if len(text) > 3:
        stop = text[2:4]
        stopped = client.completions.create(model="base", prompt=prompt, max_tokens=8, temperature=0, stop=[stop])
        print("stop", repr(stop), "->", repr(stopped.choices[0].text), stopped.choices[0].finish_reason)
        assert stopped.choices[0].text == text[: text.find(stop)] and stopped.choices[0].finish_reason == "stop"

    sampled = client.completions.create(model="base", prompt=prompt, max_tokens=8, temperature=0.8, top_p=0.9, seed=7)
    again = client.completions.create(model="base", prompt=prompt, max_tokens=8, temperature=0.8, top_p=0.9, seed=7)
    print("sampled (seed 7, twice):", repr(sampled.choices[0].text), repr(again.choices[0].text))
    assert sampled.choices[0].text == again.choices[0].text

    refusals = [
        ("unknown model", openai.NotFoundError, dict(model="nope", prompt="x")),
        ("max_tokens too large", openai.BadRequestError, dict(model="base", prompt="x", max_tokens=100000)),
        ("n = 2", openai.BadRequestError, dict(model="base", prompt="x", n=2)),
        ("prompt over the context", openai.BadRequestError, dict(model="base", prompt="word " * 300, max_tokens=1)),
    ]
    for what, error, kwargs in refusals:
        try:
            client.completions.create(**kwargs)
        except error as e:
            print(f"{what}: {type(e).__name__} {e.status_code}: {e.body['message']}")
            continue
        sys.exit(f"{what}: no {error.__name__}")
    print("all checks passed")


if __name__ == "__main__":
    main()
