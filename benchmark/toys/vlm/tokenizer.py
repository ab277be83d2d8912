"""The toy VLM's tokenizer: a word-level vocabulary of its own prompt, built locally with ``tokenizers``.

The toy VLM only ever reads appendix A.4's question about the shapes world's classes in LLaVA-1.5's conversation
(:mod:`aft_bench.models.vlm.prompt`) and answers with a class name, so its vocabulary is the words and punctuation of
that text plus the special tokens (padding, BOS, EOS, unknown, the image placeholder). Spaces are folded into the word
that follows them (``"▁red"``, as SentencePiece writes them), and the prompt's newline and punctuation are tokens of
their own, so decoding a token sequence gives back exactly the text it was encoded from. Every encoding starts
with BOS, as LLaVA-1.5's Llama tokenizer's does (the attention sink that composite maps remove).
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from aft_bench.models.vlm.prompt import IMAGE_PLACEHOLDER, class_question, llava_conversation

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, IMAGE_PLACEHOLDER)
"""The special tokens, in id order (``<pad>`` is 0, ``<image>`` is 4)."""
SPACE = "\u2581"  # "▁", SentencePiece's visible space


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Newlines alone, spaces folded into the next word, punctuation alone."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])


def vocabulary_texts(classnames: Sequence[str]) -> list[str]:
    """The texts the vocabulary covers: the conversation around the class question, and each answer after it."""
    prompt = llava_conversation(class_question(classnames))
    return [prompt, *(f"{prompt} {name}" for name in classnames)]


def build_vocabulary(texts: Sequence[str]) -> dict[str, int]:
    """Token -> id: :data:`SPECIAL_TOKENS` first, then every word piece of ``texts`` in order of first appearance."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    pre = _pre_tokenizer()
    for text in texts:
        for part in text.split(IMAGE_PLACEHOLDER):
            for piece, _ in pre.pre_tokenize_str(part):
                vocab.setdefault(piece, len(vocab))
    return vocab


def build_toy_tokenizer(classnames: Sequence[str]) -> PreTrainedTokenizerFast:
    """The toy VLM's tokenizer over the class question for ``classnames`` (left padding, as LLaVA's).

    Raises:
        ValueError: From :func:`aft_bench.models.vlm.prompt.class_question` for empty or repeated class names.
    """
    vocab = build_vocabulary(vocabulary_texts(classnames))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never")
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE_PLACEHOLDER}, padding_side="left",
    )
