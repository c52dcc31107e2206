#!/usr/bin/env python3
"""Generate the reference token ids the model/tokenizer tests compare against.

Writes, into testdata/tokenizer/:
  smollm2.json     SmolLM2-135M-Instruct (byte-level BPE, pre-tokenizer "smollm")
  stories260k.json stories260K (SentencePiece-style llama BPE)
  chat.json        chat templates rendered by Jinja, as Hugging Face renders them
  pretok.json      pre-tokenizer pieces from the `regex` module running llama.cpp's
                   expression lists (matches and the text between them become pieces,
                   each expression applied to the pieces of the one before)

References
  SmolLM2: Hugging Face `tokenizers` with the GGUF's vocabulary and merges (loaded by
  `transformers` from the GGUF) and the pre-tokenizer of the model's original
  tokenizer.json, Sequence[Digits(individual_digits), ByteLevel]. That pair is what
  llama.cpp's "smollm" pre-tokenizer reproduces. transformers' own GGUF loader drops the
  Digits step; where its ids differ they are recorded per case as
  `transformers_gguf_ids` with a note, and the llama.cpp behaviour is expected.
  stories260K: the `sentencepiece` library running a BPE model built from the GGUF's
  pieces, scores and types with llama.cpp's preprocessing (identity normalisation,
  dummy prefix, no whitespace collapsing, byte fallback); `transformers`' GGUF loader
  is run too and recorded where it differs.

Usage: python3 scripts/gen-tokenizer-fixtures.py [--smollm2 PATH] [--stories PATH]
Needs: pip install gguf transformers tokenizers sentencepiece protobuf jinja2 regex
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "testdata", "tokenizer")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def corpus():
    """At least 300 varied strings; deterministic."""
    c = [
        "",
        " ",
        "  ",
        "\t",
        "\n",
        "\n\n\n",
        "\r\n",
        " \n ",
        "Hello world",
        "Hello world! 123",
        "The capital of France is",
        "hello  world",
        "hello   world   ",
        "trailing space ",
        "trailing spaces   ",
        "  leading spaces",
        "\tindented with a tab",
        "line one\nline two\n",
        "para one\n\npara two",
        "mixed \t \n whitespace\t\t\tend",
        "windows\r\nline\r\nendings",
        "a\u00a0non-breaking\u00a0space",
        "ideographic\u3000space",
        "line\u2028separator and\u2029paragraph",
        "next\u0085line",
        "vertical\x0btab and\x0cform feed",
        "unit\x1fseparator",
        "controls \x00\x04\x06\x13\x14\x16\x1d\x7f end",
        "a\x06b",
        "I'm here",
        "you're right, they've gone, we'll see, he'd know",
        "WE'LL SHOUT, IT'S LOUD, I'M SURE",
        "don't won't can't shouldn't",
        "'s 't 're 've 'm 'll 'd",
        "'S 'T 'RE 'VE 'M 'LL 'D",
        "''quoted''",
        "rock 'n' roll",
        "O'Reilly's book",
        "1",
        "12",
        "123",
        "1234",
        "12345678901234567890",
        "3.14159265358979",
        "1,000,000.00",
        "-42 +17 =",
        "0x1F 0b1010 1e-9",
        "version 2.10.3-rc1",
        "2024-11-26T20:05:18Z",
        "+1 (555) 123-4567",
        "\uff11\uff12\uff13 fullwidth digits",
        "\u0663\u0664\u0665 arabic-indic digits",
        "x\u00b2 + y\u00b3 superscripts",
        "roman \u216b numeral",
        "a1b2c3d4",
        "abc123def456",
        "  123",
        " 1 2 3 ",
        "hello...world!!!",
        "?!?!?!",
        "---===+++***",
        "((()))[[[]]]{{{}}}",
        "a.b,c;d:e",
        "email@example.com",
        "https://example.com/path?query=1&x=y#frag",
        "C:\\Users\\name\\file.txt",
        "$100 & 50% off <tag> ^caret~ |pipe|",
        "\u201csmart quotes\u201d and \u2018single\u2019",
        "em\u2014dash and en\u2013dash\u2026",
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9",
        "cafe\u0301 with combining acute",
        "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
        "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
        "\u6211\u559c\u6b22\u5403\u82f9\u679c\u548c\u9999\u8549\u3002",
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002",
        "\u30ab\u30bf\u30ab\u30ca \u3072\u3089\u304c\u306a \u6f22\u5b57",
        "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
        "\u0627\u0644\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629 with harakat",
        "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u092e\u0947\u0902 \u0932\u093f\u0916\u093e \u0917\u092f\u093e \u0935\u093e\u0915\u094d\u092f\u0964",
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
        "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
        "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
        "\u1200\u1208\u121d amharic",
        "\U0001f600\U0001f601\U0001f602",
        "emoji \U0001f44d in text",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family ZWJ",
        "\U0001f3f3\ufe0f\u200d\U0001f308 rainbow flag",
        "\U0001f44b\U0001f3fd skin tone",
        "\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5 flags",
        "\u2764\ufe0f variation selector",
        "zero\u200bwidth\u200bspace",
        "bom\ufeffinside",
        "\U0001d54f\U0001d560\U0001d565 math letters",
        "\U00020000\U0002a6d6 supplementary CJK",
        "\u00e0\u00e1\u00e2\u00e3\u00e4\u00e5\u00e6\u00e7\u00e8",
        "\u00ff\u0100\u0101\u017f long s",
        "Stra\u00dfe \u0130stanbul \u0131",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|><|im_end|>",
        "text<|im_end|>more",
        " <|im_start|> spaced ",
        "<|im_sta partial special",
        "<repo_name>tandem<file_sep>main.go",
        "<filename>a.py\n<gh_stars>10",
        "<jupyter_start><jupyter_code>print(1)<jupyter_output>1",
        "<empty_output>",
        "<s>",
        "</s>",
        "<unk>",
        "<s>hello</s>",
        "<0x41>",
        "\u2581already\u2581escaped",
        "supercalifragilisticexpialidocious",
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "a" * 1000,
        "ab" * 300,
        "supercalifragilistic" * 30,
        "x" * 64 + " " + "y" * 64,
        "\U0001f642" * 50,
        "\u4e00" * 200,
        "1" * 300,
        " " * 100,
        "\n" * 50,
        ". " * 100,
        "Once upon a time, there was a little girl named Lily. She loved to play outside.",
        "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    ]
    code = [
        'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello, world")\n}\n',
        "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "#include <stdio.h>\nint main(void) {\n    printf(\"%d\\n\", 42);\n    return 0;\n}\n",
        "const add = (a, b) => a + b; // arrow\nconsole.log(`sum: ${add(1, 2)}`);",
        "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}",
        "SELECT id, name FROM users WHERE age >= 21 ORDER BY name DESC;",
        "<html>\n  <body class=\"main\">&nbsp;<p>Hi</p></body>\n</html>",
        "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
        "if (x != y && z <= 10) { return x ** 2; } else { x += 1; }",
        "    \t    mixed indentation\n\t\tfoo()",
        "#!/bin/bash\nfor f in *.go; do echo \"$f\"; done 2>&1 | tee log.txt",
        "x = [i for i in range(100) if i % 3 == 0]",
        "public static void main(String[] args) { System.out.println(args.length); }",
        "\\begin{equation} E = mc^2 \\end{equation}",
        "// TODO(bob): fix this\n/* block */",
        "a->b; c::d; e=>f; g<<=1; h>>>=2;",
        "```python\nprint('hi')\n```",
        "- item one\n- item two\n  - nested\n1. numbered",
        "| col1 | col2 |\n|------|------|\n| a    | b    |",
        "key: value\nlist:\n  - a\n  - b\n",
    ]
    c.extend(code)
    # Whitespace patterns around words, numbers and punctuation: the
    # \s+(?!\S) rule decides where these split.
    ws = ["", " ", "  ", "   ", "\t", "\n", " \n", "\n ", " \t ", "\r\n", "\u00a0", "  \n  "]
    items = ["word", "42", "!", "\u00e9t\u00e9", "\u4e2d", "\U0001f600", "'s", "x1"]
    for i, w1 in enumerate(ws):
        for j, it in enumerate(items):
            w2 = ws[(i + j) % len(ws)]
            c.append(w1 + it + w2 + items[(j + 1) % len(items)] + w1)
    # Seeded random strings over a mixed alphabet.
    rng = random.Random(20261126)
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(" \t\n\r  ")
        + list(".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`")
        + ["\u00e9", "\u00f1", "\u00fc", "\u4e2d", "\u6587", "\u3042", "\ud55c", "\u0627", "\u0928", "\u094d",
           "\u0301", "\U0001f600", "\u200d", "\u00a0", "\u3000", "\u2581", "\u0663", "\u00b2", "\U0001f44d"]
    )
    for n in range(110):
        k = rng.randint(1, 40 if n < 100 else 400)
        c.append("".join(rng.choice(alphabet) for _ in range(k)))
    seen, out = set(), []
    for s in c:
        if s not in seen:
            seen.add(s)
            out.append(s)
    assert len(out) >= 300, len(out)
    return out


def link_dir(path):
    d = tempfile.mkdtemp(prefix="tandem-tok-")
    os.symlink(os.path.abspath(path), os.path.join(d, os.path.basename(path)))
    return d


def smollm2_fixture(path, texts):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    d = link_dir(path)
    try:
        hf = AutoTokenizer.from_pretrained(d, gguf_file=os.path.basename(path))
    finally:
        shutil.rmtree(d)
    gguf_bt = hf.backend_tokenizer
    ref = type(gguf_bt).from_str(gguf_bt.to_str())
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    cases = []
    for s in texts:
        ref.encode_special_tokens = False
        ids = ref.encode(s, add_special_tokens=False).ids
        ref.encode_special_tokens = True
        plain = ref.encode(s, add_special_tokens=False).ids
        case = {"text": s, "ids": ids, "ids_plain": plain}
        gguf_bt.encode_special_tokens = False
        other = gguf_bt.encode(s, add_special_tokens=False).ids
        if other != ids:
            case["transformers_gguf_ids"] = other
            case["note"] = ("transformers' GGUF loader omits the Digits(individual_digits) "
                            "pre-tokenizer step that llama.cpp's 'smollm' pre-tokenizer and the "
                            "original tokenizer.json apply; the llama.cpp behaviour is expected")
        cases.append(case)
    return {
        "model": os.path.basename(path),
        "sha256": sha256(path),
        "reference": "tokenizers (GGUF vocab + merges, original SmolLM2 pre-tokenizer "
                     "Digits(individual)+ByteLevel); ids = special tokens parsed, "
                     "ids_plain = special tokens as text",
        "cases": cases,
    }


def spm_model_from_gguf(path):
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as pb

    r = gguf.GGUFReader(path)

    def arr(key):
        f = r.fields[key]
        return [f.contents(i) for i in range(len(f.data))]

    tokens = arr("tokenizer.ggml.tokens")
    scores = arr("tokenizer.ggml.scores")
    types = arr("tokenizer.ggml.token_type")
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id = 0
    m.trainer_spec.bos_id = 1
    m.trainer_spec.eos_id = 2
    m.trainer_spec.pad_id = -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    for t, s, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece = t
        p.score = float(s)
        p.type = int(ty)
    return m.SerializeToString()


def stories_fixture(path, texts):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=spm_model_from_gguf(path))
    other = transformers_spm(path)
    cases = []
    for s in texts:
        ids = sp.encode(s) if s else []
        case = {"text": s, "ids": ids}
        if other is not None:
            o = other.encode(s, add_special_tokens=False).ids
            if o != ids:
                case["transformers_gguf_ids"] = o
                case["note"] = "transformers' GGUF loader differs from sentencepiece here; sentencepiece (and llama.cpp) expected"
        cases.append(case)
    return {
        "model": os.path.basename(path),
        "sha256": sha256(path),
        "reference": "sentencepiece BPE built from the GGUF pieces/scores/types with identity "
                     "normalisation, dummy prefix and byte fallback (llama.cpp's SPM preprocessing); "
                     "ids without BOS, special tokens as text",
        "cases": cases,
    }


def transformers_spm(path):
    """transformers' tokenizer for the stories GGUF, or None when it cannot load it."""
    from transformers import AutoTokenizer
    from transformers.integrations.gguf import reader

    real = reader.read_gguf_metadata

    def patched(*a, **kw):
        # The file stores "no padding token" as u32 max, which transformers
        # indexes the vocabulary with.
        meta, rest = real(*a, **kw)
        if meta.get("tokenizer.ggml.padding_token_id", 0) >= 2**31:
            del meta["tokenizer.ggml.padding_token_id"]
        return meta, rest

    reader.read_gguf_metadata = patched
    d = link_dir(path)
    try:
        return AutoTokenizer.from_pretrained(d, gguf_file=os.path.basename(path)).backend_tokenizer
    except Exception as e:  # recorded, not fatal: sentencepiece is the primary reference
        print("transformers could not load", path, e)
        return None
    finally:
        reader.read_gguf_metadata = real
        shutil.rmtree(d)


# Public chat templates of the families the tokenizer recognises, as the
# models' tokenizer_config.json files ship them.
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
          "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
          "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
          "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
CHATML_PLAIN = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def conversations():
    return [
        [],
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
        [{"role": "user", "content": "  padded content \n"}, {"role": "assistant", "content": " 4 "},
         {"role": "user", "content": "thanks"}],
        [{"role": "system", "content": ""}, {"role": "user", "content": "empty system"}],
        [{"role": "user", "content": "multi\nline\n\ncontent"}, {"role": "assistant", "content": "ok"}],
        [{"role": "user", "content": "\u4f60\u597d \U0001f600"}, {"role": "assistant", "content": "\u0645\u0631\u062d\u0628\u0627"}],
        [{"role": "assistant", "content": "assistant first"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "user", "content": "call a tool"}, {"role": "tool", "content": "{\"result\": 1}"}],
        [{"role": "system", "content": "s1"}, {"role": "system", "content": "s2"}],
        [{"role": "user", "content": "\x1c\tunit separators\x1f "}],
    ]


def chat_fixture(smollm2_template):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise ValueError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    families = [
        ("smollm2", smollm2_template, "<|im_start|>", "<|im_end|>"),
        ("chatml", CHATML_PLAIN, "<|im_start|>", "<|im_end|>"),
        ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
        ("llama2", LLAMA2, "<s>", "</s>"),
        ("zephyr", ZEPHYR, "<s>", "</s>"),
    ]
    out = []
    for name, src, bos, eos in families:
        tmpl = env.from_string(src)
        cases = []
        for msgs in conversations():
            for gen in (False, True):
                case = {"messages": msgs, "add_generation_prompt": gen}
                try:
                    case["want"] = tmpl.render(messages=msgs, add_generation_prompt=gen,
                                               bos_token=bos, eos_token=eos)
                except Exception as e:  # the template itself rejects the conversation
                    case["error"] = str(e)
                cases.append(case)
        out.append({"name": name, "template": src, "bos_token": bos, "eos_token": eos, "cases": cases})
    return {"reference": "jinja2 ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks), as transformers' apply_chat_template", "templates": out}


GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_RE = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}")
# llama.cpp's expression lists per tokenizer.ggml.pre (llama-vocab.cpp).
PRETOKENIZERS = {
    "gpt2": [GPT2_RE],
    "smollm": [r"\p{N}", GPT2_RE],
    "llama3": [LLAMA3_RE],
    "qwen2": [QWEN2_RE],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2_RE, r"\p{N}+", r"[0-9][0-9][0-9]"],
}


def regex_split(text, exprs):
    import regex

    pieces = [text] if text else []
    for e in exprs:
        pat = regex.compile(e)
        nxt = []
        for p in pieces:
            last = 0
            for m in pat.finditer(p):
                if m.start() > last:
                    nxt.append(p[last:m.start()])
                if m.end() > m.start():
                    nxt.append(m.group())
                last = m.end()
            if last < len(p):
                nxt.append(p[last:])
        pieces = nxt
    return pieces


def pretok_fixture(texts):
    cases = [{"text": s, "pieces": {name: regex_split(s, exprs) for name, exprs in PRETOKENIZERS.items()}}
             for s in texts]
    return {"reference": "python regex module, llama.cpp expression lists", "expressions": PRETOKENIZERS,
            "cases": cases}


def write(name, obj):
    os.makedirs(OUT, exist_ok=True)
    p = os.path.join(OUT, name)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", default=os.environ.get(
        "TANDEM_MODEL", os.path.expanduser("~/.cache/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--stories", default=os.path.join(ROOT, "..", "shared", "models", "stories260K.gguf"))
    args = ap.parse_args()
    texts = corpus()
    import gguf
    tmpl = gguf.GGUFReader(args.smollm2).fields["tokenizer.chat_template"].contents()
    write("smollm2.json", smollm2_fixture(args.smollm2, texts))
    write("stories260k.json", stories_fixture(args.stories, texts))
    write("chat.json", chat_fixture(tmpl))
    write("pretok.json", pretok_fixture(texts))


if __name__ == "__main__":
    main()
