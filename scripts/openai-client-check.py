#!/usr/bin/env python3
"""Drive a Tandem gateway with the official openai Python client.

Usage: openai-client-check.py BASE_URL API_KEY MODEL

Runs a chat completion without and with streaming (greedy, so both must
produce the same text), checks the usage accounting and the model list, and
checks that a bad parameter comes back as a 400 naming the field. Exits 0
and prints "ok" when every check passes; exits 3 when the openai package is
missing, so a caller can skip rather than fail.
"""
import sys

try:
    import openai
except ImportError:
    print("openai package not installed", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    base_url, api_key, model = sys.argv[1:4]
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "Name three colours."}]

    models = [m.id for m in client.models.list()]
    assert model in models, f"model {model} not in {models}"

    full = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
    choice = full.choices[0]
    assert choice.message.role == "assistant", choice.message.role
    assert choice.message.content, "empty completion"
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    u = full.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u

    text, finish, usage = "", None, None
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == choice.message.content, f"stream {text!r} != {choice.message.content!r}"
    assert finish == choice.finish_reason, (finish, choice.finish_reason)
    assert usage is not None and usage.completion_tokens == u.completion_tokens, usage

    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=7000)
        raise AssertionError("temperature 7000 was accepted")
    except openai.BadRequestError as e:
        assert "temperature" in str(e), str(e)
    try:
        client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
        raise AssertionError("unknown model was accepted")
    except openai.NotFoundError:
        pass

    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
