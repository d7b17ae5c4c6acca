"""ClipTokenizer gives open_clip's SimpleTokenizer ids, id for id."""

import random
import string

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from geobind.models.tokenizer import ClipTokenizer  # noqa: E402

CASES = [
    "a busy highway",
    "Lake shore!",
    "it's a dog's life, we'll see; I'd've",
    "",
    "   \t\n ",
    "&amp; &lt;b&gt; Tom &amp;amp; Jerry",
    "café naïve résumé ÅØ ß",
    "北京 traffic 東京 한국어",
    "😀 emoji 🚗🌲",
    "<end_of_text> inside, abc<start_of_text>def",
    "3.14159 and 2026-11-28",
    "MiXeD CaSe and ALL CAPS",
    "tab\tand\nnewline\r\nand\x0bvertical\x0cfeed\x1cfile\x85next\u2028line\u3000ideographic",
    "\x1b[31mred\x1b[0m terminal escapes",
    "Ã©tÃ© mojibake and â€™curly",
    "ﬁnance ｆｕｌｌｗｉｄｔｈ ‘curly’ “quotes” – dashes —…",
    "zero\u200bwidth\xa0nbsp",
    "x" * 500,
    "word " * 100,
]
ALPHABET = list(
    string.ascii_letters + string.digits + " .,;:'\"!?&<>-_/\\()[]{}#@$%^*+=~`|"
) + list(
    "\t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000\u200bäöüßéèñçÅØ中文日本語한😀🚗ﬁ＂ｆ‘’“”–—…\x80\x9fÃ©â€™"
)


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 60))) for _ in range(n)]
    texts += [
        "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(0, 80))) for _ in range(n)
    ]
    return texts


@pytest.mark.parametrize("context_length", [16, 77])
def test_ids_equal_open_clip_simple_tokenizer(context_length):
    slow = open_clip.SimpleTokenizer(context_length=context_length)
    fast = ClipTokenizer(slow)
    assert fast.memoised  # the memoised path runs, not the fallback
    texts = CASES + _random_texts(1000)
    expected, got = slow(texts), fast(texts)
    assert got.dtype == torch.long and got.shape == (len(texts), context_length)
    mismatched = [t for t, a, b in zip(texts, expected, got, strict=True) if not torch.equal(a, b)]
    assert mismatched == []
    # overlong text is truncated to the context, ending in the end-of-text token
    long = fast("word " * 100)[0]
    assert long[-1] == slow.eot_token_id and (long != 0).all()
    assert torch.equal(fast("a lake"), slow("a lake"))  # one string


def test_other_cleaning_modes_use_the_wrapped_tokenizer():
    slow = open_clip.SimpleTokenizer(context_length=16, clean="whitespace")
    fast = ClipTokenizer(slow)
    assert not fast.memoised
    assert torch.equal(fast(["Lake Shore"]), slow(["Lake Shore"]))


def test_bundle_text_encoder_uses_it(tiny):
    tokenizer = tiny["text"].tokenizer
    assert isinstance(tokenizer, ClipTokenizer)
    assert torch.equal(tokenizer(CASES), tokenizer.slow(CASES))


LAKE, FOREST = "a lake seen by the cache test", "a forest seen by the cache test"


def test_query_vectors_are_cached_until_the_weights_change(tiny):
    text = tiny["text"]  # shared by the session: texts no other test embeds
    calls = []
    handle = text.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        first = text.embed([LAKE, FOREST, LAKE])
        assert calls == [2]  # the repeated text is embedded once
        again = text.embed([FOREST, LAKE])
        assert calls == [2] and torch.equal(again, first[[1, 0]])
        again.zero_()  # the caller's copy: the cache keeps its own
        assert torch.equal(text.embed(LAKE)[0], first[0])
        # templates fill into other texts; big batches bypass the cache
        text.embed(LAKE, templates=["a photo of {}."])
        text.embed([f"text {i}" for i in range(text.cache_batch + 1)])
        assert calls[1] == 1 and sum(calls[2:]) == text.cache_batch + 1
        # changing a weight in place (a training step, load_state_dict) empties the cache
        calls.clear()
        bias = text.text.ln_final.bias
        kept = bias.detach().clone()
        with torch.no_grad():
            bias.add_(0.5)
        changed = text.embed(LAKE)
        assert calls == [1] and not torch.allclose(changed[0], first[0])
        with torch.no_grad():
            bias.copy_(kept)
        torch.testing.assert_close(text.embed(LAKE)[0], first[0])  # batch of 1, not 2
        assert calls == [1, 1]
    finally:
        handle.remove()
